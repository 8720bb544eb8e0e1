"""Results: the SQLite store, leaderboard, regression gate and eval-server exports."""

if __name__ != "harness.results":  # imported as the bare `results` from a checkout's root
    from harness.shadowing import defer_to_installed

    defer_to_installed(__name__, __file__)

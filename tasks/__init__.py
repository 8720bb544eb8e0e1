"""Benchmarks: one folder per benchmark with its YAML files and its loading/scoring code.

Task YAML files name hooks in these modules with ``!hook folder.module.function``.
"""

if __name__ != "harness.tasks":  # imported as the bare `tasks` from a checkout's root
    from harness.shadowing import defer_to_installed

    defer_to_installed(__name__, __file__)

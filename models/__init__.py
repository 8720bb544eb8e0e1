"""Model adapters: batched generation over task requests with each family's own template."""

if __name__ != "harness.models":  # imported as the bare `models` from a checkout's root
    from harness.shadowing import defer_to_installed

    defer_to_installed(__name__, __file__)

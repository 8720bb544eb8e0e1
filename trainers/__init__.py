"""Trainers: LLaVA two-stage training (:mod:`.llava_stages`), tiny model construction
(:mod:`.toy_model`) and recipes such as ``toy-llava`` (:mod:`.recipes`)."""

if __name__ != "harness.trainers":  # imported as the bare `trainers` from a checkout's root
    from harness.shadowing import defer_to_installed

    defer_to_installed(__name__, __file__)

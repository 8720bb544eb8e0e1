"""Trainers: LLaVA two-stage training (:mod:`.llava_stages`), tiny model construction
(:mod:`.toy_model`) and recipes such as ``toy-llava`` (:mod:`.recipes`)."""

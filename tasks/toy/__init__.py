"""The synthetic toy world: mini benchmarks in the official file formats, and training data.

``world`` samples and renders scenes, ``benchmarks`` writes one mini benchmark per
official format, ``data`` generates and caches the world (the ``dataset.root`` hook
of the ``*-toy`` tasks), and ``training`` gives training samples whose prompts are
rendered by the toy tasks themselves.
"""

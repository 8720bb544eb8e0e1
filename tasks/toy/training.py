"""Training samples from the toy world, prompted exactly as the ``*-toy`` tasks prompt.

Each call writes fresh mini benchmarks with the same writers as the evaluation
world, but from the *training* part of the scene space (see
:func:`harness.tasks.toy.world.is_heldout`), into a scratch folder; reads them
back through the real task loaders; and renders every prompt with the toy task
itself (``Task.prompt``) and every visual with the task's own visuals and the
harness image / video readers. So a training prompt is, character for
character, what the evaluation sends for an equivalent document, and a
training answer is what the task's extractor and scorer count as right.

One training-only kind asks what no toy benchmark asks in open form: ``where``
("Where is the yellow triangle?" -> "top left", GQA-toy's short-answer prompt),
the question that MMBench-toy's object localization and ScienceQA-toy ask as
multiple choice.
"""

from __future__ import annotations

import math
import random
import tempfile
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from harness.api.requests import Request
from harness.media import is_video, load_image, sample_frames
from harness.task import Doc, Task, get_task
from harness.tasks.common.instructions import SHORT_ANSWER

from .benchmarks import LEXICON, WRITERS, _by_unique_combo, _has_unique_combo
from .data import benchmark_of
from .world import (
    COLORS,
    NUMBER_WORDS,
    POSITIONS,
    SHAPES,
    sample_motion,
    sample_scene,
    sample_sign,
    write_video,
)
from .world import name as object_name

STAGES = ("align", "instruct")
IMAGE_CAPTION_PROMPT = "Describe the image briefly."
VIDEO_CAPTION_PROMPT = "Describe the video briefly."

# kind -> the toy tasks that render its prompts
KIND_TASKS: dict[str, tuple[str, ...]] = {
    "pope": ("pope_random-toy", "pope_popular-toy", "pope_adversarial-toy"),
    "gqa": ("gqa-toy",),
    "vqav2": ("vqav2-toy",),
    "textvqa": ("textvqa-toy", "textvqa_noocr-toy"),
    "scienceqa": ("scienceqa-toy",),
    "mme": ("mme-toy",),
    "mmbench": ("mmbench-toy",),
    "video": ("vcg_generic-toy", "vcg_temporal-toy", "vcg_consistency-toy"),
    "quilt": ("quilt-toy",),
}
TOY_TASKS: tuple[str, ...] = tuple(t for tasks in KIND_TASKS.values() for t in tasks)
# Share of each kind in the "instruct" stage.
INSTRUCT_MIX: dict[str, float] = {
    "caption": 0.08,
    "pope": 0.12,
    "gqa": 0.14,
    "vqav2": 0.14,
    "textvqa": 0.10,
    "scienceqa": 0.08,
    "mme": 0.10,
    "mmbench": 0.08,
    "video": 0.10,
    "quilt": 0.06,
}
# Kinds that only training draws (no toy task renders them); a stage's mix may name them.
TRAINING_ONLY_KINDS: tuple[str, ...] = ("where",)
# "align" captions: scenes of shapes, signs, videos.
CAPTION_MIX: dict[str, float] = {"scene": 0.7, "sign": 0.2, "video": 0.1}
# Documents the loader yields per unit of the writer's n_docs (MME: 5 categories).
_DOCS_PER_N = {"mme": 5}


@dataclass
class TrainingSample:
    images: list[Image.Image]  # 1 image, or the frames of a video (len == frames)
    prompt: str  # user text exactly as the toy task renders it for the model
    answer: str  # the target the task's scorer counts as correct
    kind: str  # a key of INSTRUCT_MIX, or one of TRAINING_ONLY_KINDS


def answer_of(task: Task, doc: Doc) -> str:
    """The reply the task scores as right: its target, the majority of human answers for
    VQA-style lists, lower-case yes/no for MME's Yes/No."""
    target = task.target(doc)
    if isinstance(target, list):
        target = Counter(target).most_common(1)[0][0]
    text = str(target)
    return text.lower() if text in ("Yes", "No") else text


def local_task(name: str) -> Task:
    """The toy task reading from a folder given to ``load_docs`` (its root hook removed)."""
    task = get_task(name)
    dataset = task.config.dataset.model_copy(update={"root": None})
    return Task(task.config.model_copy(update={"dataset": dataset}), task.source)


def _visuals(task: Task, doc: Doc, root: Path, frames: int) -> list[Image.Image]:
    images: list[Image.Image] = []
    for item in task.visuals(doc, root):
        if is_video(item):
            images.extend(sample_frames(item, frames))
        else:
            images.append(load_image(item))
    return images


def _benchmark_samples(
    bench: str,
    wanted: dict[str, int],
    rng: random.Random,
    scratch: Path,
    frames: int,
    kind: str,
    with_visuals: bool = True,
) -> list[TrainingSample]:
    """Write one training mini benchmark big enough for every task in ``wanted`` and draw
    that many documents of each task from it."""
    folder = scratch / bench
    n_docs = math.ceil(max(wanted.values()) / _DOCS_PER_N.get(bench, 1))
    WRITERS[bench](folder, random.Random(f"train:{bench}:{rng.random()}"), False, n_docs)
    out = []
    for name, count in wanted.items():
        task = local_task(name)
        docs, _ = task.load_docs(folder)
        for doc in rng.sample(docs, min(count, len(docs))):
            images = _visuals(task, doc, folder, frames) if with_visuals else []
            out.append(TrainingSample(images, task.prompt(doc), answer_of(task, doc), kind))
    return out


def _caption_samples(
    n: int, rng: random.Random, scratch: Path, frames: int, with_visuals: bool = True
) -> list[TrainingSample]:
    out = []
    picks = rng.choices(list(CAPTION_MIX), weights=list(CAPTION_MIX.values()), k=n)
    for i, pick in enumerate(picks):
        if pick == "video":
            motion = sample_motion(rng, heldout=False)
            images: list[Image.Image] = []
            if with_visuals:
                path = scratch / "captions" / f"video_{i}.mp4"
                write_video(motion.frames(), path)
                images = sample_frames(path, frames)
            out.append(TrainingSample(images, VIDEO_CAPTION_PROMPT, motion.caption(), "caption"))
            continue
        picture = sample_scene(rng, False) if pick == "scene" else sample_sign(rng, False)
        images = [picture.render()] if with_visuals else []
        out.append(TrainingSample(images, IMAGE_CAPTION_PROMPT, picture.caption(), "caption"))
    return out


def where_questions(n: int, rng: random.Random, with_visuals: bool = True) -> list[TrainingSample]:
    """Open-form "Where is the <colour> <shape>?" on training scenes, answered with the
    object's cell ("top left"); the object is the only one of its colour and shape."""
    out = []
    for _ in range(n):
        scene = sample_scene(rng, False, 1, 4, accept=_has_unique_combo)
        obj = _by_unique_combo(rng, scene)
        assert obj is not None  # accept= guarantees one
        prompt = f"Where is the {object_name(obj.combo)}?\n{SHORT_ANSWER}"
        images = [scene.render()] if with_visuals else []
        out.append(TrainingSample(images, prompt, obj.position, "where"))
    return out


LOOKUP_POOLS: tuple[tuple[str, ...], ...] = (tuple(COLORS), SHAPES, POSITIONS, NUMBER_WORDS[1:])
MC_INSTRUCTION = "Answer with the option's letter from the given choices directly."


def lookup_questions(n: int, rng: random.Random, max_options: int = 4) -> list[TrainingSample]:
    """Text-only multiple-choice questions that name the right option outright::

        Which option is green?
        A. red
        B. green
        Answer with the option's letter from the given choices directly.   -> B

    Only the option -> letter binding has to be learned (the layout of ScienceQA and
    MMBench prompts: a letter, a dot, the option). The data of
    ``experimental/mc_lookup_probe.py``; not part of toy-llava's training (docs/research/toy-llava-multiple-choice.md)."""
    out = []
    for _ in range(n):
        choices = rng.sample(rng.choice(LOOKUP_POOLS), rng.randint(2, max_options))
        right = rng.randrange(len(choices))
        lines = [f"Which option is {choices[right]}?"]
        lines += [f"{chr(65 + i)}. {choice}" for i, choice in enumerate(choices)]
        lines.append(MC_INSTRUCTION)
        out.append(TrainingSample([], "\n".join(lines), chr(65 + right), "lookup"))
    return out


def _samples(
    stage: str,
    n: int,
    seed: int,
    frames: int,
    with_visuals: bool,
    mix: Mapping[str, float] | None = None,
) -> list[TrainingSample]:
    if stage not in STAGES:
        raise ValueError(f"stage should be one of {STAGES}, got {stage!r}")
    if n < 0 or frames < 1:
        raise ValueError("n must be >= 0 and frames >= 1")
    mix = INSTRUCT_MIX if mix is None else mix
    known = [*INSTRUCT_MIX, *TRAINING_ONLY_KINDS]
    unknown = sorted(set(mix) - set(known))
    if unknown:
        raise ValueError(f"mix: unknown kinds {unknown} (known: {sorted(known)})")
    rng = random.Random(f"train:{stage}:{seed}")
    if stage == "align":
        counts = Counter({"caption": n})
    else:
        counts = Counter(rng.choices(list(mix), weights=list(mix.values()), k=n))
    samples: list[TrainingSample] = []
    with tempfile.TemporaryDirectory(prefix="toy-train-") as tmp:
        scratch = Path(tmp)
        for kind in sorted(counts):
            count = counts[kind]
            if kind == "caption":
                samples += _caption_samples(count, rng, scratch, frames, with_visuals)
                continue
            if kind == "where":
                samples += where_questions(count, rng, with_visuals)
                continue
            tasks = KIND_TASKS[kind]
            per_task = Counter(rng.choices(tasks, k=count))
            by_bench: dict[str, dict[str, int]] = {}
            for name in tasks:
                if per_task[name]:
                    by_bench.setdefault(benchmark_of(name), {})[name] = per_task[name]
            for bench, wanted in by_bench.items():
                samples += _benchmark_samples(
                    bench, wanted, rng, scratch, frames, kind, with_visuals
                )
    rng.shuffle(samples)
    return samples


def training_samples(
    stage: str, n: int, seed: int, frames: int = 4, mix: Mapping[str, float] | None = None
) -> list[TrainingSample]:
    """``n`` samples of a training stage, deterministic in ``(stage, n, seed, frames, mix)``.

    ``align``: captions of scenes, signs and videos ("Describe the image briefly." ->
    "a red circle at the top left and a blue star at the bottom right"). ``instruct``:
    every toy task kind (:data:`INSTRUCT_MIX`), prompts rendered by the toy tasks, plus
    some captions. Videos give ``frames`` frames sampled as the harness samples them.
    No scene of the evaluation world can occur (disjoint hash buckets). ``mix`` replaces
    :data:`INSTRUCT_MIX` (kind -> share) for the ``instruct`` stage.
    """
    return _samples(stage, n, seed, frames, with_visuals=True, mix=mix)


VOCAB_SEED = 7
VOCAB_SAMPLES = 2000


def vocabulary_texts() -> Iterator[str]:
    """Every string the model reads or writes on the toy tasks and training data, once
    each: the word lists (also followed by ``?``, ``,`` and ``.``), all evaluation prompts
    and answers (the world is generated if needed), and the prompts and answers of a large
    training draw of both stages (which covers every question template)."""
    seen: set[str] = set()

    def fresh(texts: Any) -> Iterator[str]:
        for text in texts:
            if text not in seen:
                seen.add(text)
                yield text

    yield from fresh([IMAGE_CAPTION_PROMPT, VIDEO_CAPTION_PROMPT, *LEXICON])
    # slot words also appear glued to punctuation ("cat?", "red,", "left.")
    yield from fresh([word + mark for word in LEXICON for mark in "?,."])
    for name in TOY_TASKS:
        task = get_task(name)
        docs, _ = task.load_docs(None)
        for doc in docs:
            yield from fresh([task.prompt(doc), answer_of(task, doc)])
    for stage in STAGES:
        for sample in _samples(stage, VOCAB_SAMPLES, VOCAB_SEED, 1, with_visuals=False):
            yield from fresh([sample.prompt, sample.answer])


# -- calibration sources named by toy-llava's registry entry ----------------------------------
def calibration_texts() -> list[str]:
    """Text calibration for toy models: the world's vocabulary in sorted order."""
    return sorted(set(vocabulary_texts()))


def calibration_images(n: int, seed: int, frames: int) -> list[tuple[Request, list[Any]]]:
    """Image+text calibration for toy models: training-world questions with their images
    (video samples: ``frames`` frames), never an evaluation scene."""
    samples = training_samples("instruct", n, seed=10_000 + seed, frames=frames)
    return [
        (Request("calibration", str(i), s.prompt), list(s.images))
        for i, s in enumerate(samples)
        if s.images
    ]

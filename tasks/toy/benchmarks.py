"""One writer per official benchmark format, filled with scenes of the toy world.

``write_<benchmark>(root, rng, heldout, n_docs)`` writes a mini benchmark under
``root`` in exactly the layout and file formats that the real task loaders read
(see the loaders in ``harness.tasks.<benchmark>``), drawing scenes from the
held-out part of the world (``heldout=True``, evaluation) or the training part.
``n_docs`` is the number of documents the real loader will produce (per split
for POPE, per QA file for VCG; MMBench rows include the circular copies).

The same writers build the evaluation world and the training samples (written
to a scratch folder and read back through the real loaders), so questions,
answers and file round trips (JPEG, MP4) are identical in both.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import math
import random
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness.tasks.common.instructions import SHORT_ANSWER, YES_NO_MME

from .world import (
    ALL_COMBOS,
    COLORS,
    NUMBER_WORDS,
    PLURALS,
    POSITIONS,
    SHAPES,
    WORDS,
    Motion,
    Obj,
    Scene,
    Sign,
    join_words,
    name,
    sample_motion,
    sample_scene,
    sample_sign,
    save_image,
    write_video,
)

Writer = Callable[[Path, random.Random, bool, int], None]
YES_NO = ("yes", "no")


# -- file helpers ---------------------------------------------------------------------------
def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def _write_jsonl(path: Path, records: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    path.write_text(text, encoding="utf-8")


def _units(n_docs: int, per_unit: int) -> int:
    return max(1, math.ceil(n_docs / per_unit))


# -- question makers shared by several benchmarks -------------------------------------------
def _by_unique_shape(rng: random.Random, scene: Scene) -> Obj | None:
    """An object whose shape occurs once in the scene (drawn with ``rng``), or None."""
    shapes = [s for s in SHAPES if scene.count(shape=s) == 1]
    return scene.only(shape=rng.choice(shapes)) if shapes else None


def _by_unique_color(rng: random.Random, scene: Scene) -> Obj | None:
    """An object whose colour occurs once in the scene, or None."""
    colors = [c for c in COLORS if scene.count(color=c) == 1]
    return scene.only(color=rng.choice(colors)) if colors else None


def _by_unique_combo(rng: random.Random, scene: Scene) -> Obj | None:
    """An object whose colour + shape occurs once in the scene, or None."""
    combos = [o.combo for o in scene.objects if scene.count(o.shape, o.color) == 1]
    if not combos:
        return None
    color, shape = rng.choice(combos)
    return scene.only(shape=shape, color=color)


def _has_unique_shape(scene: Scene) -> bool:
    return any(scene.count(shape=x) == 1 for x in SHAPES)


def _has_unique_color(scene: Scene) -> bool:
    return any(scene.count(color=x) == 1 for x in COLORS)


def _has_unique_combo(scene: Scene) -> bool:
    return any(scene.count(o.shape, o.color) == 1 for o in scene.objects)


def _other(rng: random.Random, values: tuple[str, ...] | list[str], not_: str) -> str:
    return rng.choice([v for v in values if v != not_])


# ===========================================================================================
# POPE: coco_pope_{split}.json (JSON lines {question_id, image, text, label}), val2014/
# ===========================================================================================
POPE_SPLITS = ("random", "popular", "adversarial")
POPE_PER_IMAGE = 4  # two yes, two no


def pope_question(combo: tuple[str, str]) -> str:
    return f"Is there a {name(combo)} in the image?"


def pope_negatives(
    rng: random.Random, scene: Scene, split: str, popularity: list[tuple[str, str]], k: int
) -> list[tuple[str, str]]:
    """Absent (color, shape) pairs: uniformly random, the most frequent in the data set,
    or the ones sharing a color or a shape with a present object (adversarial)."""
    present = scene.combos()
    absent = [c for c in ALL_COMBOS if c not in present]
    if split == "random":
        return rng.sample(absent, k)
    if split == "popular":
        return [c for c in popularity if c in absent][:k]
    similar = [c for c in absent if any(c[0] == p[0] or c[1] == p[1] for p in present)]
    if len(similar) >= k:
        return rng.sample(similar, k)
    rest = [c for c in absent if c not in similar]
    return similar + rng.sample(rest, k - len(similar))


def write_pope(root: Path, rng: random.Random, heldout: bool, n_docs: int) -> None:
    scenes = [
        sample_scene(rng, heldout, 2, 4, distinct=True)
        for _ in range(_units(n_docs, POPE_PER_IMAGE))
    ]
    images = [f"toy_pope_{i + 1:06d}.png" for i in range(len(scenes))]
    for scene, image in zip(scenes, images, strict=True):
        save_image(scene.render(), root / "val2014" / image)
    counts = Counter(c for s in scenes for c in s.combos())
    tie_break = list(ALL_COMBOS)
    rng.shuffle(tie_break)
    popularity = sorted(ALL_COMBOS, key=lambda c: (-counts[c], tie_break.index(c)))
    for split in POPE_SPLITS:
        lines = []
        for scene, image in zip(scenes, images, strict=True):
            positives = rng.sample(scene.combos(), 2)
            negatives = pope_negatives(rng, scene, split, popularity, 2)
            for pos, neg in zip(positives, negatives, strict=True):
                for combo, label in ((pos, "yes"), (neg, "no")):
                    lines.append(
                        {
                            "question_id": len(lines) + 1,
                            "image": image,
                            "text": pope_question(combo),
                            "label": label,
                        }
                    )
        _write_jsonl(root / f"coco_pope_{split}.json", lines[:n_docs])


# ===========================================================================================
# GQA: testdev_balanced_questions.json (object keyed by question id), images/{imageId}.jpg
# ===========================================================================================
GQA_PER_IMAGE = 2


def gqa_question(rng: random.Random, scene: Scene) -> tuple[str, str, str, str] | None:
    """(question, answer, types.structural, types.semantic) or None when the kind drawn
    does not fit the scene."""
    kind = rng.choice(
        ["color", "shape", "at_shape", "at_color", "verify", "choose", "logical", "compare"]
    )
    if kind == "color":
        obj = _by_unique_shape(rng, scene)
        if obj is None:
            return None
        shape = obj.shape
        return f"What color is the {shape}?", obj.color, "query", "attr"
    if kind == "shape":
        obj = _by_unique_color(rng, scene)
        if obj is None:
            return None
        color = obj.color
        return f"What shape is the {color} object?", obj.shape, "query", "attr"
    if kind in ("at_shape", "at_color"):
        obj = rng.choice(scene.objects)
        if kind == "at_shape":
            return f"Which shape is at the {obj.position}?", obj.shape, "query", "rel"
        return f"What color is the object at the {obj.position}?", obj.color, "query", "rel"
    if kind == "verify":
        answer = rng.choice(YES_NO)
        if answer == "yes":
            obj = rng.choice(scene.objects)
            shape, cell = obj.shape, obj.cell
        else:
            cell = rng.randrange(4)
            here = scene.at(cell)
            shape = _other(rng, SHAPES, here.shape) if here else rng.choice(SHAPES)
        return f"Is there a {shape} at the {POSITIONS[cell]}?", answer, "verify", "rel"
    if kind == "choose":
        obj = _by_unique_shape(rng, scene)
        if obj is None:
            return None
        shape = obj.shape
        pair = [obj.color, _other(rng, list(COLORS), obj.color)]
        rng.shuffle(pair)
        return f"Is the {shape} {pair[0]} or {pair[1]}?", obj.color, "choose", "attr"
    if kind == "logical":
        present = sorted({o.shape for o in scene.objects}, key=SHAPES.index)
        absent = [s for s in SHAPES if s not in present]
        if rng.choice(YES_NO) == "yes":
            if len(present) < 2:
                return None
            pair, answer = rng.sample(present, 2), "yes"
        else:
            if not absent:
                return None
            pair, answer = [rng.choice(present), rng.choice(absent)], "no"
            rng.shuffle(pair)
        question = f"Are there both a {pair[0]} and a {pair[1]} in the image?"
        return question, answer, "logical", "obj"
    # compare: yes and no equally often, among pairs of shapes that occur once each
    shapes = [s for s in SHAPES if scene.count(shape=s) == 1]
    answer = rng.choice(YES_NO)
    pairs = [
        (a, b)
        for i, a in enumerate(shapes)
        for b in shapes[i + 1 :]
        if (_color_of(scene, a) == _color_of(scene, b)) == (answer == "yes")
    ]
    if not pairs:
        return None
    a, b = rng.choice(pairs)
    if rng.random() < 0.5:
        a, b = b, a
    return f"Do the {a} and the {b} have the same color?", answer, "compare", "attr"


def _color_of(scene: Scene, shape: str) -> str:
    obj = scene.only(shape=shape)
    assert obj is not None
    return obj.color


def write_gqa(root: Path, rng: random.Random, heldout: bool, n_docs: int) -> None:
    data: dict[str, Any] = {}
    for i in range(_units(n_docs, GQA_PER_IMAGE)):
        scene = sample_scene(rng, heldout, 1, 4)
        image_id = f"toygqa{i + 1:06d}"
        save_image(scene.render(), root / "images" / f"{image_id}.jpg")
        asked: list[str] = []
        while len(asked) < GQA_PER_IMAGE:
            made = gqa_question(rng, scene)
            if made is None or made[0] in asked:
                continue
            question, answer, structural, semantic = made
            asked.append(question)
            qid = str(20_000_000 + len(data) + 1)
            data[qid] = {
                "semantic": [],
                "entailed": [],
                "equivalent": [qid],
                "question": question,
                "imageId": image_id,
                "isBalanced": True,
                "groups": {"global": None, "local": None},
                "answer": answer,
                "semanticStr": "",
                "annotations": {"answer": {}, "question": {}, "fullAnswer": {}},
                "types": {
                    "detailed": f"{semantic}{structural.title()}",
                    "semantic": semantic,
                    "structural": structural,
                },
                "fullAnswer": answer,
            }
    keep = dict(list(data.items())[:n_docs])
    _write_json(root / "testdev_balanced_questions.json", keep)


# ===========================================================================================
# VQAv2 val: v2_OpenEnded_mscoco_val2014_questions.json + v2_mscoco_val2014_annotations.json
# ===========================================================================================
VQA_PER_IMAGE = 2


def vqa_question(rng: random.Random, scene: Scene) -> tuple[str, str, str, str] | None:
    """(question, answer, answer_type, question_type) or None."""
    kind = rng.choice(["count_shape", "count_all", "is_there", "are_there", "color", "shape"])
    if kind == "count_shape":
        shape = rng.choice(sorted({o.shape for o in scene.objects}, key=SHAPES.index))
        n = scene.count(shape=shape)
        return f"How many {PLURALS[shape]} are there?", str(n), "number", "how many"
    if kind == "count_all":
        n = len(scene.objects)
        return "How many objects are in the picture?", str(n), "number", "how many"
    if kind == "is_there":
        if rng.random() < 0.5:
            combo, answer = rng.choice(scene.combos()), "yes"
        else:
            combo = rng.choice([c for c in ALL_COMBOS if c not in scene.combos()])
            answer = "no"
        return f"Is there a {name(combo)}?", answer, "yes/no", "is there a"
    if kind == "are_there":
        shape = rng.choice(SHAPES)
        answer = "yes" if scene.count(shape=shape) else "no"
        return f"Are there any {PLURALS[shape]}?", answer, "yes/no", "are there"
    if kind == "color":
        obj = _by_unique_shape(rng, scene)
        if obj is None:
            return None
        shape = obj.shape
        return f"What color is the {shape}?", obj.color, "other", "what color is the"
    obj = _by_unique_color(rng, scene)
    if obj is None:
        return None
    color = obj.color
    return f"What shape is the {color} object?", obj.shape, "other", "what shape is the"


def vqa_answers(answer: str, answer_type: str) -> list[dict[str, Any]]:
    """Ten human answers; for numbers two annotators wrote the number as a word, so the
    official normalisation (number words -> digits) is exercised."""
    out = []
    for j in range(10):
        text = answer
        if answer_type == "number" and j in (3, 7):
            text = NUMBER_WORDS[int(answer)]
        out.append({"answer": text, "answer_confidence": "yes", "answer_id": j + 1})
    return out


def write_vqav2(root: Path, rng: random.Random, heldout: bool, n_docs: int) -> None:
    questions, annotations = [], []
    for i in range(_units(n_docs, VQA_PER_IMAGE)):
        scene = sample_scene(rng, heldout, 1, 4)
        image_id = 900_000 + i + 1
        save_image(scene.render(), root / "val2014" / f"COCO_val2014_{image_id:012d}.jpg")
        asked: list[str] = []
        while len(asked) < VQA_PER_IMAGE:
            made = vqa_question(rng, scene)
            if made is None or made[0] in asked:
                continue
            question, answer, answer_type, question_type = made
            asked.append(question)
            qid = image_id * 1000 + len(asked)
            questions.append({"image_id": image_id, "question": question, "question_id": qid})
            annotations.append(
                {
                    "question_type": question_type,
                    "multiple_choice_answer": answer,
                    "answers": vqa_answers(answer, answer_type),
                    "image_id": image_id,
                    "answer_type": answer_type,
                    "question_id": qid,
                }
            )
    info = {"description": "vlm-harness toy world (VQAv2 format)", "version": "2.0"}
    common = {"info": info, "license": {"name": "toy", "url": ""}, "data_subtype": "val2014"}
    _write_json(
        root / "v2_OpenEnded_mscoco_val2014_questions.json",
        {
            **common,
            "task_type": "Open-Ended",
            "data_type": "mscoco",
            "questions": questions[:n_docs],
        },
    )
    _write_json(
        root / "v2_mscoco_val2014_annotations.json",
        {**common, "data_type": "mscoco", "annotations": annotations[:n_docs]},
    )


# ===========================================================================================
# TextVQA val: TextVQA_0.5.1_val.json + TextVQA_Rosetta_OCR_v0.2_val.json, train_images/
# ===========================================================================================
TEXTVQA_QUESTIONS = ("What word is written on the sign?", "What does the sign say?")


def ocr_tokens(rng: random.Random, sign: Sign) -> list[str]:
    """What a noisy OCR system read: the word, sometimes with one or two other words."""
    tokens = [sign.word] + rng.sample([w for w in WORDS if w != sign.word], rng.randint(0, 2))
    rng.shuffle(tokens)
    return tokens


def write_textvqa(root: Path, rng: random.Random, heldout: bool, n_docs: int) -> None:
    data, ocr = [], []
    for i in range(n_docs):
        sign = sample_sign(rng, heldout)
        image_id = f"{0x70000000 + i + 1:016x}"
        save_image(sign.render(), root / "train_images" / f"{image_id}.jpg")
        question = rng.choice(TEXTVQA_QUESTIONS)
        data.append(
            {
                "question": question,
                "image_id": image_id,
                "image_classes": ["sign"],
                "flickr_original_url": "",
                "flickr_300k_url": "",
                "image_width": 64,
                "image_height": 64,
                "answers": [sign.word] * 10,
                "question_tokens": question.lower().rstrip("?").split(),
                "question_id": 50_000 + i + 1,
                "set_name": "val",
            }
        )
        ocr.append({"image_id": image_id, "ocr_tokens": ocr_tokens(rng, sign), "set_name": "val"})
    head = {"dataset_type": "val", "dataset_name": "textvqa", "dataset_version": "0.5.1"}
    _write_json(root / "TextVQA_0.5.1_val.json", {**head, "data": data})
    _write_json(root / "TextVQA_Rosetta_OCR_v0.2_val.json", {**head, "data": ocr})


# ===========================================================================================
# ScienceQA: problems.json + pid_splits.json, images/test/{pid}/image.png
# ===========================================================================================
SQA_HINTS = ("", "", "Look at the picture.", "Each object has one color and one shape.")


def sqa_problem(rng: random.Random, scene: Scene) -> tuple[str, list[str], int, str] | None:
    """(question, choices, answer index, skill) or None."""
    kind = rng.choice(["shape", "color", "count", "where"])
    k = rng.randint(2, 4)
    if kind == "shape":
        obj = _by_unique_color(rng, scene)
        if obj is None:
            return None
        color = obj.color
        question, right, pool = f"Which shape is {color}?", obj.shape, list(SHAPES)
    elif kind == "color":
        obj = _by_unique_shape(rng, scene)
        if obj is None:
            return None
        shape = obj.shape
        question, right, pool = f"What color is the {shape}?", obj.color, list(COLORS)
    elif kind == "count":
        right = NUMBER_WORDS[len(scene.objects)]
        question, pool = "How many objects are in the picture?", list(NUMBER_WORDS[1:])
    else:
        obj = _by_unique_combo(rng, scene)
        if obj is None:
            return None
        combo = obj.combo
        question, right, pool = f"Where is the {name(combo)}?", obj.position, list(POSITIONS)
    choices = [right] + rng.sample([p for p in pool if p != right], k - 1)
    rng.shuffle(choices)
    return question, choices, choices.index(right), kind


def write_scienceqa(root: Path, rng: random.Random, heldout: bool, n_docs: int) -> None:
    problems: dict[str, Any] = {}
    while len(problems) < n_docs:
        scene = sample_scene(rng, heldout, 1, 4)
        made = sqa_problem(rng, scene)
        if made is None:
            continue
        question, choices, answer, skill = made
        pid = str(100_000 + len(problems) + 1)
        save_image(scene.render(), root / "images" / "test" / pid / "image.png")
        problems[pid] = {
            "question": question,
            "choices": choices,
            "answer": answer,
            "hint": rng.choice(SQA_HINTS),
            "image": "image.png",
            "task": "closed choice",
            "grade": "grade1",
            "subject": "natural science",
            "topic": "toy-world",
            "category": "Shapes and colors",
            "skill": skill,
            "lecture": "",
            "solution": "",
            "split": "test",
        }
    _write_json(root / "problems.json", problems)
    splits = {
        "train": [],
        "val": [],
        "test": list(problems),
        "trainval": [],
        "minival": [],
        "minitrain": [],
    }
    _write_json(root / "pid_splits.json", splits)


# ===========================================================================================
# MME: MME_Benchmark_release_version/{category}/{image, image.txt}, eval_tool GT files,
# LLaVA's llava_mme.jsonl
# ===========================================================================================
MME_CATEGORIES = ("existence", "count", "position", "color", "OCR")


def _count_question(shape: str, n: int) -> str:
    if n == 1:
        return f"Is there exactly one {shape} in this image?"
    return f"Are there exactly {NUMBER_WORDS[n]} {PLURALS[shape]} in this image?"


def _side_question(combo: tuple[str, str], side: str) -> str:
    where = {
        "left": "on the left side",
        "right": "on the right side",
        "top": "in the top half",
        "bottom": "in the bottom half",
    }[side]
    return f"Is the {name(combo)} {where} of this image?"


OPPOSITE = {"left": "right", "right": "left", "top": "bottom", "bottom": "top"}


def mme_pair(rng: random.Random, category: str, heldout: bool) -> tuple[Any, str, str]:
    """(scene or sign, question with answer yes, question with answer no)."""
    if category == "OCR":
        sign = sample_sign(rng, heldout)
        wrong = _other(rng, WORDS, sign.word)
        ask = "Does the sign in this image say {}?"
        return sign, ask.format(sign.word), ask.format(wrong)
    if category == "existence":
        scene = sample_scene(rng, heldout, 1, 3)
        yes = rng.choice(scene.combos())
        no = rng.choice([c for c in ALL_COMBOS if c not in scene.combos()])
        return (
            scene,
            f"Is there a {name(yes)} in this image?",
            f"Is there a {name(no)} in this image?",
        )
    if category == "count":
        scene = sample_scene(rng, heldout, 1, 4)
        shape = rng.choice(sorted({o.shape for o in scene.objects}, key=SHAPES.index))
        n = scene.count(shape=shape)
        wrong = rng.choice([m for m in range(1, 5) if m != n])
        return scene, _count_question(shape, n), _count_question(shape, wrong)
    if category == "position":
        scene = sample_scene(rng, heldout, 1, 4, accept=_has_unique_combo)
        obj = _by_unique_combo(rng, scene)
        assert obj is not None
        combo = obj.combo
        side = obj.column if rng.random() < 0.5 else obj.row
        return scene, _side_question(combo, side), _side_question(combo, OPPOSITE[side])
    scene = sample_scene(rng, heldout, 1, 4, accept=_has_unique_shape)
    obj = _by_unique_shape(rng, scene)
    assert obj is not None
    shape = obj.shape
    wrong = _other(rng, list(COLORS), obj.color)
    return (
        scene,
        f"Is the {shape} in this image {obj.color}?",
        f"Is the {shape} in this image {wrong}?",
    )


def write_mme(root: Path, rng: random.Random, heldout: bool, n_docs: int) -> None:
    """``n_docs`` per category (two per image)."""
    release = root / "MME_Benchmark_release_version"
    llava = []
    for category in MME_CATEGORIES:
        gt_lines = []
        for i in range(_units(n_docs, 2)):
            picture, yes, no = mme_pair(rng, category, heldout)
            image = f"toy_{category.lower()}_{i + 1:04d}.png"
            save_image(picture.render(), release / category / image)
            pairs = [(f"{yes} {YES_NO_MME}", "Yes"), (f"{no} {YES_NO_MME}", "No")]
            (release / category / f"{Path(image).stem}.txt").write_text(
                "".join(f"{q}\t{a}\n" for q, a in pairs), encoding="utf-8"
            )
            for question, answer in pairs:
                gt_lines.append(f"{image}\t{question}\t{answer}\n")
            for plain in (yes, no):
                llava.append(
                    {
                        "question_id": f"{category}/{image}",
                        "image": f"{category}/{image}",
                        "text": f"{plain}\n{SHORT_ANSWER}",
                        "category": category,
                    }
                )
        path = root / "eval_tool" / "Your_Results" / f"{category}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(gt_lines), encoding="utf-8")
    _write_jsonl(root / "llava_mme.jsonl", llava)


# ===========================================================================================
# MMBench dev: one TSV with base64 images and circular copies (index + k * 1e6)
# ===========================================================================================
MMBENCH_COLUMNS = (
    "index",
    "question",
    "hint",
    "A",
    "B",
    "C",
    "D",
    "answer",
    "category",
    "image",
    "source",
    "l2-category",
    "comment",
    "split",
)
MMBENCH_ROTATIONS = 4
MMBENCH_HINTS = {
    "scene": "The image shows simple shapes on a plain background.",
    "sign": "The image shows a sign with a word on it.",
}


def mmbench_question(rng: random.Random, heldout: bool) -> tuple[Any, str, list[str], str, str]:
    """(picture, question, four options with the right one first, category, l2-category)."""
    kind = rng.choice(["color", "shape", "where", "ocr"])
    instance = "finegrained_perception (instance-level)"
    if kind == "ocr":
        sign = sample_sign(rng, heldout)
        others = rng.sample([w for w in WORDS if w != sign.word], 3)
        return sign, "Which word is written on the sign?", [sign.word, *others], "ocr", instance
    if kind == "color":
        scene = sample_scene(rng, heldout, 1, 4, accept=_has_unique_shape)
        obj = _by_unique_shape(rng, scene)
        assert obj is not None
        shape = obj.shape
        options = [obj.color] + [c for c in COLORS if c != obj.color]
        return scene, f"What color is the {shape}?", options, "attribute_recognition", instance
    if kind == "shape":
        scene = sample_scene(rng, heldout, 1, 4, accept=_has_unique_color)
        obj = _by_unique_color(rng, scene)
        assert obj is not None
        color = obj.color
        options = [obj.shape] + [s for s in SHAPES if s != obj.shape]
        question = f"What shape is the {color} object?"
        return scene, question, options, "attribute_recognition", instance
    scene = sample_scene(rng, heldout, 1, 4, accept=_has_unique_combo)
    obj = _by_unique_combo(rng, scene)
    assert obj is not None
    combo = obj.combo
    options = [obj.position] + [p for p in POSITIONS if p != obj.position]
    return scene, f"Where is the {name(combo)}?", options, "object_localization", instance


def _png_base64(picture: Any) -> str:
    buffer = io.BytesIO()
    picture.render().save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def write_mmbench(root: Path, rng: random.Random, heldout: bool, n_docs: int) -> None:
    """``n_docs`` rows: questions times their 4 circular copies (the same image)."""
    rows: list[list[str]] = []
    for i in range(_units(n_docs, MMBENCH_ROTATIONS)):
        picture, question, options, category, l2 = mmbench_question(rng, heldout)
        right = options[0]
        rng.shuffle(options)
        hint = ""
        if rng.random() < 0.3:
            hint = MMBENCH_HINTS["sign" if isinstance(picture, Sign) else "scene"]
        image = _png_base64(picture)
        for k in range(MMBENCH_ROTATIONS):
            rotated = options[k:] + options[:k]
            letter = "ABCD"[rotated.index(right)]
            index = i + k * 1_000_000
            rows.append(
                [
                    str(index),
                    question,
                    hint,
                    *rotated,
                    letter,
                    category,
                    image if k == 0 else str(i),
                    "toy-world",
                    l2,
                    "",
                    "dev",
                ]
            )
    rows = sorted(rows[:n_docs], key=lambda r: int(r[0]))
    root.mkdir(parents=True, exist_ok=True)
    with (root / "mmbench_dev_20230712.tsv").open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh, delimiter="\t", lineterminator="\n")
        writer.writerow(MMBENCH_COLUMNS)
        writer.writerows(rows)


# ===========================================================================================
# VCG: Test_Videos/{video_name}.mp4 + generic_qa.json, temporal_qa.json, consistency_qa.json
# ===========================================================================================
def vcg_generic(rng: random.Random, m: Motion) -> tuple[str, str]:
    question = rng.choice(["What is happening in the video?", "Can you describe the video?"])
    return question, f"A {m.color} {m.shape} moves {m.path()}."


def vcg_temporal(rng: random.Random, m: Motion) -> tuple[str, str]:
    kind = rng.choice(["direction", "start", "end"])
    thing = f"{m.color} {m.shape}"
    if kind == "direction":
        return f"In which direction does the {thing} move?", f"The {thing} moves {m.path()}."
    side = m.start if kind == "start" else m.end
    moment = "beginning" if kind == "start" else "end"
    where = f"on the {side}" if side in ("left", "right") else f"at the {side}"
    return (
        f"Where is the {thing} at the {moment} of the video?",
        f"At the {moment} of the video the {thing} is {where}.",
    )


def vcg_consistency(rng: random.Random, m: Motion) -> tuple[str, str, str]:
    if rng.random() < 0.5:
        return (
            "What color is the moving shape?",
            "Which color does the object in the video have?",
            f"The moving {m.shape} is {m.color}.",
        )
    return (
        "What shape moves in the video?",
        "Which kind of shape can be seen moving?",
        f"A {m.color} {m.shape} moves in the video.",
    )


def write_vcg(root: Path, rng: random.Random, heldout: bool, n_docs: int) -> None:
    """``n_docs`` generic and temporal questions and ``n_docs`` consistency documents
    (``n_docs / 2`` pairs); one video per generic question."""
    generic, temporal, consistency = [], [], []
    for i in range(n_docs):
        motion = sample_motion(rng, heldout)
        video = f"v_toy_{i + 1:05d}"
        write_video(motion.frames(), root / "Test_Videos" / f"{video}.mp4")
        q, a = vcg_generic(rng, motion)
        generic.append({"video_name": video, "Q": q, "A": a})
        q, a = vcg_temporal(rng, motion)
        temporal.append({"video_name": video, "Q": q, "A": a})
        q1, q2, a = vcg_consistency(rng, motion)
        consistency.append({"video_name": video, "Q1": q1, "Q2": q2, "A": a})
    _write_json(root / "generic_qa.json", generic)
    _write_json(root / "temporal_qa.json", temporal)
    _write_json(root / "consistency_qa.json", consistency[: _units(n_docs, 2)])


# ===========================================================================================
# Quilt GPT review: quilt_gpt_{questions,answers,captions}.jsonl, images/
# ===========================================================================================
def quilt_caption(scene: Scene) -> str:
    """The judge's context: one line per object with its box as fractions of the image."""
    lines = []
    for o in scene.objects:
        box = ", ".join(f"{v / 64:.2f}" for v in o.box())
        lines.append(f"A {o.color} {o.shape} [{box}].")
    return "\n".join(lines)


def quilt_question(rng: random.Random, scene: Scene) -> tuple[str, str, str] | None:
    """(question, GPT-4 style reference answer, category) or None."""
    kind = rng.choice(["detail", "color", "count"])
    if kind == "detail":
        items = [f"a {o.color} {o.shape} at the {o.position}" for o in scene.objects]
        return (
            "Describe this image in detail.",
            f"The image shows {join_words(items)} on a plain light gray background.",
            "detail",
        )
    if kind == "color":
        obj = _by_unique_shape(rng, scene)
        if obj is None:
            return None
        shape = obj.shape
        return (
            f"What color is the {shape} in this image?",
            f"The {shape} in this image is {obj.color}.",
            "conv",
        )
    n = len(scene.objects)
    answer = (
        "There is one object in this image."
        if n == 1
        else (f"There are {NUMBER_WORDS[n]} objects in this image.")
    )
    return "How many objects are in this image?", answer, "conv"


def write_quilt(root: Path, rng: random.Random, heldout: bool, n_docs: int) -> None:
    questions, answers, captions = [], [], []
    while len(questions) < n_docs:
        scene = sample_scene(rng, heldout, 1, 4)
        made = quilt_question(rng, scene)
        if made is None:
            continue
        question, reference, category = made
        qid = len(questions) + 1
        image = f"toy_quilt_{qid:05d}.png"
        save_image(scene.render(), root / "images" / image)
        questions.append(
            {"question_id": qid, "image": image, "text": question, "category": category}
        )
        answers.append(
            {
                "question_id": qid,
                "text": reference,
                "answer_id": f"toy{qid}",
                "model_id": "gpt-4",
                "metadata": {},
            }
        )
        kind = "sparse" if len(scene.objects) <= 2 else "dense"
        captions.append(
            {"question_id": qid, "image": image, "caption": quilt_caption(scene), "type": kind}
        )
    _write_jsonl(root / "quilt_gpt_questions.jsonl", questions)
    _write_jsonl(root / "quilt_gpt_answers.jsonl", answers)
    _write_jsonl(root / "quilt_gpt_captions.jsonl", captions)


# ===========================================================================================
WRITERS: dict[str, Writer] = {
    "pope": write_pope,
    "gqa": write_gqa,
    "vqav2": write_vqav2,
    "textvqa": write_textvqa,
    "scienceqa": write_scienceqa,
    "mme": write_mme,
    "mmbench": write_mmbench,
    "vcg": write_vcg,
    "quilt": write_quilt,
}

# Documents per benchmark in the evaluation world (the meaning of n_docs is per writer).
EVAL_DOCS: dict[str, int] = {
    "pope": 200,  # per split: 50 images x 4 questions
    "gqa": 200,
    "vqav2": 200,
    "textvqa": 150,
    "scienceqa": 150,
    "mme": 40,  # per category: 20 images x 2 questions, 5 categories
    "mmbench": 200,  # 50 questions x 4 circular copies
    "vcg": 40,  # 40 videos: 40 generic, 40 temporal, 40 consistency documents
    "quilt": 60,
}

LEXICON: tuple[str, ...] = (
    *COLORS,
    *SHAPES,
    *PLURALS.values(),
    *POSITIONS,
    *NUMBER_WORDS,
    *WORDS,
    *(w.upper() for w in WORDS),
    *(str(i) for i in range(5)),
    *YES_NO,
    "Yes",
    "No",
)

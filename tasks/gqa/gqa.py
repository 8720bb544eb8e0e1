"""GQA testdev-balanced loader and scorer: the official eval.py accuracy, binary and open.

The official ``testdev_balanced_questions.json`` is an object keyed by question id
with ``imageId, question, answer, isBalanced, types{structural, ...}``; images are
``images/{imageId}.jpg``. LLaVA's ``llava_gqa_testdev_balanced.jsonl`` holds the
same questions as JSON lines (``text`` ends with the short-answer instruction).
Doc ids are GQA question ids (strings) in both.

A prediction is the model text with trailing periods stripped, lower-cased
(LLaVA's convert_gqa_for_eval.py); it is right when it equals ``answer``.
Accuracy counts balanced questions only; binary vs open is ``types.structural
== "query"`` (open). Consistency, validity, plausibility and distribution need
the full GQA question set and scene graphs and are not computed here.

Without the official file (only LLaVA's) there is no ground truth: the task then
reports only ``answered`` (share of non-empty predictions) and no accuracy, so a
generation run still completes, its outputs are kept, and ``harness export``
writes the ``gqa_predictions`` file for the official script. Pass
``testdev_balanced_questions.json`` to get accuracy.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from harness.datafiles import read_json, require
from harness.errors import DataFileError
from harness.task import Extracted
from harness.tasks.common.instructions import SHORT_ANSWER
from harness.tasks.common.vqa_eval import read_llava_questions

OFFICIAL_NAME = "testdev_balanced_questions.json"
LLAVA_NAME = "llava_gqa_testdev_balanced.jsonl"


def prediction(raw: str) -> str:
    """LLaVA's GQA prediction rule: strip trailing periods, lower-case."""
    return raw.rstrip(".").lower()


def read_official(path: Path) -> list[dict[str, Any]]:
    data = read_json(path)
    if not isinstance(data, dict):
        raise DataFileError(
            f"{path}: expected the official GQA questions JSON (an object keyed by question id), "
            f"got a JSON {type(data).__name__}"
        )
    out = []
    for qid, rec in data.items():
        where = f"question {qid}"
        if not isinstance(rec, dict):
            raise DataFileError(f"{path}:{where}: expected a JSON object, got {type(rec).__name__}")
        types = require(rec, "types", path, where, dict)
        image_id = require(rec, "imageId", path, where, str)
        out.append(
            {
                "doc_id": str(qid),
                "question_id": str(qid),
                "image": f"{image_id}.jpg",
                "question": require(rec, "question", path, where, str),
                "answer": require(rec, "answer", path, where, str),
                "balanced": require(rec, "isBalanced", path, where, bool),
                "structural": require(types, "structural", path, f"{where}.types", str),
            }
        )
    return out


def read_llava(path: Path) -> list[dict[str, Any]]:
    return [
        {
            "doc_id": str(q["question_id"]),
            "question_id": str(q["question_id"]),
            "image": q["image"],
            "question": q["question"],
            "answer": None,
            "balanced": None,
            "structural": None,
            "line": q["line"],
        }
        for q in read_llava_questions(path, [SHORT_ANSWER])
    ]


def load(files: dict[str, Path | None], options: dict[str, Any]) -> list[dict[str, Any]]:
    ann_path, q_path = files.get("annotations"), files.get("questions")
    if ann_path is None and q_path is None:
        raise DataFileError(
            f"GQA needs {OFFICIAL_NAME} (data file role 'annotations', with answers) or LLaVA's "
            f"{LLAVA_NAME} (role 'questions'); pass --data-root DIR or --data-file ROLE=PATH"
        )
    if ann_path is None:
        assert q_path is not None
        return [{k: v for k, v in d.items() if k != "line"} for d in read_llava(q_path)]
    docs = read_official(ann_path)
    if q_path is not None:
        _check_same_questions(docs, read_llava(q_path), ann_path, q_path)
    return docs


def _check_same_questions(
    docs: list[dict[str, Any]], llava: list[dict[str, Any]], ann_path: Path, q_path: Path
) -> None:
    """LLaVA's file must hold the same questions as the official one (it adds nothing else)."""
    official = {d["doc_id"]: d for d in docs}
    for q in llava:
        doc = official.get(q["doc_id"])
        if doc is None:
            raise DataFileError(
                f"{q_path}:{q['line']}: question {q['doc_id']} is not in {ann_path}; "
                "the two files are not the same GQA split"
            )
        if doc["question"].strip() != q["question"].strip() or doc["image"] != q["image"]:
            raise DataFileError(
                f"{q_path}:{q['line']}: question/image {q['question']!r} / {q['image']!r} differs "
                f"from {ann_path} ({doc['question']!r} / {doc['image']!r})"
            )
    if len(llava) != len(docs):
        raise DataFileError(
            f"{q_path} has {len(llava)} questions but {ann_path} has {len(docs)}; "
            "the two files are not the same GQA split"
        )


def doc_to_text(doc: dict[str, Any], options: dict[str, Any]) -> str:
    return f"{doc['question']}\n{SHORT_ANSWER}"


def extract(raw: str, doc: dict[str, Any], options: dict[str, Any]) -> Extracted:
    return Extracted(prediction(raw), True)


def process(doc: dict[str, Any], extracted: Extracted, ctx: Any) -> dict[str, Any]:
    # No answer (NO_ANSWER) is wrong: GQA's eval.py refuses a result set that misses a
    # balanced question, and LLaVA pads missing VQA answers with '' (counted wrong).
    answered = extracted.answer is not None and bool(extracted.answer.strip())
    if doc["answer"] is None:
        return {"correct": None, "binary": None, "balanced": None, "has_gt": False,
                "answered": answered}  # fmt: skip
    return {
        "correct": answered and extracted.answer == doc["answer"],
        "binary": doc["structural"] != "query",
        "balanced": doc["balanced"],
        "has_gt": True,
        "answered": answered,
    }


def _percent(values: np.ndarray) -> float:
    return 100 * float(np.mean(values)) if len(values) else float("nan")


def aggregate(cols: dict[str, np.ndarray]) -> dict[str, float]:
    answered = _percent(cols["answered"])
    has_gt = cols["has_gt"] > 0.5
    if not has_gt.any():
        return {"answered": answered}
    scored = has_gt & (cols["balanced"] > 0.5)
    correct = cols["correct"][scored]
    binary = cols["binary"][scored] > 0.5
    return {
        "accuracy": _percent(correct),
        "binary": _percent(correct[binary]),
        "open": _percent(correct[~binary]),
        "answered": answered,
    }

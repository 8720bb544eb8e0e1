"""VQAv2 loader and scorer: the official vqaEval accuracy on val, answered share on test-dev.

Questions come from the official ``v2_OpenEnded_mscoco_{split}_questions.json``
(``questions[]`` of ``{image_id, question, question_id}``; image
``COCO_{image_split}_{image_id:012d}.jpg``) or from LLaVA's converted JSON lines
``{question_id, image, text, category}`` whose text ends with the short-answer
instruction. Val annotations ``v2_mscoco_val2014_annotations.json`` add the 10
human answers, ``answer_type`` and ``question_type``. Doc ids are question ids.

Test-dev has no public ground truth: its only metric is the share of questions
answered, and the submission file comes from ``harness export`` (``vqav2_evalai``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from harness.datafiles import require
from harness.errors import DataFileError
from harness.task import Extracted
from harness.tasks.common.instructions import SHORT_ANSWER
from harness.tasks.common.vqa_eval import (
    clean_whitespace,
    evalai_process,
    int_id,
    is_json_lines,
    json_records,
    percent_by_type,
    read_llava_questions,
    string_answers,
    vqa_v2_accuracy,
)

ANSWER_TYPES = {"yes/no": "yes_no", "number": "number", "other": "other"}


def read_questions(path: Path, image_split: str) -> list[dict[str, Any]]:
    """Questions from an official questions JSON or a LLaVA question file (sniffed)."""
    out = []
    if is_json_lines(path):
        for q in read_llava_questions(path, [SHORT_ANSWER]):
            qid = int_id(q["question_id"], path, q["line"])
            out.append({"question_id": qid, "image": q["image"], "question": q["question"]})
        return out
    for where, rec in json_records(path, "questions", "the official VQAv2 questions JSON"):
        image_id = int_id(require(rec, "image_id", path, where), path, where, "image_id")
        out.append(
            {
                "question_id": int_id(require(rec, "question_id", path, where), path, where),
                "image": f"COCO_{image_split}_{image_id:012d}.jpg",
                "question": require(rec, "question", path, where, str),
            }
        )
    return out


def read_annotations(path: Path) -> dict[int, dict[str, Any]]:
    """Question id -> answers (10 strings), answer_type and question_type."""
    out: dict[int, dict[str, Any]] = {}
    for where, rec in json_records(path, "annotations", "the official VQAv2 annotations JSON"):
        qid = int_id(require(rec, "question_id", path, where), path, where)
        answer_type = require(rec, "answer_type", path, where, str)
        if answer_type not in ANSWER_TYPES:
            raise DataFileError(
                f"{path}:{where}: field 'answer_type' should be one of {sorted(ANSWER_TYPES)}, "
                f"got {answer_type!r}"
            )
        out[qid] = {
            "answers": string_answers(rec, path, where),
            "answer_type": answer_type,
            "question_type": require(rec, "question_type", path, where, str),
        }
    return out


def load(files: dict[str, Path | None], options: dict[str, Any]) -> list[dict[str, Any]]:
    q_path = files["questions"]
    assert q_path is not None  # a required role
    questions = read_questions(q_path, options["image_split"])
    ann_path = files.get("annotations")
    if ann_path is None:
        return [{"doc_id": str(q["question_id"]), **q} for q in questions]
    annotations = read_annotations(ann_path)
    docs = []
    for q in questions:
        ann = annotations.get(q["question_id"])
        if ann is None:
            raise DataFileError(
                f"{ann_path}: no annotation for question {q['question_id']} of {q_path}; "
                "are the questions and annotations of the same split?"
            )
        docs.append({"doc_id": str(q["question_id"]), **q, **ann})
    return docs


def doc_to_text(doc: dict[str, Any], options: dict[str, Any]) -> str:
    return f"{doc['question']}\n{SHORT_ANSWER}"


def extract_answer(raw: str, doc: dict[str, Any], options: dict[str, Any]) -> Extracted:
    """The raw answer with newlines/tabs cleaned; normalisation depends on the GT (process)."""
    return Extracted(clean_whitespace(raw), True)


def process(doc: dict[str, Any], extracted: Extracted, ctx: Any) -> dict[str, Any]:
    # No answer (NO_ANSWER) scores 0: the official loader (GT-Vision-Lab/VQA vqa.py loadRes)
    # refuses an incomplete result set and LLaVA's convert_vqav2_for_submission.py pads
    # missing answers with '' (wrong).
    answer = extracted.answer
    return {
        "score": 0.0 if answer is None else vqa_v2_accuracy(answer, doc["answers"]),
        "answer_type": doc["answer_type"],
        "question_type": doc["question_type"],
    }


def aggregate(cols: dict[str, np.ndarray]) -> dict[str, float]:
    scores = cols["score"]
    out = {"accuracy": 100 * float(np.mean(scores)) if len(scores) else float("nan")}
    out.update(percent_by_type(scores, cols["answer_type"], ANSWER_TYPES))
    return out


def extract_submission(raw: str, doc: dict[str, Any], options: dict[str, Any]) -> Extracted:
    """The answer as it is uploaded: through the EvalAI answer processor."""
    return Extracted(evalai_process(raw), True)


def process_answered(doc: dict[str, Any], extracted: Extracted, ctx: Any) -> dict[str, Any]:
    return {"answered": bool(extracted.answer)}


def aggregate_answered(cols: dict[str, np.ndarray]) -> dict[str, float]:
    answered = cols["answered"]
    return {"answered": 100 * float(np.mean(answered)) if len(answered) else float("nan")}

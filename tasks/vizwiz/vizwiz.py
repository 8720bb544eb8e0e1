"""VizWiz-VQA loaders and scorers: VQA accuracy with the EvalAI processor on val, test-dev unscored.

Official annotation files ``val.json`` / ``test.json`` are JSON lists of
``{image, question}`` (val adds ``answers[10] {answer, answer_confidence},
answerable, answer_type``); images ``val/{image}`` and ``test/{image}``.
LLaVA's ``llava_test.jsonl`` holds the test questions as JSON lines whose
``text`` ends with the "Unanswerable" line and the short-answer instruction;
its ``question_id`` is the question's position in ``test.json``, so doc ids are
that position for the official files too and both formats give the same ids.

The prompt is LLaVA-1.5's: ``question\\n{UNANSWERABLE}\\n{SHORT_ANSWER}``.
Val is scored like TextVQA (EvalAI processor on the prediction and on exactly 10
answers, then mean over the leave-one-out subsets of ``min(1, matches/3)``),
overall and per ``answer_type``. Test-dev has no public ground truth: it reports
the answered share and the share answered "unanswerable"; ``harness export``
writes the ``[{image, answer}]`` submission.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from harness.datafiles import require
from harness.errors import DataFileError
from harness.task import Extracted
from harness.tasks.common.instructions import SHORT_ANSWER, UNANSWERABLE
from harness.tasks.common.vqa_eval import (
    N_ANSWERS,
    evalai_process,
    is_json_lines,
    json_records,
    leave_one_out_accuracy,
    percent_by_type,
    read_llava_questions,
    string_answers,
)

ANSWER_TYPES = {
    "yes/no": "yes_no",
    "number": "number",
    "other": "other",
    "unanswerable": "unanswerable",
}
UNANSWERABLE_ANSWER = "unanswerable"


def read_official(path: Path, with_answers: bool) -> list[dict[str, Any]]:
    docs = []
    for index, (where, rec) in enumerate(
        json_records(path, None, "the official VizWiz annotations JSON")
    ):
        doc = {
            "doc_id": str(index),
            "image": require(rec, "image", path, where, str),
            "question": require(rec, "question", path, where, str),
        }
        if with_answers:
            answer_type = require(rec, "answer_type", path, where, str)
            if answer_type not in ANSWER_TYPES:
                raise DataFileError(
                    f"{path}:{where}: field 'answer_type' should be one of "
                    f"{sorted(ANSWER_TYPES)}, got {answer_type!r}"
                )
            doc["answers"] = string_answers(rec, path, where, count=N_ANSWERS)
            doc["answer_type"] = answer_type
            doc["answerable"] = bool(require(rec, "answerable", path, where, (int, bool)))
        docs.append(doc)
    return docs


def load_val(files: dict[str, Path | None], options: dict[str, Any]) -> list[dict[str, Any]]:
    path = files["annotations"]
    assert path is not None  # a required role
    if is_json_lines(path):
        raise DataFileError(
            f"{path}: a JSON-lines question file has no answers; vizwiz_val needs the official "
            "val.json (a JSON list with 'answers')"
        )
    return read_official(path, with_answers=True)


def load_test(files: dict[str, Path | None], options: dict[str, Any]) -> list[dict[str, Any]]:
    """Test questions from LLaVA's llava_test.jsonl or the official test.json."""
    path = files["questions"]
    assert path is not None  # a required role
    if not is_json_lines(path):
        return read_official(path, with_answers=False)
    return [
        {"doc_id": str(q["question_id"]), "image": q["image"], "question": q["question"]}
        for q in read_llava_questions(path, [SHORT_ANSWER, UNANSWERABLE])
    ]


def doc_to_text(doc: dict[str, Any], options: dict[str, Any]) -> str:
    return f"{doc['question']}\n{UNANSWERABLE}\n{SHORT_ANSWER}"


def extract(raw: str, doc: dict[str, Any], options: dict[str, Any]) -> Extracted:
    return Extracted(evalai_process(raw), True)


def process(doc: dict[str, Any], extracted: Extracted, ctx: Any) -> dict[str, Any]:
    # No answer (NO_ANSWER) scores 0: LLaVA's convert_vizwiz_for_submission.py asserts every
    # question has an answer, so the official route never scores an incomplete set.
    answers = [evalai_process(a) for a in doc["answers"]]
    answer = extracted.answer
    return {
        "score": 0.0 if answer is None else leave_one_out_accuracy(answer, answers),
        "answer_type": doc["answer_type"],
        "answerable": doc["answerable"],
    }


def aggregate(cols: dict[str, np.ndarray]) -> dict[str, float]:
    scores = cols["score"]
    out = {"accuracy": 100 * float(np.mean(scores)) if len(scores) else float("nan")}
    out.update(percent_by_type(scores, cols["answer_type"], ANSWER_TYPES))
    return out


def process_test(doc: dict[str, Any], extracted: Extracted, ctx: Any) -> dict[str, Any]:
    return {
        "answered": bool(extracted.answer),
        "unanswerable": extracted.answer == UNANSWERABLE_ANSWER,
    }


def aggregate_test(cols: dict[str, np.ndarray]) -> dict[str, float]:
    if not len(cols["answered"]):
        return {"answered": float("nan"), "unanswerable": float("nan")}
    return {
        "answered": 100 * float(np.mean(cols["answered"])),
        "unanswerable": 100 * float(np.mean(cols["unanswerable"])),
    }

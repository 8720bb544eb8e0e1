"""VQAv2 test-dev submission for eval.ai (challenge 830): ``[{question_id, answer}]`` for every
test2015 question, answers EvalAI-processed; the task's ``export.writer`` hook. The list is
validated against the schema below before it is written atomically."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from harness.submission import validate_rows, write_json_atomic
from harness.tasks.common.evalai import list_schema, processed_answer
from harness.tasks.vqav2.vqav2 import read_questions

#: eval.ai VQA challenge (830): every test2015 question id once, answers as strings.
VQAV2_SCHEMA = list_schema({"question_id": {"type": "integer"}, "answer": {"type": "string"}})


def write_vqav2_testdev(
    task: Any,
    docs: list[dict[str, Any]],
    outputs: Mapping[str, str],
    out: Path,
    files: Mapping[str, Path | None],
    options: Mapping[str, Any],
) -> int:
    """``[{question_id, answer}]`` for every test2015 question (when that file is given).

    Test-dev answers come from the outputs; other test2015 questions get ``""``,
    as LLaVA's convert_vqav2_for_submission.py does. Without the test2015 file
    the rows are the task's own documents.
    """
    answers = {int(d["question_id"]): processed_answer(outputs, d["doc_id"]) for d in docs}
    all_path = files.get("all_questions")
    if all_path is None:
        ids = list(answers)
    else:
        ids = [
            q["question_id"] for q in read_questions(all_path, str(options.get("image_split", "")))
        ]
        known = set(ids)
        stray = next((qid for qid in answers if qid not in known), None)
        if stray is not None:
            raise HarnessError(
                f"vqav2_evalai export: question {stray} of task {task.name} is not in {all_path}; "
                "is that the test2015 question file?"
            )
    rows = [{"question_id": qid, "answer": answers.get(qid, "")} for qid in ids]
    validate_rows(rows, VQAV2_SCHEMA, "vqav2_evalai", unique="question_id")
    write_json_atomic(rows, out)
    return len(rows)

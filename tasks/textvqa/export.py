"""TextVQA submission for eval.ai: ``[{question_id, answer}]`` for every document, answers
EvalAI-processed; the task's ``export.writer`` hook. Rows are not checked for unique ids:
with only LLaVA's question file the ids are image ids, which several questions share."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from harness.submission import validate_rows, write_json_atomic
from harness.tasks.common.evalai import list_schema, processed_answer

#: TextVQA (eval.ai / m4c): official integer ids; LLaVA's image-id strings when only its file is used.
TEXTVQA_SCHEMA = list_schema(
    {"question_id": {"type": ["integer", "string"]}, "answer": {"type": "string"}}
)


def write_textvqa(
    task: Any,
    docs: list[dict[str, Any]],
    outputs: Mapping[str, str],
    out: Path,
    files: Mapping[str, Path | None],
    options: Mapping[str, Any],
) -> int:
    """``[{question_id, answer}]`` for every document, answers EvalAI-processed."""
    rows = [
        {"question_id": d["question_id"], "answer": processed_answer(outputs, d["doc_id"])}
        for d in docs
    ]
    validate_rows(rows, TEXTVQA_SCHEMA, "textvqa_evalai")
    write_json_atomic(rows, out)
    return len(rows)

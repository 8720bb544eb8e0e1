"""VizWiz-VQA submission for eval.ai: ``[{image, answer}]``, one row per image file name,
answers EvalAI-processed; the task's ``export.writer`` hook."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from harness.submission import validate_rows, write_json_atomic
from harness.tasks.common.evalai import list_schema, processed_answer

#: VizWiz-VQA (eval.ai): one row per image file name.
VIZWIZ_SCHEMA = list_schema(
    {"image": {"type": "string", "minLength": 1}, "answer": {"type": "string"}}
)


def write_vizwiz(
    task: Any,
    docs: list[dict[str, Any]],
    outputs: Mapping[str, str],
    out: Path,
    files: Mapping[str, Path | None],
    options: Mapping[str, Any],
) -> int:
    """``[{image, answer}]`` for every document, answers EvalAI-processed."""
    rows = [{"image": d["image"], "answer": processed_answer(outputs, d["doc_id"])} for d in docs]
    validate_rows(rows, VIZWIZ_SCHEMA, "vizwiz_evalai", unique="image")
    write_json_atomic(rows, out)
    return len(rows)

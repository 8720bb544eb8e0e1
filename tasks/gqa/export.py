"""GQA predictions file for the official eval.py: ``[{"questionId": str, "prediction": str}]``.

Predictions follow LLaVA's convert_gqa_for_eval.py (trailing periods stripped,
lower-cased); every document gets a row, ``""`` when it has no output. The list
is validated with ``jsonschema`` and written atomically.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from harness.submission import validate_rows, write_json_atomic
from harness.tasks.gqa.gqa import prediction

GQA_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "array",
    "items": {
        "type": "object",
        "properties": {
            "questionId": {"type": "string", "minLength": 1},
            "prediction": {"type": "string"},
        },
        "required": ["prediction", "questionId"],
        "additionalProperties": False,
    },
}


def write_gqa(
    task: Any,
    docs: list[dict[str, Any]],
    outputs: Mapping[str, str],
    out: Path,
    files: Mapping[str, Path | None],
    options: Mapping[str, Any],
) -> int:
    rows = []
    for doc in docs:
        raw = outputs.get(doc["doc_id"])
        rows.append(
            {"questionId": doc["question_id"], "prediction": "" if raw is None else prediction(raw)}
        )
    validate_rows(rows, GQA_SCHEMA, "gqa_predictions", unique="questionId")
    write_json_atomic(rows, out)
    return len(rows)

"""ScienceQA result JSON in the layout of LLaVA-1.5's ``eval_science_qa.py --output-result``.

Layout (one JSON object)::

    {
      "acc": 74.39,            # accuracy over all documents, x100 (unrounded)
      "correct": 3155,         # documents answered right
      "count": 4241,           # documents (missing predictions count as FAILED)
      "results": {"4": 1, ...},      # id -> predicted choice index, -1 when the parsed
                                     #   letter is FAILED or beyond the choices (official)
      "outputs": {"4": "B", ...},    # id -> raw model text ("FAILED" when missing)
      "img_acc": 71.64, "img_correct": 1445, "img_count": 2017,  # additions: IMG subset
      "missing": ["17", ...]   # addition: ids without an answer (their outputs say FAILED)
    }

A document without an answer counts as wrong in ``acc`` and is left out of the IMG
subset, as ``eval_science_qa.py`` scores it (its placeholder prompt holds no
``<image>``) and as ``harness score`` does; ``missing`` lets the file be scored again
to the same numbers.

``results`` holds choice indices as the official file does (not letters).
:func:`harness.tasks.scienceqa.scienceqa.read_result_file` reads ``outputs``
back as predictions, so an exported file re-scores to the same numbers.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jsonschema

from harness.errors import HarnessError
from harness.submission import write_json_atomic
from harness.tasks.scienceqa.scienceqa import FAILED, LETTERS, parse_letter, pred_index

SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["acc", "correct", "count", "results", "outputs"],
    "properties": {
        "acc": {"type": "number", "minimum": 0, "maximum": 100},
        "correct": {"type": "integer", "minimum": 0},
        "count": {"type": "integer", "minimum": 1},
        "results": {
            "type": "object",
            "additionalProperties": {"type": "integer", "minimum": -1, "maximum": len(LETTERS) - 1},
        },
        "outputs": {"type": "object", "additionalProperties": {"type": "string"}},
        "img_acc": {"type": ["number", "null"]},
        "img_correct": {"type": "integer", "minimum": 0},
        "img_count": {"type": "integer", "minimum": 0},
        "missing": {"type": "array", "items": {"type": "string"}, "uniqueItems": True},
    },
}


def build_result(docs: list[dict[str, Any]], outputs: Mapping[str, str]) -> dict[str, Any]:
    """The result object for ``docs``; a document without output is scored as FAILED and
    left out of the IMG subset (see the module docstring)."""
    results: dict[str, int] = {}
    texts: dict[str, str] = {}
    correct = img_correct = img_count = 0
    missing = []
    for doc in docs:
        answer = outputs.get(doc["doc_id"])
        text = FAILED if answer is None else answer
        idx = pred_index(parse_letter(text), int(doc["n_choices"]))
        right = idx == LETTERS.index(doc["answer"])
        results[doc["doc_id"]] = idx
        texts[doc["doc_id"]] = text
        correct += right
        if answer is None:
            missing.append(doc["doc_id"])
        elif doc["has_image"]:
            img_count += 1
            img_correct += right
    count = len(docs)
    return {
        "acc": correct / count * 100 if count else 0.0,
        "correct": correct,
        "count": count,
        "results": results,
        "outputs": texts,
        "img_acc": img_correct / img_count * 100 if img_count else None,
        "img_correct": img_correct,
        "img_count": img_count,
        "missing": missing,
    }


def validate(result: Any) -> None:
    """Raise :class:`HarnessError` unless ``result`` fits :data:`SCHEMA` and is consistent."""
    try:
        jsonschema.validate(result, SCHEMA)
    except jsonschema.ValidationError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "(top level)"
        raise HarnessError(
            f"ScienceQA result does not fit its schema at {where}: {exc.message}"
        ) from None
    if (
        set(result["results"]) != set(result["outputs"])
        or len(result["results"]) != result["count"]
    ):
        raise HarnessError("ScienceQA result: 'results', 'outputs' and 'count' disagree")


def write_scienceqa(
    task: Any,
    docs: list[dict[str, Any]],
    outputs: Mapping[str, str],
    out: Path,
    files: Mapping[str, Path | None],
    options: Mapping[str, Any],
) -> int:
    """Write the result JSON to ``out``; returns the number of questions in it."""
    if not docs:
        raise HarnessError(f"task {getattr(task, 'name', 'scienceqa')}: no documents to export")
    result = build_result(docs, outputs)
    validate(result)
    out = Path(out)
    write_json_atomic(result, out)
    validate(json.loads(out.read_text(encoding="utf-8")))
    return result["count"]

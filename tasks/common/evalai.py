"""What the EvalAI answer-list submissions (VQAv2, TextVQA, VizWiz) share: the JSON schema
of a list of rows, and each answer passed through the EvalAI answer processor
(:func:`harness.tasks.common.vqa_eval.evalai_process`), ``""`` for a document without output.
The writers are ``export.py`` in ``tasks/vqav2``, ``tasks/textvqa`` and ``tasks/vizwiz``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from harness.tasks.common.vqa_eval import evalai_process


def list_schema(properties: dict[str, Any]) -> dict[str, Any]:
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "array",
        "items": {
            "type": "object",
            "properties": properties,
            "required": sorted(properties),
            "additionalProperties": False,
        },
    }


def processed_answer(outputs: Mapping[str, str | None], doc_id: str) -> str:
    """The EvalAI-processed answer of a document, ``""`` when it has no output."""
    raw = outputs.get(doc_id)
    return "" if raw is None else evalai_process(raw)

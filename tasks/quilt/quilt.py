"""Quilt-LLaVA GPT review (LLaVA-Bench style): loader, judge prompt and relative score.

Files: ``quilt_gpt_questions.jsonl`` (``question_id, image, text, category`` in
{conv, detail}), ``quilt_gpt_answers.jsonl`` (GPT-4 reference answers,
``question_id, text``) and ``quilt_gpt_captions.jsonl`` (the image context: a
caption with bounding boxes in ``text`` -- or ``caption``, a string or a list
of lines -- and ``type``, the pathology subspecialty). A caption record is
joined to its question by ``question_id`` when it has one, else by ``image``.

The judge (temperature 0.2) sees the context, the question, the reference
answer as Assistant 1 and the model's answer as Assistant 2, and writes the
two scores (1-10) alone on its first line. That line, with commas turned into
spaces, must hold exactly two numbers; otherwise the judgement is a failure:
counted in ``judge_failed`` and left out of every mean (the official script
kept such reviews as ``[-1, -1]`` inside the mean).

Relative score of a set of questions = round(mean_model / mean_reference x 100, 1),
both means rounded to 3 decimals first, as the official summary prints it;
reported for all questions, per category and per ``type``.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import numpy as np

from harness.datafiles import iter_jsonl, require
from harness.errors import DataFileError, HarnessError
from harness.task import Extracted

# Judge call settings; tests check they agree with the ``judge:`` block of quilt_gpt_review.yaml
# (process_results hooks do not see the task config).
JUDGE_TEMPERATURE = 0.2
JUDGE_MAX_TOKENS = 1024

CATEGORIES = ("conv", "detail")

SYSTEM = "You are a helpful and precise assistant for checking the quality of the answer."

# The review rule exactly as aldraus/quilt-llava@a7a9a4c llava/eval/quilt_gpt_eval.py defines it
# (module-level ``pt``, a triple-quoted string: its hard line breaks and "\n" escapes are both
# newlines; note the space before the second line break). tests/test_quilt.py pins it.
RULE = (
    "We would like to request your feedback on the performance of two AI assistants in response to the user question\n"
    "displayed above. The user asks the question on observing an image. For your reference, the visual content in \n"
    "the image is represented with caption, describing the same image, which is embedded with bounding box coordinates\n"
    "of each object in the scene, represented as (x1, y1, x2, y2) with floating numbers ranging from 0 to 1.\n"
    "These values correspond to the top left x, top left y, bottom right x, and bottom right y.\n"
    "\n"
    "Please rate the helpfulness, relevance, accuracy, level of details of their responses.\n"
    "Each assistant receives an overall score on a scale of 1 to 10, where a higher score indicates better overall\n"
    "performance.\n"
    "Please first output a single line containing only two values indicating the scores for Assistant 1\n"
    "and 2, respectively. The two scores are separated by a space.\n"
    "In the subsequent line, please provide a\n"
    "comprehensive explanation of your evaluation, avoiding any potential bias and ensuring that the order in which the\n"
    "responses were presented does not affect your judgment."
)


def user_message(caption: str, question: str, reference: str, answer: str) -> str:
    """The judge's user message, laid out as the official review template."""
    return (
        f"[Context]\n{caption}\n\n"
        f"[Question]\n{question}\n\n"
        f"[Assistant 1]\n{reference}\n\n[End of Assistant 1]\n\n"
        f"[Assistant 2]\n{answer}\n\n[End of Assistant 2]\n\n"
        f"[System]\n{RULE}\n\n"
    )


def parse_scores(review: str) -> tuple[float, float] | None:
    """(reference score, model score) from the review's first line, else None."""
    first = (review or "").split("\n")[0].replace(",", " ")
    parts = first.split()
    if len(parts) != 2:
        return None
    try:
        ref, model = float(parts[0]), float(parts[1])
    except ValueError:
        return None
    if not (math.isfinite(ref) and math.isfinite(model)):
        return None
    return ref, model


# -- loading -----------------------------------------------------------------------------
def _caption_text(rec: dict[str, Any], path: Path, line: int) -> str:
    for key in ("text", "caption"):
        if key in rec:
            value = rec[key]
            if isinstance(value, list):
                return "\n".join(str(v) for v in value)
            if isinstance(value, str):
                return value
            raise DataFileError(
                f"{path}:{line}: field {key!r} should be a string or a list of strings"
            )
    raise DataFileError(f"{path}:{line}: missing field 'text' (the caption)")


def load(files: dict[str, Path | None], options: dict[str, Any]) -> list[dict[str, Any]]:
    q_path, a_path, c_path = files["questions"], files["answers"], files["captions"]
    assert q_path is not None and a_path is not None and c_path is not None
    references: dict[str, str] = {}
    for line, rec in iter_jsonl(a_path):
        qid = str(require(rec, "question_id", a_path, line))
        references[qid] = require(rec, "text", a_path, line, str)
    by_qid: dict[str, dict[str, Any]] = {}
    by_image: dict[str, dict[str, Any]] = {}
    for line, rec in iter_jsonl(c_path):
        context = {"caption": _caption_text(rec, c_path, line), "type": str(rec.get("type") or "")}
        if rec.get("question_id") is not None:
            by_qid[str(rec["question_id"])] = context
        if isinstance(rec.get("image"), str):
            by_image.setdefault(rec["image"], context)
    docs = []
    for line, rec in iter_jsonl(q_path):
        qid = str(require(rec, "question_id", q_path, line))
        image = require(rec, "image", q_path, line, str)
        category = require(rec, "category", q_path, line, str)
        if category not in CATEGORIES:
            raise DataFileError(
                f"{q_path}:{line}: field 'category' should be conv or detail, got {category!r}"
            )
        if qid not in references:
            raise DataFileError(
                f"{a_path}: no reference answer for question_id {qid} ({q_path}:{line})"
            )
        context = by_qid.get(qid) or by_image.get(image)
        if context is None:
            raise DataFileError(
                f"{c_path}: no caption for question_id {qid} or image {image!r} ({q_path}:{line})"
            )
        docs.append(
            {
                "doc_id": qid,
                "question_id": rec["question_id"],
                "image": image,
                "question": require(rec, "text", q_path, line, str),
                "category": category,
                "reference": references[qid],
                "caption": context["caption"],
                "type": context["type"],
            }
        )
    return docs


# -- scoring -----------------------------------------------------------------------------
def extract(raw: str, doc: dict[str, Any], options: dict[str, Any]) -> Extracted:
    """The answer is the whole output, stripped; an empty output is not judged."""
    text = (raw or "").strip()
    return Extracted(text, bool(text))


def process(doc: dict[str, Any], extracted: Extracted, ctx: Any) -> dict[str, Any]:
    judge = getattr(ctx, "judge", None)
    fields: dict[str, Any] = {
        "reference_score": math.nan,
        "model_score": math.nan,
        "category": doc["category"],
        "type": doc["type"],
        "judge_needed": 0,
        "judge_failed": 0,
        "judge_error": "",
        "judge_model": str(getattr(judge, "model", "") or ""),
    }
    if not extracted.parsed:
        return fields  # empty output: not judged (counted by the core as a parse failure)
    if judge is None:
        raise HarnessError("quilt_gpt_review is scored by an LLM judge; none was given")
    fields["judge_needed"] = 1
    user = user_message(doc["caption"], doc["question"], doc["reference"], extracted.answer)
    reply = judge.judge(SYSTEM, user, temperature=JUDGE_TEMPERATURE, max_tokens=JUDGE_MAX_TOKENS)
    if not reply.ok:
        fields.update(judge_failed=1, judge_error=reply.error or "no reply")
        return fields
    scores = parse_scores(reply.text)
    if scores is None:
        shown = reply.text.strip().split("\n")[0][:120]
        fields.update(judge_failed=1, judge_error=f"unparsable first line {shown!r}")
        return fields
    fields["reference_score"], fields["model_score"] = scores
    return fields


def relative_score(model: np.ndarray, reference: np.ndarray) -> float:
    """round(mean_model / mean_reference x 100, 1), means rounded to 3 decimals; NaN if empty."""
    if len(model) == 0:
        return math.nan
    mean_model = round(float(np.mean(model)), 3)
    mean_ref = round(float(np.mean(reference)), 3)
    if mean_ref == 0:
        return math.nan
    return round(mean_model / mean_ref * 100, 1)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_") or "unknown"


def aggregate(cols: dict[str, np.ndarray]) -> dict[str, float]:
    ref = np.asarray(cols["reference_score"], dtype=float)
    model = np.asarray(cols["model_score"], dtype=float)
    ok = np.isfinite(ref) & np.isfinite(model)
    category = np.asarray(cols["category"]).astype(str)
    kind = np.asarray(cols["type"]).astype(str)
    out = {"relative_score": relative_score(model[ok], ref[ok])}
    for name in CATEGORIES:
        mask = ok & (category == name)
        out[f"relative_score_{name}"] = relative_score(model[mask], ref[mask])
    out["model_mean"] = round(float(np.mean(model[ok])), 3) if ok.any() else math.nan
    out["reference_mean"] = round(float(np.mean(ref[ok])), 3) if ok.any() else math.nan
    for name in sorted(set(kind.tolist())):
        mask = ok & (kind == name)
        out[f"relative_score_type_{_slug(name)}"] = relative_score(model[mask], ref[mask])
    return out

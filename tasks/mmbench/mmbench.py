"""MMBench loader and circular scorer, following the official MMBench evaluation.

Data: the official TSV (``index, question, hint, A, B, C, D, answer, category,
image (base64), source, l2-category, comment, split``), or an xlsx with at least
``index, question, A, B, ...`` (LLaVA's upload file: ``index, question, A-D,
prediction, answer, split``; no image, so it can be scored but not generated
from). Test TSVs have no ``answer``: they score to NaN and are for export.

An option counts only if it is non-empty: blank cells and the strings that
pandas (which the official tools read these files with) turns into NaN, such as
``nan`` and ``None``, are empty.

Scoring: rows are grouped by ``index % 1_000_000`` (a question and its circular
copies, the bootstrap unit); a question is right only if every row is. Each
row's choice comes from, in order: (1) exactly one bare letter A-E among the
whitespace-separated words, skipped when ``A`` is a word and there are more
than 3 words; (2) the first wrapped pattern (``X.`` ``X,`` ``X:`` ``X)``
``X).`` ``(X)`` ``(X).`` ``:X`` ``:X,`` ``:X.`` ``:X)`` ``:X).``, in that order)
matched by exactly one letter, as the official code loops over them; (3)
exactly one option text contained in the prediction (case-insensitive). Rows
left over go to the LLM judge when one is given (up to ``judge_tries`` replies,
then a seeded random pick, counted in ``judge_failed``); without a judge they
count as wrong. Either way they are counted in ``judge_needed``.
"""

from __future__ import annotations

import base64
import binascii
import csv
import math
import random
import sys
from pathlib import Path
from typing import Any

import numpy as np

from harness.datafiles import require
from harness.errors import DataFileError, HarnessError
from harness.task import Extracted
from harness.tasks.common.instructions import OPTION_LETTER, OPTION_LETTER_CN

LETTERS = ("A", "B", "C", "D", "E")
CIRCULAR = 1_000_000
WRAPS = (
    ("", "."),
    ("", ","),
    ("", ":"),
    ("", ")"),
    ("", ")."),
    ("(", ")"),
    ("(", ")."),
    (":", ""),
    (":", ","),
    (":", "."),
    (":", ")"),
    (":", ")."),
)
# Cells that pandas.read_table / read_excel read as NaN by default, plus LLaVA's is_none().
NA_STRINGS = frozenset(
    {
        "",
        "#N/A",
        "#N/A N/A",
        "#NA",
        "-1.#IND",
        "-1.#QNAN",
        "-NaN",
        "-nan",
        "1.#IND",
        "1.#QNAN",
        "<NA>",
        "N/A",
        "NA",
        "NULL",
        "NaN",
        "None",
        "n/a",
        "nan",
        "null",
    }
)
NONE_OF_THEM = "Z"


# -- reading --------------------------------------------------------------------------------
def is_empty(value: Any) -> bool:
    """True for a missing cell: None, NaN, blank, or a string pandas reads as NaN."""
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    if isinstance(value, str):
        return value in NA_STRINGS or not value.strip() or value.lower() in ("nan", "none")
    return False


def cell_text(value: Any) -> str | None:
    """A cell as text (integral floats without '.0'), or None when empty."""
    if is_empty(value):
        return None
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def read_table(path: Path) -> tuple[list[str], list[tuple[int, dict[str, Any]]]]:
    """Header and ``(line, row)`` pairs of an MMBench TSV or xlsx file (raw cell values)."""
    if path.suffix.lower() == ".xlsx":
        return _read_xlsx(path)
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # base64 images exceed the default
    rows: list[tuple[int, dict[str, Any]]] = []
    try:
        with path.open(encoding="utf-8", newline="") as fh:
            reader = csv.reader(fh, delimiter="\t")
            header = next(reader, None)
            if not header:
                raise DataFileError(
                    f"{path}: empty file; expected an MMBench TSV with a header row"
                )
            header = [h.strip() for h in header]
            for fields in reader:
                if not any(f.strip() for f in fields):
                    continue
                if len(fields) != len(header):
                    raise DataFileError(
                        f"{path}:{reader.line_num}: {len(fields)} tab-separated fields, but the "
                        f"header has {len(header)}"
                    )
                rows.append((reader.line_num, dict(zip(header, fields, strict=True))))
    except OSError as exc:
        raise DataFileError(f"{path}: cannot be read ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise DataFileError(f"{path}: not UTF-8 text; expected an MMBench TSV") from None
    except csv.Error as exc:
        raise DataFileError(f"{path}: malformed TSV ({exc})") from None
    return header, rows


def _read_xlsx(path: Path) -> tuple[list[str], list[tuple[int, dict[str, Any]]]]:
    from openpyxl import load_workbook

    try:
        workbook = load_workbook(path, read_only=True)
    except Exception as exc:  # openpyxl raises many types for a bad workbook
        raise DataFileError(f"{path}: not a readable xlsx workbook ({exc})") from None
    try:
        sheet_rows = workbook.active.iter_rows(values_only=True)
        header = [str(h).strip() if h is not None else "" for h in next(sheet_rows, ())]
        rows = []
        for number, values in enumerate(sheet_rows, start=2):
            if all(is_empty(v) for v in values):
                continue
            rows.append((number, dict(zip(header, values, strict=False))))
    finally:
        workbook.close()
    if not header:
        raise DataFileError(f"{path}: empty workbook; expected a header row")
    return header, rows


def _index(value: Any, where: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value.strip())
    raise DataFileError(f"{where}: field 'index' should be an integer, got {value!r}")


def load(files: dict[str, Path | None], options: dict[str, Any]) -> list[dict[str, Any]]:
    """One document per row (circular copies included)."""
    path = files["data"]
    assert path is not None
    header, rows = read_table(path)
    for column in ("index", "question", "A", "B"):
        if column not in header:
            raise DataFileError(f"{path}: no {column!r} column (columns: {header})")
    letters = [c for c in LETTERS if c in header]
    raw_images: dict[int, str] = {}
    docs = []
    for line, row in rows:
        where = f"{path}:{line}"
        index = _index(require(row, "index", path, line), where)
        question = cell_text(require(row, "question", path, line))
        if question is None:
            raise DataFileError(f"{where}: field 'question' is empty")
        options_ = {c: text for c in letters if (text := cell_text(row.get(c))) is not None}
        if len(options_) < 2:
            raise DataFileError(f"{where}: fewer than two non-empty options among {letters}")
        answer = cell_text(row.get("answer"))
        if answer is not None:
            answer = answer.strip()
            if answer not in options_:
                raise DataFileError(
                    f"{where}: field 'answer' is {answer!r}, not one of the options {sorted(options_)}"
                )
        image = cell_text(row.get("image"))
        if image is not None:
            raw_images[index] = image
        docs.append(
            {
                "doc_id": str(index),
                "index": index,
                "group": index % CIRCULAR,
                "question": question,
                "hint": cell_text(row.get("hint")),
                "options": options_,
                "answer": answer,
                "category": cell_text(row.get("category")) or "",
                "l2_category": cell_text(row.get("l2-category")) or "",
                "split": cell_text(row.get("split")) or "",
                "image_b64": image,
                "source_line": where,
            }
        )
    for doc in docs:
        doc["image_b64"] = _resolve_image(doc, raw_images)
    return docs


def _resolve_image(doc: dict[str, Any], raw_images: dict[int, str]) -> str | None:
    """Check the base64 image; a short all-digit cell refers to another row's image."""
    image = doc["image_b64"]
    if image is None:
        return None
    if len(image) <= 64 and image.strip().isdigit():
        target = raw_images.get(int(image))
        if target is None or (len(target) <= 64 and target.strip().isdigit()):
            raise DataFileError(
                f"{doc['source_line']}: field 'image' refers to index {image}, which has no image"
            )
        image = target
    try:
        base64.b64decode(image, validate=True)
    except (binascii.Error, ValueError):
        raise DataFileError(f"{doc['source_line']}: field 'image' is not valid base64") from None
    return image


def doc_to_visual(doc: dict[str, Any], options: dict[str, Any]) -> list[bytes]:
    """The decoded image bytes (the TSV's base64 column)."""
    if doc.get("image_b64") is None:
        raise HarnessError(
            f"{doc['source_line']}: MMBench row {doc['index']} has no image (an xlsx upload file "
            "can be scored but not run); use the official TSV to generate answers"
        )
    return [base64.b64decode(doc["image_b64"])]


def doc_to_text(doc: dict[str, Any], options: dict[str, Any]) -> str:
    """``[hint\\n]question`` + ``\\nX. option`` per non-empty option + the EN/CN instruction."""
    lang = options.get("lang", "en")
    if lang not in ("en", "cn"):
        raise HarnessError(f"MMBench option 'lang' should be 'en' or 'cn', got {lang!r}")
    return f"{question_text(doc)}\n{OPTION_LETTER if lang == 'en' else OPTION_LETTER_CN}"


def question_text(doc: dict[str, Any]) -> str:
    """The prompt without the instruction (what LLaVA's answer files hold as ``prompt``)."""
    text = doc["question"] if doc.get("hint") is None else f"{doc['hint']}\n{doc['question']}"
    for letter, option in doc["options"].items():
        text += f"\n{letter}. {option}"
    return text


def match_prediction(record: dict[str, Any]) -> str | None:
    """Doc id = the row's index: ``doc_id``, LLaVA's ``question_id`` or the xlsx ``index``."""
    for key in ("doc_id", "question_id", "index"):
        value = record.get(key)
        if value is None or isinstance(value, bool):
            continue
        if isinstance(value, float) and value.is_integer():
            return str(int(value))
        text = str(value).strip()
        return text[:-2] if text.endswith(".0") and text[:-2].isdigit() else text
    return None


# -- choice extraction ------------------------------------------------------------------------
def infer_choice(prediction: str, options: dict[str, str]) -> tuple[str | None, str]:
    """The official rules in order; returns (letter or None, rule name)."""
    words = [w.strip() for w in prediction.split()]
    hits = [c for c in LETTERS if c in words]
    if len(hits) == 1 and not ("A" in words and len(words) > 3):
        return hits[0], "letter"
    for prefix, suffix in WRAPS:
        hits = [c for c in LETTERS if prefix + c + suffix in words]
        if len(hits) == 1:
            return hits[0], "wrapped"
    lowered = prediction.lower()
    hits = [c for c, text in options.items() if text.lower() in lowered]
    if len(hits) == 1:
        return hits[0], "text"
    return None, "unresolved"


def choice_letters(doc: dict[str, Any], options: dict[str, Any]) -> list[str]:
    """The option letters of a row: what the likelihood protocol scores after the prompt."""
    return list(doc["options"])


def extract_choice(raw: str, doc: dict[str, Any], options: dict[str, Any]) -> Extracted:
    """The chosen letter; when no rule applies the answer is the raw text (for the judge)."""
    letter, _ = infer_choice(raw, doc["options"])
    return Extracted(raw, False) if letter is None else Extracted(letter, True)


JUDGE_SYSTEM = (
    "You map a model's free-form reply to a multiple-choice question onto one of the listed "
    "options. Choose the option whose meaning is closest to the reply. Answer with one capital "
    f"letter only: an option letter, or {NONE_OF_THEM} when the reply matches none of the options."
)


def judge_prompt(doc: dict[str, Any], prediction: str) -> str:
    """User message for the judge: question, options and the model's reply."""
    letters = ", ".join(doc["options"])
    opts = "\n".join(f"{k}. {v}" for k, v in doc["options"].items())
    return (
        f"Question: {doc['question']}\nOptions:\n{opts}\nModel reply: {prediction}\n"
        f"Which option does the reply choose? Answer with one letter ({letters}) or "
        f"{NONE_OF_THEM}."
    )


def parse_judge_reply(text: str, options: dict[str, str]) -> str | None:
    """Letter from the judge's reply with the same rules; ``Z`` alone means none of them."""
    if text.strip().strip(".").strip() == NONE_OF_THEM:
        return NONE_OF_THEM
    letter, _ = infer_choice(text, options)
    return letter


def ask_judge(doc: dict[str, Any], prediction: str, ctx: Any) -> tuple[str, bool]:
    """(letter, judge_failed): up to ``judge_tries`` replies, then a seeded random pick."""
    opts = ctx.options
    tries = int(opts.get("judge_tries", 3))
    user = judge_prompt(doc, prediction)
    for _ in range(max(tries, 1)):
        reply = ctx.judge.judge(
            JUDGE_SYSTEM, user, temperature=0.0, max_tokens=int(opts.get("judge_max_tokens", 64))
        )
        if reply.ok:
            letter = parse_judge_reply(reply.text, doc["options"])
            if letter is not None:
                return letter, False
        if reply.cached:
            break  # a cached reply would come back the same
    picks = list(doc["options"]) + ([] if "E" in doc["options"] else ["E"])
    rng = random.Random(f"{opts.get('judge_seed', 2680)}:{doc['index']}")
    return rng.choice(picks), True


def process(doc: dict[str, Any], extracted: Extracted, ctx: Any) -> dict[str, Any]:
    judge_needed = judge_failed = False
    if extracted.parsed:
        letter: str | None = str(extracted.answer)
    elif extracted.answer is None:
        # No answer (NO_ANSWER): wrong, so the document's circular group fails. LLaVA's
        # convert_mmbench_for_submission.py leaves an empty prediction cell, and VLMEvalKit's
        # exact matching scores an empty prediction hit=0.
        letter = None
    else:
        letter = None
        text = str(extracted.answer)
        if text.strip():  # an empty/missing prediction is wrong without asking anyone
            judge_needed = True
            if ctx.judge is not None and doc["answer"] is not None:  # test split: nothing to score
                letter, judge_failed = ask_judge(doc, text, ctx)
    return {
        "correct": None if doc["answer"] is None else letter == doc["answer"],
        "pred": letter or "",
        "group": doc["group"],
        "category": doc["category"],
        "l2_category": doc["l2_category"],
        "judge_needed": judge_needed,
        "judge_failed": judge_failed,
    }


# -- aggregation ----------------------------------------------------------------------------
def aggregate(cols: dict[str, np.ndarray]) -> dict[str, float]:
    """Circular accuracy over units (all rows right), overall and per category / l2-category."""
    correct = np.asarray(cols["correct"], dtype=float)
    _, first, inverse = np.unique(np.asarray(cols["_unit"]), return_index=True, return_inverse=True)
    wrong = np.bincount(inverse, weights=(correct < 0.5).astype(float))
    unknown = np.bincount(inverse, weights=np.isnan(correct).astype(float))
    known = unknown == 0
    unit_right = (wrong == 0) & known
    out = {"accuracy": 100 * float(np.mean(unit_right[known])) if known.any() else float("nan")}
    for column, prefix in (("category", "category"), ("l2_category", "l2_category")):
        if column not in cols:
            continue
        unit_names = np.asarray(cols[column], dtype=object)[first]
        for name in sorted({str(n) for n in unit_names if n}):
            mask = known & (unit_names == name)
            if mask.any():
                out[f"{prefix}/{name}"] = 100 * float(np.mean(unit_right[mask]))
    return out

"""MME loader and scorer, reproducing the official ``eval_tool/calculation.py`` with LLaVA-1.5 prompts.

Ground truth, per category, from either

* the eval_tool files ``<category>.txt``: lines ``image\\tquestion\\tYes|No``, the
  two questions of an image on consecutive lines (roles ``gt_<category>``), or
* the release folder ``MME_Benchmark_release_version/<category>/`` (``images/`` +
  ``questions_answers_YN/<stem>.txt``, or images and txt side by side; each txt
  holds ``question\\tYes|No`` lines). Data-file roles only name files, so the
  folder is found next to LLaVA's ``llava_mme.jsonl`` or above the eval_tool
  files (LLaVA's ``playground/data/eval/MME`` layout).

LLaVA's ``llava_mme.jsonl`` (``question_id`` = ``category/[images/]image``) gives
the exact prompts and image paths. Its answer files repeat ``question_id`` for
both questions of an image, so a document id is ``category/image::question``
with the question normalised (instruction removed, whitespace collapsed);
:func:`match_prediction` rebuilds it from an answer record's ``prompt``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from harness.datafiles import iter_jsonl, require
from harness.errors import DataFileError
from harness.task import Extracted
from harness.tasks.common.instructions import SHORT_ANSWER, YES_NO_MME, strip_suffix

PERCEPTION = (
    "existence",
    "count",
    "position",
    "color",
    "posters",
    "celebrity",
    "scene",
    "landmark",
    "artwork",
    "OCR",
)
COGNITION = ("commonsense_reasoning", "numerical_calculation", "text_translation", "code_reasoning")
CATEGORIES = PERCEPTION + COGNITION
# Categories whose release folder has images/ + questions_answers_YN/ (others: side by side).
NESTED = ("posters", "celebrity", "scene", "landmark", "artwork")
RELEASE_DIR = "MME_Benchmark_release_version"
IMAGE_TOKEN = "<image>"
ANSWERS = {"yes": "Yes", "no": "No"}


# -- ids ------------------------------------------------------------------------------------
def normalise_question(text: str) -> str:
    """Question text for matching: no image token, no instruction, single spaces."""
    text = text.replace(IMAGE_TOKEN, " ").strip()
    for suffix in (SHORT_ANSWER, YES_NO_MME):
        text = strip_suffix(text, suffix)
    return " ".join(text.split())


def doc_key(category: str, image: str, question: str) -> str:
    """Document id ``category/image::question`` (image = file name, question normalised)."""
    return f"{category}/{Path(image).name}::{normalise_question(question)}"


def match_prediction(record: dict[str, Any]) -> str | None:
    """Doc id of a prediction: its ``doc_id``, else from LLaVA's ``question_id`` + ``prompt``."""
    if record.get("doc_id") is not None:
        return str(record["doc_id"])
    qid, prompt = record.get("question_id"), record.get("prompt")
    if not isinstance(qid, str) or not isinstance(prompt, str) or "/" not in qid:
        return None
    return doc_key(qid.split("/")[0], qid.split("/")[-1], prompt)


# -- loading --------------------------------------------------------------------------------
def _answer(value: str, where: str) -> str:
    label = ANSWERS.get(value.strip().lower())
    if label is None:
        raise DataFileError(f"{where}: field 'answer' should be Yes or No, got {value.strip()!r}")
    return label


def read_gt_file(path: Path, category: str) -> list[dict[str, Any]]:
    """Entries of an eval_tool GT file (``image\\tquestion\\tYes|No`` per line)."""
    entries = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise DataFileError(f"{path}: cannot be read ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise DataFileError(
            f"{path}: not UTF-8 text; expected image\\tquestion\\tYes|No lines"
        ) from None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        parts = line.rstrip("\r\n").split("\t")
        if len(parts) < 3:
            raise DataFileError(
                f"{path}:{number}: expected 3 tab-separated fields (image, question, answer), "
                f"got {len(parts)}"
            )
        image, question, answer = parts[0].strip(), parts[1], parts[2]
        if not image:
            raise DataFileError(f"{path}:{number}: field 'image' is empty")
        entries.append(
            {
                "category": category,
                "image": image,
                "gt_question": question.strip(),
                "answer": _answer(answer, f"{path}:{number}"),
                "source": f"{path}:{number}",
            }
        )
    return entries


def read_release_category(folder: Path, category: str) -> tuple[list[dict[str, Any]], bool]:
    """Entries of one release category folder, and whether it uses ``images/``."""
    nested = (folder / "images").is_dir()
    qa_dir = folder / "questions_answers_YN" if nested else folder
    image_dir = folder / "images" if nested else folder
    if not qa_dir.is_dir():
        raise DataFileError(f"{folder}: has images/ but no questions_answers_YN/ folder")
    images = {
        p.stem: p.name for p in image_dir.iterdir() if p.is_file() and p.suffix.lower() != ".txt"
    }
    entries = []
    for txt in sorted(qa_dir.glob("*.txt")):
        image = images.get(txt.stem)
        if image is None:
            raise DataFileError(f"{txt}: no image named {txt.stem}.* in {image_dir}")
        try:
            lines = txt.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError:
            raise DataFileError(
                f"{txt}: not UTF-8 text; expected question\\tYes|No lines"
            ) from None
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            parts = line.strip().split("\t")
            if len(parts) != 2:
                raise DataFileError(
                    f"{txt}:{number}: expected 2 tab-separated fields (question, answer), got {len(parts)}"
                )
            entries.append(
                {
                    "category": category,
                    "image": image,
                    "gt_question": parts[0].strip(),
                    "answer": _answer(parts[1], f"{txt}:{number}"),
                    "source": f"{txt}:{number}",
                }
            )
    return entries, nested


def find_release_folder(files: dict[str, Path | None]) -> Path | None:
    """``MME_Benchmark_release_version`` next to llava_mme.jsonl or above the eval_tool files."""
    starts: list[Path] = []
    for path in files.values():
        if path is not None:
            starts.extend([path.parent, *list(path.parents)[1:3]])
    for start in starts:
        if start.name == RELEASE_DIR and start.is_dir():
            return start
        candidate = start / RELEASE_DIR
        if candidate.is_dir():
            return candidate
    return None


def _check_pairs(entries: list[dict[str, Any]], category: str) -> None:
    """The official acc+ reads two consecutive lines per image; insist on exactly that."""
    if len(entries) % 2:
        raise DataFileError(
            f"{entries[-1]['source']}: category {category} has an odd number of questions; "
            "MME needs two questions per image"
        )
    seen: set[str] = set()
    for first, second in zip(entries[::2], entries[1::2], strict=True):
        if first["image"] != second["image"] or first["image"] in seen:
            raise DataFileError(
                f"{second['source']}: questions of image {first['image']!r} are not a consecutive "
                "pair; MME needs exactly two questions per image, one after the other"
            )
        seen.add(first["image"])


def _image_path(category: str, image: str, nested: bool) -> str:
    return f"{category}/images/{image}" if nested else f"{category}/{image}"


def load(files: dict[str, Path | None], options: dict[str, Any]) -> list[dict[str, Any]]:
    """One document per (image, question) over the categories that have ground truth."""
    release = find_release_folder(files)
    by_category: dict[str, list[dict[str, Any]]] = {}
    for category in CATEGORIES:
        gt_path = files.get(f"gt_{category}")
        entries = read_gt_file(gt_path, category) if gt_path is not None else None
        nested = category in NESTED
        folder = release / category if release is not None else None
        if folder is not None and folder.is_dir():
            official, nested = read_release_category(folder, category)
            if entries is None:
                entries = official
            else:
                _cross_check(entries, official, category)
        if entries:
            _check_pairs(entries, category)
            for entry in entries:
                entry["image_path"] = _image_path(category, entry["image"], nested)
            by_category[category] = entries
    if not by_category:
        raise DataFileError(
            "task mme: no ground truth found; give the eval_tool files <category>.txt "
            f"(--data-file gt_<category>=PATH) or put {RELEASE_DIR}/ next to llava_mme.jsonl"
        )
    docs: dict[str, dict[str, Any]] = {}
    for category, entries in by_category.items():
        for entry in entries:
            question = strip_suffix(entry["gt_question"], YES_NO_MME)
            key = doc_key(category, entry["image"], question)
            if key in docs:
                raise DataFileError(f"{entry['source']}: question repeated for the same image")
            docs[key] = {
                "doc_id": key,
                "category": category,
                "image": entry["image"],
                "image_key": f"{category}/{entry['image']}",
                "image_path": entry["image_path"],
                "question": question,
                "gt_question": entry["gt_question"],
                "answer": entry["answer"],
            }
    q_path = files.get("questions")
    if q_path is not None:
        _apply_llava_questions(q_path, docs)
    return list(docs.values())


def _cross_check(gt: list[dict[str, Any]], official: list[dict[str, Any]], category: str) -> None:
    want = {doc_key(category, e["image"], e["gt_question"]): e for e in official}
    for entry in gt:
        other = want.get(doc_key(category, entry["image"], entry["gt_question"]))
        if other is None or other["answer"] != entry["answer"]:
            found = "missing" if other is None else f"answer {other['answer']} at {other['source']}"
            raise DataFileError(
                f"{entry['source']}: disagrees with the release folder ({found}) for "
                f"{category}/{entry['image']}"
            )
    if len(want) != len(gt):
        raise DataFileError(
            f"{gt[0]['source'].rsplit(':', 1)[0]}: {len(gt)} questions, but the release folder has "
            f"{len(want)} for category {category}"
        )


def _apply_llava_questions(path: Path, docs: dict[str, dict[str, Any]]) -> None:
    """Use LLaVA's prompt text and image path; every GT question must appear once."""
    seen: set[str] = set()
    categories = {d["category"] for d in docs.values()}
    for line, rec in iter_jsonl(path):
        qid = require(rec, "question_id", path, line, str)
        text = require(rec, "text", path, line, str)
        category = str(rec.get("category") or qid.split("/")[0])
        if category not in categories:
            if category in CATEGORIES:
                continue  # a category without ground truth here: not scored
            raise DataFileError(
                f"{path}:{line}: field 'category': unknown MME category {category!r}"
            )
        key = doc_key(category, qid.split("/")[-1], text)
        doc = docs.get(key)
        if doc is None:
            raise DataFileError(
                f"{path}:{line}: question {normalise_question(text)!r} of {qid!r} is not in the "
                "ground truth"
            )
        if key in seen:
            raise DataFileError(f"{path}:{line}: question repeated for {qid!r}")
        seen.add(key)
        doc["question"] = strip_suffix(text, SHORT_ANSWER)
        image = rec.get("image")
        if isinstance(image, str) and image:
            doc["image_path"] = image
    missing = [k for k in docs if k not in seen]
    if missing:
        raise DataFileError(
            f"{path}: {len(missing)} ground-truth questions have no LLaVA question, e.g. {missing[0]!r}"
        )


def doc_to_text(doc: dict[str, Any], options: dict[str, Any]) -> str:
    """LLaVA-1.5 prompt (short-answer instruction), or the official one with ``yes_no``."""
    style = options.get("instruction", "short_answer")
    if style == "yes_no":
        return doc["gt_question"]
    if style != "short_answer":
        raise DataFileError(
            f"task mme: option 'instruction' should be short_answer or yes_no, got {style!r}"
        )
    return f"{doc['question']}\n{SHORT_ANSWER}"


# -- scoring --------------------------------------------------------------------------------
def parse_yes_no(raw: str) -> str:
    """Official rule: lower-case; exact yes/no; else yes/no within the first 4 chars; else other."""
    text = raw.lower()
    if text in ("yes", "no"):
        return text
    head = text[:4]
    if "yes" in head:
        return "yes"
    if "no" in head:
        return "no"
    return "other"


def extract_yes_no(raw: str, doc: dict[str, Any], options: dict[str, Any]) -> Extracted:
    label = parse_yes_no(raw)
    return Extracted(label, label != "other")


def process(doc: dict[str, Any], extracted: Extracted, ctx: Any) -> dict[str, Any]:
    # No answer (NO_ANSWER, answer None) is wrong in acc and acc+, as an unparsed "other"
    # answer is in the official eval_tool calculation.py (which needs every line).
    return {
        "correct": extracted.answer is not None and extracted.answer == doc["answer"].lower(),
        "category": doc["category"],
        "image_key": doc["image_key"],
    }


def aggregate(cols: dict[str, np.ndarray]) -> dict[str, float]:
    """Per category 100*acc + 100*acc+ (acc+ over bootstrap units = images); sums by group."""
    correct = cols["correct"] > 0.5
    units = np.asarray(cols["_unit"])
    category = cols["category"]
    out: dict[str, float] = {}
    for name in CATEGORIES:
        mask = category == name
        if not mask.any():
            continue
        _, inverse = np.unique(units[mask], return_inverse=True)
        wrong = np.bincount(inverse, weights=(~correct[mask]).astype(float))
        acc = float(np.mean(correct[mask]))
        acc_plus = float(np.mean(wrong == 0))
        out[name] = 100 * acc + 100 * acc_plus
        out[f"{name}_acc"] = 100 * acc
        out[f"{name}_acc_plus"] = 100 * acc_plus
    out["perception"] = sum(out[c] for c in PERCEPTION if c in out)
    out["cognition"] = sum(out[c] for c in COGNITION if c in out)
    return out

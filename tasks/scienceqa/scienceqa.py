"""ScienceQA loader and scorer, reproducing LLaVA-1.5's ``eval_science_qa.py``.

Data sources (any of them may be absent, but one of ``problems`` /
``questions`` is needed):

* ``problems.json`` (official): id -> ``question, choices, answer (index),
  hint, image, ...``; with ``pid_splits.json`` it defines the documents (the
  ids of ``options['split']``) and the prompt
  ``[Context: {hint}\\n]{question}\\nA. c0\\nB. c1...``.
* ``llava_test_CQM-A.json`` (LLaVA's conversion): a JSON list of
  ``{id, [image], conversations: [human prompt, gpt answer letter]}``. When it
  is given its prompt text is used as is (it is what LLaVA fed the model), and
  without ``problems.json`` it defines the documents, checked against
  ``pid_splits.json`` when that is present.

Like the official script, every question of the split is scored; the headline
``img_accuracy`` is over the questions that have an image.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from harness.datafiles import read_json, require
from harness.errors import DataFileError
from harness.predictions import Prediction
from harness.task import Extracted

LETTERS = ("A", "B", "C", "D", "E")
FAILED = "FAILED"
_ANSWER_IS = re.compile(r"The answer is ([A-Z]).")  # unescaped dot, as in the official code
IMAGE_TOKEN = "<image>"


# -- prompts --------------------------------------------------------------------------------
def build_prompt(question: str, choices: list[str], hint: str | None) -> str:
    """``[Context: {hint}\\n]{question}\\nA. c0\\nB. c1...`` (no instruction, no image token)."""
    head = f"Context: {hint.strip()}\n" if hint and hint.strip() else ""
    options = "\n".join(f"{LETTERS[i]}. {c}" for i, c in enumerate(choices))
    return f"{head}{question}\n{options}"


def strip_image_token(text: str) -> str:
    """Remove LLaVA's ``<image>\\n`` prefix (or older ``\\n<image>`` suffix) from a prompt."""
    if text.startswith(IMAGE_TOKEN + "\n"):
        text = text[len(IMAGE_TOKEN) + 1 :]
    if text.endswith("\n" + IMAGE_TOKEN):
        text = text[: -len(IMAGE_TOKEN) - 1]
    return text.replace(IMAGE_TOKEN, "").strip()


def count_options(prompt: str) -> int:
    """Number of options ``A. ``, ``B. ``... listed at the end of a LLaVA prompt.

    Options may span several lines (letter closings such as ``A. Love,\\nZoe``), so
    this finds the last ``A. `` line and then ``B. ``, ``C. ``... lines in order.
    """
    lines = prompt.split("\n")
    starts = [i for i, line in enumerate(lines) if line.startswith("A. ")]
    if not starts:
        return 0
    count, want = 1, 1
    for line in lines[starts[-1] + 1 :]:
        if want < len(LETTERS) and line.startswith(f"{LETTERS[want]}. "):
            count += 1
            want += 1
    return count


# -- loading --------------------------------------------------------------------------------
def _split_ids(path: Path, split: str) -> list[str]:
    data = read_json(path)
    if not isinstance(data, dict):
        raise DataFileError(f"{path}: expected a JSON object of split name -> list of ids")
    ids = require(data, split, path, None, list)
    return [str(i) for i in ids]


def _read_problems(path: Path, ids: list[str]) -> list[dict[str, Any]]:
    data = read_json(path)
    if not isinstance(data, dict):
        raise DataFileError(f"{path}: expected a JSON object of problem id -> problem")
    docs = []
    for pid in ids:
        if pid not in data:
            raise DataFileError(f"{path}: no problem {pid!r} (listed in the split file)")
        prob = data[pid]
        where = f"problem {pid!r}"
        if not isinstance(prob, dict):
            raise DataFileError(f"{path}:{where}: expected a JSON object")
        question = require(prob, "question", path, where, str)
        choices = require(prob, "choices", path, where, list)
        if not 2 <= len(choices) <= len(LETTERS) or not all(isinstance(c, str) for c in choices):
            raise DataFileError(
                f"{path}:{where}: field 'choices' should be 2 to {len(LETTERS)} strings"
            )
        answer = require(prob, "answer", path, where, int)
        if not 0 <= answer < len(choices):
            raise DataFileError(
                f"{path}:{where}: field 'answer' is {answer}, outside the {len(choices)} choices"
            )
        hint = prob.get("hint")
        if hint is not None and not isinstance(hint, str):
            raise DataFileError(f"{path}:{where}: field 'hint' should be str or null")
        image = prob.get("image")
        if image is not None and not isinstance(image, str):
            raise DataFileError(f"{path}:{where}: field 'image' should be str or null")
        docs.append(
            {
                "doc_id": pid,
                "question": build_prompt(question, choices, hint),
                "answer": LETTERS[answer],
                "n_choices": len(choices),
                "image": f"{pid}/{image}" if image else None,
                "has_image": bool(image),
                "subject": str(prob.get("subject", "")),
                "grade": str(prob.get("grade", "")),
            }
        )
    return docs


def read_llava_questions(path: Path) -> list[dict[str, Any]]:
    """Documents from LLaVA's conversation file (human turn = prompt, gpt turn = letter)."""
    data = read_json(path)
    if not isinstance(data, list):
        raise DataFileError(f"{path}: expected a JSON list of LLaVA conversation entries")
    docs = []
    for number, entry in enumerate(data, start=1):
        where = f"entry {number}"
        if not isinstance(entry, dict):
            raise DataFileError(f"{path}:{where}: expected a JSON object")
        pid = str(require(entry, "id", path, where, (str, int)))
        where = f"entry {number} (id {pid!r})"
        turns = require(entry, "conversations", path, where, list)
        if len(turns) < 2 or not all(isinstance(t, dict) for t in turns[:2]):
            raise DataFileError(
                f"{path}:{where}: field 'conversations' should hold a human and a gpt turn"
            )
        human = require(turns[0], "value", path, f"{where} human turn", str)
        letter = require(turns[1], "value", path, f"{where} gpt turn", str).strip()
        if letter not in LETTERS:
            raise DataFileError(
                f"{path}:{where}: field 'conversations[1].value' should be one answer letter "
                f"A-E, got {letter[:40]!r}"
            )
        prompt = strip_image_token(human)
        n_choices = count_options(prompt)
        if n_choices < 2:
            raise DataFileError(
                f"{path}:{where}: field 'conversations[0].value' does not end with "
                "'A. ...\\nB. ...' options"
            )
        if LETTERS.index(letter) >= n_choices:
            raise DataFileError(
                f"{path}:{where}: answer {letter} is beyond the {n_choices} options of the prompt"
            )
        image = entry.get("image")
        if image is not None and not isinstance(image, str):
            raise DataFileError(f"{path}:{where}: field 'image' should be str")
        docs.append(
            {
                "doc_id": pid,
                "question": prompt,
                "answer": letter,
                "n_choices": n_choices,
                "image": image or None,
                "has_image": bool(image),
                "subject": "",
                "grade": "",
            }
        )
    return docs


def load(files: dict[str, Path | None], options: dict[str, Any]) -> list[dict[str, Any]]:
    """Documents of ``options['split']`` from the official and/or LLaVA files."""
    split = str(options.get("split", "test"))
    problems, splits, questions = (
        files.get("problems"),
        files.get("pid_splits"),
        files.get("questions"),
    )
    if problems is None and questions is None:
        raise DataFileError(
            "task scienceqa_img needs problems.json (+ pid_splits.json) or LLaVA's "
            "llava_test_CQM-A.json; pass --data-root or --data-file problems=/questions="
        )
    if problems is not None and splits is None:
        raise DataFileError(
            f"{problems}: needs pid_splits.json next to it to select the {split} ids"
        )
    llava = read_llava_questions(questions) if questions is not None else None
    if problems is None:
        assert llava is not None
        if splits is not None:
            wanted = _split_ids(splits, split)
            got = [d["doc_id"] for d in llava]
            if set(wanted) != set(got):
                extra = sorted(set(got) - set(wanted))[:3]
                lacking = sorted(set(wanted) - set(got))[:3]
                raise DataFileError(
                    f"{questions}: its {len(got)} ids are not the {len(wanted)} ids of split "
                    f"{split!r} in {splits} (extra: {extra}, lacking: {lacking}); the official "
                    "score counts every question of the split"
                )
        _check_unique(llava, questions)
        return llava
    assert splits is not None
    docs = _read_problems(problems, _split_ids(splits, split))
    if llava is not None:
        by_id = {d["doc_id"]: d for d in llava}
        for doc in docs:
            conv = by_id.get(doc["doc_id"])
            if conv is None:
                raise DataFileError(
                    f"{questions}: no entry for problem {doc['doc_id']!r} of {problems}"
                )
            if conv["answer"] != doc["answer"] or conv["has_image"] != doc["has_image"]:
                raise DataFileError(
                    f"{questions}: entry {doc['doc_id']!r} (answer {conv['answer']}, image "
                    f"{conv['has_image']}) disagrees with {problems} (answer {doc['answer']}, "
                    f"image {doc['has_image']})"
                )
            doc["question"] = conv["question"]  # the exact text LLaVA fed the model
            doc["image"] = conv["image"] or doc["image"]
    return docs


def _check_unique(docs: list[dict[str, Any]], path: Path) -> None:
    seen: set[str] = set()
    for doc in docs:
        if doc["doc_id"] in seen:
            raise DataFileError(f"{path}: id {doc['doc_id']!r} appears twice")
        seen.add(doc["doc_id"])


def doc_to_visual(doc: dict[str, Any], options: dict[str, Any]) -> list[str]:
    """The image path (relative to the image folder), or nothing for text-only questions."""
    return [doc["image"]] if doc.get("image") else []


# -- scoring --------------------------------------------------------------------------------
def parse_letter(text: str) -> str:
    """The official three rules, in order; else ``FAILED``."""
    if text in LETTERS:
        return text
    if len(text) >= 3 and text[0] in LETTERS and text[1:3] == ". ":
        return text[0]
    found = _ANSWER_IS.findall(text)
    if len(found) == 1:
        return found[0]
    return FAILED


def pred_index(letter: str, n_choices: int) -> int:
    """Index of the letter among the question's choices; -1 when out of range or FAILED."""
    return LETTERS.index(letter) if letter in LETTERS[:n_choices] else -1


def choice_letters(doc: dict[str, Any], options: dict[str, Any]) -> list[str]:
    """The option letters of a problem: what the likelihood protocol scores after the prompt."""
    return list(LETTERS[: int(doc["n_choices"])])


def extract_letter(raw: str, doc: dict[str, Any], options: dict[str, Any]) -> Extracted:
    letter = parse_letter(raw)
    return Extracted(letter, letter != FAILED)


def process(doc: dict[str, Any], extracted: Extracted, ctx: Any) -> dict[str, Any]:
    if extracted.answer is None:
        # No answer: LLaVA's eval_science_qa.py (__main__) scores a missing problem as
        # {'text': 'FAILED', 'prompt': 'Unknown'}: wrong in the overall accuracy, and, since
        # 'Unknown' holds no '<image>', left out of IMG-accuracy (is_multimodal is False).
        return {"correct": False, "has_image": False, "pred_idx": -1}
    idx = pred_index(str(extracted.answer), int(doc["n_choices"]))
    return {
        "correct": idx == LETTERS.index(doc["answer"]),
        "has_image": bool(doc["has_image"]),
        "pred_idx": idx,
    }


def aggregate(cols: dict[str, np.ndarray]) -> dict[str, float]:
    correct = cols["correct"] > 0.5
    image = cols["has_image"] > 0.5
    return {
        "img_accuracy": 100 * float(np.mean(correct[image])) if image.any() else float("nan"),
        "accuracy": 100 * float(np.mean(correct)) if len(correct) else float("nan"),
    }


# -- LLaVA result file ------------------------------------------------------------------------
def read_result_file(path: Path | str) -> list[Prediction]:
    """Predictions from an exported ``scienceqa_results`` file (its ``outputs`` map), less
    the ids its ``missing`` list names (their ``FAILED`` is a placeholder, not an answer)."""
    path = Path(path)
    data = read_json(path)
    outputs = require(data, "outputs", path, None, dict) if isinstance(data, dict) else None
    if outputs is None:
        raise DataFileError(f"{path}: expected a JSON object with an 'outputs' map")
    missing = data.get("missing", [])
    if not isinstance(missing, list):
        raise DataFileError(f"{path}: field 'missing': expected a list of question ids")
    absent = {str(m) for m in missing}
    return [
        Prediction({"question_id": str(k), "text": str(v)}, str(v), str(path), i + 1)
        for i, (k, v) in enumerate(outputs.items())
        if str(k) not in absent
    ]

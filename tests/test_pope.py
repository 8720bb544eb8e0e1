"""POPE loader and scorer against LLaVA-1.5-13B's real answers (published numbers)."""

from __future__ import annotations

import json

import pytest

from harness.errors import DataFileError
from harness.scoring import score_predictions
from harness.task import get_task

EXPECTED = {  # split: (f1, accuracy, yes_ratio)
    "adversarial": (84.46, 85.50, 43.30),
    "random": (87.14, 88.01, 41.68),
    "popular": (86.25, 87.43, 41.37),
}


@pytest.mark.parametrize("split", sorted(EXPECTED))
def test_reference_numbers(reference, split):
    root = reference / "pope"
    scored = score_predictions(  # the answers of the other two splits are left out
        f"pope_{split}",
        root / "answers.jsonl",
        root,
        {"questions": "questions.jsonl"},
        n_boot=50,
        allow_extra=True,
    )
    f1, acc, yes = EXPECTED[split]
    m = scored.score.metrics
    assert (round(m["f1"], 2), round(m["accuracy"], 2), round(m["yes_ratio"], 2)) == (f1, acc, yes)
    assert scored.score.n == (2910 if split == "random" else 3000)
    assert scored.score.n_missing == 0
    lo, hi = scored.score.ci["f1"]
    assert lo < m["f1"] < hi


def test_extractor_rules():
    task = get_task("pope_random")
    doc = {"label": "yes"}
    assert task.extract("No, there is not.", doc).answer == "no"
    assert task.extract("Yes. But no cat.", doc).answer == "yes"  # only text before the first '.'
    assert task.extract("There is not a cat", doc).answer == "no"
    assert task.extract("NO", doc).answer == "yes"  # the official rule is case-sensitive
    assert task.extract("yes,no", doc).answer == "yes"  # commas are deleted, not split on


def test_misordered_llava_questions_are_rejected(tmp_path):
    ann = tmp_path / "coco_pope_random.json"
    ann.write_text(
        "\n".join(
            json.dumps(
                {
                    "question_id": i,
                    "image": f"{i}.jpg",
                    "text": f"Is there a q{i} in the image?",
                    "label": "yes",
                }
            )
            for i in (1, 2)
        )
    )
    qs = tmp_path / "llava_pope_test.jsonl"
    qs.write_text(
        "\n".join(
            json.dumps(
                {
                    "question_id": 10 + i,
                    "image": f"{i}.jpg",
                    "text": f"Is there a q{i} in the image?\nAnswer the question using a single word or phrase.",
                    "category": "random",
                }
            )
            for i in (2, 1)
        )
    )
    task = get_task("pope_random")
    with pytest.raises(DataFileError, match="not in the same order"):
        task.load_docs(tmp_path)
    qs.unlink()
    docs, _ = task.load_docs(tmp_path)
    assert [d["doc_id"] for d in docs] == ["1", "2"]


def test_bad_label_names_file_and_line(tmp_path):
    ann = tmp_path / "coco_pope_random.json"
    ann.write_text(
        json.dumps({"question_id": 1, "image": "a.jpg", "text": "q", "label": "maybe"}) + "\n"
    )
    with pytest.raises(DataFileError, match=r"coco_pope_random.json:1: field 'label'"):
        get_task("pope_random").load_docs(tmp_path)

"""ScienceQA-IMG loader, letter parser, scorer and result export, against LLaVA-1.5-13B's outputs."""

from __future__ import annotations

import json
import math

import pytest

from harness.errors import DataFileError, HarnessError
from harness.results.export import export_task
from harness.scoring import score_outputs, score_predictions
from harness.task import get_task
from harness.tasks.scienceqa.export import validate
from harness.tasks.scienceqa.scienceqa import (
    FAILED,
    count_options,
    parse_letter,
    pred_index,
    process,
    read_result_file,
)

QUESTIONS = {"questions": "questions_CQM-A.json"}


@pytest.fixture(scope="module")
def scored(reference):
    root = reference / "scienceqa"
    return score_predictions("scienceqa_img", root / "outputs.json", root, QUESTIONS, n_boot=50)


def test_reference_numbers(scored):
    score = scored.score
    assert round(score.metrics["img_accuracy"], 2) == 71.64
    assert round(score.metrics["accuracy"], 2) == 74.39
    fields = [s.fields for s in score.samples]
    assert score.n == 4241 and score.n_missing == 0
    assert sum(f["has_image"] for f in fields) == 2017
    assert sum(f["correct"] and f["has_image"] for f in fields) == 1445
    assert sum(f["correct"] for f in fields) == 3155
    assert score.n_parse_failures == 5  # the official parser gives FAILED for 5 outputs
    lo, hi = score.ci["img_accuracy"]
    assert lo < score.metrics["img_accuracy"] < hi


def test_prompts_match_what_llava_ran(reference, scored):
    records = json.loads((reference / "scienceqa" / "outputs.json").read_text())
    prompts = {r["question_id"]: r["question"] for r in records["correct"] + records["incorrect"]}
    task = scored.task
    for doc in scored.docs:
        expected = prompts[doc["doc_id"]].replace("<image>\n", "")
        assert task.prompt(doc) == expected
        assert ("<image>" in prompts[doc["doc_id"]]) == doc["has_image"]


@pytest.mark.parametrize(
    ("text", "letter"),
    [
        ("A", "A"),
        ("E", "E"),
        ("F", FAILED),  # rule 1 accepts A-E only
        ("a", FAILED),
        (" A", FAILED),  # no stripping
        ("B. because it floats", "B"),
        ("B. ", "B"),
        ("B.", FAILED),  # rule 2 needs 'X. ' (3 characters)
        ("B) cat", FAILED),
        ("The answer is C.", "C"),
        ("Thus The answer is Dx", "D"),  # the dot is unescaped: any character
        ("The answer is C", FAILED),  # ... but one must follow
        ("The answer is (A).", FAILED),
        ("The answer is A. The answer is B.", FAILED),  # exactly one match
        ("The answer is G.", "G"),  # parsed, then mapped to -1 below
        ("", FAILED),
    ],
)
def test_letter_rules(text, letter):
    assert parse_letter(text) == letter


def test_letter_beyond_choices_is_minus_one():
    assert pred_index("C", 2) == -1
    assert pred_index("G", 5) == -1
    assert pred_index(FAILED, 5) == -1
    assert pred_index("B", 2) == 1
    task = get_task("scienceqa_img")
    doc = {"doc_id": "1", "answer": "A", "n_choices": 2, "has_image": True}
    fields = process(doc, task.extract("C", doc), None)
    assert fields == {"correct": False, "has_image": True, "pred_idx": -1}


def test_count_options_with_multiline_choices():
    assert count_options("Which closing?\nA. Love,\nZoe\nB. love,\nZoe") == 2
    assert count_options("Q?\nA. x\nB. y\nC. z") == 3
    assert count_options("no options here") == 0


def _problems(tmp_path):
    problems = {
        "10": {
            "question": "Which is a mammal?",
            "choices": ["frog", "cat", "eel"],
            "answer": 1,
            "hint": "",
            "image": None,
            "subject": "natural science",
            "grade": "grade2",
        },
        "11": {
            "question": "What is shown?",
            "choices": ["a map", "a  dog"],
            "answer": 0,
            "hint": "Look at the picture. ",
            "image": "image.png",
        },
        "12": {
            "question": "Not in test",
            "choices": ["x", "y"],
            "answer": 0,
            "hint": "",
            "image": None,
        },
    }
    (tmp_path / "problems.json").write_text(json.dumps(problems))
    (tmp_path / "pid_splits.json").write_text(json.dumps({"test": ["10", "11"], "train": ["12"]}))
    return problems


def test_official_files_loader(tmp_path):
    _problems(tmp_path)
    task = get_task("scienceqa_img")
    docs, _ = task.load_docs(tmp_path)
    assert [d["doc_id"] for d in docs] == ["10", "11"]
    assert task.prompt(docs[0]) == (
        "Which is a mammal?\nA. frog\nB. cat\nC. eel\n"
        "Answer with the option's letter from the given choices directly."
    )
    assert task.prompt(docs[1]).startswith(
        "Context: Look at the picture.\nWhat is shown?\nA. a map\nB. a  dog\n"
    )
    assert (docs[0]["answer"], docs[0]["n_choices"], docs[1]["answer"]) == ("B", 3, "A")
    assert task.visuals(docs[0], tmp_path) == ()
    assert task.visuals(docs[1], tmp_path) == (str(tmp_path / "images/test/11/image.png"),)
    score = score_outputs(task, docs, {"10": "B", "11": "The answer is B."}, n_boot=0)
    assert score.metrics == {"img_accuracy": 0.0, "accuracy": 50.0}


def test_llava_file_must_agree_with_problems(tmp_path):
    _problems(tmp_path)
    conv = [
        {
            "id": "10",
            "conversations": [
                {"from": "human", "value": "Which is a mammal?\nA. frog\nB. cat\nC. eel"},
                {"from": "gpt", "value": "B"},
            ],
        },
        {
            "id": "11",
            "image": "11/image.png",
            "conversations": [
                {"from": "human", "value": "<image>\nWhat is shown?\nA. a map\nB. a dog"},
                {"from": "gpt", "value": "B"},
            ],
        },
    ]
    (tmp_path / "llava_test_CQM-A.json").write_text(json.dumps(conv))
    with pytest.raises(DataFileError, match=r"llava_test_CQM-A.json: entry '11' \(answer B"):
        get_task("scienceqa_img").load_docs(tmp_path)
    conv[1]["conversations"][1]["value"] = "A"
    (tmp_path / "llava_test_CQM-A.json").write_text(json.dumps(conv))
    docs, _ = get_task("scienceqa_img").load_docs(tmp_path)
    assert docs[1]["question"] == "What is shown?\nA. a map\nB. a dog"  # LLaVA's text wins


def test_llava_file_alone_is_checked_against_the_split(tmp_path):
    conv = [
        {
            "id": "10",
            "conversations": [
                {"from": "human", "value": "Q?\nA. x\nB. y"},
                {"from": "gpt", "value": "A"},
            ],
        }
    ]
    (tmp_path / "llava_test_CQM-A.json").write_text(json.dumps(conv))
    (tmp_path / "pid_splits.json").write_text(json.dumps({"test": ["10", "11"]}))
    with pytest.raises(DataFileError, match=r"not the 2 ids of split 'test'.*lacking: \['11'\]"):
        get_task("scienceqa_img").load_docs(tmp_path)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"id": "10"}, r"llava_test_CQM-A.json:entry 1 \(id '10'\): missing field 'conversations'"),
        (
            {
                "id": "10",
                "conversations": [
                    {"from": "human", "value": "Q?\nA. x\nB. y"},
                    {"from": "gpt", "value": "The answer is A"},
                ],
            },
            r"entry 1 \(id '10'\): field 'conversations\[1\].value' should be one answer letter",
        ),
        (
            {
                "id": "10",
                "conversations": [
                    {"from": "human", "value": "Q? x or y"},
                    {"from": "gpt", "value": "A"},
                ],
            },
            r"entry 1 \(id '10'\): field 'conversations\[0\].value' does not end with",
        ),
    ],
)
def test_malformed_llava_file(tmp_path, entry, message):
    (tmp_path / "llava_test_CQM-A.json").write_text(json.dumps([entry]))
    with pytest.raises(DataFileError, match=message):
        get_task("scienceqa_img").load_docs(tmp_path)


def test_malformed_problems(tmp_path):
    problems = _problems(tmp_path)
    del problems["11"]["choices"]
    (tmp_path / "problems.json").write_text(json.dumps(problems))
    with pytest.raises(DataFileError, match=r"problems.json:problem '11': missing field 'choices'"):
        get_task("scienceqa_img").load_docs(tmp_path)
    (tmp_path / "problems.json").write_text('{"10": {"question": "q",\n "choices": [}')
    with pytest.raises(DataFileError, match=r"problems.json:2:\d+: invalid JSON"):
        get_task("scienceqa_img").load_docs(tmp_path)


def test_export_round_trip(reference, scored, tmp_path):
    out = tmp_path / "scienceqa_result.json"
    outputs = {d: r.text for d, r in scored.match.records.items()}
    assert export_task(scored.task, scored.docs, outputs, out, scored.files) == 4241
    result = json.loads(out.read_text())
    assert (result["correct"], result["count"], result["img_correct"], result["img_count"]) == (
        3155,
        4241,
        1445,
        2017,
    )
    assert round(result["acc"], 2) == 74.39 and round(result["img_acc"], 2) == 71.64
    assert result["results"]["11"] == 2  # parsed 'C' -> choice index 2 (official layout)
    again = score_predictions(
        "scienceqa_img", read_result_file(out), reference / "scienceqa", QUESTIONS, n_boot=0
    )
    assert again.score.metrics == scored.score.metrics


def test_export_marks_missing_predictions_failed(tmp_path):
    _problems(tmp_path)
    task = get_task("scienceqa_img")
    docs, files = task.load_docs(tmp_path)
    out = tmp_path / "r.json"
    export_task(task, docs, {"10": "B"}, out, files)
    result = json.loads(out.read_text())
    assert result["outputs"]["11"] == FAILED and result["results"] == {"10": 1, "11": -1}
    assert result["missing"] == ["11"]
    # as harness score and eval_science_qa.py: wrong overall, not part of the IMG subset
    score = score_outputs(task, docs, {"10": "B"}, n_boot=0)
    assert result["acc"] == score.metrics["accuracy"] == 50.0
    # "11" is the only question with an image, and it has no answer
    assert (result["img_count"], result["img_acc"]) == (0, None)
    assert math.isnan(score.metrics["img_accuracy"])
    # scored again from the file: the same numbers, the placeholder is not an answer
    back = {p.record["question_id"]: p.text for p in read_result_file(out)}
    assert back == {"10": "B"}
    bad = dict(result, results={"10": 7, "11": -1})
    with pytest.raises(HarnessError, match="schema at results/10"):
        validate(bad)

"""MMBench loaders, choice extraction, circular scoring, judge fallback and xlsx export."""

from __future__ import annotations

import base64
import json
import math

import pytest
from openpyxl import load_workbook

from harness.errors import DataFileError, HarnessError
from harness.judge import JudgeReply
from harness.results.export import export_task
from harness.scoring import score_outputs, score_predictions
from harness.task import get_task
from harness.tasks.mmbench.mmbench import infer_choice, question_text

XLSX = {"data": "upload_dev.xlsx"}
HEADER = [
    "index",
    "question",
    "hint",
    "A",
    "B",
    "C",
    "D",
    "answer",
    "category",
    "image",
    "source",
    "l2-category",
    "comment",
    "split",
]
IMAGE = b"\x89PNG\r\n\x1a\nnot really a png"


@pytest.fixture(scope="module")
def scored(reference):
    root = reference / "mmbench"
    return score_predictions("mmbench_en_dev", root / "answers.jsonl", root, XLSX, n_boot=50)


def test_reference_numbers(scored):
    score = scored.score
    assert round(score.metrics["accuracy"], 2) == 67.69
    assert score.n == 4377 and score.n_missing == 0 and scored.match.n_unmatched == 0
    assert len({d["group"] for d in scored.docs}) == 1176
    assert score.extra == {"judge_failures": 0, "judge_needed": 0}
    lo, hi = score.ci["accuracy"]
    assert lo < score.metrics["accuracy"] < hi


def test_xlsx_prediction_column_scores_the_same(reference, scored):
    root = reference / "mmbench"
    again = score_predictions("mmbench_en_dev", root / "upload_dev.xlsx", root, XLSX, n_boot=0)
    assert again.score.metrics["accuracy"] == scored.score.metrics["accuracy"]


def test_prompts_match_what_llava_ran(reference, scored):
    """LLaVA's prompt is hint + question + options; the xlsx has no hint, so compare the tail."""
    docs = {d["doc_id"]: d for d in scored.docs}
    with (reference / "mmbench" / "answers.jsonl").open() as fh:
        for line in fh:
            record = json.loads(line)
            assert record["prompt"].endswith(question_text(docs[str(record["question_id"])]))


OPTS = {"A": "red apple", "B": "blue sky", "C": "green grass"}


@pytest.mark.parametrize(
    ("text", "letter", "rule"),
    [
        ("B", "B", "letter"),
        ("A", "A", "letter"),
        ("C dog is", "C", "letter"),
        ("A: B", "B", "letter"),  # the only bare letter is B
        ("E", "E", "letter"),  # letters A-E, scored wrong later if not an option
        ("A and B", None, "unresolved"),  # two bare letters, no wrapped form, no option text
        ("A cat is here", None, "unresolved"),  # 'A' with more than 3 words: rule 1 skipped
        ("A cat sees a blue sky", "B", "text"),
        ("(B) is right", "B", "wrapped"),
        ("Answer: C.", "C", "wrapped"),
        ("Answer:A", None, "unresolved"),  # 'Answer:A' is one word, not ':A'
        ("The answer is :B", "B", "wrapped"),
        ("A. or (B)", "A", "wrapped"),  # patterns in official order: 'X.' is tried first
        ("B. red apple, C. blue sky", None, "unresolved"),  # two 'X.' forms, two option texts
        ("It is the Blue Sky.", "B", "text"),
        ("red apple or blue sky", None, "unresolved"),
        ("b", None, "unresolved"),
        ("", None, "unresolved"),
    ],
)
def test_choice_extraction(text, letter, rule):
    assert infer_choice(text, OPTS) == (letter, rule)


def _tsv(tmp_path, rows, name="mmbench_dev_20230712.tsv", header=HEADER):
    def cell(value):
        return "" if value is None else str(value)

    lines = ["\t".join(header)] + ["\t".join(cell(r.get(h)) for h in header) for r in rows]
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _row(index, answer, a="cat", b="dog", c="nan", d="", **extra):
    row = {
        "index": index,
        "question": "What animal?",
        "hint": "nan",
        "A": a,
        "B": b,
        "C": c,
        "D": d,
        "answer": answer,
        "category": "animals",
        "image": base64.b64encode(IMAGE).decode(),
        "source": "x",
        "l2-category": "coarse",
        "comment": "nan",
        "split": "dev",
    }
    row.update(extra)
    return row


def _rows():
    return [
        _row(1, "A"),
        _row(1_000_001, "B", a="dog", b="cat", image="1"),
        _row(2, "B", c="bird", category="birds", hint="Look closely."),
        _row(1_000_002, "A", a="dog", b="cat", c="bird", category="birds"),
    ]


def test_tsv_loader(tmp_path):
    _tsv(tmp_path, _rows())
    task = get_task("mmbench_en_dev")
    docs, _ = task.load_docs(tmp_path)
    assert [d["doc_id"] for d in docs] == ["1", "1000001", "2", "1000002"]
    assert docs[0]["options"] == {"A": "cat", "B": "dog"}  # 'nan' and '' are not options
    assert task.prompt(docs[0]) == (
        "What animal?\nA. cat\nB. dog\nAnswer with the option's letter from the given choices directly."
    )
    assert task.prompt(docs[2]).startswith("Look closely.\nWhat animal?\nA. cat\nB. dog\nC. bird\n")
    assert task.visuals(docs[0], tmp_path) == (IMAGE,)
    assert task.visuals(docs[1], tmp_path) == (IMAGE,)  # image cell '1' refers to row 1's image
    cn = get_task("mmbench_cn_dev")
    assert cn.prompt(docs[0]).endswith("\nB. dog\n请直接回答选项字母。")


def test_circular_scoring_by_hand(tmp_path):
    _tsv(tmp_path, _rows())
    task = get_task("mmbench_en_dev")
    docs, _ = task.load_docs(tmp_path)
    outputs = {"1": "A", "1000001": "B. cat", "2": "B", "1000002": "B"}
    score = score_outputs(task, docs, outputs, n_boot=20)
    assert score.metrics == {
        "accuracy": 50.0,
        "category/animals": 100.0,
        "category/birds": 0.0,
        "l2_category/coarse": 50.0,
    }
    assert set(score.ci) >= {"accuracy"}
    missing = score_outputs(task, docs, {"1": "A", "2": "B", "1000002": "A"}, n_boot=0)
    assert missing.metrics["accuracy"] == 50.0  # a missing rotation fails its question
    assert missing.extra["judge_needed"] == 0  # ... without asking a judge


class FakeJudge:
    model = "fake-judge"

    def __init__(self, replies):
        self.replies = list(replies)
        self.calls = []

    def judge(self, system, user, *, temperature=0.0, max_tokens=256):
        self.calls.append(user)
        text = self.replies.pop(0) if self.replies else "I cannot tell"
        return JudgeReply(text=text) if text is not None else JudgeReply(text=None, error="timeout")


def test_judge_fallback(tmp_path):
    _tsv(tmp_path, _rows())
    task = get_task("mmbench_en_dev")
    docs, _ = task.load_docs(tmp_path)
    outputs = {"1": "A", "1000001": "a canine, surely", "2": "B", "1000002": "A"}
    without = score_outputs(task, docs, outputs, n_boot=0)
    assert without.metrics["accuracy"] == 50.0 and without.extra == {
        "judge_failures": 0,
        "judge_needed": 1,
    }
    judge = FakeJudge(["B"])
    helped = score_outputs(task, docs, outputs, judge=judge, n_boot=0)
    assert helped.metrics["accuracy"] == 100.0
    assert helped.extra == {"judge_failures": 0, "judge_needed": 1}
    assert "Model reply: a canine, surely" in judge.calls[0] and "A. dog\nB. cat" in judge.calls[0]
    stubborn = FakeJudge([None, "maybe", "hmm"])
    failed = score_outputs(task, docs, outputs, judge=stubborn, n_boot=0)
    assert len(stubborn.calls) == 3  # three tries, then a seeded random pick
    assert failed.extra == {"judge_failures": 1, "judge_needed": 1}
    pick = next(s.fields["pred"] for s in failed.samples if s.doc_id == "1000001")
    assert pick in {"A", "B", "E"}
    again = score_outputs(task, docs, outputs, judge=FakeJudge([None, "maybe", "hmm"]), n_boot=0)
    assert next(s.fields["pred"] for s in again.samples if s.doc_id == "1000001") == pick


def test_test_split_has_no_answers(tmp_path):
    header = [h for h in HEADER if h != "answer"]
    _tsv(tmp_path, _rows(), name="mmbench_test_20230712.tsv", header=header)
    task = get_task("mmbench_en_test")
    docs, files = task.load_docs(tmp_path)
    assert docs[0]["answer"] is None
    assert math.isnan(score_outputs(task, docs, {"1": "A"}, n_boot=0).metrics["accuracy"])
    out = tmp_path / "upload.xlsx"
    assert export_task(task, docs, {"1": "A", "2": "=B"}, out, files) == 4
    rows = list(load_workbook(out).active.iter_rows(values_only=True))
    assert rows[0] == ("index", "question", "A", "B", "C", "D", "prediction", "split")
    assert rows[1][:7] == (1, "What animal?", "cat", "dog", None, None, "A")
    assert rows[3][6] == "=B" and rows[2][6] is None


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (
            lambda r: r[0].update(image="not base64!"),
            r"mmbench_dev_20230712.tsv:2: field 'image' is not valid base64",
        ),
        (
            lambda r: r[1].update(image="7"),
            r"tsv:3: field 'image' refers to index 7, which has no image",
        ),
        (
            lambda r: r[2].update(answer="D"),
            r"tsv:4: field 'answer' is 'D', not one of the options",
        ),
        (
            lambda r: r[3].update(index="x12"),
            r"tsv:5: field 'index' should be an integer, got 'x12'",
        ),
        (lambda r: r[0].update(B="None"), r"tsv:2: fewer than two non-empty options"),
    ],
)
def test_malformed_tsv(tmp_path, mutate, message):
    rows = _rows()
    mutate(rows)
    _tsv(tmp_path, rows)
    with pytest.raises(DataFileError, match=message):
        get_task("mmbench_en_dev").load_docs(tmp_path)


def test_tsv_with_wrong_field_count(tmp_path):
    path = _tsv(tmp_path, _rows())
    path.write_text(path.read_text() + "3\tonly two fields\n")
    with pytest.raises(
        DataFileError, match=r"tsv:6: 2 tab-separated fields, but the header has 14"
    ):
        get_task("mmbench_en_dev").load_docs(tmp_path)
    (tmp_path / path.name).write_text("index\tquestion\tA\n1\tq\tx\n")
    with pytest.raises(DataFileError, match=r"no 'B' column"):
        get_task("mmbench_en_dev").load_docs(tmp_path)


def test_export_round_trip(reference, scored, tmp_path):
    out = tmp_path / "upload.xlsx"
    outputs = {d: r.text for d, r in scored.match.records.items()}
    assert export_task(scored.task, scored.docs, outputs, out, scored.files) == 4377
    header = next(load_workbook(out, read_only=True).active.iter_rows(values_only=True))
    assert header == ("index", "question", "A", "B", "C", "D", "prediction", "answer", "split")
    again = score_predictions("mmbench_en_dev", out, None, {"data": out}, n_boot=0)
    assert again.score.metrics["accuracy"] == scored.score.metrics["accuracy"]
    assert round(again.score.metrics["accuracy"], 2) == 67.69


def test_tsv_export_drops_columns(tmp_path):
    _tsv(tmp_path, _rows())
    task = get_task("mmbench_en_dev")
    docs, files = task.load_docs(tmp_path)
    out = tmp_path / "upload.xlsx"
    export_task(task, docs, {"1": "A", "1000001": "B", "2": "B", "1000002": "B"}, out, files)
    rows = list(load_workbook(out).active.iter_rows(values_only=True))
    assert rows[0] == ("index", "question", "A", "B", "C", "D", "prediction", "answer", "split")
    assert rows[3] == (2, "What animal?", "cat", "dog", "bird", None, "B", "B", "dev")
    again = score_predictions("mmbench_en_dev", out, tmp_path, n_boot=0)
    assert again.score.metrics["accuracy"] == 50.0


def test_a_failed_export_leaves_no_file_and_keeps_the_old_one(tmp_path, monkeypatch):
    from harness.tasks.mmbench import export as mmbench_export

    _tsv(tmp_path, _rows())
    task = get_task("mmbench_en_dev")
    docs, files = task.load_docs(tmp_path)
    out = tmp_path / "out" / "upload.xlsx"
    outputs = {"1": "A", "1000001": "B", "2": "B", "1000002": "B"}

    def unreadable(path, *args):
        raise HarnessError(f"{args[-1]}: written MMBench xlsx cannot be read back (test)")

    monkeypatch.setattr(mmbench_export, "_validate", unreadable)
    with pytest.raises(HarnessError, match="upload.xlsx: written MMBench xlsx"):
        export_task(task, docs, outputs, out, files)
    assert list(out.parent.iterdir()) == []  # neither the file nor a temporary one
    monkeypatch.undo()
    export_task(task, docs, outputs, out, files)
    before = out.read_bytes()
    monkeypatch.setattr(mmbench_export, "_validate", unreadable)
    with pytest.raises(HarnessError):
        export_task(task, docs, {**outputs, "2": "C"}, out, files)
    assert out.read_bytes() == before and list(out.parent.iterdir()) == [out]

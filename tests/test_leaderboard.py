"""Leaderboard from real POPE answers (LLaVA-1.5-13B) scored as fp16 and a perturbed copy as int4.

The F1 values the tests expect are computed here from the answer and label
files, independently of the task code, and the drops from those by hand.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from harness.api.config import MetricSpec
from harness.cli import main
from harness.errors import HarnessError
from harness.results.leaderboard import build_leaderboard, plot_drops, render
from harness.results.store import ResultsStore, RunMeta
from harness.task import TaskScore

SPLITS = ("adversarial", "popular", "random")
MODEL = "llava-v1.5-13b"
OTHER = "other<model>&co"  # needs escaping in HTML and is never run at fp16


# -- helpers shared with test_gate -------------------------------------------------------------
def read_answers(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def write_answers(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def perturb(src: Path, dst: Path, flip: Callable[[dict], bool]) -> Path:
    """Copy an answers file, turning the 'Yes' answers that ``flip`` picks into 'No'."""
    out = []
    for rec in read_answers(src):
        if rec["text"] == "Yes" and flip(rec):
            rec = {**rec, "text": "No"}
        out.append(rec)
    return write_answers(dst, out)


def labels_by_question(pope: Path, split: str) -> dict[int, bool]:
    """LLaVA question id -> label is 'yes' (questions pair with labels by order in the split)."""
    ids = [
        q["question_id"] for q in read_answers(pope / "questions.jsonl") if q["category"] == split
    ]
    labels = [r["label"] == "yes" for r in read_answers(pope / "gt" / f"coco_pope_{split}.json")]
    assert len(ids) == len(labels)
    return dict(zip(ids, labels, strict=True))


def pope_by_hand(pope: Path, answers: Path, split: str) -> dict[str, float]:
    """F1 and accuracy (x100) with 'yes' as positive; the answers are exactly 'Yes' or 'No'."""
    labels = labels_by_question(pope, split)
    tp = fp = fn = tn = 0
    for rec in read_answers(answers):
        if rec["question_id"] not in labels:
            continue
        pred, label = rec["text"] == "Yes", labels[rec["question_id"]]
        tp += pred and label
        fp += pred and not label
        fn += label and not pred
        tn += not pred and not label
    precision, recall = tp / (tp + fp), tp / (tp + fn)
    return {
        "f1": 100 * 2 * precision * recall / (precision + recall),
        "accuracy": 100 * (tp + tn) / (tp + fp + fn + tn),
    }


def score_into(
    db: Path,
    pope: Path,
    answers: Path,
    precision: str,
    model: str = MODEL,
    task: str = "pope",
    status: int = 0,
) -> None:
    """``harness score TASK --db`` of an answers file, recorded as MODEL at PRECISION.

    The answers file holds all three splits: scoring one split leaves the others out
    (``--allow-extra``)."""
    argv = f"score {task} --data-file questions=questions.jsonl --bootstrap 0 --json".split()
    argv += ["--predictions", str(answers), "--data-root", str(pope), "--db", str(db)]
    argv += ["--allow-extra"] if task != "pope" else []
    assert main([*argv, "--model", model, "--precision", precision]) == status


def every_seventh(rec: dict) -> bool:
    return rec["question_id"] % 7 == 0


# -- fixtures -----------------------------------------------------------------------------------
def shared_pope_db(reference: Path, factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """fp16 (real answers) and int4 (one 'Yes' in seven flipped) runs of the POPE group, plus
    an ``OTHER`` model's int4 run of pope_random; built once per session (test_gate reuses it).

    Returns the DB path and the hand-computed metrics per precision and split.
    """
    pope = reference / "pope"
    root = factory.getbasetemp() / "pope-board"
    db, int4 = root / "r.db", root / "int4.jsonl"
    if not (root / "done").exists():
        root.mkdir(exist_ok=True)
        perturb(pope / "answers.jsonl", int4, every_seventh)
        score_into(db, pope, pope / "answers.jsonl", "fp16")
        score_into(db, pope, int4, "int4")
        score_into(db, pope, int4, "int4", model=OTHER, task="pope_random")
        (root / "done").touch()
    expected = {
        prec: {s: pope_by_hand(pope, path, s) for s in SPLITS}
        for prec, path in (("fp16", pope / "answers.jsonl"), ("int4", int4))
    }
    return db, expected


@pytest.fixture(scope="module")
def board_db(reference, tmp_path_factory):
    return shared_pope_db(reference, tmp_path_factory)


def _markdown_rows(text: str) -> list[list[str]]:
    lines = [line for line in text.splitlines() if line.startswith("|")]
    return [[c.strip() for c in line.strip("|").split("|")] for line in lines]


def _drops(base: float, value: float) -> tuple[str, str]:
    return f"{base - value:.2f}", f"{100 * (base - value) / base:.2f}"


# -- tests --------------------------------------------------------------------------------------
def test_markdown_primary_metric_and_drops(board_db, reference, capsys):
    db, expected = board_db
    capsys.readouterr()
    assert main(["leaderboard", "--db", str(db)]) == 0
    text = capsys.readouterr().out
    header, rule, *rows = _markdown_rows(text)
    cols = ["pope_adversarial/f1", "pope_popular/f1", "pope_random/f1", "pope/f1"]  # group last
    assert header == ["model", "precision"] + [
        h for c in cols for h in (c, f"{c} drop", f"{c} drop %")
    ] + ["flips %"]
    assert rule[0] == "---" and len(rule) == len(header)
    assert [r[:2] for r in rows] == [[MODEL, "fp16"], [MODEL, "int4"], [OTHER, "int4"]]
    fp16, int4, other = rows
    assert fp16[2 + 3 * 2] == "87.14"  # LLaVA-1.5-13B's published POPE random F1
    for i, split in enumerate(SPLITS):
        base, cand = expected["fp16"][split]["f1"], expected["int4"][split]["f1"]
        assert fp16[2 + 3 * i : 5 + 3 * i] == [f"{base:.2f}", "0.00", "0.00"]
        assert int4[2 + 3 * i : 5 + 3 * i] == [f"{cand:.2f}", *_drops(base, cand)]
        assert base - cand > 5  # a real drop: one 'Yes' in seven became 'No'
    mean_base = sum(expected["fp16"][s]["f1"] for s in SPLITS) / 3
    mean_cand = sum(expected["int4"][s]["f1"] for s in SPLITS) / 3
    assert int4[-4:-1] == [f"{mean_cand:.2f}", *_drops(mean_base, mean_cand)]
    assert fp16[-4] == f"{mean_base:.2f}"
    # flips: the answers the perturbation changed, over every document of the three splits
    in_splits = set().union(*(labels_by_question(reference / "pope", sp) for sp in SPLITS))
    answers = read_answers(reference / "pope" / "answers.jsonl")
    scored = [r for r in answers if r["question_id"] in in_splits]
    changed = sum(r["text"] == "Yes" and every_seventh(r) for r in scored)
    assert 0 < changed < len(scored)
    assert (fp16[-1], int4[-1]) == ("0.00", f"{100 * changed / len(scored):.2f}")
    # A model with no fp16 run: its value, and '-' for the drops and the tasks it never ran.
    assert other[2:11] == ["-"] * 6 + [f"{expected['int4']['random']['f1']:.2f}", "-", "-"]
    assert other[-4:] == ["-", "-", "-", "-"]
    assert f"no unquantized (fp16, bf16 or fp32) run for {OTHER}" in text
    assert f"base: each model's unquantized run ({MODEL}@fp16)" in text


def test_csv_with_another_metric(board_db, tmp_path, capsys):
    db, expected = board_db
    out = tmp_path / "board.csv"
    args = ["--format", "csv", "--metric", "accuracy", "--tasks", "pope_random,pope_adversarial"]
    assert main(["leaderboard", "--db", str(db), *args, "--out", str(out)]) == 0
    capsys.readouterr()
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert list(rows[0]) == ["model", "precision"] + [
        h
        for c in ("pope_random/accuracy", "pope_adversarial/accuracy")
        for h in (c, f"{c} drop", f"{c} drop %")
    ] + ["flips %"]
    by_key = {(r["model"], r["precision"]): r for r in rows}
    for split in ("random", "adversarial"):
        col = f"pope_{split}/accuracy"
        base = expected["fp16"][split]["accuracy"]
        cand = expected["int4"][split]["accuracy"]
        int4 = by_key[(MODEL, "int4")]
        assert float(by_key[(MODEL, "fp16")][col]) == pytest.approx(base, abs=1e-6)
        assert float(int4[col]) == pytest.approx(cand, abs=1e-6)
        assert float(int4[f"{col} drop"]) == pytest.approx(base - cand, abs=1e-6)
        assert float(int4[f"{col} drop %"]) == pytest.approx(100 * (base - cand) / base, abs=1e-6)
    other = by_key[(OTHER, "int4")]
    assert other["pope_random/accuracy drop"] == "-" and other["pope_adversarial/accuracy"] == "-"
    assert float(other["pope_random/accuracy"]) == pytest.approx(
        expected["int4"]["random"]["accuracy"], abs=1e-6
    )


def test_html_escapes_text(board_db, capsys):
    db, expected = board_db
    capsys.readouterr()
    assert main(["leaderboard", "--db", str(db), "--format", "html", "--tasks", "pope_random"]) == 0
    text = capsys.readouterr().out
    assert "<td>other&lt;model&gt;&amp;co</td>" in text and OTHER not in text
    assert text.count('<tr class="base">') == 1
    base, cand = expected["fp16"]["random"]["f1"], expected["int4"]["random"]["f1"]
    drop, rel = _drops(base, cand)
    assert (
        f"<td>{MODEL}</td>\n<td>int4</td>\n<td>{cand:.2f}</td>\n<td>{drop}</td>\n<td>{rel}</td>"
        in text
    )
    assert text.startswith('<table class="leaderboard">') and text.rstrip().endswith("</p>")


def test_plot_writes_a_png(board_db, tmp_path, capsys):
    db, _ = board_db
    png = tmp_path / "plots" / "drops.png"
    assert main(["leaderboard", "--db", str(db), "--plot", str(png)]) == 0
    capsys.readouterr()
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    from matplotlib.image import imread

    pixels = imread(png)
    assert pixels.ndim == 3 and pixels.shape[0] > 100 and pixels.shape[1] > 100
    assert pixels.std() > 0  # not a blank image


def test_plot_without_matplotlib_says_how_to_install(board_db, tmp_path, monkeypatch):
    db, _ = board_db
    board = build_leaderboard(ResultsStore(db))
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(HarnessError, match=r"pip install 'vlm-harness\[plot\]'"):
        plot_drops(board, tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_group_selection_and_unknown_names(board_db):
    db, _ = board_db
    store = ResultsStore(db)
    board = build_leaderboard(store, tasks=["pope"])
    assert [c.label for c in board.columns] == [
        "pope_adversarial/f1",
        "pope_popular/f1",
        "pope_random/f1",
        "pope/f1",
    ]
    assert board.columns[-1].is_group
    with pytest.raises(HarnessError, match="'nope'"):
        build_leaderboard(store, tasks=["nope"])
    with pytest.raises(HarnessError, match="metric 'bleu'"):
        build_leaderboard(store, metric="bleu")
    with pytest.raises(HarnessError, match="csv, html|markdown"):
        render(build_leaderboard(store), "latex")


# -- latest run, failed runs, run-id base, lower-is-better ------------------------------------------
SPECS = [MetricSpec(name="f1", primary=True), MetricSpec(name="wer", higher_is_better=False)]


def _record(
    store: ResultsStore,
    precision: str,
    metrics: dict[str, dict[str, float]],
    status: str = "complete",
) -> str:
    run_id = store.create_run(
        RunMeta(model="m", model_fingerprint=f"fp-{precision}", precision=precision)
    )
    for task, values in metrics.items():
        store.start_task(
            run_id,
            task,
            task_version="1",
            task_hash=f"h-{task}",
            gen_hash="g",
            gen_kwargs={},
            data_files={},
            data_hashes={},
            options={},
        )
        primary = "wer" if task == "asr" else "f1"
        score = TaskScore(
            task=task,
            metrics=values,
            ci={},
            n=10,
            n_missing=0,
            n_parse_failures=0,
            samples=[],
            primary=primary,
        )
        store.put_task_score(run_id, f"fp-{precision}", f"h-{task}", "g", score, SPECS)
    store.finish_run(run_id, status)
    return run_id


def test_latest_complete_run_per_task_and_lower_is_better(tmp_path):
    store = ResultsStore(tmp_path / "r.db")
    old = _record(store, "fp16", {"vqa": {"f1": 80.0, "wer": 1.0}, "asr": {"wer": 10.0, "f1": 1.0}})
    _record(store, "fp16", {"vqa": {"f1": 82.0, "wer": 1.0}})  # newer, only re-ran vqa
    _record(store, "fp16", {"vqa": {"f1": 10.0, "wer": 1.0}}, status="failed")  # ignored
    _record(store, "int4", {"vqa": {"f1": 79.5, "wer": 1.0}, "asr": {"wer": 12.0, "f1": 1.0}})

    board = build_leaderboard(store)
    assert [c.label for c in board.columns] == ["asr/wer", "vqa/f1"]
    assert [c.higher_is_better for c in board.columns] == [False, True]
    fp16, int4 = board.rows
    asr, vqa = board.columns
    assert (fp16.precision, fp16.cells[vqa].value, fp16.cells[asr].value) == ("fp16", 82.0, 10.0)
    assert int4.cells[vqa].drop == pytest.approx(2.5)
    assert int4.cells[vqa].rel_drop == pytest.approx(100 * 2.5 / 82)
    assert int4.cells[asr].drop == pytest.approx(2.0)  # word error rate went up: a drop
    assert int4.cells[asr].rel_drop == pytest.approx(20.0)
    int4_line = render(board).splitlines()[3]
    assert int4_line == "| m | int4 | 12.00 | 2.00 | 20.00 | 79.50 | 2.50 | 3.05 | - |"

    by_run = build_leaderboard(store, base=old[:6])  # a run id prefix as the base
    assert by_run.base_run == old
    fp16, int4 = by_run.rows
    assert fp16.cells[vqa].drop == pytest.approx(-2.0)  # the newer fp16 run beats the old one
    assert int4.cells[vqa].drop == pytest.approx(0.5)
    assert "drops vs run " + old in render(by_run)

    with pytest.raises(HarnessError, match="--base bf16: no complete run has this precision"):
        build_leaderboard(store, base="bf16")

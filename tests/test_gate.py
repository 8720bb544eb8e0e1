"""Regression gate on real POPE answers: exit codes, the paired test, alignment and errors."""

from __future__ import annotations

import json
import sqlite3

import pytest

from harness.api.config import MetricSpec
from harness.cli import main
from harness.errors import HarnessError, StoreError
from harness.results import gate as gate_module
from harness.results.gate import run_gate
from harness.results.store import ResultsStore, RunMeta
from harness.task import Task, TaskScore, get_task
from tests.test_leaderboard import (
    MODEL,
    SPLITS,
    labels_by_question,
    perturb,
    pope_by_hand,
    read_answers,
    score_into,
    shared_pope_db,
    write_answers,
)

BOOT = "200"


@pytest.fixture(scope="module")
def gate_db(reference, tmp_path_factory):
    """The shared fp16/int4 POPE DB, copied, plus two pope_random runs made for the gate."""
    shared, expected = shared_pope_db(reference, tmp_path_factory)
    tmp = tmp_path_factory.mktemp("gate")
    db = tmp / "r.db"
    with sqlite3.connect(shared) as src, sqlite3.connect(db) as dst:
        src.backup(dst)
    pope = reference / "pope"
    answers = pope / "answers.jsonl"
    # Tiny: two correct 'Yes' answers of the random split become 'No'.
    labels = labels_by_question(pope, "random")
    picked = [
        r["question_id"]
        for r in read_answers(answers)
        if labels.get(r["question_id"]) and r["text"] == "Yes"
    ][:2]
    tiny = perturb(answers, tmp / "tiny.jsonl", lambda rec: rec["question_id"] in picked)
    score_into(db, pope, tiny, "int4-tiny", task="pope_random")
    # Holes: the candidate lost 10 random-split answers (and is otherwise identical).
    random_ids = sorted(labels)
    gone = set(random_ids[::291])
    holes = write_answers(
        tmp / "holes.jsonl", [r for r in read_answers(answers) if r["question_id"] not in gone]
    )
    score_into(db, pope, holes, "int4-holes", task="pope_random", status=3)  # 10 unanswered
    expected["tiny"] = pope_by_hand(pope, tiny, "random")
    return db, expected, len(gone)


def _gate(db, *extra):
    return main(["gate", "--db", str(db), "--base", f"{MODEL}@fp16", "--bootstrap", BOOT, *extra])


def test_exit_codes_and_failing_tasks_named(gate_db, capsys):
    db, expected, _ = gate_db
    capsys.readouterr()
    assert _gate(db, "--candidate", f"{MODEL}@int4", "--max-drop", "20") == 0
    out = capsys.readouterr().out
    assert "PASS" in out
    assert sum(line.rstrip().endswith(" pass") for line in out.splitlines()) == 3

    assert _gate(db, "--candidate", f"{MODEL}@int4", "--max-drop", "0.01") == 1
    out = capsys.readouterr().out
    assert "FAIL" in out
    for split in SPLITS:
        line = next(x for x in out.splitlines() if x.startswith(f"pope_{split} "))
        base, cand = expected["fp16"][split]["f1"], expected["int4"][split]["f1"]
        assert line.split()[:5] == [
            "pope_" + split,
            "f1",
            f"{base:.2f}",
            f"{cand:.2f}",
            f"{base - cand:.2f}",
        ]
        assert line.rstrip().endswith("FAIL")
    assert "3 of 3 tasks dropped more than 0.01 points" in " ".join(out.split())

    # Only the random split over a threshold between the drops: exactly that task fails.
    drops = {s: expected["fp16"][s]["f1"] - expected["int4"][s]["f1"] for s in SPLITS}
    worst = max(drops, key=drops.get)
    limit = (drops[worst] + sorted(drops.values())[-2]) / 2
    assert _gate(db, "--candidate", f"{MODEL}@int4", "--max-drop", f"{limit:.4f}") == 1
    out = capsys.readouterr().out
    failing = [x.split()[0] for x in out.splitlines() if x.rstrip().endswith("FAIL")]
    assert failing == [f"pope_{worst}"]


def test_json_report_numbers(gate_db, capsys):
    db, expected, _ = gate_db
    capsys.readouterr()
    assert _gate(db, "--candidate", f"{MODEL}@int4", "--max-drop", "7", "--json") == 1
    report = json.loads(capsys.readouterr().out)
    assert report["base"] == f"{MODEL}@fp16" and report["candidate"] == f"{MODEL}@int4"
    assert report["n_boot"] == int(BOOT) and report["passed"] is False
    by_task = {t["task"]: t for t in report["tasks"]}
    assert sorted(by_task) == [f"pope_{s}" for s in SPLITS]
    for split in SPLITS:
        t = by_task[f"pope_{split}"]
        base, cand = expected["fp16"][split]["f1"], expected["int4"][split]["f1"]
        assert t["metric"] == "f1" and t["higher_is_better"] is True
        assert t["base"] == pytest.approx(base) and t["candidate"] == pytest.approx(cand)
        assert t["drop"] == pytest.approx(base - cand)
        assert t["relative_drop"] == pytest.approx(100 * (base - cand) / base)
        assert t["ci_low"] < t["drop"] < t["ci_high"] and t["ci_low"] > 0
        assert t["p_value"] == pytest.approx(1 / (int(BOOT) + 1))  # no resample without a drop
        assert t["n"] == t["n_units"] == (2910 if split == "random" else 3000)
        assert t["dropped"] == 0
        assert t["passed"] is (base - cand <= 7)


def test_relative_threshold(gate_db, capsys):
    db, expected, _ = gate_db
    rel = {s: 100 * (1 - expected["int4"][s]["f1"] / expected["fp16"][s]["f1"]) for s in SPLITS}
    capsys.readouterr()
    args = ["--candidate", f"{MODEL}@int4", "--relative", "--max-drop"]
    assert _gate(db, *args, f"{max(rel.values()) + 0.01:.4f}") == 0
    assert _gate(db, *args, f"{min(rel.values()) - 0.01:.4f}") == 1
    out = capsys.readouterr().out
    assert "drop %" in out


def test_require_significance_lets_a_tiny_drop_pass(gate_db, capsys):
    db, expected, _ = gate_db
    base, cand = expected["fp16"]["random"]["f1"], expected["tiny"]["f1"]
    assert 0 < base - cand < 0.1
    capsys.readouterr()
    args = ["--candidate", f"{MODEL}@int4-tiny", "--max-drop", "0.01", "--tasks", "pope_random"]
    assert _gate(db, *args) == 1  # the drop is over the limit ...
    assert _gate(db, *args, "--require-significance") == 0  # ... but could be chance
    out = capsys.readouterr().out
    assert "pass (n.s.)" in out
    store = ResultsStore(db)
    report = run_gate(
        store,
        f"{MODEL}@fp16",
        f"{MODEL}@int4-tiny",
        max_drop=0.01,
        require_significance=True,
        n_boot=int(BOOT),
        tasks=["pope_random"],  # the tiny run only has pope_random
    )
    (t,) = report.tasks
    assert t.task == "pope_random" and t.drop == pytest.approx(base - cand)
    assert t.p_value > 0.05 and t.exceeds and not t.significant and t.passed
    assert t.ci_low == 0.0  # many resamples contain neither flipped answer
    # The real int4 drop is significant, so it still fails with the flag.
    assert (
        _gate(db, "--candidate", f"{MODEL}@int4", "--max-drop", "1", "--require-significance") == 1
    )


def test_unanswered_documents_are_refused_unless_allowed(gate_db, capsys):
    db, expected, n_gone = gate_db
    store = ResultsStore(db)
    base, holes = f"{MODEL}@fp16", f"{MODEL}@int4-holes"
    with pytest.raises(HarnessError, match=rf"pope_random: documents without an answer \(run "
                       rf"\w+: {n_gone} .*--allow-missing"):  # fmt: skip
        run_gate(store, base, holes, tasks=["pope_random"], n_boot=50)
    capsys.readouterr()
    assert _gate(db, "--candidate", holes, "--tasks", "pope_random") == 2
    assert "--allow-missing" in capsys.readouterr().err
    # allowed: POPE leaves unanswered documents out (on both sides), as eval_pope.py does
    report = run_gate(
        store, base, holes, max_drop=0.0, n_boot=50, tasks=["pope_random"], allow_missing=True
    )
    (t,) = report.tasks
    assert (t.n, t.dropped) == (2910 - n_gone, 0)
    assert t.drop == 0.0 and t.passed  # same answers on the shared documents
    assert f"{n_gone} documents without an answer in either run were left out" in " ".join(
        report.notes
    )


def test_different_tasks_same_run_and_unfinished_runs_are_refused(gate_db):
    db, _, _ = gate_db
    store = ResultsStore(db)
    with pytest.raises(HarnessError, match=r"scored different tasks \(only the base: "
                       r"\['pope_adversarial', 'pope_popular'\]; only the candidate: none\)"):  # fmt: skip
        run_gate(store, f"{MODEL}@fp16", f"{MODEL}@int4-tiny")
    with pytest.raises(HarnessError, match="same run .* always passes"):
        run_gate(store, f"{MODEL}@fp16", f"{MODEL}@fp16")
    run_id = store.run(f"{MODEL}@int4")["run_id"]
    store.db.conn.execute("update runs set status = 'killed' where run_id = ?", [run_id])
    try:
        with pytest.raises(HarnessError, match=rf"--candidate: run {run_id} .* is killed"):
            run_gate(store, f"{MODEL}@fp16", run_id)
    finally:
        store.db.conn.execute("update runs set status = 'complete' where run_id = ?", [run_id])


def test_lower_is_better_metric_flips_the_direction(gate_db, monkeypatch):
    db, expected, _ = gate_db
    real = get_task("pope_random")
    config = real.config.model_copy(
        update={"metrics": [MetricSpec(name="yes_ratio", primary=True, higher_is_better=False)]}
    )
    task = Task(config, real.source)
    monkeypatch.setattr(gate_module, "get_task", lambda name: task)
    store = ResultsStore(db)
    # int4 says 'No' more often: yes_ratio goes down, which is better for this metric.
    better = run_gate(
        store, f"{MODEL}@fp16", f"{MODEL}@int4", max_drop=0.0, tasks=["pope_random"], n_boot=100
    )
    (t,) = better.tasks
    assert t.metric == "yes_ratio" and not t.higher_is_better
    assert t.candidate < t.base and t.drop == pytest.approx(t.candidate - t.base) and t.drop < 0
    assert t.ci_high < 0 and t.p_value == 1.0 and better.passed
    # Swapped roles: yes_ratio goes up, a significant drop.
    worse = run_gate(
        store,
        f"{MODEL}@int4",
        f"{MODEL}@fp16",
        max_drop=1.0,
        tasks=["pope_random"],
        require_significance=True,
        n_boot=100,
    )
    (w,) = worse.tasks
    assert w.drop == pytest.approx(-t.drop) and w.ci_low > 0 and w.p_value < 0.05
    assert not worse.passed


def test_errors(gate_db, capsys):
    db, _, _ = gate_db
    store = ResultsStore(db)
    with pytest.raises(StoreError, match="no complete run of model 'nope'"):
        run_gate(store, f"{MODEL}@fp16", "nope@int4")
    with pytest.raises(StoreError, match="no run 'ffffffff'"):
        run_gate(store, "ffffffff", f"{MODEL}@int4")
    # The tiny run has only pope_random; --tasks asking for another split names the run.
    with pytest.raises(HarnessError, match="has no scored task 'pope_popular'"):
        run_gate(store, f"{MODEL}@fp16", f"{MODEL}@int4-tiny", tasks=["pope_popular"])
    with pytest.raises(HarnessError, match="needs bootstrap resamples"):
        run_gate(store, f"{MODEL}@fp16", f"{MODEL}@int4", require_significance=True, n_boot=0)
    capsys.readouterr()
    assert _gate(db, "--candidate", "nope@int4") == 2
    assert "no complete run of model 'nope'" in capsys.readouterr().err


def test_runs_with_no_common_task(tmp_path, capsys):
    store = ResultsStore(tmp_path / "r.db")
    for precision, task in (("fp16", "pope_adversarial"), ("int4", "pope_popular")):
        run_id = store.create_run(
            RunMeta(model="m", model_fingerprint=precision, precision=precision)
        )
        store.start_task(
            run_id,
            task,
            task_version="1",
            task_hash="h",
            gen_hash="g",
            gen_kwargs={},
            data_files={},
            data_hashes={},
            options={},
        )
        score = TaskScore(
            task=task,
            metrics={"f1": 80.0},
            ci={},
            n=0,
            n_missing=0,
            n_parse_failures=0,
            samples=[],
            primary="f1",
        )
        store.put_task_score(run_id, precision, "h", "g", score, get_task(task).config.metrics)
        store.finish_run(run_id)
    with pytest.raises(
        HarnessError,
        match=r"no scored task in common \(base: \['pope_adversarial'\]; "
        r"candidate: \['pope_popular'\]\)",
    ):
        run_gate(store, "m@fp16", "m@int4")
    capsys.readouterr()
    assert main(["gate", "--db", str(store.path), "--base", "m@fp16", "--candidate", "m@int4"]) == 2
    assert "no scored task in common" in capsys.readouterr().err

"""Resume after a kill: a SIGKILLed evaluation restarts with only the documents it had not finished.

The resume cache key is model fingerprint + task hash + doc id + generation
kwargs, so a different model or a changed generation kwarg recomputes everything.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.evaluator import EvalConfig, evaluate
from harness.results.store import ResultsStore
from tests.resume_worker import TASK, QuestionModel

WORKER = Path(__file__).with_name("resume_worker.py")
OBJECTS = ["cat", "dog", "car", "tree", "cup", "bus", "kite", "boat", "bird", "sofa", "person"]
N_DOCS = 30


def make_pope_data(root: Path, n: int = N_DOCS) -> Path:
    """``coco_pope_random.json`` (JSON lines) plus tiny image files in ``val2014/``."""
    (root / "val2014").mkdir(parents=True)
    lines = []
    for i in range(n):
        image = f"COCO_val2014_{i // 3:012d}.jpg"
        lines.append(
            {
                "question_id": i + 1,
                "image": image,
                "label": "yes" if i % 3 else "no",
                "text": f"Is there a {OBJECTS[i % len(OBJECTS)]} in the image?",
            }
        )
        (root / "val2014" / image).write_bytes(b"\xff\xd8\xff\xe0tiny")
    (root / "coco_pope_random.json").write_text("".join(json.dumps(x) + "\n" for x in lines))
    return root


def _config(root: Path, **kw) -> EvalConfig:
    return EvalConfig(data_root=root, n_boot=0, show_progress=False, **kw)


def _stored_outputs(db: Path) -> dict[str, str]:
    """Doc id -> raw output committed so far (read with a plain connection, as an observer)."""
    if not db.exists():
        return {}
    conn = sqlite3.connect(db, timeout=30)
    try:
        rows = conn.execute("select doc_id, raw_output from samples where raw_output is not null")
        return dict(rows.fetchall())
    except sqlite3.OperationalError:  # tables not created yet
        return {}
    finally:
        conn.close()


def test_resume_after_sigkill_generates_only_the_rest(tmp_path):
    root = make_pope_data(tmp_path / "data")
    db = tmp_path / "killed.db"
    proc = subprocess.Popen(
        [sys.executable, str(WORKER), str(db), str(root), "--delay", "0.15", "--batch-size", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 60
    try:
        while len(_stored_outputs(db)) < 6:
            assert proc.poll() is None, proc.communicate()[1].decode()
            assert time.monotonic() < deadline, "the worker stored no outputs in 60 s"
            time.sleep(0.01)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate()
    assert proc.returncode == -signal.SIGKILL

    before = _stored_outputs(db)
    assert 6 <= len(before) < N_DOCS  # killed part-way, whole batches only
    assert len(before) % 2 == 0
    store = ResultsStore(db)
    (killed,) = store.runs()
    # SIGKILL left the run no chance to mark itself; the next open sees its process is gone
    assert killed["status"] == "killed"

    model = QuestionModel()  # same weights: same fingerprint, no delay
    resumed = evaluate(TASK, model, store, _config(root, batch_size=4))
    all_ids = {str(i + 1) for i in range(N_DOCS)}
    assert sorted(model.generated, key=int) == sorted(all_ids - set(before), key=int)
    assert len(model.generated) == N_DOCS - len(before)
    assert resumed.generated[TASK] == N_DOCS - len(before)
    assert resumed.reused[TASK] == len(before)
    assert store.run(resumed.run_id)["status"] == "complete"
    samples = store.run_samples(resumed.run_id, TASK)
    assert len(samples) == N_DOCS and all(s["fields"] is not None for s in samples)
    # Outputs written before the kill were kept as they were.
    assert {d: _stored_outputs(db)[d] for d in before} == before

    fresh_model = QuestionModel()
    fresh_store = ResultsStore(tmp_path / "fresh.db")
    fresh = evaluate(TASK, fresh_model, fresh_store, _config(root, batch_size=3))
    assert len(fresh_model.generated) == N_DOCS
    assert resumed.scores[TASK].metrics == fresh.scores[TASK].metrics
    stored = {r["metric"]: r["value"] for r in store.metrics(resumed.run_id)}
    stored_fresh = {r["metric"]: r["value"] for r in fresh_store.metrics(fresh.run_id)}
    assert stored == stored_fresh
    # Sanity: the numbers are real (labels 'no' every third doc; answers from object names).
    assert 0 < stored["accuracy"] < 100 and stored["f1"] == pytest.approx(
        fresh.scores[TASK].metrics["f1"]
    )


def test_model_or_generation_change_recomputes_everything(tmp_path):
    root = make_pope_data(tmp_path / "data")
    store = ResultsStore(tmp_path / "r.db")

    first = QuestionModel()
    evaluate(TASK, first, store, _config(root))
    assert len(first.generated) == N_DOCS

    same = QuestionModel()
    result = evaluate(TASK, same, store, _config(root))
    assert same.generated == [] and result.reused[TASK] == N_DOCS

    new_weights = QuestionModel(version="2")  # e.g. re-quantized: a different fingerprint
    result = evaluate(TASK, new_weights, store, _config(root))
    assert len(new_weights.generated) == N_DOCS and result.reused[TASK] == 0

    longer = QuestionModel()
    result = evaluate(TASK, longer, store, _config(root, gen_overrides={"max_new_tokens": 64}))
    assert sorted(longer.generated, key=int) == [str(i + 1) for i in range(N_DOCS)]
    assert result.reused[TASK] == 0

    again = QuestionModel()  # the changed kwarg got its own cache entries
    result = evaluate(TASK, again, store, _config(root, gen_overrides={"max_new_tokens": 64}))
    assert again.generated == [] and result.reused[TASK] == N_DOCS

    # Changing the data file changes the task hash: nothing cached applies.
    ann = root / "coco_pope_random.json"
    ann.write_text(ann.read_text().replace('"label": "no"', '"label": "yes"', 1))
    relabeled = QuestionModel()
    result = evaluate(TASK, relabeled, store, _config(root))
    assert len(relabeled.generated) == N_DOCS and result.reused[TASK] == 0


class FailingModel(QuestionModel):
    """Answers ``fail_after`` requests, then raises (a crash inside generation)."""

    def __init__(self, fail_after: int) -> None:
        super().__init__()
        self.fail_after = fail_after

    def generate(self, requests):
        if len(self.generated) + len(requests) > self.fail_after:
            raise RuntimeError("CUDA error: out of memory")
        return super().generate(requests)


def test_outputs_generated_before_an_error_are_committed(tmp_path):
    root = make_pope_data(tmp_path / "data")
    db = tmp_path / "r.db"
    store = ResultsStore(db)
    model = FailingModel(fail_after=12)
    # commits are spaced an hour apart: only the commit on the way out can save them
    with pytest.raises(RuntimeError, match="out of memory"):
        evaluate(TASK, model, store, _config(root, batch_size=4, commit_seconds=3600))
    assert sorted(_stored_outputs(db), key=int) == sorted(model.generated, key=int)
    assert len(model.generated) == 12
    (failed,) = store.runs()
    assert failed["status"] == "failed"


def test_outputs_are_committed_in_time_spaced_batches(tmp_path, monkeypatch):
    root = make_pope_data(tmp_path / "data")
    # an hour apart: one commit, at the end of the task; 0: every batch
    for seconds, expected in ((3600, [N_DOCS]), (0, [2] * (N_DOCS // 2))):
        store = ResultsStore(tmp_path / f"r{seconds}.db")
        commits = []
        put = store.put_outputs
        monkeypatch.setattr(
            store,
            "put_outputs",
            lambda *a, put=put, seen=commits: seen.append(len(a[-1])) or put(*a),
        )
        evaluate(TASK, QuestionModel(), store, _config(root, batch_size=2, commit_seconds=seconds))
        assert commits == expected

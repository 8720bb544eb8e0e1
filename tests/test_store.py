"""Results store: schema versioning and migration, bad files, and concurrent writers."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
import time

import pytest

from harness.errors import StoreError
from harness.results.store import SCHEMA_VERSION, ResultsStore, RunMeta

TABLES = {"runs", "run_tasks", "samples", "metrics", "judgements"}


def _tables(path) -> set[str]:
    with sqlite3.connect(path) as conn:
        return {r[0] for r in conn.execute("select name from sqlite_master where type = 'table'")}


def test_new_db_has_current_schema_and_reopening_is_idempotent(tmp_path):
    path = tmp_path / "r.db"
    store = ResultsStore(path)
    assert store.schema_version == SCHEMA_VERSION >= 1
    run_id = store.create_run(RunMeta(model="m", model_fingerprint="fp"))
    store.put_outputs("fp", "t", "th", "gh", [("d1", "prompt", "Yes")])
    store.close()
    for _ in range(2):  # migrating an up-to-date DB again is a no-op that keeps the data
        with ResultsStore(path) as again:
            assert again.schema_version == SCHEMA_VERSION
            assert again.run(run_id)["model"] == "m"
            assert again.cached_outputs("fp", "th", "gh", ["d1"]) == {"d1": "Yes"}
    assert TABLES <= _tables(path)
    with sqlite3.connect(path) as conn:
        assert conn.execute("pragma journal_mode").fetchone()[0] == "wal"


def test_db_from_a_newer_harness_is_refused(tmp_path):
    path = tmp_path / "r.db"
    ResultsStore(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute(f"pragma user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(
        StoreError, match=rf"schema version {SCHEMA_VERSION + 1} .*newer vlm-harness"
    ):
        ResultsStore(path)


def test_not_a_database_gives_store_error(tmp_path):
    path = tmp_path / "answers.jsonl"  # e.g. a predictions file passed as --db by mistake
    original = "".join(f'{{"question_id": {i}, "text": "Yes"}}\n' for i in range(50))
    path.write_text(original)
    with pytest.raises(StoreError, match="answers.jsonl: exists and is not an SQLite database"):
        ResultsStore(path)
    assert path.read_text() == original  # left untouched
    tiny = tmp_path / "tiny.db"
    tiny.write_bytes(b"x")
    with pytest.raises(StoreError, match="not an SQLite database"):
        ResultsStore(tiny)
    assert tiny.read_bytes() == b"x"
    with pytest.raises(StoreError, match="is a directory"):
        ResultsStore(tmp_path)


WRITER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from harness.results.store import ResultsStore, RunMeta

    db, tag, go, runs, batches = sys.argv[1], sys.argv[2], Path(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
    (go.parent / f"{tag}.ready").touch()
    while not go.exists():
        time.sleep(0.002)
    store = ResultsStore(db)  # both processes create and migrate the fresh file at once
    for i in range(runs):
        run_id = store.create_run(RunMeta(model=f"model-{tag}", model_fingerprint=f"fp-{tag}"))
        store.start_task(run_id, "t", task_version="1", task_hash="th", gen_hash="gh",
                         gen_kwargs={}, data_files={}, data_hashes={}, options={})
        for b in range(batches):
            store.put_outputs(f"fp-{tag}", "t", "th", "gh",
                              [(f"{tag}-{i}-{b}-{k}", "prompt", f"out {k}") for k in range(10)])
            time.sleep(0.002)  # keep both writers busy long enough to overlap
        store.finish_run(run_id)
    print("done", tag)
    """
)


def test_two_processes_write_one_db_at_once(tmp_path):
    path = tmp_path / "shared.db"
    go = tmp_path / "go"
    runs, batches = 5, 20
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path), tag, str(go), str(runs), str(batches)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for tag in ("a", "b")
    ]
    deadline = time.monotonic() + 60
    while not all((tmp_path / f"{t}.ready").exists() for t in ("a", "b")):  # both at the barrier
        assert time.monotonic() < deadline and all(p.poll() is None for p in procs)
        time.sleep(0.01)
    go.touch()
    outputs = [p.communicate(timeout=120) for p in procs]
    for proc, (out, err) in zip(procs, outputs, strict=True):
        assert "locked" not in err, err
        assert proc.returncode == 0, err
        assert out.startswith("done")

    store = ResultsStore(path)
    assert store.schema_version == SCHEMA_VERSION
    all_runs = store.runs()
    assert len(all_runs) == 2 * runs and {r["status"] for r in all_runs} == {"complete"}
    assert {r["model"] for r in all_runs} == {"model-a", "model-b"}
    assert sum(len(store.run_tasks(r["run_id"])) for r in all_runs) == 2 * runs
    for tag in ("a", "b"):
        ids = [f"{tag}-{i}-{b}-{k}" for i in range(runs) for b in range(batches) for k in range(10)]
        cached = store.cached_outputs(f"fp-{tag}", "th", "gh", ids)
        assert len(cached) == runs * batches * 10
        assert cached[f"{tag}-4-19-9"] == "out 9"
    # The two writers really overlapped in time (their transactions interleaved).
    spans = {
        tag: (
            min(r["created_at"] for r in all_runs if r["model"] == f"model-{tag}"),
            max(r["finished_at"] for r in all_runs if r["model"] == f"model-{tag}"),
        )
        for tag in ("a", "b")
    }
    assert max(s[0] for s in spans.values()) < min(s[1] for s in spans.values())


def test_v1_database_is_migrated_forward(tmp_path):
    import sqlite_utils

    from harness.results.store import MIGRATIONS

    path = tmp_path / "old.db"
    db = sqlite_utils.Database(path)
    MIGRATIONS[0](db)
    db.conn.execute("pragma user_version = 1")
    db["runs"].insert({"run_id": "abc", "model": "m", "status": "complete", "precision": "fp16"})
    db.conn.commit()
    db.conn.close()
    store = ResultsStore(path)
    assert store.schema_version == SCHEMA_VERSION == 4
    assert "run_docs" in store.db.table_names()
    assert store.run("abc")["model"] == "m"  # old rows survive the migration
    assert {"settings", "limit_docs", "process"} <= set(store.db["runs"].columns_dict)
    assert {"answered", "choice_logprobs"} <= set(store.db["samples"].columns_dict)

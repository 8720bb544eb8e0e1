"""SQLite results store (via sqlite-utils): runs, per-task records, samples, metrics, judgements.

The ``samples`` table doubles as the resume cache. Its key is the model
fingerprint (every byte of the weights plus every setting that can change an
output: template, preprocessing, dtype, device kind, attention, quantization;
not a name) + task hash (config and data file contents) + doc id +
generation-kwargs hash, so a killed run resumes without recomputing a
finished sample. A sample that failed (its image could not be read) is stored
with its error and no output: it is never reused, and the next run retries it.

A run records how far it got: ``running`` while its process lives (its host,
pid and process start time are kept, so the next open marks a run whose
process is gone as ``killed``), then ``complete``, ``failed`` or
``interrupted``; ``limit_docs`` marks a ``--limit`` run, which a
``MODEL@PRECISION`` name never resolves to. Every write is its own
transaction; WAL mode and a busy timeout let several processes write one
database. SQLite errors (a damaged file, a read-only one) become one
:class:`~harness.errors.StoreError` naming the file. The schema is versioned
with ``PRAGMA user_version`` and migrated forward.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import platform
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlite_utils

from harness.errors import StoreError

BUSY_TIMEOUT_MS = 60_000
SQLITE_HEADER = b"SQLite format 3\x00"


def _now() -> float:
    return time.time()


def _json(value: Any) -> str:
    def default(obj: Any) -> Any:
        if hasattr(obj, "item"):
            return obj.item()
        return str(obj)

    return json.dumps(value, sort_keys=True, default=default)


def _finite(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def _looks_like_sqlite(path: Path, wait_s: float = 2.0) -> bool:
    """True for a missing or empty file or an SQLite header. Another process may be
    writing a new database's first page right now, so a mismatch is re-read briefly."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            with path.open("rb") as fh:
                head = fh.read(16)
        except FileNotFoundError:
            return True
        if not head or head == SQLITE_HEADER:
            return True
        if (
            len(head) == 16
            and not SQLITE_HEADER.startswith(head[:6])
            or time.monotonic() > deadline
        ):
            return False
        time.sleep(0.05)


def _enable_wal(conn: sqlite3.Connection) -> None:
    """Switch to WAL. The switch does not wait on the busy handler when another process
    is creating the same file, so retry it until the busy timeout."""
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
            if mode.lower() != "wal":
                conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def _is_read_only(conn: sqlite3.Connection) -> bool:
    """Whether writes to this database fail (a read-only file or folder): one rolled-back
    write of the schema version, since opening and even BEGIN IMMEDIATE succeed."""
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(f"PRAGMA user_version = {int(version)}")
        return False
    except sqlite3.OperationalError as exc:
        if "readonly" in str(exc) or "read-only" in str(exc):
            return True
        raise
    finally:
        conn.execute("ROLLBACK")


def sample_key(model_fingerprint: str, task_hash: str, doc_id: str, gen_hash: str) -> str:
    text = "\x1f".join((model_fingerprint, task_hash, doc_id, gen_hash))
    return hashlib.sha256(text.encode()).hexdigest()


def _v1(db: sqlite_utils.Database) -> None:
    db["runs"].create(
        {
            "run_id": str,
            "created_at": float,
            "finished_at": float,
            "status": str,
            "source": str,
            "model": str,
            "model_path": str,
            "model_fingerprint": str,
            "precision": str,
            "quant_recipe": str,
            "quant_hash": str,
            "package_version": str,
            "git_commit": str,
            "host": str,
            "command": str,
            "timings": str,
            "notes": str,
        },
        pk="run_id",
    )
    db["run_tasks"].create(
        {
            "run_id": str,
            "task": str,
            "task_version": str,
            "task_hash": str,
            "gen_hash": str,
            "gen_kwargs": str,
            "data_files": str,
            "data_hashes": str,
            "options": str,
            "n": int,
            "n_missing": int,
            "n_parse_failures": int,
            "parse_failure_rate": float,
            "extra": str,
            "started_at": float,
            "finished_at": float,
            "seconds": float,
        },
        pk=("run_id", "task"),
        foreign_keys=[("run_id", "runs", "run_id")],
    )
    db["samples"].create(
        {
            "cache_key": str,
            "model_fingerprint": str,
            "task": str,
            "task_hash": str,
            "gen_hash": str,
            "doc_id": str,
            "prompt": str,
            "raw_output": str,
            "answer": str,
            "parsed": int,
            "fields": str,
            "error": str,
            "created_at": float,
            "updated_at": float,
        },
        pk="cache_key",
    )
    db["samples"].create_index(["model_fingerprint", "task_hash", "gen_hash"])
    db["metrics"].create(
        {
            "run_id": str,
            "task": str,
            "metric": str,
            "value": float,
            "ci_low": float,
            "ci_high": float,
            "n": int,
            "higher_is_better": int,
            "is_primary": int,
            "is_group": int,
        },
        pk=("run_id", "task", "metric"),
        foreign_keys=[("run_id", "runs", "run_id")],
    )
    db["judgements"].create(
        {
            "key": str,
            "judge_model": str,
            "system_prompt": str,
            "user_prompt": str,
            "params": str,
            "response": str,
            "status": str,
            "attempts": int,
            "error": str,
            "created_at": float,
            "updated_at": float,
        },
        pk="key",
    )


def _v2(db: sqlite_utils.Database) -> None:
    """Record which documents each run scored (the sample cache is shared across runs)."""
    db["run_docs"].create(
        {"run_id": str, "task": str, "doc_id": str, "cache_key": str},
        pk=("run_id", "task", "doc_id"),
        foreign_keys=[("run_id", "runs", "run_id")],
    )


def _v3(db: sqlite_utils.Database) -> None:
    """Runs keep what produced their outputs (settings), their ``--limit`` and their process;
    samples say whether they hold an answer."""
    db["runs"].add_column("settings", str)
    db["runs"].add_column("limit_docs", int)
    db["runs"].add_column("process", str)
    db["samples"].add_column("answered", int)


def _v4(db: sqlite_utils.Database) -> None:
    """Samples of multiple_choice tasks keep every choice's log-probability."""
    db["samples"].add_column("choice_logprobs", str)


MIGRATIONS: list[Callable[[sqlite_utils.Database], None]] = [_v1, _v2, _v3, _v4]
FINISHED = ("complete", "failed", "interrupted", "killed")
SCHEMA_VERSION = len(MIGRATIONS)


@dataclass
class RunMeta:
    model: str
    model_fingerprint: str
    source: str = "run"
    model_path: str = ""
    precision: str = "fp16"
    quant_recipe: dict[str, Any] | None = None
    quant_hash: str = ""
    package_version: str = ""
    git_commit: str = ""
    host: str = ""
    command: str = ""
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    # Everything besides the weights that shaped the outputs (dtype, device, attention ...).
    settings: dict[str, Any] = field(default_factory=dict)
    limit_docs: int | None = None  # --limit N when it cut a task's documents


def _process_start(pid: int) -> str | None:
    """The start time of process ``pid`` (Linux: clock ticks after boot), or None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[-1].split()[19]


def this_process() -> dict[str, Any]:
    pid = os.getpid()
    return {"host": platform.node(), "pid": pid, "start": _process_start(pid)}


def _process_alive(record: Mapping[str, Any]) -> bool | None:
    """Whether the process that wrote a run still runs: None when it ran on another host."""
    if record.get("host") != platform.node():
        return None
    pid = int(record.get("pid") or 0)
    if pid <= 0:
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    start = record.get("start")
    return start is None or _process_start(pid) == start


def _describe(exc: sqlite3.Error) -> str:
    text = str(exc)
    if "readonly" in text or "read-only" in text:
        return "the database is read-only (attempt to write a readonly database)"
    if "malformed" in text or "not a database" in text:
        return f"the database file is damaged ({text}); restore a backup or use another --db"
    return text


def _guarded(method: Callable[..., Any]) -> Callable[..., Any]:
    """Turn SQLite errors inside a store method into one StoreError naming the file."""

    @functools.wraps(method)
    def wrapper(self: ResultsStore, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except sqlite3.Error as exc:
            raise StoreError(f"--db {self.path}: {_describe(exc)}") from None

    return wrapper


class ResultsStore:
    """One results database file."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        if self.path.exists() and self.path.is_dir():
            raise StoreError(f"--db {self.path}: is a directory, expected a database file")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not _looks_like_sqlite(self.path):
            raise StoreError(
                f"--db {self.path}: exists and is not an SQLite database; refusing to touch it"
            )
        try:
            conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            # a file that cannot be written (chattr +i, mode bits) can still take writes into
            # its -wal file, so the file itself is checked too
            self.read_only = (
                Path(self.path).exists() and not os.access(self.path, os.W_OK)
            ) or _is_read_only(conn)
            if not self.read_only:
                _enable_wal(conn)
                conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("select count(*) from sqlite_master").fetchone()
        except sqlite3.DatabaseError as exc:
            raise StoreError(
                f"--db {self.path}: not a usable SQLite database ({_describe(exc)})"
            ) from None
        self.db = sqlite_utils.Database(conn)
        self._migrate()
        if not self.read_only:
            self._mark_dead_runs()

    def require_writable(self) -> None:
        """Fail before any work when results could not be stored."""
        if self.read_only:
            raise StoreError(
                f"--db {self.path}: the database is read-only; results could not be stored. "
                "Pass another --db (or --no-db)."
            )

    # -- schema ----------------------------------------------------------------
    @_guarded
    def _migrate(self) -> None:
        conn = self.db.conn
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path}: schema version {version} was written by a newer vlm-harness "
                f"(this one knows up to {SCHEMA_VERSION}); upgrade the package"
            )
        if version == SCHEMA_VERSION:
            return
        if self.read_only:
            raise StoreError(
                f"--db {self.path}: schema version {version} needs an upgrade to "
                f"{SCHEMA_VERSION}, but the database is read-only"
            )
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[
                0
            ]  # another process may have won
            for step in range(version, SCHEMA_VERSION):
                MIGRATIONS[step](self.db)
                conn.execute(f"PRAGMA user_version = {step + 1}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    @property
    def schema_version(self) -> int:
        return self.db.conn.execute("PRAGMA user_version").fetchone()[0]

    def _tx(self) -> _Transaction:
        return _Transaction(self.db.conn)

    @_guarded
    def _mark_dead_runs(self) -> None:
        """Runs left ``running`` by a process of this host that no longer exists: ``killed``."""
        rows = list(self.db.query("select run_id, process from runs where status = 'running'"))
        dead = [
            r["run_id"]
            for r in rows
            if r["process"] and _process_alive(json.loads(r["process"])) is False
        ]
        if dead:
            with self._tx():
                self.db.conn.executemany(
                    "update runs set status = 'killed' where run_id = ? and status = 'running'",
                    [(d,) for d in dead],
                )

    # -- runs ------------------------------------------------------------------
    @_guarded
    def create_run(self, meta: RunMeta) -> str:
        run_id = uuid.uuid4().hex[:12]
        with self._tx():
            self.db["runs"].insert(
                {
                    "run_id": run_id,
                    "created_at": _now(),
                    "finished_at": None,
                    "status": "running",
                    "source": meta.source,
                    "model": meta.model,
                    "model_path": meta.model_path,
                    "model_fingerprint": meta.model_fingerprint,
                    "precision": meta.precision,
                    "quant_recipe": _json(meta.quant_recipe),
                    "quant_hash": meta.quant_hash,
                    "package_version": meta.package_version,
                    "git_commit": meta.git_commit,
                    "host": meta.host,
                    "command": meta.command,
                    "timings": _json({}),
                    "notes": meta.notes,
                    "settings": _json(meta.settings),
                    "limit_docs": meta.limit_docs,
                    "process": _json(this_process()),
                }
            )
        return run_id

    @_guarded
    def finish_run(
        self, run_id: str, status: str = "complete", timings: Mapping[str, float] | None = None
    ) -> None:
        with self._tx():
            self.db["runs"].update(
                run_id,
                {"status": status, "finished_at": _now(), "timings": _json(dict(timings or {}))},
            )

    @_guarded
    def run(self, ref: str) -> dict[str, Any]:
        """A run by id, unique id prefix, or ``model@precision``: the latest complete run over
        the full task data (a ``--limit`` run is only ever named by its id)."""
        if "@" in ref:
            model, _, precision = ref.partition("@")
            rows = list(
                self.db.query(
                    "select * from runs where model = ? and precision = ? and status = 'complete' "
                    "and limit_docs is null order by created_at desc, rowid desc limit 1",
                    [model, precision],
                )
            )
            if not rows:
                others = list(
                    self.db.query(
                        "select run_id, status, limit_docs from runs where model = ? and "
                        "precision = ? order by created_at desc",
                        [model, precision],
                    )
                )
                seen = "; ".join(
                    f"{r['run_id']} {r['status']}"
                    + (f" with --limit {r['limit_docs']}" if r["limit_docs"] else "")
                    for r in others[:5]
                )
                raise StoreError(
                    f"{self.path}: no complete run of model {model!r} at precision {precision!r} "
                    "over the full task data"
                    + (f" (runs there: {seen}; name one by its id)" if seen else "")
                )
            return rows[0]
        rows = list(self.db.query("select * from runs where run_id like ? || '%'", [ref]))
        if len(rows) == 1:
            return rows[0]
        if not rows:
            raise StoreError(f"{self.path}: no run {ref!r} (`harness runs` lists them)")
        raise StoreError(f"{self.path}: run prefix {ref!r} is ambiguous ({len(rows)} runs)")

    @_guarded
    def runs(self, status: str | None = None) -> list[dict[str, Any]]:
        sql = "select * from runs"
        args: list[Any] = []
        if status:
            sql += " where status = ?"
            args.append(status)
        return list(self.db.query(sql + " order by created_at", args))

    # -- tasks of a run ----------------------------------------------------------
    @_guarded
    def start_task(
        self,
        run_id: str,
        task: str,
        *,
        task_version: str,
        task_hash: str,
        gen_hash: str,
        gen_kwargs: Mapping[str, Any],
        data_files: Mapping[str, Any],
        data_hashes: Mapping[str, Any],
        options: Mapping[str, Any],
    ) -> None:
        with self._tx():
            self.db["run_tasks"].upsert(
                {
                    "run_id": run_id,
                    "task": task,
                    "task_version": task_version,
                    "task_hash": task_hash,
                    "gen_hash": gen_hash,
                    "gen_kwargs": _json(dict(gen_kwargs)),
                    "data_files": _json({k: str(v) if v else None for k, v in data_files.items()}),
                    "data_hashes": _json(dict(data_hashes)),
                    "options": _json(dict(options)),
                    "started_at": _now(),
                },
                pk=("run_id", "task"),
            )

    @_guarded
    def run_tasks(self, run_id: str) -> list[dict[str, Any]]:
        return list(
            self.db.query("select * from run_tasks where run_id = ? order by started_at", [run_id])
        )

    # -- samples (resume cache) --------------------------------------------------
    @_guarded
    def cached_outputs(
        self, model_fingerprint: str, task_hash: str, gen_hash: str, doc_ids: Iterable[str]
    ) -> dict[str, str]:
        """Raw outputs already generated for these docs under the same key."""
        wanted = set(doc_ids)
        rows = self.db.query(
            "select doc_id, raw_output from samples where model_fingerprint = ? and task_hash = ? "
            "and gen_hash = ? and raw_output is not null and error is null",
            [model_fingerprint, task_hash, gen_hash],
        )
        return {r["doc_id"]: r["raw_output"] for r in rows if r["doc_id"] in wanted}

    @_guarded
    def put_outputs(
        self,
        model_fingerprint: str,
        task: str,
        task_hash: str,
        gen_hash: str,
        rows: Iterable[tuple[Any, ...]],
    ) -> int:
        """Store ``(doc_id, prompt, raw_output[, error[, choice_logprobs]])`` rows in one
        transaction. A row with an error is a failed sample: no output, never reused,
        retried by the next run. ``choice_logprobs``: a multiple_choice task's scores of its
        choices, in order (the raw output is the likeliest choice)."""
        now = _now()
        records = []
        for row in rows:
            doc_id, prompt, raw = row[:3]
            error = row[3] if len(row) > 3 else None
            logprobs = row[4] if len(row) > 4 else None
            records.append(
                {
                    "cache_key": sample_key(model_fingerprint, task_hash, doc_id, gen_hash),
                    "model_fingerprint": model_fingerprint,
                    "task": task,
                    "task_hash": task_hash,
                    "gen_hash": gen_hash,
                    "doc_id": doc_id,
                    "prompt": prompt,
                    "raw_output": None if error is not None else raw,
                    "error": error,
                    "choice_logprobs": None if logprobs is None else _json(list(logprobs)),
                    "created_at": now,
                    "updated_at": now,
                }
            )
        if records:
            with self._tx():
                self.db["samples"].upsert_all(records, pk="cache_key", alter=False)
        return len(records)

    @_guarded
    def put_task_score(
        self,
        run_id: str,
        model_fingerprint: str,
        task_hash: str,
        gen_hash: str,
        score: Any,
        metric_specs: Iterable[Any],
        seconds: float | None = None,
    ) -> None:
        """Per-sample answers and fields, metrics with CIs, and counts: one transaction."""
        specs = {m.name: m for m in metric_specs}
        now = _now()
        keys = [sample_key(model_fingerprint, task_hash, s.doc_id, gen_hash) for s in score.samples]
        sample_rows = [
            (_json(s.answer), int(s.parsed), _json(s.fields), int(s.answered), now, key)
            for s, key in zip(score.samples, keys, strict=True)
        ]
        doc_rows = [
            (run_id, score.task, s.doc_id, key) for s, key in zip(score.samples, keys, strict=True)
        ]
        metric_rows = []
        for name, value in score.metrics.items():
            spec = specs.get(name)
            lo, hi = score.ci.get(name, (None, None))
            metric_rows.append(
                {
                    "run_id": run_id,
                    "task": score.task,
                    "metric": name,
                    "value": _finite(value),
                    "ci_low": _finite(lo),
                    "ci_high": _finite(hi),
                    "n": score.n,
                    "higher_is_better": int(spec.higher_is_better if spec else True),
                    "is_primary": int(name == score.primary),
                    "is_group": 0,
                }
            )
        with self._tx():
            self.db.conn.executemany(
                "update samples set answer = ?, parsed = ?, fields = ?, answered = ?, "
                "updated_at = ? where cache_key = ?",
                sample_rows,
            )
            self.db.conn.execute(
                "delete from run_docs where run_id = ? and task = ?", [run_id, score.task]
            )
            # documents with a stored sample (an output, an empty one, or a failure)
            self.db.conn.executemany(
                "insert into run_docs (run_id, task, doc_id, cache_key) select ?, ?, ?, ? "
                "where exists (select 1 from samples where cache_key = ?)",
                [(*row, row[-1]) for row in doc_rows],
            )
            self.db["metrics"].upsert_all(metric_rows, pk=("run_id", "task", "metric"))
            self.db["run_tasks"].update(
                (run_id, score.task),
                {
                    "n": score.n,
                    "n_missing": score.n_missing,
                    "n_parse_failures": score.n_parse_failures,
                    "parse_failure_rate": score.parse_failure_rate,
                    "extra": _json(score.extra),
                    "finished_at": now,
                    "seconds": seconds,
                },
            )

    @_guarded
    def put_group_metrics(
        self, run_id: str, group: str, metrics: Mapping[str, float], primary: str | None
    ) -> None:
        rows = [
            {
                "run_id": run_id,
                "task": group,
                "metric": k,
                "value": _finite(v),
                "ci_low": None,
                "ci_high": None,
                "n": None,
                "higher_is_better": 1,
                "is_primary": int(k == primary),
                "is_group": 1,
            }
            for k, v in metrics.items()
        ]
        if rows:
            with self._tx():
                self.db["metrics"].upsert_all(rows, pk=("run_id", "task", "metric"))

    @_guarded
    def metrics(self, run_id: str | None = None) -> list[dict[str, Any]]:
        if run_id is None:
            return list(self.db.query("select * from metrics"))
        return list(self.db.query("select * from metrics where run_id = ?", [run_id]))

    @_guarded
    def run_samples(self, run_id: str, task: str) -> list[dict[str, Any]]:
        """The scored samples of one task of a run (fields decoded), ordered by doc id."""
        run = self.run(run_id)
        rt = list(
            self.db.query(
                "select * from run_tasks where run_id = ? and task = ?", [run["run_id"], task]
            )
        )
        if not rt:
            raise StoreError(f"{self.path}: run {run['run_id']} has no task {task!r}")
        rows = self.db.query(
            "select s.doc_id, s.prompt, s.raw_output, s.answer, s.parsed, s.fields, s.error, "
            "s.answered, s.choice_logprobs from run_docs d join samples s on s.cache_key = d.cache_key "
            "where d.run_id = ? and d.task = ? order by s.doc_id",
            [run["run_id"], task],
        )
        out = []
        for row in rows:
            row = dict(row)
            row["fields"] = json.loads(row["fields"]) if row["fields"] else None
            row["answer"] = json.loads(row["answer"]) if row["answer"] else None
            # rows written before schema 3 hold no flag: an output was an answer then
            if row["answered"] is None:
                row["answered"] = row["raw_output"] is not None and row["error"] is None
            row["answered"] = bool(row["answered"])
            if row["choice_logprobs"] is not None:
                row["choice_logprobs"] = json.loads(row["choice_logprobs"])
            out.append(row)
        return out

    # -- judgements ----------------------------------------------------------------
    @_guarded
    def get_judgement(self, key: str) -> dict[str, Any] | None:
        rows = list(self.db.query("select * from judgements where key = ?", [key]))
        return rows[0] if rows else None

    @_guarded
    def put_judgement(self, record: Mapping[str, Any]) -> None:
        row = dict(record)
        row.setdefault("created_at", _now())
        row["updated_at"] = _now()
        with self._tx():
            self.db["judgements"].upsert(row, pk="key")

    @_guarded
    def query(self, sql: str, params: Iterable[Any] = ()) -> list[dict[str, Any]]:
        """Rows of a read-only query (for the leaderboard and reports)."""
        return list(self.db.query(sql, list(params)))

    def close(self) -> None:
        self.db.conn.close()

    def __enter__(self) -> ResultsStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (or ``ROLLBACK`` on error) on an autocommit connection."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> None:
        self.conn.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if not exc_type:
            self.conn.execute("COMMIT")
            return
        try:
            self.conn.execute("ROLLBACK")
        except sqlite3.Error:  # the failed statement may have ended the transaction already
            pass

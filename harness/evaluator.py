"""The evaluation loop: task -> documents -> requests -> adapter -> raw outputs -> scores -> store.

Each batch of outputs is committed to the results store as soon as the
adapter returns it, so a run killed at any point loses at most the batch in
flight; starting it again reuses every stored output (same model fingerprint,
task hash, doc id and generation kwargs) and generates only the rest. A
request the adapter could not run (:class:`~harness.api.requests.Failure`, e.g.
an unreadable image) is stored as a failure: it is scored as a document
without an answer, reported, and generated again by the next run. When the
results DB fails part-way (a damaged or read-only file), the loop goes on in
memory and the error is returned with the scores, so nothing computed is lost
from the report.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from harness.api.model import VisionLanguageModel
from harness.api.profile import EvalProfile
from harness.api.requests import (
    Failure,
    Loglikelihood,
    LoglikelihoodOutput,
    LoglikelihoodRequest,
    Request,
    check_gen_kwargs,
    gen_kwargs_hash,
)
from harness.errors import DataFileError, HarnessError, StoreError
from harness.judge import Judge
from harness.progress import progress_bar
from harness.provenance import git_commit, host, package_version
from harness.registry import default_registry
from harness.results.store import ResultsStore, RunMeta
from harness.scoring import group_metrics, score_outputs
from harness.stats import DEFAULT_BOOTSTRAP
from harness.task import Task, TaskScore, get_task

MISSING_SHOWN = 5


@dataclass
class EvalConfig:
    data_root: Path | None = None
    data_files: Mapping[str, Mapping[str, str]] = field(
        default_factory=dict
    )  # task -> role -> path
    batch_size: int = 1
    limit: int | None = None
    gen_overrides: Mapping[str, Any] = field(default_factory=dict)
    n_boot: int = DEFAULT_BOOTSTRAP
    precision: str = "fp16"
    quant_recipe: dict[str, Any] | None = None
    quant_hash: str = ""
    model_path: str = ""
    command: str = ""
    log_samples: Path | None = None
    show_progress: bool | None = None
    # --num-frames as given: refused when no task has a video to sample frames from.
    num_frames: int | None = None
    # Generated outputs are committed to the results DB once this many seconds have passed
    # since the last commit, at the end of each task, and before an error propagates: a
    # hard kill (SIGKILL, power loss) loses at most this much generation. 0: every batch.
    commit_seconds: float = 1.0


@dataclass
class EvalResult:
    run_id: str | None
    scores: dict[str, TaskScore]
    groups: dict[str, dict[str, float]]
    generated: dict[str, int]
    reused: dict[str, int]
    seconds: dict[str, float]
    # task -> doc id -> error, for requests the adapter could not run (not scored, retried)
    failures: dict[str, dict[str, str]] = field(default_factory=dict)
    # the results DB failed part-way: everything after it was computed but not stored
    store_error: StoreError | None = None


class _Recorder:
    """The results DB as the loop sees it: the first StoreError stops all writing and is kept,
    so the run still finishes and reports its scores."""

    def __init__(self, store: ResultsStore | None) -> None:
        self.store = store
        self.error: StoreError | None = None

    @property
    def active(self) -> bool:
        return self.store is not None and self.error is None

    def __call__(self, method: str, *args: Any, default: Any = None, **kwargs: Any) -> Any:
        if not self.active:
            return default
        try:
            return getattr(self.store, method)(*args, **kwargs)
        except StoreError as exc:
            self.error = exc
            return default


class _OutputWriter:
    """Commits one task's generated outputs to the results DB in time-spaced batches."""

    def __init__(self, record: _Recorder, key: tuple[str, str, str, str], every_s: float) -> None:
        self.record = record
        self.key = key  # (model fingerprint, task, task hash, generation hash)
        self.every_s = every_s
        self.unsaved: list[tuple[Any, ...]] = []
        self.last_commit = time.monotonic()

    def add(self, rows: list[tuple[Any, ...]]) -> None:
        self.unsaved += rows
        if time.monotonic() - self.last_commit >= self.every_s:
            self.commit()

    def commit(self) -> None:
        if self.unsaved:
            self.record("put_outputs", *self.key, self.unsaved)
        self.unsaved = []
        self.last_commit = time.monotonic()


def check_visuals(task: Task, requests: Sequence[Request]) -> None:
    """Refuse to start when visual files are missing: report the count and the first few."""
    missing = [
        str(v)
        for r in requests
        for v in r.visuals
        if isinstance(v, str | Path) and not Path(v).exists()
    ]
    if missing:
        shown = "; ".join(missing[:MISSING_SHOWN])
        raise DataFileError(
            f"task {task.name}: {len(missing)} of {sum(len(r.visuals) for r in requests)} visual "
            f"files are missing, e.g. {shown}. Check --data-root (images are looked up under "
            f"{task.config.dataset.image_dir or 'the data root'})."
        )


def _batches(items: Sequence[Request], size: int) -> list[list[Request]]:
    return [list(items[i : i + size]) for i in range(0, len(items), size)]


def write_sample_log(path: Path, score: TaskScore, prompts: Mapping[str, str | None]) -> None:
    """JSON lines that ``harness score`` reads back (one object per document); ``prompts``
    hold each document's full prompt as the model got it (chat template applied)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        for s in score.samples:
            fh.write(
                json.dumps(
                    {
                        "task": score.task,
                        "doc_id": s.doc_id,
                        "prompt": prompts.get(s.doc_id),
                        "raw_output": s.raw_output,
                        "answered": s.answered,
                        "answer": s.answer,
                        "parsed": s.parsed,
                        "fields": s.fields,
                    },
                    default=str,
                    ensure_ascii=False,
                )
                + "\n"
            )
    tmp.replace(path)


def _check_outputs(
    model: VisionLanguageModel, batch: Sequence[Any], outputs: Any, kinds: Any
) -> None:
    if not isinstance(outputs, list | tuple) or len(outputs) != len(batch):
        count = len(outputs) if isinstance(outputs, list | tuple) else type(outputs).__name__
        raise HarnessError(f"model {model.name} returned {count} outputs for {len(batch)} requests")
    for request, out in zip(batch, outputs, strict=True):
        if not isinstance(out, kinds):
            raise HarnessError(
                f"model {model.name} answered {request.task} {request.doc_id!r} with a "
                f"{type(out).__name__}; expected {kinds}"
            )


@dataclass
class PreparedTask:
    task: Task
    docs: list[dict[str, Any]]
    files: dict[str, Path | None]
    requests: list[Request]


@dataclass
class Prepared:
    """Every task's documents and requests, read and checked before a model is loaded."""

    names: list[str]
    family: str | None
    tasks: list[PreparedTask]
    limited: bool  # --limit cut at least one task
    profile: str | None = None  # name of the eval profile the requests were built with


def request_gen_kwargs(
    task: Task, profile: EvalProfile | None, overrides: Mapping[str, Any]
) -> dict[str, Any]:
    """The generation settings a task's requests carry on top of its ``generation_kwargs``:
    the eval profile's for this task (what the model's authors passed), then ``--gen``. A
    sampled protocol always records its seed (0 unless one is given)."""
    kwargs = profile.generation_for(task.name, task.config.tag) if profile is not None else {}
    kwargs.update(overrides)
    merged = {**task.config.generation_kwargs, **kwargs}
    temperature = float(merged.get("temperature") or 0.0)
    sampled = temperature > 0 and merged.get("do_sample", True) is not False
    if "temperature" in kwargs and temperature > 0 and "do_sample" not in kwargs:
        kwargs["do_sample"] = True  # the task's do_sample: false came with its temperature 0
    if "temperature" in kwargs and temperature == 0 and merged.get("do_sample"):
        kwargs["do_sample"] = False
    if sampled and "seed" not in merged:
        kwargs["seed"] = 0
    return kwargs


def prepare(
    task_names: str | Sequence[str],
    config: EvalConfig,
    family: str | None = None,
    profile: EvalProfile | None = None,
) -> Prepared:
    """Load documents, build requests and check flags and visuals; raises before any work.

    With an eval ``profile``, its prompt family picks the tasks' prompt variants and its
    generation settings apply per task (see :func:`request_gen_kwargs`)."""
    if profile is not None:
        family = profile.prompt_family
    registry = default_registry()
    names = registry.expand(task_names if isinstance(task_names, str) else list(task_names))
    if not names:
        raise HarnessError(f"--tasks {task_names!r}: no task named (e.g. --tasks pope,gqa)")
    if config.limit is not None and config.limit < 1:
        raise HarnessError(f"--limit {config.limit}: expected a positive number of documents")
    try:
        gen_overrides = check_gen_kwargs(config.gen_overrides, "--gen")
    except ValueError as exc:
        raise HarnessError(str(exc)) from None
    prepared = []
    limited = False
    for name in names:
        task = get_task(name)
        docs, files = task.load_docs(config.data_root, config.data_files.get(name))
        if config.limit is not None and config.limit < len(docs):
            docs, limited = docs[: config.limit], True
        kwargs = request_gen_kwargs(task, profile, gen_overrides)
        requests = task.build_requests(docs, config.data_root, family, kwargs)
        check_visuals(task, requests)
        prepared.append(PreparedTask(task, docs, files, requests))
    if config.num_frames is not None and not any(r.has_video for p in prepared for r in p.requests):
        raise HarnessError(
            f"--num-frames {config.num_frames}: none of the tasks ({', '.join(names)}) has a "
            "video to sample frames from"
        )
    return Prepared(names, family, prepared, limited, profile.name if profile else None)


def _generate(
    model: VisionLanguageModel,
    pending: Sequence[Request],
    batch_size: int,
    writer: _OutputWriter,
    outputs: dict[str, str],
    failed: dict[str, str],
    advance: Any,
) -> None:
    """Generate the pending requests batch by batch; each batch's rows go to the writer."""
    for batch in _batches(pending, batch_size):
        texts = model.generate(batch)
        _check_outputs(model, batch, texts, str | Failure)
        rows = []
        for r, out in zip(batch, texts, strict=True):
            prompt = model.rendered_prompt(r)
            if isinstance(out, Failure):
                failed[r.doc_id] = out.error
                rows.append((r.doc_id, prompt, None, out.error))
            else:
                outputs[r.doc_id] = out
                rows.append((r.doc_id, prompt, out, None))
        writer.add(rows)
        advance(len(batch))


def _choose(
    model: VisionLanguageModel,
    pending: Sequence[LoglikelihoodRequest],
    batch_size: int,
    writer: _OutputWriter,
    outputs: dict[str, str],
    failed: dict[str, str],
    advance: Any,
    delimiter: str = " ",
) -> None:
    """Score every choice of the pending documents by likelihood, batch by batch. A document
    whose choices are all scored gets its likeliest choice (the first of equals) as its raw
    output, with every choice's log-probability stored beside it."""
    by_doc: dict[str, list[LoglikelihoodRequest]] = {}
    for r in pending:
        by_doc.setdefault(r.doc_id, []).append(r)
    position = {id(r): k for rs in by_doc.values() for k, r in enumerate(rs)}
    scored: dict[tuple[str, int], LoglikelihoodOutput] = {}
    left = {d: len(rs) for d, rs in by_doc.items()}
    for batch in _batches(pending, batch_size):
        results = model.loglikelihood(batch)
        _check_outputs(model, batch, results, Loglikelihood | Failure)
        rows = []
        for r, out in zip(batch, results, strict=True):
            scored[(r.doc_id, position[id(r)])] = out
            left[r.doc_id] -= 1
            if left[r.doc_id]:
                continue
            choices = by_doc[r.doc_id]
            got = [scored[(r.doc_id, k)] for k in range(len(choices))]
            prompt = model.rendered_prompt(choices[0])
            errors = [g.error for g in got if isinstance(g, Failure)]
            if errors:
                failed[r.doc_id] = errors[0]
                rows.append((r.doc_id, prompt, None, errors[0]))
                continue
            logprobs = [g.logprob for g in got]
            best = max(range(len(got)), key=lambda k: (logprobs[k], -k))
            text = choices[best].continuation.removeprefix(delimiter)
            outputs[r.doc_id] = text
            rows.append((r.doc_id, prompt, text, None, logprobs))
        writer.add(rows)
        advance(len(batch))


def evaluate(
    task_names: str | Sequence[str],
    model: VisionLanguageModel,
    store: ResultsStore | None,
    config: EvalConfig | None = None,
    judge: Judge | Mapping[str, Judge] | None = None,
    prepared: Prepared | None = None,
) -> EvalResult:
    """Run ``model`` on tasks (names, groups or tags), storing outputs and scores as they come.

    ``prepared`` (from :func:`prepare`, e.g. before the model was loaded) is used when it was
    made for the model's family; otherwise the tasks are prepared here."""
    config = config or EvalConfig()
    registry = default_registry()
    profile = getattr(model, "profile", None)
    family = profile.prompt_family if profile is not None else model.family
    if (
        prepared is None
        or prepared.family != family
        or prepared.profile != (profile.name if profile else None)
    ):
        prepared = prepare(task_names, config, model.family, profile)
    limited = prepared.limited
    fingerprint = model.fingerprint()
    settings = model.settings()

    record = _Recorder(store)
    run_id = None
    if store is not None:
        run_id = store.create_run(  # a StoreError here stops the run before any work
            RunMeta(
                model=model.name,
                model_fingerprint=fingerprint,
                model_path=config.model_path,
                precision=config.precision,
                quant_recipe=config.quant_recipe,
                quant_hash=config.quant_hash,
                package_version=package_version(),
                git_commit=git_commit(),
                host=host(),
                command=config.command,
                settings=settings,
                limit_docs=config.limit if limited else None,
            )
        )
    scores: dict[str, TaskScore] = {}
    generated: dict[str, int] = {}
    reused: dict[str, int] = {}
    seconds: dict[str, float] = {}
    failures: dict[str, dict[str, str]] = {}
    try:
        for item in prepared.tasks:
            task, docs, files, requests = item.task, item.docs, item.files, item.requests
            start = time.perf_counter()
            if task.multiple_choice:
                gen_kwargs = {
                    "output_type": "multiple_choice",
                    "target_delimiter": task.config.target_delimiter,
                }
                run = partial(_choose, delimiter=task.config.target_delimiter)
            else:
                gen_kwargs = requests[0].gen_kwargs if requests else {}
                run = _generate
            gen_hash = gen_kwargs_hash(gen_kwargs)
            task_hash = task.task_hash(files)
            record(
                "start_task",
                run_id,
                task.name,
                task_version=task.config.version,
                task_hash=task_hash,
                gen_hash=gen_hash,
                gen_kwargs=gen_kwargs,
                data_files=files,
                data_hashes={"task_hash": task_hash},
                options=task.options,
            )
            outputs: dict[str, str] = record(
                "cached_outputs",
                fingerprint,
                task_hash,
                gen_hash,
                [d["doc_id"] for d in docs],
                default={},
            )
            reused[task.name] = len(outputs)
            failed: dict[str, str] = {}
            pending = [r for r in requests if r.doc_id not in outputs]
            pending.sort(key=model.sort_key)  # stable: ties keep document order
            generated[task.name] = len({r.doc_id for r in pending})
            writer = _OutputWriter(
                record, (fingerprint, task.name, task_hash, gen_hash), config.commit_seconds
            )
            with progress_bar(f"{task.name}", len(pending), config.show_progress) as advance:
                try:
                    run(model, pending, max(1, config.batch_size), writer, outputs, failed, advance)
                finally:
                    writer.commit()  # what was generated survives an error or Ctrl-C too
            task_judge = judge.get(task.name) if isinstance(judge, Mapping) else judge
            score = score_outputs(task, docs, outputs, judge=task_judge, n_boot=config.n_boot)
            if failed:
                score.extra["n_failed"] = len(failed)
                failures[task.name] = failed
            seconds[task.name] = time.perf_counter() - start
            record(
                "put_task_score",
                run_id,
                fingerprint,
                task_hash,
                gen_hash,
                score,
                task.config.metrics,
                seconds=seconds[task.name],
            )
            if config.log_samples is not None:
                prompts = {r.doc_id: model.rendered_prompt(r) for r in requests}
                write_sample_log(config.log_samples / f"{task.name}.jsonl", score, prompts)
            scores[task.name] = score
        groups = _groups(task_names, scores)
        for group, metrics in groups.items():
            primary = next(
                (m.metric for m in registry.groups[group].aggregate_metrics if m.primary), None
            )
            record("put_group_metrics", run_id, group, metrics, primary)
        record("finish_run", run_id, "complete", seconds)
    except BaseException as exc:
        if record.active and run_id is not None:
            status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
            record("finish_run", run_id, status, seconds)
        raise
    return EvalResult(
        run_id, scores, groups, generated, reused, seconds, failures, store_error=record.error
    )


def _groups(
    task_names: str | Sequence[str], scores: Mapping[str, TaskScore]
) -> dict[str, dict[str, float]]:
    registry = default_registry()
    items = (
        [n.strip() for n in task_names.split(",")]
        if isinstance(task_names, str)
        else list(task_names)
    )
    out = {}
    for name in items:
        if name in registry.groups and registry.groups[name].aggregate_metrics:
            metrics = group_metrics(registry.groups[name], scores)
            if metrics:
                out[name] = metrics
    return out

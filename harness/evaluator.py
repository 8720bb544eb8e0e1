"""The evaluation loop: task -> documents -> requests -> adapter -> raw outputs -> scores -> store.

Each batch of outputs is committed to the results store as soon as the
adapter returns it, so a run killed at any point loses at most the batch in
flight; starting it again reuses every stored output (same model fingerprint,
task hash, doc id and generation kwargs) and generates only the rest.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import DataFileError, HarnessError
from harness.judge import Judge
from harness.models.base import VisionLanguageModel
from harness.progress import progress_bar
from harness.provenance import git_commit, host, package_version
from harness.registry import default_registry
from harness.requests import Request, gen_kwargs_hash
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


class _OutputWriter:
    """Commits one task's generated outputs to the results DB in time-spaced batches."""

    def __init__(
        self, store: ResultsStore | None, key: tuple[str, str, str, str], every_s: float
    ) -> None:
        self.store = store
        self.key = key  # (model fingerprint, task, task hash, generation hash)
        self.every_s = every_s
        self.unsaved: list[tuple[str, str, str]] = []
        self.last_commit = time.monotonic()

    def add(self, rows: list[tuple[str, str, str]]) -> None:
        self.unsaved += rows
        if time.monotonic() - self.last_commit >= self.every_s:
            self.commit()

    def commit(self) -> None:
        if self.store is not None and self.unsaved:
            self.store.put_outputs(*self.key, self.unsaved)
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
        shown = "\n  ".join(missing[:MISSING_SHOWN])
        raise DataFileError(
            f"task {task.name}: {len(missing)} of {sum(len(r.visuals) for r in requests)} visual files "
            f"are missing, e.g.\n  {shown}\nCheck --data-root (images are looked up under "
            f"{task.config.dataset.image_dir or 'the data root'})."
        )


def _batches(items: Sequence[Request], size: int) -> list[list[Request]]:
    return [list(items[i : i + size]) for i in range(0, len(items), size)]


def write_sample_log(path: Path, score: TaskScore, prompts: Mapping[str, str]) -> None:
    """JSON lines that ``harness score`` reads back (one object per document)."""
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


def evaluate(
    task_names: str | Sequence[str],
    model: VisionLanguageModel,
    store: ResultsStore | None,
    config: EvalConfig | None = None,
    judge: Judge | Mapping[str, Judge] | None = None,
) -> EvalResult:
    """Run ``model`` on tasks (names, groups or tags), storing outputs and scores as they come."""
    config = config or EvalConfig()
    registry = default_registry()
    names = registry.expand(task_names if isinstance(task_names, str) else list(task_names))
    fingerprint = model.fingerprint()

    # Prepare every task before any generation, so bad data fails fast and nothing is written.
    prepared = []
    for name in names:
        task = get_task(name)
        docs, files = task.load_docs(config.data_root, config.data_files.get(name))
        if config.limit is not None:
            docs = docs[: config.limit]
        requests = task.build_requests(docs, config.data_root, model.family, config.gen_overrides)
        check_visuals(task, requests)
        prepared.append((task, docs, files, requests))

    run_id = None
    if store is not None:
        run_id = store.create_run(
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
            )
        )
    scores: dict[str, TaskScore] = {}
    generated: dict[str, int] = {}
    reused: dict[str, int] = {}
    seconds: dict[str, float] = {}
    try:
        for task, docs, files, requests in prepared:
            start = time.perf_counter()
            gen_kwargs = requests[0].gen_kwargs if requests else {}
            gen_hash = gen_kwargs_hash(gen_kwargs)
            task_hash = task.task_hash(files)
            if store is not None:
                store.start_task(
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
            outputs = (
                store.cached_outputs(fingerprint, task_hash, gen_hash, [d["doc_id"] for d in docs])
                if store is not None
                else {}
            )
            reused[task.name] = len(outputs)
            pending = [r for r in requests if r.doc_id not in outputs]
            sort_key = getattr(model, "sort_key", None)
            if sort_key is not None:
                pending.sort(key=sort_key)  # stable: ties keep document order
            generated[task.name] = len(pending)
            writer = _OutputWriter(
                store, (fingerprint, task.name, task_hash, gen_hash), config.commit_seconds
            )
            with progress_bar(f"{task.name}", len(pending), config.show_progress) as advance:
                try:
                    for batch in _batches(pending, max(1, config.batch_size)):
                        texts = model.generate(batch)
                        if len(texts) != len(batch):
                            raise HarnessError(
                                f"model {model.name} returned {len(texts)} outputs for "
                                f"{len(batch)} requests"
                            )
                        writer.add(
                            [(r.doc_id, r.prompt, t) for r, t in zip(batch, texts, strict=True)]
                        )
                        outputs.update({r.doc_id: t for r, t in zip(batch, texts, strict=True)})
                        advance(len(batch))
                finally:
                    writer.commit()  # what was generated survives an error or Ctrl-C too
            task_judge = judge.get(task.name) if isinstance(judge, Mapping) else judge
            score = score_outputs(task, docs, outputs, judge=task_judge, n_boot=config.n_boot)
            seconds[task.name] = time.perf_counter() - start
            if store is not None:
                store.put_task_score(
                    run_id,
                    fingerprint,
                    task_hash,
                    gen_hash,
                    score,
                    task.config.metrics,
                    seconds=seconds[task.name],
                )
            if config.log_samples is not None:
                prompts = {r.doc_id: r.prompt for r in requests}
                write_sample_log(config.log_samples / f"{task.name}.jsonl", score, prompts)
            scores[task.name] = score
        groups = _groups(task_names, scores)
        if store is not None:
            for group, metrics in groups.items():
                primary = next(
                    (m.metric for m in registry.groups[group].aggregate_metrics if m.primary), None
                )
                store.put_group_metrics(run_id, group, metrics, primary)
            store.finish_run(run_id, "complete", seconds)
    except BaseException:
        if store is not None and run_id is not None:
            store.finish_run(run_id, "failed", seconds)
        raise
    return EvalResult(run_id, scores, groups, generated, reused, seconds)


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

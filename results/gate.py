"""Regression gate: does a candidate run lose more than allowed against a base run?

Only two different, complete runs are compared, over the same tasks (all of
them, or the ones asked for), the same documents and the same data files; a
run with documents that have no answer is refused unless ``allow_missing``
(they are then scored by the task's missing rule on both sides). The
per-sample fields stored with each run are aligned by doc id, turned into
columns like :func:`harness.task.columns_of`, and compared with a paired bootstrap over the task's ``bootstrap_unit`` using
the task's own aggregate. A task fails when the drop of its primary metric
(base - candidate in the metric's points, or a percentage of the base with
``relative``) exceeds ``max_drop``; with ``require_significance`` it must also
be significant (one-sided p < alpha). For a lower-is-better metric an increase
is a drop. The CLI turns :attr:`GateReport.passed` into exit status 0 or 1.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from rich.table import Table

from harness.errors import HarnessError
from harness.results.store import ResultsStore
from harness.stats import DEFAULT_BOOTSTRAP, DEFAULT_SEED, paired_bootstrap
from harness.task import SampleResult, Task, columns_of, get_task


@dataclass
class TaskGate:
    """The paired comparison of one task's metric and its verdict."""

    task: str
    metric: str
    higher_is_better: bool
    base: float
    candidate: float
    drop: float  # metric points; positive = candidate worse
    relative_drop: float  # percent of the base value
    ci_low: float  # 95% CI of the drop (points)
    ci_high: float
    p_value: float  # one-sided: share of resamples where the candidate is not worse
    n: int  # documents both runs have
    n_units: int
    dropped_base: int  # documents only the base run has
    dropped_candidate: int  # documents only the candidate run has
    exceeds: bool
    significant: bool
    passed: bool
    verdict: str

    @property
    def dropped(self) -> int:
        return self.dropped_base + self.dropped_candidate


@dataclass
class GateReport:
    base_run: str
    candidate_run: str
    base_label: str
    candidate_label: str
    max_drop: float
    relative: bool
    alpha: float
    require_significance: bool
    n_boot: int
    tasks: list[TaskGate]
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(t.passed for t in self.tasks)

    @property
    def failed(self) -> list[TaskGate]:
        return [t for t in self.tasks if not t.passed]

    def _limit(self) -> str:
        return f"{self.max_drop:g}%" if self.relative else f"{self.max_drop:g} points"

    def summary(self) -> str:
        """One line: which tasks failed and by how much, or that all passed."""
        if self.passed:
            return f"all {len(self.tasks)} tasks within a drop of {self._limit()}"
        parts = []
        for t in self.failed:
            amount = f"{_f(t.relative_drop)}%" if self.relative else _f(t.drop)
            parts.append(f"{t.task} {t.metric} drop {amount} (p={_f(t.p_value, 3)})")
        return (
            f"{len(self.failed)} of {len(self.tasks)} tasks dropped more than {self._limit()}: "
            + "; ".join(parts)
        )

    def table(self) -> Table:
        """A rich table: task, metric, base, candidate, drop, CI, p-value, n, verdict."""
        sig = (
            f"; fail only if p < {self.alpha:g} (n.s. = not significant)"
            if self.require_significance
            else ""
        )
        table = Table(
            title=f"gate: {self.candidate_label} ({self.candidate_run}) vs "
            f"{self.base_label} ({self.base_run})",
            box=None,
            padding=(0, 1),
            collapse_padding=True,
            pad_edge=False,
            caption=f"max drop {self._limit()}{sig}; drop = base - candidate (positive = worse) "
            "with its 95% CI; p = one-sided paired bootstrap p-value"
            + "".join(f"\n{n}" for n in self.notes),
        )
        width = max([4] + [len(t.task) for t in self.tasks])
        table.add_column("task", no_wrap=True, min_width=width)
        table.add_column("metric", no_wrap=True)
        numbers = ["base", "cand.", "drop"] + (["drop %"] if self.relative else [])
        for name in (*numbers, "95% CI", "p", "n"):
            table.add_column(name, justify="right", no_wrap=True)
        table.add_column("verdict", no_wrap=True)
        for t in self.tasks:
            style = "green" if t.passed else "bold red"
            values = [_f(t.base), _f(t.candidate), _f(t.drop)]
            values += [_f(t.relative_drop)] if self.relative else []
            table.add_row(
                t.task,
                t.metric,
                *values,
                f"{_f(t.ci_low)}, {_f(t.ci_high)}",
                _f(t.p_value, 3),
                str(t.n),
                f"[{style}]{t.verdict}[/]",
            )
        return table

    def to_json(self) -> str:
        payload = {
            "passed": self.passed,
            "base_run": self.base_run,
            "candidate_run": self.candidate_run,
            "base": self.base_label,
            "candidate": self.candidate_label,
            "max_drop": self.max_drop,
            "relative": self.relative,
            "alpha": self.alpha,
            "require_significance": self.require_significance,
            "n_boot": self.n_boot,
            "notes": self.notes,
            "tasks": [{**asdict(t), "dropped": t.dropped} for t in self.tasks],
        }
        return json.dumps(_finite(payload), indent=2)


def _f(value: float, digits: int = 2) -> str:
    return f"{value:.{digits}f}" if math.isfinite(value) else "-"


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


# -- alignment -----------------------------------------------------------------------------
@dataclass
class _RunTask:
    """One task of one run as the gate reads it: every document, and the answered ones."""

    samples: dict[str, SampleResult]  # doc id -> sample with fields (answered, or wrong)
    doc_ids: set[str]  # every document the run scored, answered or not
    unanswered: list[str]


def _read_run_task(store: ResultsStore, run_id: str, task: str) -> _RunTask:
    samples, docs, unanswered = {}, set(), []
    for row in store.run_samples(run_id, task):
        docs.add(row["doc_id"])
        if not row["answered"]:
            unanswered.append(row["doc_id"])
        if row["fields"]:  # answered, or scored as wrong by the task's missing rule
            samples[row["doc_id"]] = SampleResult(
                row["doc_id"],
                row["raw_output"],
                row["answer"],
                bool(row["parsed"]),
                row["fields"],
                answered=row["answered"],
            )
    return _RunTask(samples, docs, sorted(unanswered))


def _shown(ids: Sequence[str], n: int = 5) -> str:
    ids = sorted(ids)
    return ", ".join(repr(i) for i in ids[:n]) + (", ..." if len(ids) > n else "")


def align_columns(
    base: Mapping[str, SampleResult], candidate: Mapping[str, SampleResult]
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], list[str]]:
    """Columns of the documents both sides have, in the same (doc id) order.

    Both sides are converted together so a field gets the same type on each.
    """
    common = sorted(set(base) & set(candidate))
    samples = [base[d] for d in common] + [candidate[d] for d in common]
    cols = columns_of(samples)
    n = len(common)
    return {k: v[:n] for k, v in cols.items()}, {k: v[n:] for k, v in cols.items()}, common


# -- the gate ------------------------------------------------------------------------------
def _finished_tasks(store: ResultsStore, run_id: str) -> dict[str, dict[str, Any]]:
    return {t["task"]: t for t in store.run_tasks(run_id) if t["finished_at"] is not None}


def _select_tasks(
    tasks: Sequence[str] | None,
    base_tasks: Mapping[str, Any],
    cand_tasks: Mapping[str, Any],
    base_id: str,
    cand_id: str,
) -> list[str]:
    """The tasks to compare: ``tasks`` (expanded), which both runs must have; by default
    every task, and then both runs must have scored the same ones."""
    if not tasks:
        only_base = sorted(set(base_tasks) - set(cand_tasks))
        only_cand = sorted(set(cand_tasks) - set(base_tasks))
        if not set(base_tasks) & set(cand_tasks):
            raise HarnessError(
                f"runs {base_id} and {cand_id} have no scored task in common "
                f"(base: {sorted(base_tasks) or 'none'}; candidate: {sorted(cand_tasks) or 'none'})"
            )
        if only_base or only_cand:
            raise HarnessError(
                f"runs {base_id} and {cand_id} scored different tasks (only the base: "
                f"{only_base or 'none'}; only the candidate: {only_cand or 'none'}); "
                "name the ones to compare with --tasks"
            )
        return [t for t in base_tasks if t in cand_tasks]
    from harness.registry import default_registry

    names: list[str] = []
    for name in tasks:
        expanded = (
            [name] if name in base_tasks or name in cand_tasks else default_registry().expand(name)
        )
        names += [n for n in expanded if n not in names]
    for name in names:
        missing = [
            rid for rid, have in ((base_id, base_tasks), (cand_id, cand_tasks)) if name not in have
        ]
        if missing:
            raise HarnessError(f"--tasks: run {', '.join(missing)} has no scored task {name!r}")
    return names


def _check_runs(base_run: Mapping[str, Any], cand_run: Mapping[str, Any]) -> None:
    """Only two different, finished runs can be compared."""
    if base_run["run_id"] == cand_run["run_id"]:
        raise HarnessError(
            f"--base and --candidate are the same run ({base_run['run_id']}); a run gated "
            "against itself always passes"
        )
    for flag, run in (("--base", base_run), ("--candidate", cand_run)):
        if run["status"] != "complete":
            raise HarnessError(
                f"{flag}: run {run['run_id']} ({run['model']}@{run['precision']}) is "
                f"{run['status']}, not complete; its scores may cover only part of the data"
            )


def _aligned(
    task: Task,
    base: _RunTask,
    cand: _RunTask,
    ids: tuple[str, str],
    allow_missing: bool,
    notes: list[str],
) -> tuple[dict[str, SampleResult], dict[str, SampleResult]]:
    """The samples to compare: both runs must have scored the same documents; a document
    without an answer is refused unless ``allow_missing``, and then compared as the task's
    missing rule scores it (left out on both sides, or wrong)."""
    if base.doc_ids != cand.doc_ids:
        only_b, only_c = base.doc_ids - cand.doc_ids, cand.doc_ids - base.doc_ids
        raise HarnessError(
            f"task {task.name}: the runs scored different documents ({len(base.doc_ids)} in "
            f"{ids[0]}, {len(cand.doc_ids)} in {ids[1]}; only the base: {len(only_b)} "
            f"{_shown(only_b)}; only the candidate: {len(only_c)} {_shown(only_c)})"
        )
    unanswered = {rid: rt.unanswered for rid, rt in zip(ids, (base, cand), strict=True)}
    holes = {rid: u for rid, u in unanswered.items() if u}
    if holes and not allow_missing:
        shown = "; ".join(f"run {rid}: {len(u)} ({_shown(u)})" for rid, u in holes.items())
        raise HarnessError(
            f"task {task.name}: documents without an answer ({shown}); the scores are "
            "incomplete. Pass --allow-missing to compare them anyway."
        )
    if not holes:
        return base.samples, cand.samples
    if task.config.missing == "wrong":
        notes.append(
            f"{task.name}: documents without an answer count as wrong "
            f"({', '.join(f'{len(u)} in {r}' for r, u in holes.items())})"
        )
        return base.samples, cand.samples
    left_out = set().union(*holes.values())
    notes.append(
        f"{task.name}: {len(left_out)} documents without an answer in either run were left out "
        "on both sides"
    )
    keep = base.doc_ids - left_out
    return (
        {d: s for d, s in base.samples.items() if d in keep},
        {d: s for d, s in cand.samples.items() if d in keep},
    )


def _negated(task: Task, metric: str) -> Any:
    return lambda cols: {metric: -float(task.aggregate(cols)[metric])}


def compare_task(
    task: Task,
    base: Mapping[str, SampleResult],
    candidate: Mapping[str, SampleResult],
    *,
    max_drop: float,
    relative: bool,
    alpha: float,
    require_significance: bool,
    n_boot: int,
    metric: str | None = None,
    seed: int = DEFAULT_SEED,
) -> TaskGate:
    """Paired bootstrap of one task's metric between aligned base and candidate samples."""
    spec_by_name = {m.name: m for m in task.config.metrics}
    name = metric or task.config.primary_metric.name
    if name not in spec_by_name:
        raise HarnessError(
            f"task {task.name} has no metric {name!r}; it has {sorted(spec_by_name)}"
        )
    higher = spec_by_name[name].higher_is_better
    base_cols, cand_cols, common = align_columns(base, candidate)
    if not common:
        raise HarnessError(
            f"task {task.name}: the two runs share no document id (base ids like "
            f"{sorted(base)[:3]}, candidate ids like {sorted(candidate)[:3]}); "
            "were they scored with the same data files?"
        )
    unit = task.config.bootstrap_unit
    if unit not in base_cols:
        raise HarnessError(
            f"task {task.name}: bootstrap_unit {unit!r} is not a stored per-sample field"
        )
    # Bootstrap "badness" so that drop > 0 always means the candidate is worse.
    aggregate = task.aggregate if higher else _negated(task, name)
    test = paired_bootstrap(
        base_cols, cand_cols, aggregate, name, unit, n_boot=max(0, n_boot), seed=seed
    )
    sign = 1.0 if higher else -1.0
    base_value, cand_value = sign * test.base, sign * test.candidate
    drop = test.drop
    if base_value == 0:
        rel = 0.0 if drop == 0 else math.copysign(math.inf, drop)
    else:
        rel = 100.0 * drop / abs(base_value)
    amount = rel if relative else drop
    significant = bool(math.isfinite(test.p_value) and test.p_value < alpha)
    if not math.isfinite(amount):
        exceeds, passed, verdict = True, False, "FAIL (undefined)"
    else:
        exceeds = amount > max_drop
        passed = not exceeds or (require_significance and not significant)
        verdict = "FAIL" if not passed else ("pass (n.s.)" if exceeds else "pass")
    return TaskGate(
        task=task.name,
        metric=name,
        higher_is_better=higher,
        base=base_value,
        candidate=cand_value,
        drop=drop,
        relative_drop=rel,
        ci_low=test.ci_low,
        ci_high=test.ci_high,
        p_value=test.p_value,
        n=len(common),
        n_units=test.n_units,
        dropped_base=len(base) - len(common),
        dropped_candidate=len(candidate) - len(common),
        exceeds=exceeds,
        significant=significant,
        passed=passed,
        verdict=verdict,
    )


def run_gate(
    store: ResultsStore,
    base: str,
    candidate: str,
    max_drop: float = 1.0,
    relative: bool = False,
    tasks: Sequence[str] | None = None,
    alpha: float = 0.05,
    require_significance: bool = False,
    n_boot: int = DEFAULT_BOOTSTRAP,
    metric: str | None = None,
    seed: int = DEFAULT_SEED,
    allow_missing: bool = False,
) -> GateReport:
    """Compare ``candidate`` with ``base`` (run ids, prefixes or ``model@precision``) task by task.

    Both runs must be complete and different, and have scored the same tasks (or those in
    ``tasks``) on the same documents of the same data; documents without an answer are
    refused unless ``allow_missing``."""
    if require_significance and n_boot <= 0:
        raise HarnessError("--require-significance needs bootstrap resamples (--bootstrap > 0)")
    if not 0 < alpha < 1:
        raise HarnessError(f"--alpha {alpha}: expected a level between 0 and 1")
    base_run = store.run(base)  # StoreError when unknown or ambiguous
    cand_run = store.run(candidate)
    _check_runs(base_run, cand_run)
    base_id, cand_id = base_run["run_id"], cand_run["run_id"]
    notes = [
        f"run {r['run_id']} scored the first {r['limit_docs']} documents of each task (--limit)"
        for r in (base_run, cand_run)
        if r["limit_docs"]
    ]
    base_tasks = _finished_tasks(store, base_id)
    cand_tasks = _finished_tasks(store, cand_id)
    results = []
    for name in _select_tasks(tasks, base_tasks, cand_tasks, base_id, cand_id):
        task = get_task(name)
        if base_tasks[name]["task_hash"] != cand_tasks[name]["task_hash"]:
            raise HarnessError(
                f"task {name}: the runs used different task configs or data files (task hash "
                f"{base_tasks[name]['task_hash']} in {base_id}, {cand_tasks[name]['task_hash']} "
                f"in {cand_id})"
            )
        base_samples, cand_samples = _aligned(
            task,
            _read_run_task(store, base_id, name),
            _read_run_task(store, cand_id, name),
            (base_id, cand_id),
            allow_missing,
            notes,
        )
        result = compare_task(
            task,
            base_samples,
            cand_samples,
            max_drop=max_drop,
            relative=relative,
            alpha=alpha,
            require_significance=require_significance,
            n_boot=n_boot,
            metric=metric,
            seed=seed,
        )
        results.append(result)
    return GateReport(
        base_run=base_id,
        candidate_run=cand_id,
        base_label=f"{base_run['model']}@{base_run['precision']}",
        candidate_label=f"{cand_run['model']}@{cand_run['precision']}",
        max_drop=max_drop,
        relative=relative,
        alpha=alpha,
        require_significance=require_significance,
        n_boot=n_boot,
        tasks=results,
        notes=notes,
    )

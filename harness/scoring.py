"""Offline scoring: saved predictions + a task's data files -> a TaskScore per task.

This is what ``harness score`` runs; the evaluation loop reuses
:func:`score_outputs` after generation.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.api.config import GroupConfig
from harness.errors import PredictionsError
from harness.judge import Judge
from harness.predictions import MatchResult, Prediction, pair_predictions, read_predictions
from harness.progress import progress_bar
from harness.registry import default_registry
from harness.stats import DEFAULT_BOOTSTRAP
from harness.task import Doc, ScoreContext, Task, TaskScore, get_task


@dataclass
class ScoredTask:
    task: Task
    score: TaskScore
    docs: list[Doc]
    files: dict[str, Path | None]
    match: MatchResult | None = None


def score_outputs(
    task: Task,
    docs: list[Doc],
    outputs: Mapping[str, str | None],
    judge: Judge | None = None,
    n_boot: int = DEFAULT_BOOTSTRAP,
    options: Mapping[str, Any] | None = None,
) -> TaskScore:
    ctx = ScoreContext(options={**task.options, **(options or {})}, judge=judge)
    with progress_bar(f"scoring {task.name}", len(docs)) as advance:
        return task.score(docs, outputs, ctx, n_boot=n_boot, progress=advance)


def score_predictions(
    task_name: str,
    predictions: Path | str | list[Prediction],
    data_root: Path | str | None = None,
    data_files: Mapping[str, str | Path] | None = None,
    judge: Judge | None = None,
    n_boot: int = DEFAULT_BOOTSTRAP,
    allow_extra: bool = False,
) -> ScoredTask:
    """Score one task from a predictions file (or already-read predictions)."""
    return score_tasks(
        [task_name],
        predictions,
        data_root,
        {task_name: data_files or {}},
        judges={task_name: judge} if judge is not None else None,
        n_boot=n_boot,
        allow_extra=allow_extra,
    )[0]


def score_tasks(
    task_names: list[str],
    predictions: Path | str | list[Prediction],
    data_root: Path | str | None = None,
    data_files: Mapping[str, Mapping[str, str | Path]] | None = None,
    judges: Mapping[str, Judge] | None = None,
    n_boot: int = DEFAULT_BOOTSTRAP,
    allow_extra: bool = False,
) -> list[ScoredTask]:
    """Score several tasks from one predictions file: each prediction is paired with exactly
    one document of one of the tasks (:func:`~harness.predictions.pair_predictions`)."""
    root = Path(data_root) if data_root is not None else None
    loaded = []
    for name in task_names:
        task = get_task(name)
        docs, files = task.load_docs(root, (data_files or {}).get(name))
        loaded.append((task, docs, files))
    preds = predictions if isinstance(predictions, list) else read_predictions(predictions)
    matches = pair_predictions([(t, d) for t, d, _ in loaded], preds, allow_extra=allow_extra)
    if not any(m.records for m in matches.values()):
        task, docs, _ = loaded[0]
        raise PredictionsError(
            f"none of the {len(preds)} predictions matches a document of "
            f"{', '.join(task_names)} ({len(docs)} documents in {task.name}, ids like "
            f"{docs[0]['doc_id']!r}); check the data files (LLaVA answer files need LLaVA's "
            "question file for their ids)"
        )
    out = []
    for task, docs, files in loaded:
        match = matches[task.name]
        judge = (judges or {}).get(task.name)
        score = score_outputs(task, docs, match.outputs, judge=judge, n_boot=n_boot)
        out.append(ScoredTask(task=task, score=score, docs=docs, files=files, match=match))
    return out


def group_metrics(group: GroupConfig, scores: Mapping[str, TaskScore]) -> dict[str, float]:
    """Aggregate member-task metrics into the group's metrics (mean or sum)."""
    registry = default_registry()
    members = registry.expand(group.group)
    out: dict[str, float] = {}
    for spec in group.aggregate_metrics:
        values = [
            scores[m].metrics[spec.metric]
            for m in members
            if m in scores and spec.metric in scores[m].metrics
        ]
        if len(values) != len(members):
            continue
        out[spec.metric] = sum(values) / len(values) if spec.aggregation == "mean" else sum(values)
    return out

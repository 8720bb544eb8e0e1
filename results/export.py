"""Eval-server submission files: a task's ``export`` hook, given the run's answers.

A task that has an eval-server format names it and its writer in YAML::

    export: {format: gqa_predictions, writer: !hook gqa.export.write_gqa}

The writer lives with its benchmark (``tasks/<bench>/export.py``) and has the signature
``write(task, docs, outputs, out, files, options) -> int``: ``outputs`` maps doc id ->
raw model text (documents without an answer are absent), ``files`` are the task's
resolved data files, ``options`` the task's options updated by ``export.options``, and
it returns the number of rows written. Each writer validates its rows against the
format's schema before it writes them atomically (:mod:`harness.submission`), and raises
:class:`harness.errors.HarnessError` when they do not fit.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from harness.hooks import resolve_hook


def export_task(
    task: Any,
    docs: list[dict[str, Any]],
    outputs: Mapping[str, str],
    out: Path,
    files: Mapping[str, Path | None],
) -> int:
    """Write ``task``'s submission file to ``out``; returns the number of rows."""
    spec = task.config.export
    if spec is None:
        raise HarnessError(f"task {task.name} has no eval-server export format")
    writer = resolve_hook(spec.writer, task.source, "export.writer")
    out.parent.mkdir(parents=True, exist_ok=True)
    return writer(task, docs, outputs, out, dict(files), {**task.options, **spec.options})

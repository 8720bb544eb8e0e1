"""What every eval-server submission writer shares: schema validation that names the
first bad row and field, and atomic writes (temporary file + rename), so a failed export
never leaves a partial file. The writers themselves are task hooks
(``export: {writer: !hook ...}`` in a task's YAML, e.g. ``tasks/gqa/export.py``)."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import jsonschema

from harness.errors import HarnessError


def validate_rows(
    rows: list[dict[str, Any]], schema: dict[str, Any], fmt: str, unique: str | None = None
) -> None:
    """Raise :class:`HarnessError` naming the first bad row (and field) of ``rows``."""
    validator = jsonschema.Draft202012Validator(schema)
    error = next(iter(sorted(validator.iter_errors(rows), key=lambda e: list(e.path))), None)
    if error is not None:
        path = list(error.path)
        where = f"row {path[0]}" if path else "the file"
        if len(path) > 1:
            where += f", field {path[1]!r}"
        raise HarnessError(f"{fmt} export: {where}: {error.message}; nothing was written")
    if unique is not None:
        seen: dict[Any, int] = {}
        for i, row in enumerate(rows):
            key = row[unique]
            if key in seen:
                raise HarnessError(
                    f"{fmt} export: rows {seen[key]} and {i} have the same {unique} {key!r}; "
                    "nothing was written"
                )
            seen[key] = i


def write_json_atomic(rows: Any, out: Path) -> None:
    """Write ``rows`` as JSON to a temporary file next to ``out``, then rename it onto ``out``."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(rows, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, out)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise

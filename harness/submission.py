"""What every eval-server submission writer shares: schema validation that names the
first bad row and field, and atomic writes (temporary file + rename), so a failed export
never leaves a partial file. The writers themselves are task hooks
(``export: {writer: !hook ...}`` in a task's YAML, e.g. ``tasks/gqa/export.py``)."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
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


@contextlib.contextmanager
def atomic_output(out: Path) -> Iterator[Path]:
    """A temporary path next to ``out`` to write (and check) the file at; renamed onto ``out``
    when the block ends without an error, removed otherwise, so ``out`` is never partial."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    # the temporary name keeps the suffix: some writers (openpyxl) pick the format by it
    fd, name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=f".tmp{out.suffix}", dir=out.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, out)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def write_json_atomic(rows: Any, out: Path) -> None:
    """Write ``rows`` as JSON to ``out`` atomically (:func:`atomic_output`)."""
    with atomic_output(out) as tmp:
        tmp.write_text(json.dumps(rows), encoding="utf-8")

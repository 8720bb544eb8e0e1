"""MMBench submission xlsx, as LLaVA-1.5's ``convert_mmbench_for_submission.py`` writes it.

Layout: the task's data file (TSV, or an xlsx) without the ``hint, category,
source, image, comment, l2-category`` columns (and without an existing
``prediction`` column), with ``prediction`` (the raw model text) inserted at
0-based column position 6 of what remains, as pandas ``insert(6, ...)`` does:
for the official TSV that gives ``index, question, A, B, C, D, prediction,
answer, split``. One row per data row, in file order; a row without output has
an empty prediction cell. ``index`` is written as an integer and empty
(NaN-like) cells stay empty; other cells are written as text.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from harness.submission import atomic_output
from harness.tasks.mmbench.mmbench import cell_text, read_table

DROPPED = ("hint", "category", "source", "image", "comment", "l2-category", "prediction")
PREDICTION_POSITION = 6
SHEET = "Sheet1"


def submission_columns(header: list[str]) -> list[str]:
    """Columns of the upload file for a data file with ``header``."""
    kept = [h for h in header if h not in DROPPED]
    kept.insert(min(PREDICTION_POSITION, len(kept)), "prediction")
    return kept


def _clean(text: str) -> str:
    """Drop the control characters that xlsx cannot hold (openpyxl refuses them)."""
    from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE

    return ILLEGAL_CHARACTERS_RE.sub("", text)


def _text_cell(sheet: Any, value: Any) -> Any:
    """A text starting with '=' as a text cell (openpyxl would store it as a formula)."""
    if isinstance(value, str) and value.startswith("="):
        from openpyxl.cell import WriteOnlyCell

        cell = WriteOnlyCell(sheet, value=value)
        cell.data_type = "s"
        return cell
    return value


def _cell(column: str, value: Any) -> Any:
    text = cell_text(value)
    if text is None:
        return None
    if column == "index":
        return int(text)
    return _clean(text)


def write_mmbench_xlsx(
    task: Any,
    docs: list[dict[str, Any]],
    outputs: Mapping[str, str],
    out: Path,
    files: Mapping[str, Path | None],
    options: Mapping[str, Any],
) -> int:
    """Write the upload xlsx to ``out``; returns the number of rows."""
    from openpyxl import Workbook, load_workbook

    data = files.get("data")
    if data is None:
        raise HarnessError(f"task {getattr(task, 'name', 'mmbench')}: no data file to export from")
    header, rows = read_table(Path(data))
    if "index" not in header:
        raise HarnessError(f"{data}: no 'index' column to key the predictions by")
    columns = submission_columns(header)
    workbook = Workbook(write_only=True)
    sheet = workbook.create_sheet(SHEET)
    sheet.append(columns)
    expected: list[str | None] = []
    for _, row in rows:
        index = cell_text(row.get("index"))
        prediction = outputs.get(str(index)) if index is not None else None
        prediction = None if prediction is None else _clean(prediction)
        expected.append(prediction)
        values = [prediction if c == "prediction" else _cell(c, row.get(c)) for c in columns]
        sheet.append([_text_cell(sheet, v) for v in values])
    out = Path(out)
    with atomic_output(out) as tmp:  # checked before it replaces out: no partial file
        workbook.save(tmp)
        _validate(tmp, columns, expected, load_workbook, out)
    return len(rows)


def _validate(
    path: Path,
    columns: list[str],
    expected: list[str | None],
    load_workbook: Any,
    out: Path,
) -> None:
    """Read the file at ``path`` back: same header, one row per data row, predictions as
    written (errors name ``out``, the file being written)."""
    try:
        book = load_workbook(path, read_only=True)
    except Exception as exc:  # openpyxl raises many types for a bad workbook
        raise HarnessError(f"{out}: written MMBench xlsx cannot be read back ({exc})") from None
    try:
        values = list(book.active.iter_rows(values_only=True))
    finally:
        book.close()
    header = [str(v) if v is not None else "" for v in (values[0] if values else ())]
    if header != columns:
        raise HarnessError(f"{out}: header {header} is not the expected {columns}")
    if len(values) - 1 != len(expected):
        raise HarnessError(f"{out}: {len(values) - 1} rows read back, {len(expected)} written")
    at = columns.index("prediction")
    for number, (row, want) in enumerate(zip(values[1:], expected, strict=True), start=2):
        got = row[at] if at < len(row) else None
        if (got or None) != (want or None):
            raise HarnessError(f"{out}:{number}: prediction cell does not read back as written")

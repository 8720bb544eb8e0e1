"""Leaderboard: one row per model x precision, one column per task metric, drops vs a base.

Values come from the latest complete run of each (model, precision, task), so a
re-run of one task replaces only that task's numbers. Group metrics (rows of
``metrics`` with ``is_group=1``) are columns like any task. The base is either
a precision label (``fp16``: each model is compared with its own run at that
precision), by default each model's unquantized run (fp16, else bf16, else fp32,
named in a note), or one run (id, id prefix, or ``model@precision``: every row is
compared with that run). A drop is positive when the row is worse than the
base, whatever the metric's direction. ``flips %`` is the share of documents
whose extracted answer differs from the base run's answer on the same
document, over the shown tasks (Dutta et al. 2024, "Accuracy is not all you
need"): unlike a difference of accuracies it does not let gains on some
documents hide losses on others, and it is far less noisy on small sets.
Rendered as markdown, CSV or HTML; :func:`plot_drops` draws the drops as a
PNG bar chart (matplotlib, optional).
"""

from __future__ import annotations

import csv
import html
import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from harness.results.store import ResultsStore

FORMATS = ("markdown", "csv", "html")
DASH = "-"
FLIPS = "flips %"
UNQUANTIZED = ("fp16", "bf16", "fp32")  # the default base, in order of preference


@dataclass(frozen=True)
class Column:
    """One task (or group) metric."""

    task: str
    metric: str
    is_group: bool = False
    higher_is_better: bool = True

    @property
    def label(self) -> str:
        return f"{self.task}/{self.metric}"


@dataclass
class Cell:
    """A row's value for one column, with its base value and drops (None when unknown)."""

    value: float | None
    run_id: str
    base: float | None = None
    drop: float | None = None  # points of the metric; positive = worse than the base
    rel_drop: float | None = None  # percent of the base value


@dataclass
class Row:
    model: str
    precision: str
    cells: dict[Column, Cell] = field(default_factory=dict)
    is_base: bool = False
    flips: float | None = None  # % of documents whose answer differs from the base run's
    flip_docs: int = 0  # documents compared

    @property
    def label(self) -> str:
        return f"{self.model}@{self.precision}"


@dataclass
class Leaderboard:
    base: str | None  # None: each model's unquantized run
    base_run: str | None  # run id when the base is one run, None for a precision label
    columns: list[Column]
    rows: list[Row]
    notes: list[str] = field(default_factory=list)

    def header(self) -> list[str]:
        out = ["model", "precision"]
        for col in self.columns:
            out += [col.label, f"{col.label} drop", f"{col.label} drop %"]
        return [*out, FLIPS]

    def records(self, digits: int | None = 2) -> list[list[str]]:
        """Table body as text; missing values and drops are ``-``."""
        body = []
        for row in self.rows:
            line = [row.model, row.precision]
            for col in self.columns:
                cell = row.cells.get(col)
                if cell is None:
                    line += [DASH, DASH, DASH]
                else:
                    line += [
                        _num(cell.value, digits),
                        _num(cell.drop, digits),
                        _num(cell.rel_drop, digits),
                    ]
            line.append(_num(row.flips, digits))
            body.append(line)
        return body


def _num(value: float | None, digits: int | None) -> str:
    if value is None or not math.isfinite(value):
        return DASH
    if digits is None:
        return repr(round(float(value), 6))
    return f"{value:.{digits}f}"


def drop_of(
    base: float | None, value: float | None, higher_is_better: bool
) -> tuple[float | None, float | None]:
    """Absolute and relative (%) drop of ``value`` vs ``base``; positive = worse."""
    if base is None or value is None or not (math.isfinite(base) and math.isfinite(value)):
        return None, None
    drop = (base - value) if higher_is_better else (value - base)
    if base == 0:
        rel = 0.0 if drop == 0 else math.copysign(math.inf, drop)
    else:
        rel = 100.0 * drop / abs(base)
    return drop, rel


# -- building ------------------------------------------------------------------------------
def _latest_metrics(store: ResultsStore) -> dict[tuple[str, str, str], list[dict[str, Any]]]:
    """(model, precision, task) -> metric rows of the latest complete run that has the task."""
    rows = store.query(
        "select r.run_id, r.model, r.precision, r.created_at, m.task, m.metric, m.value, "
        "m.higher_is_better, m.is_primary, m.is_group from metrics m join runs r "
        "on r.run_id = m.run_id where r.status = 'complete' and r.limit_docs is null "
        "order by r.created_at, r.rowid"
    )
    latest: dict[tuple[str, str, str], str] = {}
    by_run: dict[tuple[str, str, str, str], list[dict[str, Any]]] = {}
    for row in rows:
        key = (row["model"], row["precision"], row["task"])
        latest[key] = row["run_id"]
        by_run.setdefault((*key, row["run_id"]), []).append(row)
    return {key: by_run[(*key, run_id)] for key, run_id in latest.items()}


def _group_members() -> dict[str, list[str]]:
    try:
        from harness.registry import default_registry

        registry = default_registry()
        return {g: registry.expand(g) for g in registry.groups}
    except HarnessError:  # a broken task file elsewhere should not stop the leaderboard
        return {}


def _order_tasks(known: dict[str, bool], requested: list[str] | None) -> list[str]:
    """Task names in display order: members first, then their group; or as requested."""
    members = _group_members()
    if requested:
        out: list[str] = []
        for name in requested:
            names = [m for m in members.get(name, []) if m in known] + [name]
            if name not in known and not names[:-1]:
                raise HarnessError(
                    f"--tasks {name!r}: no complete run has this task or group; "
                    f"the results DB has {sorted(known)}"
                )
            out += [n for n in names if n in known and n not in out]
        return out
    plain = sorted(t for t, is_group in known.items() if not is_group)
    groups = sorted(t for t, is_group in known.items() if is_group)
    out = list(plain)
    for group in groups:
        inside = [i for i, t in enumerate(out) if t in members.get(group, [])]
        out.insert(max(inside) + 1 if inside else len(out), group)
    return out


def build_leaderboard(
    store: ResultsStore,
    base: str | None = None,
    tasks: list[str] | None = None,
    metric: str | None = None,
) -> Leaderboard:
    """Collect the latest complete numbers per model x precision and their drops vs ``base``."""
    latest = _latest_metrics(store)
    if not latest:
        raise HarnessError(
            f"{store.path}: no complete run with metrics (`harness runs` lists the runs)"
        )

    # Which metric of each task, and its direction.
    known: dict[str, bool] = {}
    primary: dict[str, str] = {}
    direction: dict[tuple[str, str], bool] = {}
    newest: dict[str, float] = {}
    for (_, _, task), rows in latest.items():
        for r in rows:
            known[task] = bool(r["is_group"])
            direction.setdefault((task, r["metric"]), bool(r["higher_is_better"]))
            if r["is_primary"] and r["created_at"] >= newest.get(task, -math.inf):
                primary[task], newest[task] = r["metric"], r["created_at"]
    columns = []
    for task in _order_tasks(known, tasks):
        name = metric or primary.get(task)
        if name is None or (task, name) not in direction:
            continue
        columns.append(Column(task, name, known[task], direction[(task, name)]))
    if not columns:
        metrics = sorted({m for (_, m) in direction})
        wanted = f"metric {metric!r}" if metric else "a primary metric"
        raise HarnessError(f"--metric: no selected task has {wanted}; metrics in the DB: {metrics}")

    # Rows: model x precision, with the values of the latest run per task.
    rows: dict[tuple[str, str], Row] = {}
    for (model, precision, task), metric_rows in latest.items():
        row = rows.setdefault((model, precision), Row(model, precision))
        for r in metric_rows:
            col = Column(task, r["metric"], bool(r["is_group"]), direction[(task, r["metric"])])
            if col in columns:
                row.cells[col] = Cell(value=r["value"], run_id=r["run_id"])

    notes: list[str] = []
    answers = _AnswerCache(store)
    base_run = _resolve_base(store, base, notes)
    if base_run is not None:
        base_values = {
            (m["task"], m["metric"]): m["value"] for m in store.metrics(base_run["run_id"])
        }
        for row in rows.values():
            row.is_base = (row.model, row.precision) == (base_run["model"], base_run["precision"])
            for col, cell in row.cells.items():
                _set_drop(cell, base_values.get((col.task, col.metric)), col)
            _set_flips(answers, row, {c.task: base_run["run_id"] for c in row.cells})
    else:
        models = sorted({m for m, _ in rows})
        if base is None:  # each model's unquantized run
            base_of = {m: next((p for p in UNQUANTIZED if (m, p) in rows), None) for m in models}
            picked = ", ".join(f"{m}@{p}" for m, p in base_of.items() if p)
            if picked:
                notes.append(f"base: each model's unquantized run ({picked})")
        else:
            base_of = {m: base for m in models}
        for row in rows.values():
            row.is_base = row.precision == base_of.get(row.model)
            ref = rows.get((row.model, base_of.get(row.model)))
            if ref is None:
                continue
            for col, cell in row.cells.items():
                ref_cell = ref.cells.get(col)
                _set_drop(cell, ref_cell.value if ref_cell else None, col)
            _set_flips(answers, row, {c.task: cell.run_id for c, cell in ref.cells.items()})
        no_base = sorted(m for m in models if (m, base_of.get(m)) not in rows)
        if no_base:
            wanted = base or "unquantized (fp16, bf16 or fp32)"
            notes.append(f"no {wanted} run for {', '.join(no_base)}: drops shown as '-'")

    shown = [r for r in rows.values() if r.cells]  # rows with none of the selected tasks go
    ordered = sorted(shown, key=lambda r: (r.model, not r.is_base, r.precision))
    return Leaderboard(
        base=base,
        base_run=base_run["run_id"] if base_run else None,
        columns=columns,
        rows=ordered,
        notes=notes,
    )


class _AnswerCache:
    """doc id -> extracted answer (the raw output when nothing was extracted) per run and
    task, each read from the DB once (the base run's answers serve every row)."""

    def __init__(self, store: ResultsStore) -> None:
        self.store = store
        self.read: dict[tuple[str, str], dict[str, str | None]] = {}

    def __call__(self, run_id: str, task: str) -> dict[str, str | None]:
        if (run_id, task) not in self.read:
            rows = self.store.query(
                "select d.doc_id, s.answer, s.raw_output from run_docs d join samples s "
                "on s.cache_key = d.cache_key where d.run_id = ? and d.task = ?",
                [run_id, task],
            )
            self.read[(run_id, task)] = {
                r["doc_id"]: r["answer"] if r["answer"] is not None else r["raw_output"]
                for r in rows
            }
        return self.read[(run_id, task)]


def _set_flips(answers: _AnswerCache, row: Row, base_runs: dict[str, str]) -> None:
    """``row.flips``: answers that differ from the base run's, over the row's plain tasks."""
    changed = compared = 0
    for col, cell in row.cells.items():
        base_run = base_runs.get(col.task)
        if col.is_group or base_run is None:
            continue
        mine, base = answers(cell.run_id, col.task), answers(base_run, col.task)
        common = mine.keys() & base.keys()
        compared += len(common)
        changed += sum(mine[d] != base[d] for d in common)
    if compared:
        row.flips, row.flip_docs = 100.0 * changed / compared, compared


def _set_drop(cell: Cell, base: float | None, col: Column) -> None:
    cell.base = base
    cell.drop, cell.rel_drop = drop_of(base, cell.value, col.higher_is_better)


def _resolve_base(store: ResultsStore, base: str | None, notes: list[str]) -> dict[str, Any] | None:
    """The base run when ``base`` names one run; None when it is a precision label (or None:
    each model's unquantized run). A base that names nothing is an error."""
    if base is None:
        return None
    precisions = {r["precision"] for r in store.runs(status="complete")}
    if base in precisions:
        return None
    if "@" in base or any(r["run_id"].startswith(base) for r in store.runs()):
        run = store.run(base)  # StoreError when missing or ambiguous
        if run["status"] != "complete":
            notes.append(f"base run {run['run_id']} is {run['status']}, not complete")
        return run
    raise HarnessError(
        f"--base {base}: no complete run has this precision and no run id starts with it "
        f"(precisions: {', '.join(sorted(precisions))}; or give a run id or MODEL@PRECISION)"
    )


# -- rendering -----------------------------------------------------------------------------
def _caption(board: Leaderboard) -> str:
    if board.base_run:
        text = f"drops vs run {board.base_run} ({board.base}); positive = worse"
    elif board.base is None:
        text = "drops vs each model's unquantized run; positive = worse"
    else:
        text = f"drops vs each model's {board.base} run; positive = worse"
    return text


def _md_cell(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def render(board: Leaderboard, fmt: str = "markdown") -> str:
    """The leaderboard as ``markdown`` (default), ``csv`` or ``html`` text."""
    if fmt not in FORMATS:
        raise HarnessError(f"--format {fmt!r}: expected one of {', '.join(FORMATS)}")
    header = board.header()
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(board.records(digits=None))
        return buf.getvalue()
    body = board.records()
    if fmt == "markdown":
        lines = [
            "| " + " | ".join(_md_cell(h) for h in header) + " |",
            "|" + "|".join(["---", "---"] + ["---:"] * (len(header) - 2)) + "|",
        ]
        lines += ["| " + " | ".join(_md_cell(v) for v in line) + " |" for line in body]
        lines += ["", f"_{_caption(board)}_"] + [f"_note: {n}_" for n in board.notes]
        return "\n".join(lines) + "\n"
    esc = html.escape
    parts = [
        '<table class="leaderboard">',
        f"<caption>{esc(_caption(board))}</caption>",
        "<thead><tr>",
    ]
    parts += [f"<th>{esc(h)}</th>" for h in header]
    parts.append("</tr></thead><tbody>")
    for row, line in zip(board.rows, body, strict=True):
        parts.append('<tr class="base">' if row.is_base else "<tr>")
        parts += [f"<td>{esc(v)}</td>" for v in line]
        parts.append("</tr>")
    parts.append("</tbody></table>")
    parts += [f'<p class="note">{esc(n)}</p>' for n in board.notes]
    return "\n".join(parts) + "\n"


# -- plot ----------------------------------------------------------------------------------
def plot_drops(board: Leaderboard, path: Path, relative: bool = False) -> Path:
    """Write a PNG bar chart of every non-base row's drop per column (points, or % with relative)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise HarnessError(
            "--plot needs matplotlib, which is not installed: pip install 'vlm-harness[plot]'"
        ) from None
    series = []
    for row in board.rows:
        if row.is_base:
            continue
        values = []
        for col in board.columns:
            cell = row.cells.get(col)
            value = None if cell is None else (cell.rel_drop if relative else cell.drop)
            values.append(value if value is not None and math.isfinite(value) else math.nan)
        if any(math.isfinite(v) for v in values):
            series.append((row.label, values))

    n_cols = len(board.columns)
    fig = Figure(figsize=(max(6.0, 1.2 * n_cols + 2), 4.5), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    width = 0.8 / max(1, len(series))
    for i, (label, values) in enumerate(series):
        xs = [c + (i - (len(series) - 1) / 2) * width for c in range(n_cols)]
        ax.bar(xs, values, width=width, label=label)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xticks(range(n_cols), [c.label for c in board.columns], rotation=30, ha="right")
    ax.set_ylabel("drop vs base (%)" if relative else "drop vs base (points)")
    ax.set_title(_caption(board))
    if series:
        ax.legend(fontsize="small")
    else:
        ax.text(
            0.5,
            0.5,
            "no row has a base to compare with",
            ha="center",
            va="center",
            transform=ax.transAxes,
        )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=100)
    return path

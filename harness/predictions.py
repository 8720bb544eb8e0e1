"""Reading saved model outputs: LLaVA answer files, eval.ai result lists, harness sample logs.

Every reader yields :class:`Prediction` records (the original fields, the raw
text, the file and line), and :func:`pair_predictions` maps them onto the
documents of the tasks being scored through each task's own id rule, refusing
foreign, duplicated, ambiguous and contradicting predictions.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.datafiles import iter_jsonl, read_json
from harness.errors import DataFileError, PredictionsError

TEXT_FIELDS = ("raw_output", "text", "pred", "prediction", "answer")


@dataclass(frozen=True)
class Prediction:
    record: dict[str, Any]
    text: str | None  # None: the record's text field is null (never an answer)
    source: str
    line: int

    @property
    def where(self) -> str:
        return f"{self.source}:{self.line}"


def _text_of(record: dict[str, Any], where: str) -> str | None:
    for key in TEXT_FIELDS:
        if key in record:
            value = record[key]
            return None if value is None else str(value)
    raise PredictionsError(f"{where}: no model output field; expected one of {list(TEXT_FIELDS)}")


def _from_records(records: Iterable[tuple[int, dict[str, Any]]], source: str) -> list[Prediction]:
    return [Prediction(r, _text_of(r, f"{source}:{n}"), source, n) for n, r in records]


def _read_xlsx(path: Path) -> list[Prediction]:
    from openpyxl import load_workbook

    try:
        sheet = load_workbook(path, read_only=True).active
    except Exception as exc:  # openpyxl raises many types for a bad workbook
        raise PredictionsError(f"{path}: not a readable xlsx workbook ({exc})") from None
    rows = sheet.iter_rows(values_only=True)
    header = [str(h) if h is not None else "" for h in next(rows, [])]
    if "prediction" not in header:
        raise PredictionsError(f"{path}: no 'prediction' column (columns: {header})")
    out = []
    for number, row in enumerate(rows, start=2):
        record = dict(zip(header, row, strict=False))
        out.append(
            Prediction(
                record,
                None if record["prediction"] is None else str(record["prediction"]),
                str(path),
                number,
            )
        )
    return out


def read_predictions(path: Path | str) -> list[Prediction]:
    """Read a predictions file in any supported format (sniffed from its content)."""
    path = Path(path)
    if not path.is_file():
        raise PredictionsError(f"--predictions {path}: no such file")
    if path.suffix.lower() == ".xlsx":
        return _read_xlsx(path)
    with path.open("rb") as fh:
        head = fh.read(2048).lstrip()
    try:
        if head.startswith(b"["):
            data = read_json(path)
            if not all(isinstance(r, dict) for r in data):
                raise PredictionsError(f"{path}: expected a JSON list of result objects")
            return _from_records(((i + 1, r) for i, r in enumerate(data)), str(path))
        if head.startswith(b"{"):
            first_line = head.split(b"\n", 1)[0]
            try:
                json.loads(first_line)
                one_per_line = True
            except json.JSONDecodeError:
                one_per_line = False
            if not one_per_line:
                return _read_json_object(path)
            return _from_records(iter_jsonl(path), str(path))
    except DataFileError as exc:
        raise PredictionsError(str(exc)) from None
    raise PredictionsError(
        f"{path}: unrecognised predictions format; expected JSON lines (LLaVA answers or harness "
        "sample log), a JSON list (eval.ai results), ScienceQA outputs JSON, or an MMBench xlsx"
    )


def _read_json_object(path: Path) -> list[Prediction]:
    data = read_json(path)
    if isinstance(data, dict) and {"correct", "incorrect"} <= set(data):
        # LLaVA's ScienceQA result file: {"correct": [...], "incorrect": [...]}
        records = [r for key in ("correct", "incorrect") for r in data[key]]
        return _from_records(((i + 1, r) for i, r in enumerate(records)), str(path))
    if isinstance(data, dict) and all(isinstance(v, str) for v in data.values()):
        return [
            Prediction({"question_id": k, "text": v}, v, str(path), i + 1)
            for i, (k, v) in enumerate(data.items())
        ]
    raise PredictionsError(
        f"{path}: a JSON object that is neither ScienceQA outputs nor an id -> answer map"
    )


@dataclass
class MatchResult:
    """The predictions of one task, paired with its documents by the task's id rule."""

    outputs: dict[str, str | None]  # doc id -> raw text (None for a null text)
    records: dict[str, Prediction]
    n_unmatched: int = 0  # predictions that belong to no document of the tasks scored
    n_other_task: int = 0  # harness sample-log records that name another task


SHOWN = 5  # offending predictions named in an error
QUESTION_FIELDS = ("prompt", "question", "Q")


def _norm(text: str) -> str:
    return " ".join(text.split()).casefold()


def record_question(record: dict[str, Any]) -> str | None:
    """The question text a prediction record carries (LLaVA's ``prompt``, a harness sample
    log's full prompt, an MMBench/VCG ``question``/``Q``), or None."""
    for key in QUESTION_FIELDS:
        value = record.get(key)
        if isinstance(value, str) and value.strip():
            return value
    return None


def doc_question(doc: dict[str, Any]) -> str | None:
    value = doc.get("question")
    return value if isinstance(value, str) and value.strip() else None


def _shown(items: list[str]) -> str:
    more = f" and {len(items) - SHOWN} more" if len(items) > SHOWN else ""
    return "; ".join(items[:SHOWN]) + more


def pair_predictions(
    tasks_docs: list[tuple[Any, list[dict[str, Any]]]],
    predictions: list[Prediction],
    *,
    allow_extra: bool = False,
) -> dict[str, MatchResult]:
    """Pair predictions with the documents of one or more tasks, refusing any doubt.

    A prediction belongs to the document whose id the task's rule reads from it
    (``match_prediction`` hook, else ``doc_id`` / ``question_id`` / ...). When the record
    carries its question (LLaVA's ``prompt``, a sample log's prompt), the document's question
    must appear in it: ids that point at other questions (e.g. LLaVA's POPE answers, numbered
    across all three splits, read with only the official per-split files) are an error.
    Also an error, naming the file, line and ids: two predictions for one document, a
    prediction that fits documents of several tasks, and (unless ``allow_extra``) predictions
    that belong to no document of the tasks scored.
    """
    docs_by_task = {task.name: {d["doc_id"]: d for d in docs} for task, docs in tasks_docs}
    results = {task.name: MatchResult({}, {}) for task, _ in tasks_docs}
    unmatched: list[Prediction] = []
    contradicted: list[str] = []
    ambiguous: list[str] = []
    duplicated: list[str] = []
    for pred in predictions:
        owner = pred.record.get("task")
        candidates: list[tuple[Any, str]] = []
        for task, _ in tasks_docs:
            if owner is not None and owner != task.name:
                continue
            doc_id = task.doc_id_for(pred.record)
            if doc_id is not None and doc_id in docs_by_task[task.name]:
                candidates.append((task, doc_id))
        if owner is not None and owner not in results:
            for result in results.values():
                result.n_other_task += 1
            continue
        if not candidates:
            unmatched.append(pred)
            continue
        question = record_question(pred.record)
        if question is not None:
            asked = _norm(question)
            fitting = [
                (task, doc_id)
                for task, doc_id in candidates
                if (q := doc_question(docs_by_task[task.name][doc_id])) is None or _norm(q) in asked
            ]
            if not fitting:
                task, doc_id = candidates[0]
                doc_q = doc_question(docs_by_task[task.name][doc_id])
                contradicted.append(
                    f"{pred.where}: id {doc_id!r} is {task.name}'s question {doc_q!r}, but the "
                    f"prediction answers {question.strip()[:120]!r}"
                )
                continue
            candidates = fitting
        if len(candidates) > 1:
            names = ", ".join(f"{t.name} {d!r}" for t, d in candidates)
            ambiguous.append(f"{pred.where}: fits {names}")
            continue
        task, doc_id = candidates[0]
        result = results[task.name]
        if doc_id in result.records:
            duplicated.append(
                f"{pred.where}: second prediction for {task.name} document {doc_id!r} "
                f"(first at {result.records[doc_id].where})"
            )
            continue
        result.outputs[doc_id] = pred.text
        result.records[doc_id] = pred
    names = ", ".join(results)
    if contradicted:
        raise PredictionsError(
            f"{len(contradicted)} predictions answer other questions than the documents their "
            f"ids name: {_shown(contradicted)}. The ids belong to other data files (LLaVA's "
            "answer files number questions as its own question files do: pass that file too, "
            "e.g. --data-file questions=llava_pope_test.jsonl)."
        )
    if duplicated:
        raise PredictionsError(
            f"{len(duplicated)} documents have more than one prediction: {_shown(duplicated)}"
        )
    if ambiguous:
        raise PredictionsError(
            f"{len(ambiguous)} predictions fit documents of several tasks equally (the same id, "
            f"and no question text that tells them apart): {_shown(ambiguous)}. Pass the data "
            "file that numbers the questions across tasks (LLaVA's question file, e.g. "
            "--data-file questions=llava_pope_test.jsonl), or score one task at a time."
        )
    if unmatched and not allow_extra:
        shown = [f"{p.where} (id {_record_id(p.record)!r})" for p in unmatched]
        raise PredictionsError(
            f"{len(unmatched)} of {len(predictions)} predictions belong to no document of "
            f"{names}: {_shown(shown)}. If they are another task's, score that task with it "
            "(e.g. the whole group), or pass --allow-extra to leave them out."
        )
    for result in results.values():
        result.n_unmatched = len(unmatched)
    return results


def _record_id(record: dict[str, Any]) -> Any:
    for key in ("doc_id", "question_id", "questionId", "index", "video_name"):
        if record.get(key) is not None:
            return record[key]
    return None


def match_predictions(
    task: Any,
    docs: list[dict[str, Any]],
    predictions: list[Prediction],
    *,
    allow_extra: bool = False,
) -> MatchResult:
    """:func:`pair_predictions` for a single task."""
    return pair_predictions([(task, docs)], predictions, allow_extra=allow_extra)[task.name]

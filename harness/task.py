"""A runnable task: documents from data files, requests for the model, scores from outputs.

:class:`Task` wraps a validated :class:`~harness.api.config.TaskConfig` and calls
its hooks. It knows nothing about models or the results database: it turns
documents into :class:`~harness.api.requests.Request` objects, and raw outputs
into a :class:`TaskScore`.
"""

from __future__ import annotations

import hashlib
import json
import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from harness.api.config import TaskConfig
from harness.api.requests import LoglikelihoodRequest, Request, is_answer
from harness.datafiles import file_sha256, find_data_dir, find_data_file
from harness.errors import DataFileError, HarnessError, TaskConfigError
from harness.hooks import Hook, resolve_hook
from harness.judge import Judge
from harness.stats import DEFAULT_BOOTSTRAP, bootstrap_ci, with_units

Doc = dict[str, Any]


class Extracted(NamedTuple):
    """An answer read from raw model text; ``parsed`` is False when the extractor gave up."""

    answer: Any
    parsed: bool = True


# What a task's process_results hook receives for a document without an answer when the
# task's ``missing`` rule is ``wrong``: the hook must score it as an incorrect answer.
NO_ANSWER = Extracted(None, False)


@dataclass
class ScoreContext:
    """What process_results hooks may use besides the doc and the extracted answer."""

    options: dict[str, Any] = field(default_factory=dict)
    judge: Judge | None = None


@dataclass
class SampleResult:
    doc_id: str
    raw_output: str | None
    answer: Any
    parsed: bool
    fields: dict[str, Any]
    # False for a document without an answer (see TaskConfig.missing); its fields are
    # empty when the task skips such documents.
    answered: bool = True

    @property
    def missing(self) -> bool:
        return not self.answered


@dataclass
class TaskScore:
    task: str
    metrics: dict[str, float]
    ci: dict[str, tuple[float, float]]
    n: int
    n_missing: int
    n_parse_failures: int
    samples: list[SampleResult]
    primary: str
    extra: dict[str, Any] = field(default_factory=dict)
    missing_rule: str = "wrong"  # how documents without an answer were scored (TaskConfig)

    @property
    def n_answered(self) -> int:
        return self.n - self.n_missing

    @property
    def parse_failure_rate(self) -> float:
        """Share of the answered documents whose answer the extractor could not read."""
        return self.n_parse_failures / self.n_answered if self.n_answered else 0.0

    @property
    def missing_ids(self) -> list[str]:
        return [s.doc_id for s in self.samples if s.missing]

    def flat(self) -> dict[str, float]:
        """Metric name -> number, with n, CI bounds and failure counts (``--json``)."""
        out: dict[str, float] = {}
        for name, value in self.metrics.items():
            out[f"{self.task}/{name}"] = value
            if name in self.ci:
                out[f"{self.task}/{name}_ci_low"], out[f"{self.task}/{name}_ci_high"] = self.ci[
                    name
                ]
        out[f"{self.task}/n"] = self.n
        out[f"{self.task}/n_missing"] = self.n_missing
        out[f"{self.task}/parse_failure_rate"] = self.parse_failure_rate
        for key, value in self.extra.items():
            out[f"{self.task}/{key}"] = value
        return out


class _StrictFormatter(string.Formatter):
    def get_field(self, field_name: str, args: Any, kwargs: Any) -> Any:
        if not field_name.isidentifier():
            raise KeyError(field_name)
        return kwargs[field_name], field_name


def columns_of(samples: list[SampleResult]) -> dict[str, np.ndarray]:
    """Per-sample fields as columns: numbers become float arrays, the rest strings."""
    names: list[str] = []
    for sample in samples:
        for key in sample.fields:
            if key not in names:
                names.append(key)
    cols: dict[str, np.ndarray] = {"doc_id": np.array([s.doc_id for s in samples], dtype=object)}
    for name in names:
        values = [s.fields.get(name) for s in samples]
        if all(isinstance(v, bool | int | float | np.number) or v is None for v in values):
            cols[name] = np.array([np.nan if v is None else float(v) for v in values], dtype=float)
        else:
            cols[name] = np.array(["" if v is None else str(v) for v in values], dtype=object)
    return cols


class Task:
    """A task config bound to its hooks."""

    def __init__(self, config: TaskConfig, source: Path | str = "<memory>") -> None:
        self.config = config
        self.source = str(source)
        self.name = config.task
        self._loader = self._hook("dataset.loader", config.dataset.loader)
        self._extract = self._hook("extractor", config.extractor)
        self._process = self._hook("process_results", config.process_results)
        self._aggregate = self._hook("aggregate", config.aggregate)
        self._match = (
            self._hook("match_prediction", config.match_prediction)
            if config.match_prediction
            else None
        )
        self._visual = self._field_or_hook("doc_to_visual", config.doc_to_visual)
        self._text = self._field_or_hook("doc_to_text", config.doc_to_text, template=True)
        self._target = self._field_or_hook("doc_to_target", config.doc_to_target)
        self._choices = self._field_or_hook("doc_to_choice", config.doc_to_choice)

    # -- hooks -----------------------------------------------------------------
    def _hook(self, field_name: str, hook: Hook) -> Any:
        return resolve_hook(hook, self.source, field_name)

    def _field_or_hook(
        self, field_name: str, spec: Hook | str | None, template: bool = False
    ) -> Any:
        if spec is None:
            return None
        if isinstance(spec, Hook):
            return self._hook(field_name, spec)
        if template:
            return lambda doc, options, _t=spec: self.render(_t, doc, field_name)
        return lambda doc, options, _k=spec: self._doc_field(doc, _k, field_name)

    def _doc_field(self, doc: Doc, key: str, field_name: str) -> Any:
        if key not in doc:
            raise TaskConfigError(
                f"{self.source}: field {field_name!r}: documents have no field {key!r} "
                f"(they have {sorted(doc)})"
            )
        return doc[key]

    def render(self, template: str, doc: Doc, field_name: str = "doc_to_text") -> str:
        try:
            return _StrictFormatter().vformat(template, (), doc)
        except KeyError as exc:
            raise TaskConfigError(
                f"{self.source}: field {field_name!r}: template slot {{{exc.args[0]}}} is not a "
                f"document field (fields: {sorted(doc)})"
            ) from None

    # -- data ------------------------------------------------------------------
    @property
    def options(self) -> dict[str, Any]:
        return dict(self.config.options)

    def data_root(self, data_root: Path | None) -> Path | None:
        """The root this task reads from: its own (``dataset.root`` hook) or the run's."""
        hook = self.config.dataset.root
        if hook is None:
            return data_root
        return Path(self._hook("dataset.root", hook)(self.name, self.options))

    def resolve_files(
        self, data_root: Path | None, overrides: Mapping[str, str | Path] | None = None
    ) -> dict[str, Path | None]:
        """Find every data file role; a role named in ``overrides`` uses that path."""
        spec = self.config.dataset
        data_root = self.data_root(data_root)
        overrides = dict(overrides or {})
        unknown = sorted(set(overrides) - set(spec.files))
        if unknown:
            raise HarnessError(
                f"--data-file: task {self.name} has no data file role {unknown[0]!r}; "
                f"its roles are {sorted(spec.files)}"
            )
        files: dict[str, Path | None] = {}
        for role, names in spec.files.items():
            if role in overrides:
                path = Path(overrides[role]).expanduser()
                if not path.is_absolute() and not path.exists() and data_root is not None:
                    path = data_root / path
                if not path.is_file():
                    raise DataFileError(f"--data-file {role}={overrides[role]}: no such file")
                files[role] = path
                continue
            found = find_data_file(role, names, data_root, self.name)
            if found is None and role not in spec.optional:
                shown = names if isinstance(names, str) else " or ".join(names)
                looked = (
                    f"under {data_root} (and up to 3 folders down)"
                    if data_root
                    else "(no --data-root given)"
                )
                raise DataFileError(
                    f"task {self.name}: data file {role!r} ({shown}) not found {looked}. "
                    f"Pass --data-root DIR or --data-file {role}=PATH."
                )
            files[role] = found
        return files

    def load_docs(
        self, data_root: Path | None, overrides: Mapping[str, str | Path] | None = None
    ) -> tuple[list[Doc], dict[str, Path | None]]:
        files = self.resolve_files(data_root, overrides)
        docs = list(self._loader(files, self.options))
        seen: set[str] = set()
        for doc in docs:
            doc_id = doc.get("doc_id")
            if not isinstance(doc_id, str):
                raise TaskConfigError(
                    f"{self.source}: loader returned a document without a text doc_id"
                )
            if doc_id in seen:
                raise DataFileError(
                    f"task {self.name}: duplicate document id {doc_id!r} in its data"
                )
            seen.add(doc_id)
        return docs, files

    def image_root(self, data_root: Path | None) -> Path | None:
        """The visuals folder: ``image_dir`` under the data root, or up to 3 folders down."""
        sub = self.config.dataset.image_dir
        data_root = self.data_root(data_root)
        if data_root is None or not sub:
            return data_root
        return find_data_dir(sub, data_root)

    # -- requests --------------------------------------------------------------
    def prompt(self, doc: Doc, family: str | None = None) -> str:
        variant = self.config.prompt_variants.get(family or "")
        if variant is not None:
            return self.render(variant, doc, f"prompt_variants.{family}")
        return str(self._text(doc, self.options))

    def visuals(self, doc: Doc, data_root: Path | None) -> tuple[Any, ...]:
        if self._visual is None:
            return ()
        value = self._visual(doc, self.options)
        items = value if isinstance(value, list | tuple) else [value]
        root = self.image_root(data_root)
        out: list[Any] = []
        for item in items:
            if isinstance(item, str) and root is not None and not Path(item).is_absolute():
                out.append(str(root / item))
            else:
                out.append(item)
        return tuple(out)

    def target(self, doc: Doc) -> Any:
        return None if self._target is None else self._target(doc, self.options)

    @property
    def multiple_choice(self) -> bool:
        return self.config.output_type == "multiple_choice"

    def choices(self, doc: Doc) -> list[str]:
        """The texts a multiple_choice task scores by likelihood for ``doc``."""
        value = self._choices(doc, self.options) if self._choices is not None else None
        if (
            not isinstance(value, list | tuple)
            or not value
            or not all(isinstance(c, str) and c for c in value)
        ):
            raise TaskConfigError(
                f"{self.source}: field 'doc_to_choice': expected a non-empty list of texts for "
                f"document {doc['doc_id']!r}, got {value!r}"
            )
        return list(value)

    def build_requests(
        self,
        docs: list[Doc],
        data_root: Path | None,
        family: str | None = None,
        gen_kwargs: Mapping[str, Any] | None = None,
    ) -> list[Request] | list[LoglikelihoodRequest]:
        """One generation request per document, or (multiple_choice) one likelihood request
        per document and choice, the choices of a document next to each other."""
        if self.multiple_choice:
            return [
                LoglikelihoodRequest(
                    task=self.name,
                    doc_id=doc["doc_id"],
                    prompt=self.prompt(doc, family),
                    continuation=self.config.target_delimiter + choice,
                    visuals=self.visuals(doc, data_root),
                )
                for doc in docs
                for choice in self.choices(doc)
            ]
        kwargs = {**self.config.generation_kwargs, **(gen_kwargs or {})}
        return [
            Request(
                task=self.name,
                doc_id=doc["doc_id"],
                prompt=self.prompt(doc, family),
                visuals=self.visuals(doc, data_root),
                gen_kwargs=kwargs,
            )
            for doc in docs
        ]

    # -- fingerprints ----------------------------------------------------------
    @cached_property
    def config_hash(self) -> str:
        """Hash of everything in the config that shapes requests (not scoring)."""
        c = self.config
        payload = {
            "task": c.task,
            "version": c.version,
            "dataset": c.dataset.model_dump(mode="json"),
            "doc_to_visual": str(c.doc_to_visual),
            "doc_to_text": str(c.doc_to_text),
            "prompt_variants": c.prompt_variants,
            "options": c.options,
        }
        if c.output_type != "generate_until":  # left out otherwise: older hashes hold
            payload.update(
                output_type=c.output_type,
                doc_to_choice=str(c.doc_to_choice),
                target_delimiter=c.target_delimiter,
            )
        text = json.dumps(payload, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def task_hash(self, files: Mapping[str, Path | None]) -> str:
        """Config hash plus the content hashes of the data files actually used."""
        data = {role: (file_sha256(p) if p else None) for role, p in sorted(files.items())}
        text = json.dumps({"config": self.config_hash, "data": data}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    # -- scoring ---------------------------------------------------------------
    def doc_id_for(self, record: Mapping[str, Any]) -> str | None:
        """Doc id that a prediction record answers (task hook, else its question_id)."""
        if self._match is not None:
            return self._match(record)
        for key in ("doc_id", "question_id", "questionId", "index"):
            if key in record and record[key] is not None:
                return str(record[key])
        return None

    def extract(self, raw: str, doc: Doc) -> Extracted:
        result = self._extract(raw, doc, self.options)
        return result if isinstance(result, Extracted) else Extracted(result, True)

    def aggregate(self, columns: Mapping[str, np.ndarray]) -> dict[str, float]:
        return self._aggregate(columns)

    def score(
        self,
        docs: list[Doc],
        outputs: Mapping[str, str | None],
        ctx: ScoreContext | None = None,
        n_boot: int = DEFAULT_BOOTSTRAP,
        progress: Any = None,
    ) -> TaskScore:
        """Extract, score per sample, aggregate, and bootstrap the metrics."""
        if not docs:
            raise DataFileError(f"task {self.name}: no documents to score")
        ctx = ctx or ScoreContext(options=self.options)
        if self.config.judge and self.config.judge.required and ctx.judge is None:
            raise HarnessError(
                f"task {self.name} is scored by an LLM judge ({self.config.judge.model}): pass "
                "--judge-model/--judge-base-url (or set HARNESS_JUDGE_MODEL, OPENAI_BASE_URL, "
                "OPENAI_API_KEY)"
            )
        samples = []
        rule = self.config.missing
        for doc in docs:
            raw = outputs.get(doc["doc_id"])
            if is_answer(raw):
                extracted = self.extract(raw, doc)
                fields = dict(self._process(doc, extracted, ctx))
                sample = SampleResult(
                    doc["doc_id"], raw, extracted.answer, bool(extracted.parsed), fields
                )
            else:  # never an answer: not extracted; scored by the task's missing rule
                fields = dict(self._process(doc, NO_ANSWER, ctx)) if rule == "wrong" else {}
                text = raw if isinstance(raw, str) else None
                sample = SampleResult(doc["doc_id"], text, None, False, fields, answered=False)
            samples.append(sample)
            if progress is not None:
                progress()
        scored = [s for s in samples if s.answered or rule == "wrong"]
        unit = self.config.bootstrap_unit
        if scored:
            cols = columns_of(scored)
            if unit not in cols:
                raise TaskConfigError(
                    f"{self.source}: field 'bootstrap_unit': {unit!r} is not a per-sample field"
                )
            metrics = {k: float(v) for k, v in self.aggregate(with_units(cols, unit)).items()}
            ci = bootstrap_ci(cols, self.aggregate, unit, n_boot=n_boot)
        else:  # nothing answered and nothing to count as wrong
            cols = {}
            metrics = {m.name: float("nan") for m in self.config.metrics}
            ci = {}
        extra: dict[str, Any] = {}
        if "judge_failed" in cols:
            extra["judge_failures"] = int(np.nansum(cols["judge_failed"]))
        if "judge_needed" in cols:
            extra["judge_needed"] = int(np.nansum(cols["judge_needed"]))
        return TaskScore(
            task=self.name,
            metrics=metrics,
            ci=ci,
            n=len(samples),
            n_missing=sum(s.missing for s in samples),
            n_parse_failures=sum(s.answered and not s.parsed for s in samples),
            samples=samples,
            primary=self.config.primary_metric.name,
            extra=extra,
            missing_rule=rule,
        )


def get_task(name: str) -> Task:
    """Build a registered task by name."""
    from harness.registry import default_registry

    registry = default_registry()
    if name not in registry.tasks:
        registry.expand(name)  # raises the helpful unknown-name error
        raise HarnessError(
            f"{name!r} is a group or tag; name one of its tasks: {registry.expand(name)}"
        )
    return Task(registry.tasks[name], registry.task_files[name])

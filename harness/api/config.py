"""Schema of task and group YAML files (validated with pydantic).

A task file says where its data lives (official file names relative to a data
root), how a document becomes visuals + prompt + target, how the model's raw
output is read, and how per-sample results aggregate into metrics.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from harness.api.requests import check_gen_kwargs
from harness.hooks import Hook


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True, frozen=True)


class DatasetSpec(_Strict):
    """Data files by role. Each value is an official file name (or a list of
    accepted names, first found wins) looked up under the data root."""

    loader: Hook
    files: dict[str, str | list[str]]
    optional: list[str] = Field(default_factory=list, description="roles that may be absent")
    image_dir: str | None = Field(
        default=None, description="folder of visuals, relative to the data root"
    )
    root: Hook | None = Field(
        default=None,
        description="hook fn(task_name, options) -> Path giving this task's own data root "
        "(built-in data such as the synthetic world); --data-root is then ignored",
    )

    @field_validator("optional")
    @classmethod
    def _optional_known(cls, value: list[str], info: Any) -> list[str]:
        files = info.data.get("files", {})
        unknown = [v for v in value if v not in files]
        if unknown:
            raise ValueError(f"optional roles {unknown} are not keys of 'files'")
        return value


class MetricSpec(_Strict):
    name: str
    higher_is_better: bool = True
    primary: bool = False
    description: str = ""


class JudgeSpec(_Strict):
    """An LLM judge used by the scorer (VCG, Quilt review, MMBench fallback)."""

    model: str = Field(description="the official judge model, recorded with every score")
    temperature: float = 0.0
    max_tokens: int = 256
    required: bool = Field(
        default=True, description="False when the judge is only a fallback (MMBench)"
    )


class ExportSpec(_Strict):
    format: str = Field(description="the eval server's format (shown by `harness tasks`)")
    writer: Hook = Field(description="hook that writes the file (tasks/<bench>/export.py)")
    options: dict[str, Any] = Field(default_factory=dict)


class TaskConfig(_Strict):
    task: str
    version: str
    description: str = ""
    tag: list[str] = Field(default_factory=list)
    dataset: DatasetSpec
    doc_to_visual: Hook | str | None = Field(
        default=None, description="hook, or the name of a doc field holding relative paths"
    )
    doc_to_text: Hook | str = Field(description="hook, or a template with {doc_field} slots")
    prompt_variants: dict[str, str] = Field(
        default_factory=dict, description="model family -> template replacing doc_to_text"
    )
    doc_to_target: Hook | str | None = None
    output_type: Literal["generate_until", "multiple_choice"] = Field(
        default="generate_until",
        description="generate_until: the model generates text and the extractor reads the "
        "answer (the official protocol of every benchmark here); multiple_choice: each of "
        "doc_to_choice's continuations is scored by likelihood after the prompt and the "
        "likeliest is the raw output (lm-evaluation-harness's protocol; a different number "
        "from the official one, so such tasks have their own names)",
    )
    doc_to_choice: Hook | str | None = Field(
        default=None,
        description="multiple_choice: hook, or a document field, giving the choices' texts",
    )
    target_delimiter: str = Field(
        default=" ", description="multiple_choice: text between the prompt and each choice"
    )
    generation_kwargs: dict[str, Any] = Field(default_factory=dict)
    missing: Literal["skip", "wrong"] = Field(
        default="wrong",
        description="how a document without an answer (no prediction, null or blank text, a "
        "failed sample) is scored, as the official script scores it: 'skip' leaves it out of "
        "every metric (the script scores the answered questions), 'wrong' counts it as an "
        "incorrect answer. It is never passed to the extractor, and it is always counted in "
        "n_missing.",
    )
    extractor: Hook
    process_results: Hook
    aggregate: Hook
    metrics: list[MetricSpec]
    bootstrap_unit: str = Field(
        default="doc_id", description="per-sample field whose values are resampled together"
    )
    match_prediction: Hook | None = Field(
        default=None, description="maps a prediction record to a doc id (default: question_id)"
    )
    options: dict[str, Any] = Field(default_factory=dict)
    judge: JudgeSpec | None = None
    export: ExportSpec | None = None

    @field_validator("version", mode="before")
    @classmethod
    def _version_text(cls, value: Any) -> str:
        return str(value)

    @field_validator("tag", mode="before")
    @classmethod
    def _tag_list(cls, value: Any) -> list[str]:
        return [value] if isinstance(value, str) else value

    @field_validator("generation_kwargs")
    @classmethod
    def _known_generation_keys(cls, value: dict[str, Any]) -> dict[str, Any]:
        return check_gen_kwargs(value, "generation_kwargs")

    @model_validator(mode="after")
    def _choices_for_multiple_choice(self) -> TaskConfig:
        if self.output_type == "multiple_choice" and self.doc_to_choice is None:
            raise ValueError("output_type multiple_choice needs doc_to_choice")
        return self

    @field_validator("metrics")
    @classmethod
    def _one_primary(cls, value: list[MetricSpec]) -> list[MetricSpec]:
        if not value:
            raise ValueError("at least one metric is required")
        primaries = [m.name for m in value if m.primary]
        if len(primaries) > 1:
            raise ValueError(f"only one metric may be primary, got {primaries}")
        return value

    @property
    def primary_metric(self) -> MetricSpec:
        return next((m for m in self.metrics if m.primary), self.metrics[0])


class GroupMetricSpec(_Strict):
    metric: str
    aggregation: str = Field(default="mean", pattern="^(mean|sum)$")
    primary: bool = False


class GroupConfig(_Strict):
    group: str
    task: list[str]
    description: str = ""
    aggregate_metrics: list[GroupMetricSpec] = Field(default_factory=list)

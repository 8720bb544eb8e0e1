"""What flows from tasks to model adapters and back: requests, outputs, generation settings.

One :class:`Request` per document goes to the adapter's ``generate``; the
adapter answers each with its raw output text, or with a :class:`Failure`
when it could not answer (an unreadable image or video). A failure is never
an answer: the evaluation loop stores it as a failure, scores the document as
missing and retries it on the next run. Tasks scored by likelihood
(``output_type: multiple_choice``) send one :class:`LoglikelihoodRequest` per
document and choice to ``loglikelihood`` instead, answered with a
:class:`Loglikelihood` (or a Failure). This module imports nothing from the
rest of the package, so every stage can import it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

VIDEO_SUFFIXES = frozenset(
    {".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v", ".mpg", ".mpeg", ".gif"}
)


def is_video(item: object) -> bool:
    """A visual that is a video file (by its suffix)."""
    return isinstance(item, str | Path) and Path(item).suffix.lower() in VIDEO_SUFFIXES


@dataclass(frozen=True)
class Request:
    """Visuals + user text for one document; the adapter applies its own chat template."""

    task: str
    doc_id: str
    prompt: str
    visuals: tuple[Any, ...] = ()
    gen_kwargs: dict[str, Any] = field(default_factory=dict)

    def visual_keys(self) -> list[str]:
        """Stable text keys of the visuals (paths, or digests of in-memory images)."""
        keys = []
        for item in self.visuals:
            if isinstance(item, bytes | bytearray):
                keys.append("sha256:" + hashlib.sha256(item).hexdigest())
            else:
                keys.append(str(item))
        return keys

    @property
    def has_video(self) -> bool:
        return any(is_video(v) for v in self.visuals)


@dataclass(frozen=True)
class Failure:
    """An adapter's answer for a request it could not run (e.g. its image is unreadable)."""

    error: str


Output = str | Failure


@dataclass(frozen=True)
class LoglikelihoodRequest:
    """A document's prompt and visuals with one candidate continuation (one choice)."""

    task: str
    doc_id: str
    prompt: str
    continuation: str
    visuals: tuple[Any, ...] = ()

    @property
    def has_video(self) -> bool:
        return any(is_video(v) for v in self.visuals)


@dataclass(frozen=True)
class Loglikelihood:
    """The continuation's summed token log-probability after the prompt, and whether every
    continuation token is the model's greedy choice (lm-evaluation-harness's pair)."""

    logprob: float
    is_greedy: bool


LoglikelihoodOutput = Loglikelihood | Failure


def is_answer(output: object) -> bool:
    """True for model text that can be scored: not missing, not a failure, not blank."""
    return isinstance(output, str) and bool(output.strip())


def gen_kwargs_hash(gen_kwargs: dict[str, Any]) -> str:
    text = json.dumps(gen_kwargs, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# -- generation settings -------------------------------------------------------------------
def _int_at_least(low: int) -> Any:
    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"expected a whole number >= {low}")
        return value

    return check


def _float_in(low: float, high: float, low_open: bool = False) -> Any:
    def check(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError("expected a number")
        value = float(value)
        if value > high or value < low or (low_open and value == low):
            bracket = "(" if low_open else "["
            raise ValueError(f"expected a number in {bracket}{low:g}, {high:g}]")
        return value

    return check


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError("expected true or false")
    return value


def _stop(value: Any) -> list[str]:
    """Stop strings: one text or a list of non-empty texts."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list | tuple) or not all(isinstance(s, str) and s for s in items):
        raise ValueError("expected a text or a list of non-empty texts")
    return list(items)


# Every generation setting an adapter understands, with its check. A key outside this
# table would be silently ignored by the adapters, so it is refused instead.
GENERATION_KEYS: dict[str, Any] = {
    "max_new_tokens": _int_at_least(1),
    "min_new_tokens": _int_at_least(0),
    "temperature": _float_in(0.0, 100.0),
    "top_p": _float_in(0.0, 1.0, low_open=True),
    "num_beams": _int_at_least(1),
    "do_sample": _bool,
    # the seed of torch's generator before each sampled batch (sampling is reproducible for
    # the same batches; greedy decoding ignores it)
    "seed": _int_at_least(0),
    # the output is cut before the first of these texts (and generation stops there), as
    # the LLaVA code bases' KeywordsStoppingCriteria + endswith(stop_str) do
    "stop": _stop,
}


def check_gen_kwargs(gen_kwargs: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Validated generation settings; ``ValueError`` naming ``where`` and the key otherwise."""
    out: dict[str, Any] = {}
    for key, value in gen_kwargs.items():
        check = GENERATION_KEYS.get(key)
        if check is None:
            raise ValueError(
                f"{where}: unknown generation setting {key!r}; known: {', '.join(GENERATION_KEYS)}"
            )
        try:
            out[key] = check(value)
        except ValueError as exc:
            raise ValueError(f"{where}: {key}={value!r}: {exc}") from None
    return out

"""The model protocol the evaluation loop talks to.

An adapter turns :class:`~harness.api.requests.Request` objects (visuals + user
text + generation settings) into raw output strings, applying its family's
chat template and image preprocessing, and can score continuations by
likelihood (:meth:`VisionLanguageModel.loglikelihood`). Its fingerprint
identifies the exact weights and every setting that can change an output, so
cached samples are never reused across models. The evaluation loop calls only
the methods here; the defaults serve models that have nothing more to say
(test doubles, remote models).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

from harness.api.profile import EvalProfile
from harness.api.requests import LoglikelihoodOutput, LoglikelihoodRequest, Output, Request
from harness.errors import HarnessError


class VisionLanguageModel(ABC):
    """Base class of every model adapter (``name`` and ``family`` are set by the subclass)."""

    name: str
    family: str  # the key of a task's prompt_variants (the profile's prompt_family wins)
    # how the model's authors evaluated it (template, preprocessing, generation ...); the
    # evaluation loop takes per-task generation settings from it
    profile: EvalProfile | None = None

    @abstractmethod
    def fingerprint(self) -> str:
        """A hash of the weights and every setting that can change an output."""

    @abstractmethod
    def generate(self, requests: Sequence[Request]) -> list[Output]:
        """One output per request, in order: the raw text, or a Failure (e.g. an unreadable
        image), which is stored as such, scored as no answer and retried by the next run."""

    def loglikelihood(self, requests: Sequence[LoglikelihoodRequest]) -> list[LoglikelihoodOutput]:
        """``(logprob, is_greedy)`` of each request's continuation after its prompt, in order
        (or a Failure); outputs do not depend on how requests are batched."""
        raise HarnessError(
            f"model {self.name} cannot score continuations by likelihood "
            "(tasks with output_type: multiple_choice need it)"
        )

    def settings(self) -> dict[str, Any]:
        """Everything besides the weights that can change an output (recorded with a run)."""
        return {}

    def sort_key(self, request: Request | LoglikelihoodRequest) -> Any:
        """The order in which the loop batches requests (stable: ties keep document order)."""
        return 0

    def rendered_prompt(self, request: Request | LoglikelihoodRequest) -> str:
        """The prompt exactly as the model's tokenizer gets it (chat template applied)."""
        return request.prompt

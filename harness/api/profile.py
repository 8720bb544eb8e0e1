"""The eval profile: how a model's authors evaluated it, aspect by aspect, with sources.

Every registry entry carries one :class:`EvalProfile`. Each :class:`Aspect`
(chat template, image preprocessing, video frames, generation, answer
post-processing, judge) holds its settings, the official file and function
they were read from, and whether the harness matches it (``matched``),
knowingly does something else (``differs``, with the reason) or could not
read the official code (``unverified``). The profile is part of the model's
fingerprint (an output made under another profile is never reused), is shown
by ``harness models`` and ``harness prompts``, and renders the fidelity table
in ``docs/fidelity.md``.

Generation settings are layered: the task's ``generation_kwargs`` (the
benchmark's protocol), then the profile's (what the authors' scripts passed
for that benchmark), then ``--gen`` (the user's): a run with
``--gen temperature=0`` on a profile that samples is a different protocol,
with its own cached outputs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

STATUSES = ("matched", "differs", "unverified")
ASPECTS = ("template", "image", "video", "generation", "postprocess", "judge")


@dataclass(frozen=True)
class Aspect:
    """One aspect of an eval profile: its settings and the official code they come from."""

    settings: Mapping[str, Any]
    source: str  # "owner/repo path/file.py:function" (several joined by "; ")
    status: str = "matched"
    note: str = ""

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"aspect status {self.status!r}: expected one of {STATUSES}")
        if self.status != "matched" and not self.note:
            raise ValueError(f"aspect with status {self.status!r} needs a note saying why")

    def as_dict(self) -> dict[str, Any]:
        out = {"settings": dict(self.settings), "source": self.source, "status": self.status}
        if self.note:
            out["note"] = self.note
        return out


@dataclass(frozen=True)
class EvalProfile:
    """How one model family evaluates (see the module docstring)."""

    name: str
    template: Aspect
    image: Aspect
    generation: Aspect  # settings for every task (usually empty: the task's own apply)
    postprocess: Aspect
    video: Aspect | None = None
    # task name or tag -> generation settings the authors used on that benchmark
    task_generation: Mapping[str, Aspect] = field(default_factory=dict)
    # task name or tag -> judge settings the authors used (model, temperature, max_tokens)
    judge: Mapping[str, Aspect] = field(default_factory=dict)
    # task name, tag or name prefix -> image preprocessing that differs on that benchmark
    task_image: Mapping[str, Aspect] = field(default_factory=dict)
    # task name, tag or name prefix -> the template the authors used on that benchmark
    task_template: Mapping[str, Aspect] = field(default_factory=dict)
    # key of the tasks' prompt_variants (the family whose question wording a task changes)
    prompt_family: str = "llava"

    def generation_for(self, task: str, tags: Iterable[str] = ()) -> dict[str, Any]:
        """The profile's generation settings for a task: profile-wide, then those of the
        matching keys (name prefixes, tags, the task's name; later ones win)."""
        out = dict(self.generation.settings)
        for aspect in _matching(self.task_generation, task, tags):
            out.update(aspect.settings)
        return out

    def judge_for(self, task: str, tags: Iterable[str] = ()) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for aspect in _matching(self.judge, task, tags):
            out.update(aspect.settings)
        return out

    def template_for(self, task: str, tags: Iterable[str] = ()) -> dict[str, Any]:
        """Template settings for a task's requests (``template``, ``image_token`` ...)."""
        out = dict(self.template.settings)
        for aspect in _matching(self.task_template, task, tags):
            out.update(aspect.settings)
        return out

    def image_for(self, task: str, tags: Iterable[str] = ()) -> dict[str, Any]:
        """Image preprocessing for a task's requests (the profile's, unless the task has its
        own: e.g. LLaVA-1.5's ScienceQA script did not pad)."""
        out = dict(self.image.settings)
        for aspect in _matching(self.task_image, task, tags):
            out.update(aspect.settings)
        return out

    def aspects(self) -> dict[str, Aspect]:
        """Every aspect by its dotted name (``generation.vcg``, ``judge.vcg``, ...)."""
        out: dict[str, Aspect] = {"template": self.template}
        for key, aspect in self.task_template.items():
            out[f"template.{key}"] = aspect
        out["image"] = self.image
        if self.video is not None:
            out["video"] = self.video
        out["generation"] = self.generation
        for key, aspect in self.task_generation.items():
            out[f"generation.{key}"] = aspect
        for key, aspect in self.task_image.items():
            out[f"image.{key}"] = aspect
        out["postprocess"] = self.postprocess
        for key, aspect in self.judge.items():
            out[f"judge.{key}"] = aspect
        return out

    def settings(self) -> dict[str, Any]:
        """The settings alone (no sources or notes): what the model fingerprint hashes."""
        return {
            "name": self.name,
            "prompt_family": self.prompt_family,
            **{k: dict(a.settings) for k, a in self.aspects().items()},
        }

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form with sources and statuses (``harness models --json``)."""
        return {
            "name": self.name,
            "prompt_family": self.prompt_family,
            **{k: a.as_dict() for k, a in self.aspects().items()},
        }


def _matching(table: Mapping[str, Aspect], task: str, tags: Iterable[str]) -> list[Aspect]:
    """Aspects whose key is a prefix of the task name (``scienceqa`` for ``scienceqa_img``),
    one of its tags, or its name, in that order (more specific last)."""
    tags = list(tags)
    prefixes = [
        k for k in table if (task.startswith(k + "_") or task.startswith(k + "-")) and k not in tags
    ]
    keys = [*sorted(prefixes, key=len), *[t for t in tags if t in table]]
    if task in table:
        keys.append(task)
    return [table[k] for k in dict.fromkeys(keys)]

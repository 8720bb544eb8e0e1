"""Quantization recipes: parse names like ``awq-w4g128-sym-vision`` into a hashable config.

Grammar (tokens separated by ``-``, order of the options free)::

    METHOD-wBITSgGROUP[-sym][-vision][-proj][-lmhead][-text|-image_text]
                      [-nSAMPLES][-sSEQLEN][-itersITERS][-duo][-noclip]

* METHOD: ``rtn``, ``awq``, ``gptq``, ``autoround`` (alias ``signround``).
* ``sym``: symmetric quantizer (zero point fixed at 2^(bits-1)); default asymmetric.
* ``vision`` / ``proj`` / ``lmhead``: also quantize the vision tower / the projector /
  lm_head (default: only the language model's decoder Linear layers).
* ``text`` (default) / ``image_text``: calibration source. ``image_text`` reads
  prompts with their images: the documents of ``calib_tasks`` (``--calib-tasks``;
  not part of the name, but of the hash), or a toy model's training world.
* ``nN`` / ``sS``: calibration samples and sequence length (method defaults otherwise).
* ``itersI``: SignRound iterations (default 200).
* ``duo``: AWQ "duo scaling"; ``noclip``: skip AWQ's clip search.

``QuantRecipe.name`` renders the canonical name (defaults left out), so
``parse_recipe(r.name) == r`` (``calib_tasks`` aside); ``QuantRecipe.hash()`` is the sha256 of the canonical
JSON of every field, so any option change gives a different hash.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from harness.errors import QuantizationError

METHODS = ("rtn", "awq", "gptq", "autoround")
ALIASES = {"signround": "autoround"}
CALIB_SOURCES = ("text", "image_text")

# Calibration defaults per method (samples, seqlen): AWQ's 128 x 512; GPTQ and
# AutoRound use 128 x 2048.
CALIB_DEFAULTS = {"rtn": (0, 0), "awq": (128, 512), "gptq": (128, 2048), "autoround": (128, 2048)}
FLAGS = {
    "sym": ("symmetric", True),
    "asym": ("symmetric", False),
    "vision": ("quantize_vision", True),
    "proj": ("quantize_projector", True),
    "lmhead": ("quantize_lm_head", True),
    "text": ("calib_source", "text"),
    "image_text": ("calib_source", "image_text"),
    "duo": ("duo_scaling", True),
    "noclip": ("clip_search", False),
}
NUMERIC = {"n": "calib_samples", "s": "calib_seqlen", "iters": "iters"}


class RecipeError(QuantizationError):
    """A recipe name or option that cannot be understood; the message names the bad part."""


@dataclass(frozen=True)
class QuantRecipe:
    method: str
    bits: int = 4
    group_size: int = 128
    symmetric: bool = False
    quantize_vision: bool = False
    quantize_projector: bool = False
    quantize_lm_head: bool = False
    calib_source: str = "text"
    calib_samples: int = -1  # -1: the method's default (resolved in __post_init__)
    calib_seqlen: int = -1
    # image_text: the tasks whose documents calibrate (empty: the model's own default source)
    calib_tasks: tuple[str, ...] = ()
    # AWQ
    n_grid: int = 20
    duo_scaling: bool = False
    clip_search: bool = True
    clip_tokens: int = 512
    # GPTQ
    damp: float = 0.01
    block_size: int = 128
    # SignRound / AutoRound
    iters: int = 200
    lr: float | None = None  # None: 1 / iters
    batch_size: int = 8
    seed: int = 0

    def __post_init__(self) -> None:
        method = ALIASES.get(self.method, self.method)
        if method not in METHODS:
            raise RecipeError(f"unknown method {self.method!r} (known: {', '.join(METHODS)})")
        object.__setattr__(self, "method", method)
        if not 2 <= self.bits <= 8:
            raise RecipeError(f"bits {self.bits} out of range 2..8")
        if self.group_size < 1:
            raise RecipeError(f"group size {self.group_size} must be positive")
        if self.calib_source not in CALIB_SOURCES:
            raise RecipeError(
                f"calibration source {self.calib_source!r} (known: {', '.join(CALIB_SOURCES)})"
            )
        object.__setattr__(self, "calib_tasks", tuple(self.calib_tasks))
        if self.calib_tasks and self.calib_source != "image_text":
            raise RecipeError("calib_tasks (calibration documents) need the image_text source")
        n_default, s_default = CALIB_DEFAULTS[method]
        if self.calib_samples == -1:
            object.__setattr__(self, "calib_samples", n_default)
        if self.calib_seqlen == -1:
            object.__setattr__(self, "calib_seqlen", s_default)
        for name in ("calib_samples", "calib_seqlen"):
            if getattr(self, name) < 0:
                raise RecipeError(f"{name} {getattr(self, name)} must be >= 0")
        for name in ("iters", "n_grid", "block_size", "batch_size", "clip_tokens"):
            if getattr(self, name) < 1:
                raise RecipeError(f"{name} {getattr(self, name)} must be >= 1")
        if not 0 <= self.damp < 1:
            raise RecipeError(f"damp {self.damp} must be in [0, 1)")

    @property
    def needs_calibration(self) -> bool:
        return self.method != "rtn"

    @property
    def name(self) -> str:
        parts = [self.method, f"w{self.bits}g{self.group_size}"]
        if self.symmetric:
            parts.append("sym")
        if self.quantize_vision:
            parts.append("vision")
        if self.quantize_projector:
            parts.append("proj")
        if self.quantize_lm_head:
            parts.append("lmhead")
        if self.calib_source != "text":
            parts.append(self.calib_source)
        n_default, s_default = CALIB_DEFAULTS[self.method]
        if self.calib_samples != n_default:
            parts.append(f"n{self.calib_samples}")
        if self.calib_seqlen != s_default:
            parts.append(f"s{self.calib_seqlen}")
        if self.iters != 200:
            parts.append(f"iters{self.iters}")
        if self.duo_scaling:
            parts.append("duo")
        if not self.clip_search:
            parts.append("noclip")
        return "-".join(parts)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        # Left out when empty, so hashes of recipes written before the field existed hold.
        if not data["calib_tasks"]:
            del data["calib_tasks"]
        else:
            data["calib_tasks"] = list(data["calib_tasks"])
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> QuantRecipe:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise RecipeError(f"unknown recipe fields: {', '.join(unknown)}")
        data = dict(data)
        if "calib_tasks" in data:
            data["calib_tasks"] = tuple(data["calib_tasks"])
        return cls(**data)

    def canonical_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    def hash(self) -> str:
        """sha256 hex of the canonical JSON of every field (stable across runs)."""
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()

    def short_hash(self) -> str:
        return self.hash()[:12]

    def with_options(self, **changes: Any) -> QuantRecipe:
        known = {f.name for f in fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise RecipeError(f"unknown recipe options: {', '.join(unknown)}")
        return replace(self, **changes)


_WG = re.compile(r"^w(\d+)g(\d+)$")
_NUM = re.compile(r"^(iters|n|s)(\d+)$")


def parse_recipe(name: str | QuantRecipe, **overrides: Any) -> QuantRecipe:
    """``"awq-w4g128"`` (+ keyword overrides of any field) -> ``QuantRecipe``."""
    if isinstance(name, QuantRecipe):
        return name.with_options(**overrides) if overrides else name
    if not isinstance(name, str) or not name.strip():
        raise RecipeError(f"recipe name must be a non-empty string, got {name!r}")
    text = name.strip().lower()
    tokens = text.split("-")
    if len(tokens) < 2:
        raise RecipeError(f"recipe {name!r}: expected METHOD-wBITSgGROUP such as 'awq-w4g128'")
    method = ALIASES.get(tokens[0], tokens[0])
    if method not in METHODS:
        raise RecipeError(
            f"recipe {name!r}: unknown method {tokens[0]!r} (known: {', '.join(METHODS)})"
        )
    match = _WG.match(tokens[1])
    if not match:
        raise RecipeError(
            f"recipe {name!r}: bad bits/group part {tokens[1]!r} (expected e.g. 'w4g128')"
        )
    values: dict[str, Any] = {
        "method": method,
        "bits": int(match.group(1)),
        "group_size": int(match.group(2)),
    }
    if not 2 <= values["bits"] <= 8:
        raise RecipeError(f"recipe {name!r}: bits in {tokens[1]!r} must be 2..8")
    if values["group_size"] < 1:
        raise RecipeError(f"recipe {name!r}: group size in {tokens[1]!r} must be positive")
    seen: set[str] = set()
    for token in tokens[2:]:
        if token in FLAGS:
            field_name, value = FLAGS[token]
        elif num := _NUM.match(token):
            field_name, value = NUMERIC[num.group(1)], int(num.group(2))
        else:
            raise RecipeError(
                f"recipe {name!r}: unknown option {token!r} (known: "
                f"{', '.join(FLAGS)}, n<samples>, s<seqlen>, iters<N>)"
            )
        if field_name in seen:
            raise RecipeError(f"recipe {name!r}: option {token!r} conflicts with an earlier one")
        seen.add(field_name)
        values[field_name] = value
    try:
        recipe = QuantRecipe(**values)
    except RecipeError as exc:
        raise RecipeError(f"recipe {name!r}: {exc}") from None
    return recipe.with_options(**overrides) if overrides else recipe

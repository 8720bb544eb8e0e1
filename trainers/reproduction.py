"""Does a re-created model equal the shipped one, and if not, what differed?

``harness train toy-llava`` reads the shipped folder before it trains (the run may write
over it) and compares afterwards: the weights file byte for byte, then, when they differ,
the conditions both ``training.json`` files record (seed, recipe, torch / transformers
versions, CPU). Bit-for-bit equality needs all of them equal (docs/research/bit-for-bit.md).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.datafiles import file_sha256
from harness.trainers.stage_checkpoints import WEIGHTS as WEIGHTS_FILE


def recorded_conditions(training: dict[str, Any]) -> dict[str, Any]:
    """The fields of a ``training.json`` that decide the trained floats, flattened to
    ``group.field`` keys (a field the file does not record is absent)."""
    stats = training.get("stats", {})
    flat: dict[str, Any] = {"seed": stats.get("seed")}
    for group, values in (
        ("recipe", training.get("hyperparameters", {})),
        ("versions", stats.get("versions", {})),
        ("machine", stats.get("machine", {})),
    ):
        for key, value in values.items():
            flat[f"{group}.{key}"] = None if value == "" else value  # "" = none set
    return flat


@dataclass(frozen=True)
class ShippedModel:
    """What the shipped folder held before training: its weights' hash and training.json."""

    path: Path
    sha256: str
    training: dict[str, Any]

    @classmethod
    def read(cls, folder: Path) -> ShippedModel | None:
        weights, record = folder / WEIGHTS_FILE, folder / "training.json"
        if not weights.is_file() or not record.is_file():
            return None
        return cls(folder, file_sha256(weights), json.loads(record.read_text()))

    def compare(self, out_dir: Path) -> dict[str, Any]:
        """``{"identical": bool, "reference": path, "differences": {key: [shipped, run]}}``;
        a condition one side does not record shows as ``None`` on that side."""
        out_dir = Path(out_dir)
        identical = file_sha256(out_dir / WEIGHTS_FILE) == self.sha256
        report: dict[str, Any] = {"reference": str(self.path), "identical": identical}
        if not identical:
            mine = recorded_conditions(json.loads((out_dir / "training.json").read_text()))
            theirs = recorded_conditions(self.training)
            report["differences"] = {
                key: [theirs.get(key), mine.get(key)]
                for key in sorted(set(mine) | set(theirs))
                if theirs.get(key) != mine.get(key)
            }
        return report


def describe(report: dict[str, Any], name: str) -> str:
    """One line for the log."""
    if report["identical"]:
        return f"{WEIGHTS_FILE} is byte-identical to the shipped {name} ({report['reference']})"
    differences = report["differences"]
    if not differences:
        why = "with no difference in what training.json records (recipe, seed, versions, CPU)"
    else:
        why = "recorded differences: " + "; ".join(
            f"{key} {shipped!r} (shipped) vs {run!r} (this run)"
            for key, (shipped, run) in differences.items()
        )
    return (
        f"{WEIGHTS_FILE} differs from the shipped {name} ({report['reference']}), {why}. "
        "Bit for bit needs the same recipe, seed, torch and transformers and the same kind "
        "of CPU (docs/research/bit-for-bit.md)."
    )

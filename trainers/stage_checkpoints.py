"""Per-stage training checkpoints, so a crashed or interrupted ``harness train`` resumes.

After each stage the trainer writes the model's weights and the stage's stats to
``<out>/stages/<index>-<stage>/`` under a key that chains everything the stage's
result depends on (the recipe fields of this stage and every earlier one, the seed,
the vocabulary; :func:`chain_key`). A later run with the same out folder starts
after the last stage whose checkpoint carries the key it would compute itself, so it
writes the same weights bit for bit as an uninterrupted run; a checkpoint with
another key is ignored and overwritten. Each checkpoint is written to a temporary
folder and renamed into place, so a kill while writing leaves no half checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safetensors import SafetensorError
from safetensors.torch import load_model, save_model
from torch import nn

from harness.errors import HarnessError

STAGES_DIR = "stages"
WEIGHTS = "model.safetensors"
META = "stage.json"


def chain_key(previous: str, name: str, inputs: Any) -> str:
    """Key of stage ``name``: a hash of the previous stage's key and this stage's inputs."""
    text = json.dumps(inputs, sort_keys=True, default=str)
    return hashlib.sha256(f"{previous}\n{name}\n{text}".encode()).hexdigest()


@dataclass(frozen=True)
class StageCheckpoint:
    """A stage's saved result: where it lies, its key and the stage's stats."""

    path: Path
    key: str
    stats: dict[str, Any]

    def load_into(self, model: nn.Module) -> None:
        """Overwrite ``model``'s weights with the checkpoint's (strict: every tensor)."""
        path = self.path / WEIGHTS
        try:
            missing, unexpected = load_model(model, path, strict=False)
        except (OSError, RuntimeError, SafetensorError) as exc:  # truncated, wrong shapes
            raise HarnessError(
                f"{path}: not a readable stage checkpoint for this model ({exc}); "
                "delete it or rerun with --restart"
            ) from exc
        if missing or unexpected:
            raise HarnessError(
                f"{path}: does not match the model (missing {sorted(missing)[:5]}, "
                f"unexpected {sorted(unexpected)[:5]}); delete it or rerun with --restart"
            )


def stage_dir(out_dir: Path, index: int, name: str) -> Path:
    return Path(out_dir) / STAGES_DIR / f"{index}-{name}"


def find_checkpoint(out_dir: Path, index: int, name: str, key: str) -> StageCheckpoint | None:
    """The checkpoint of stage ``index`` if it exists, is complete and has ``key``."""
    path = stage_dir(out_dir, index, name)
    try:
        meta = json.loads((path / META).read_text())
    except (OSError, ValueError):
        return None
    if meta.get("key") != key or not (path / WEIGHTS).is_file():
        return None
    return StageCheckpoint(path, key, meta.get("stats", {}))


def save_checkpoint(
    out_dir: Path, index: int, name: str, key: str, model: nn.Module, stats: dict[str, Any]
) -> StageCheckpoint:
    """Write the checkpoint of stage ``index`` atomically (temporary folder, then rename)."""
    final = stage_dir(out_dir, index, name)
    tmp = final.with_name(f".{final.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_model(model, str(tmp / WEIGHTS))
    (tmp / META).write_text(json.dumps({"key": key, "stats": stats}, indent=1) + "\n")
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    return StageCheckpoint(final, key, stats)


def remove_checkpoints(out_dir: Path) -> None:
    shutil.rmtree(Path(out_dir) / STAGES_DIR, ignore_errors=True)

"""Find a model's weights on disk (or fetch them when allowed) and build its adapter.

Lookup order: ``--model-path``; a ``builtin:`` folder shipped in this package;
the registry source as a local folder; the Hugging Face cache. A download is
attempted only when ``HF_HUB_OFFLINE`` is unset; when nothing is found the
error lists every place looked in and the command that fetches the weights.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from harness.models.registry import BUILTIN, ModelEntry, adapter_loader, get_entry

WEIGHTS_DIR = Path(__file__).parent / "weights"


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def resolve_weights(entry: ModelEntry, model_path: str | Path | None = None) -> Path:
    """The local folder holding ``entry``'s weights; raises a HarnessError naming where it looked."""
    looked: list[str] = []
    if model_path is not None:
        path = Path(model_path).expanduser()
        if path.is_dir():
            return path
        raise HarnessError(f"--model-path {model_path}: no such folder")
    if entry.source.startswith(BUILTIN):
        path = WEIGHTS_DIR / entry.source[len(BUILTIN) :]
        if (path / "config.json").is_file():
            return path
        raise HarnessError(
            f"model {entry.name}: built-in weights missing at {path}; "
            "re-create them with `harness train toy-llava`"
        )
    local = Path(entry.source).expanduser()
    if local.is_dir():
        return local
    looked.append(f"local folder {local}")
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import LocalEntryNotFoundError
    except ImportError:  # pragma: no cover - huggingface_hub comes with transformers
        snapshot_download = None
    if snapshot_download is not None:
        try:
            return Path(snapshot_download(entry.source, local_files_only=True))
        except (LocalEntryNotFoundError, OSError, ValueError):
            looked.append(
                f"Hugging Face cache ({os.environ.get('HF_HOME', '~/.cache/huggingface')})"
            )
        if not _offline():
            try:
                return Path(snapshot_download(entry.source))
            except Exception as exc:  # network errors come in many types
                looked.append(f"download from the hub ({type(exc).__name__})")
        else:
            looked.append("no download: HF_HUB_OFFLINE is set")
    raise HarnessError(
        f"model {entry.name}: weights for {entry.source} not found; looked in "
        + "; ".join(looked)
        + f". Fetch them with `huggingface-cli download {entry.source}` "
        f"(or pass --model-path DIR)."
    )


def load_model(
    name: str,
    *,
    model_path: str | Path | None = None,
    adapter: str | None = None,
    device: str | None = None,
    dtype: str | None = None,
    options: Mapping[str, Any] | None = None,
) -> Any:
    """Build the adapter for a registry name (``--model``), optionally overriding its parts."""
    from transformers.utils import logging as hf_logging

    from harness.models.hf_adapter import resolve_device, resolve_dtype

    hf_logging.disable_progress_bar()  # the CLI prints its own progress

    entry = get_entry(name)
    if adapter is not None or options:
        entry = replace(
            entry,
            adapter=adapter or entry.adapter,
            options={**entry.options, **dict(options or {})},
        )
    path = resolve_weights(entry, model_path)
    where = resolve_device(device)
    from safetensors import SafetensorError

    load = adapter_loader(entry.adapter)
    try:
        adapter = load(entry, path, device=where, dtype=resolve_dtype(dtype, where))
    except HarnessError:
        raise
    except (OSError, ValueError, KeyError, RuntimeError, SafetensorError) as exc:
        # Truncated or corrupt weights, a folder of another architecture, bad configs.
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise HarnessError(
            f"model {entry.name}: cannot load {path} with the {entry.adapter} adapter "
            f"({type(exc).__name__}: {first[:300]}). Check the folder is a complete "
            f"checkpoint for this adapter (--adapter, --model-path)."
        ) from exc
    adapter.entry = entry  # quantizers read registry options (e.g. calibration texts)
    if getattr(adapter, "profile", None) is None:
        adapter.profile = entry.eval_profile  # per-task generation settings, fingerprint
    return adapter

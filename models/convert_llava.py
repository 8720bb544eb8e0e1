"""Original LLaVA repository checkpoints -> transformers ``LlavaForConditionalGeneration``, in memory.

liuhaotian/llava-v1.5-*, Quilt-LLaVA, Dynamic-LLaVA and VLM-RLAIF ship the
training repository's layout: ``config.json`` with ``model_type
"llava_llama"`` (Llama fields + ``mm_*`` fields), weights named
``model.embed_tokens``, ``model.layers.*``, ``model.norm``, ``lm_head``,
``model.mm_projector.{0,2}`` and, when the tower was tuned,
``model.vision_tower.vision_tower.*``; sharded ``*.bin`` or ``*.safetensors``.
The vision tower otherwise comes from its own CLIP folder (``mm_vision_tower``
or the registry option ``vision_tower``).

The conversion follows the llava-hf scripts: ``<image>`` and ``<pad>`` are
added to the tokenizer and the vocabulary is padded to a multiple of 64. The
new rows are set to the mean embedding, and the added ids are suppressed in
generation, so the model can never emit a token the original vocabulary did
not have (the original model's outputs are reproduced exactly). Nothing is
written to disk.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from harness.errors import HarnessError

log = logging.getLogger(__name__)

IMAGE_TOKEN = "<image>"
PAD_TOKEN = "<pad>"
VOCAB_MULTIPLE = 64
# Llama fields an original config.json may carry (everything else is LLaVA's or training state).
LLAMA_FIELDS = (
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "hidden_act",
    "max_position_embeddings",
    "rms_norm_eps",
    "attention_bias",
    "mlp_bias",
    "bos_token_id",
    "eos_token_id",
    "pad_token_id",
    "pretraining_tp",
)
VISION_PREFIX = "model.vision_tower."
# Tower parts that hidden-state features never pass through: absent weights there are harmless.
UNUSED_TOWER_PARTS = (VISION_PREFIX + "head.", VISION_PREFIX + "post_layernorm.")
WEIGHT_FILES = re.compile(r"^(pytorch_model|model)(-\d+-of-\d+)?\.(bin|safetensors)$")


@dataclass
class Converted:
    """What :func:`convert_original` builds: model, processor, tokenizer and provenance."""

    model: Any
    processor: Any
    image_token_id: int
    info: dict[str, Any] = field(default_factory=dict)
    folders: list[Path] = field(default_factory=list)


# -- reading checkpoints ------------------------------------------------------------------


def checkpoint_files(folder: Path) -> list[Path]:
    """The weight files of a (possibly sharded) checkpoint; safetensors preferred over .bin."""
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        index = folder / index_name
        if index.is_file():
            weight_map = json.loads(index.read_text())["weight_map"]
            return [folder / name for name in sorted(set(weight_map.values()))]
    for suffix in ("safetensors", "bin"):
        files = sorted(
            p
            for p in folder.iterdir()
            if p.is_file() and p.suffix == f".{suffix}" and WEIGHT_FILES.match(p.name)
        )
        if files:
            return files
    raise HarnessError(f"{folder}: no model weights (model*.safetensors or pytorch_model*.bin)")


def read_state_dict(folder: Path) -> dict[str, torch.Tensor]:
    """All tensors of a checkpoint folder, on CPU."""
    state: dict[str, torch.Tensor] = {}
    for path in checkpoint_files(folder):
        if not path.is_file():
            raise HarnessError(f"{path}: weight file named by the index is missing")
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state.update(load_file(path, device="cpu"))
        else:
            try:
                part = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError:  # legacy (non-zip) pickles cannot be memory-mapped
                part = torch.load(path, map_location="cpu", weights_only=True)
            state.update(part)
    return state


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def resolve_vision_tower(source: str | Path) -> Path:
    """A local folder for a vision tower given as a path or a hub id (cache first, then download).

    Only configs and weights are fetched (``*.json``, ``*.safetensors``, ``*.bin``),
    not the TF/Flax copies a CLIP repository also holds.
    """
    local = Path(source).expanduser()
    if local.is_dir():
        return local
    looked = [f"local folder {local}"]
    patterns = ["*.json", "*.safetensors", "*.bin", "*.txt"]
    try:
        from huggingface_hub import snapshot_download
    except ImportError as exc:  # pragma: no cover - comes with transformers
        raise HarnessError(f"vision tower {source}: huggingface_hub is not installed") from exc
    try:
        folder = Path(
            snapshot_download(str(source), local_files_only=True, allow_patterns=patterns)
        )
        if (folder / "config.json").is_file():
            return folder
    except Exception:  # LocalEntryNotFoundError, bad repo id ...
        pass
    looked.append("the Hugging Face cache")
    if _offline():
        looked.append("no download: HF_HUB_OFFLINE is set")
    else:
        try:
            return Path(snapshot_download(str(source), allow_patterns=patterns))
        except Exception as exc:  # network errors come in many types
            looked.append(f"download from the hub ({type(exc).__name__})")
    raise HarnessError(
        f"vision tower {source} not found; looked in {'; '.join(looked)}. Fetch it with "
        f"`huggingface-cli download {source}` or set the model option vision_tower=DIR."
    )


# -- state dict and config mapping -------------------------------------------------------------


def convert_state_dict(
    state: Mapping[str, torch.Tensor], *, projector_type: str = "mlp2x_gelu"
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Original key names -> transformers 5 LLaVA names; returns (converted, dropped keys).

    ``*.inv_freq`` buffers are dropped silently; keys of no known part (e.g.
    Dynamic-LLaVA's token predictors) are dropped and returned.
    """
    out: dict[str, torch.Tensor] = {}
    dropped: list[str] = []
    for key, value in state.items():
        if key.endswith(".inv_freq"):
            continue
        if key.startswith("model.mm_projector."):
            out.update(projector_weight(key, value, projector_type, prefix="model.mm_projector."))
        elif key.startswith("model.vision_tower.vision_tower."):
            rest = key.removeprefix("model.vision_tower.vision_tower.")
            out[VISION_PREFIX + rest.removeprefix("vision_model.")] = value
        elif key.startswith(("model.embed_tokens.", "model.layers.", "model.norm.")):
            out["model.language_model." + key.removeprefix("model.")] = value
        elif key == "lm_head.weight":
            out[key] = value
        else:
            dropped.append(key)
    if projector_type == "linear":
        identity_second_linear(out)
    return out, dropped


def projector_weight(
    key: str, value: torch.Tensor, projector_type: str, prefix: str
) -> dict[str, torch.Tensor]:
    rest = key.removeprefix(prefix)
    target = "model.multi_modal_projector."
    if projector_type == "linear":
        return {target + "linear_1." + rest: value}
    if projector_type == "mlp2x_gelu":
        layer, _, param = rest.partition(".")
        names = {"0": "linear_1", "2": "linear_2"}
        if layer not in names:
            raise HarnessError(f"unexpected projector weight {key} for mlp2x_gelu")
        return {f"{target}{names[layer]}.{param}": value}
    raise HarnessError(
        f"projector type {projector_type!r} has no transformers LLaVA equivalent "
        "(supported: linear, mlp2x_gelu)"
    )


def identity_second_linear(state: dict[str, torch.Tensor]) -> None:
    """A single linear projector as LLaVA's two-layer one: identity activation and second layer."""
    weight = state["model.multi_modal_projector.linear_1.weight"]
    dim = weight.shape[0]
    state["model.multi_modal_projector.linear_2.weight"] = torch.eye(dim, dtype=weight.dtype)
    state["model.multi_modal_projector.linear_2.bias"] = torch.zeros(dim, dtype=weight.dtype)


def projector_hidden_act(projector_type: str) -> str:
    return "linear" if projector_type == "linear" else "gelu"


def text_config_from_original(config: Mapping[str, Any]) -> dict[str, Any]:
    """The Llama part of an original ``llava_llama`` config as LlamaConfig kwargs."""
    text = {k: config[k] for k in LLAMA_FIELDS if config.get(k) is not None}
    rope = {"rope_type": "default", "rope_theta": float(config.get("rope_theta") or 10000.0)}
    if config.get("rope_scaling"):
        scaling = dict(config["rope_scaling"])
        scaling["rope_type"] = scaling.pop("type", scaling.get("rope_type", "default"))
        rope.update(scaling)
    text["rope_parameters"] = rope
    text["tie_word_embeddings"] = bool(config.get("tie_word_embeddings", False))
    text["model_type"] = "llama"
    return text


def add_image_tokens(tokenizer: Any) -> tuple[int, list[int]]:
    """Add ``<image>`` (and ``<pad>`` when the tokenizer has no pad token); left padding.

    Returns (image token id, ids added). A tokenizer that already knows
    ``<image>`` is left as it is.
    """
    from transformers import AddedToken

    before = len(tokenizer)
    if IMAGE_TOKEN not in tokenizer.get_vocab():
        tokenizer.add_tokens(
            [AddedToken(IMAGE_TOKEN, special=True, normalized=False)], special_tokens=True
        )
    if PAD_TOKEN not in tokenizer.get_vocab():
        tokenizer.add_special_tokens({"pad_token": PAD_TOKEN})
    elif tokenizer.pad_token is None:
        tokenizer.pad_token = PAD_TOKEN
    tokenizer.padding_side = "left"
    return tokenizer.convert_tokens_to_ids(IMAGE_TOKEN), list(range(before, len(tokenizer)))


def pad_vocabulary(
    state: dict[str, torch.Tensor], n_tokens: int, multiple: int = VOCAB_MULTIPLE
) -> int:
    """Grow embedding and output rows to ``n_tokens`` rounded up to ``multiple`` (mean rows)."""
    size = math.ceil(n_tokens / multiple) * multiple
    for key in ("model.language_model.embed_tokens.weight", "lm_head.weight"):
        if key not in state:
            continue
        weight = state[key]
        if weight.shape[0] >= size:
            size = weight.shape[0]
            continue
        mean = weight.float().mean(0, keepdim=True).to(weight.dtype)
        state[key] = torch.cat([weight, mean.expand(size - weight.shape[0], -1)], 0)
    return size


def vision_config_from_folder(folder: Path) -> Any:
    """The vision sub-config of a CLIP/SigLIP folder (full model or vision-only)."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(folder)
    vision = getattr(config, "vision_config", None)
    return vision if vision is not None else config


def vision_state_from_folder(folder: Path) -> dict[str, torch.Tensor]:
    """A CLIP/SigLIP folder's vision weights as LLaVA's ``model.vision_tower.*``.

    Hub folders of full CLIP models name them ``vision_model.*`` (next to the
    text tower's); vision-only models saved by transformers 5 have no prefix.
    """
    state = read_state_dict(folder)
    if any(k.startswith("vision_model.") for k in state):
        state = {
            k.removeprefix("vision_model."): v
            for k, v in state.items()
            if k.startswith("vision_model.")
        }
    if not any(k.startswith("embeddings.") for k in state):
        raise HarnessError(
            f"{folder}: no vision tower weights (vision_model.embeddings.* or embeddings.*)"
        )
    return {VISION_PREFIX + k: v for k, v in state.items()}


def image_processor_from_folder(folder: Path, backend: str = "pil") -> Any:
    from transformers import AutoImageProcessor

    return AutoImageProcessor.from_pretrained(folder, backend=backend)


def tokens_per_image(vision_config: Any, select_strategy: str) -> int:
    """Image tokens LLaVA splices in: patches (+ CLS for CLIP) (- the first for "default")."""
    patches = (vision_config.image_size // vision_config.patch_size) ** 2
    extra = 1 if vision_config.model_type.startswith("clip") else 0
    return patches + extra - (1 if select_strategy == "default" else 0)


def build_llava(
    *,
    text_config: Mapping[str, Any],
    vision_config: Any,
    state: dict[str, torch.Tensor],
    tokenizer: Any,
    image_processor: Any,
    select_layer: int,
    select_feature: str,
    projector_type: str,
    device: str,
    dtype: torch.dtype,
) -> tuple[Any, Any, int, dict[str, Any]]:
    """(model, processor, image token id, info) from converted weights and their configs."""
    from transformers import LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor

    original_vocab = int(text_config["vocab_size"])
    image_token_id, added = add_image_tokens(tokenizer)
    vocab = pad_vocabulary(state, len(tokenizer))
    strategy = {"patch": "default", "cls_patch": "full"}.get(select_feature)
    if strategy is None:
        raise HarnessError(
            f"mm_vision_select_feature {select_feature!r}: expected patch or cls_patch"
        )
    config = LlavaConfig(
        vision_config=vision_config.to_dict(),
        text_config={**text_config, "vocab_size": vocab},
        image_token_index=image_token_id,
        image_seq_length=tokens_per_image(vision_config, strategy),
        vision_feature_layer=int(select_layer),
        vision_feature_select_strategy=strategy,
        projector_hidden_act=projector_hidden_act(projector_type),
        tie_word_embeddings=bool(text_config.get("tie_word_embeddings", False)),
    )
    model, loading = LlavaForConditionalGeneration.from_pretrained(
        None,
        config=config,
        state_dict=state,
        dtype=dtype,
        device_map=device,
        output_loading_info=True,
    )
    missing = sorted(k for k in loading["missing_keys"] if not k.startswith(UNUSED_TOWER_PARTS))
    if missing or loading["mismatched_keys"]:
        raise HarnessError(
            f"converted checkpoint does not fit the LLaVA model: missing {missing[:5]} "
            f"({len(missing)}), mismatched {sorted(loading['mismatched_keys'])[:5]}"
        )
    # The original vocabulary never produced the ids added for the conversion.
    suppressed = list(range(original_vocab, vocab))
    model.generation_config.suppress_tokens = suppressed or None
    generation = model.generation_config
    generation.pad_token_id = tokenizer.pad_token_id
    if generation.eos_token_id is None:
        generation.eos_token_id = tokenizer.eos_token_id
    if generation.bos_token_id is None:
        generation.bos_token_id = tokenizer.bos_token_id
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=vision_config.patch_size,
        vision_feature_select_strategy=strategy,
        num_additional_image_tokens=1 if vision_config.model_type.startswith("clip") else 0,
    )
    info = {
        "vocab": {"original": original_vocab, "padded": vocab, "added": added},
        "vision_feature_layer": int(select_layer),
        "vision_feature_select_strategy": strategy,
        "projector": projector_type,
        "unused_weights": len(loading["unexpected_keys"]),
    }
    return model.eval(), processor, image_token_id, info


def convert_original(
    path: Path,
    *,
    vision_tower: str | Path | None = None,
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
    image_backend: str = "pil",
) -> Converted:
    """Build a transformers LLaVA from an original-layout folder (vision tower resolved as needed)."""
    from transformers import AutoTokenizer

    path = Path(path)
    config_file = path / "config.json"
    if not config_file.is_file():
        raise HarnessError(f"{path}: no config.json")
    config = json.loads(config_file.read_text())
    if config.get("model_type") not in {"llava_llama", "llava", "llama"}:
        log.warning("%s: model_type %r is not llava_llama", path, config.get("model_type"))
    projector_type = config.get("mm_projector_type") or "linear"
    state, dropped = convert_state_dict(read_state_dict(path), projector_type=projector_type)
    if dropped:
        log.warning(
            "%s: ignoring %d weights outside LLaVA (e.g. %s)", path, len(dropped), dropped[0]
        )
    source = vision_tower or config.get("mm_vision_tower") or config.get("vision_tower")
    if not source:
        raise HarnessError(f"{path}: config.json names no mm_vision_tower; set option vision_tower")
    tower = resolve_vision_tower(source)
    tower_in_checkpoint = any(k.startswith(VISION_PREFIX) for k in state)
    if not tower_in_checkpoint:
        state.update(vision_state_from_folder(tower))
    vision_config = vision_config_from_folder(tower)
    if config.get("mm_hidden_size") and config["mm_hidden_size"] != vision_config.hidden_size:
        raise HarnessError(
            f"{path}: mm_hidden_size {config['mm_hidden_size']} != vision tower hidden size "
            f"{vision_config.hidden_size} ({source})"
        )
    tokenizer = AutoTokenizer.from_pretrained(path)
    model, processor, image_token_id, info = build_llava(
        text_config=text_config_from_original(config),
        vision_config=vision_config,
        state=state,
        tokenizer=tokenizer,
        image_processor=image_processor_from_folder(tower, image_backend),
        select_layer=config.get("mm_vision_select_layer", -2),
        select_feature=config.get("mm_vision_select_feature", "patch"),
        projector_type=projector_type,
        device=device,
        dtype=dtype,
    )
    info.update(
        {
            "weights": "llava_original",
            "vision_tower": str(source),
            "vision_tower_in_checkpoint": tower_in_checkpoint,
            "dropped_weights": len(dropped),
            "image_aspect_ratio": config.get("image_aspect_ratio"),
        }
    )
    # The tower folder's configs (and weights, when used) shape the model too.
    return Converted(model, processor, image_token_id, info, [path, tower])

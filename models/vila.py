"""VILA checkpoints (``llm/`` + ``vision_tower/`` + ``mm_projector/``) assembled without remote code.

- ``linear`` / ``mlp2x_gelu`` projectors: the three parts become one
  transformers ``LlavaForConditionalGeneration`` (the same computation), via
  the converter shared with original LLaVA checkpoints.
- ``mlp_downsample`` (VILA1.5): :class:`VilaForGeneration`, a small module
  that runs the vision tower, merges each 2x2 block of neighbouring tokens
  into one (zero-padding odd grids, as VILA does), projects with LayerNorm +
  Linear + GELU + Linear, splices the result over the image placeholder ids
  and generates through the Llama with ``inputs_embeds`` (left padded, positions
  from the attention mask, so outputs do not depend on the batch).

Prompts are tokenized chunk-wise around ``<image>`` as VILA's
``tokenizer_image_token`` does; the image preprocessing follows the
checkpoint's ``image_aspect_ratio`` (``resize`` for VILA1.5).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from harness.errors import HarnessError
from harness.models.convert_llava import (
    build_llava,
    identity_second_linear,
    image_processor_from_folder,
    projector_weight,
    read_state_dict,
    vision_config_from_folder,
    vision_state_from_folder,
)
from harness.models.hf_adapter import positions_from_mask
from harness.models.llava import LlavaAdapter, fingerprint_folders
from harness.models.prompting import num_frames as profile_frames
from harness.models.registry import ModelEntry

# The original code's placeholder id: never a vocabulary entry.
IMAGE_TOKEN_INDEX = -200


def merge_2x2(x: torch.Tensor) -> torch.Tensor:
    """(n, side*side, c) tokens -> (n, ceil(side/2)**2, 4c), VILA's ``DownSampleBlock`` order.

    The square token grid (row r, column q) is zero-padded to even sides; the
    merged vector of block (i, j) is the concatenation of tokens (2i, 2j),
    (2i, 2j+1), (2i+1, 2j), (2i+1, 2j+1), and blocks come out column-block
    major (j outer, i inner), as VILA's reshapes produce them.
    """
    n, length, c = x.shape
    side = math.isqrt(length)
    if side * side != length:
        raise HarnessError(f"mlp_downsample needs a square token grid, got {length} tokens")
    grid = x.reshape(n, side, side, c)
    even = side + side % 2
    if even != side:
        grid = nn.functional.pad(grid, (0, 0, 0, even - side, 0, even - side))
    half = even // 2
    blocks = grid.reshape(n, half, 2, half, 2, c)  # (n, i, di, j, dj, c)
    blocks = blocks.permute(0, 3, 1, 2, 4, 5)  # (n, j, i, di, dj, c)
    return blocks.reshape(n, half * half, 4 * c)


class TokenMerge2x2(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return merge_2x2(x)


class DownsampleProjector(nn.Module):
    """VILA1.5's ``mlp_downsample``; parameter names match ``mm_projector/`` (``layers.1`` ...)."""

    def __init__(self, vision_hidden: int, text_hidden: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            TokenMerge2x2(),
            nn.LayerNorm(4 * vision_hidden),
            nn.Linear(4 * vision_hidden, text_hidden),
            nn.GELU(),
            nn.Linear(text_hidden, text_hidden),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class VilaForGeneration(nn.Module):
    """Vision tower + projector + causal LM, with image embeddings spliced at placeholder ids."""

    def __init__(
        self,
        llm: nn.Module,
        vision_tower: nn.Module,
        projector: nn.Module,
        *,
        select_layer: int = -2,
        select_feature: str = "cls_patch",
        image_token_id: int = IMAGE_TOKEN_INDEX,
    ) -> None:
        super().__init__()
        if select_feature not in {"patch", "cls_patch"}:
            raise HarnessError(
                f"mm_vision_select_feature {select_feature!r}: expected patch or cls_patch"
            )
        self.llm = llm
        self.vision_tower = vision_tower
        self.projector = projector
        self.select_layer = select_layer
        self.select_feature = select_feature
        self.image_token_id = image_token_id

    @property
    def config(self) -> Any:
        return self.llm.config

    @property
    def generation_config(self) -> Any:
        return self.llm.generation_config

    @property
    def dtype(self) -> torch.dtype:
        return self.llm.dtype

    @property
    def device(self) -> torch.device:
        return self.llm.device

    def embed_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(n_images, tokens, hidden) LLM-space embeddings."""
        tower_dtype = next(self.vision_tower.parameters()).dtype
        out = self.vision_tower(pixel_values.to(tower_dtype), output_hidden_states=True)
        features = out.hidden_states[self.select_layer]
        if self.select_feature == "patch":
            features = features[:, 1:]
        return self.projector(features)

    def embed_inputs(
        self, input_ids: torch.Tensor, pixel_values: torch.Tensor | None = None
    ) -> torch.Tensor:
        is_image = input_ids == self.image_token_id
        embed = self.llm.get_input_embeddings()
        inputs_embeds = embed(input_ids.masked_fill(is_image, 0))
        n_slots = int(is_image.sum())
        if pixel_values is None or pixel_values.shape[0] == 0:
            if n_slots:
                raise HarnessError(f"{n_slots} image placeholders but no images")
            return inputs_embeds
        features = self.embed_images(pixel_values)
        if features.shape[0] * features.shape[1] != n_slots:
            raise HarnessError(
                f"{features.shape[0]} images x {features.shape[1]} tokens do not fill "
                f"{n_slots} image placeholders"
            )
        # Row-major over (batch, position): images in request order fill placeholders in order.
        inputs_embeds = inputs_embeds.clone()
        inputs_embeds[is_image] = features.reshape(-1, features.shape[-1]).to(inputs_embeds.dtype)
        return inputs_embeds

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> Any:
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        return self.llm(
            inputs_embeds=self.embed_inputs(input_ids, pixel_values),
            attention_mask=attention_mask,
            position_ids=positions_from_mask(attention_mask),
            **kwargs,
        )

    @torch.inference_mode()
    def generate(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        """Prompt ids followed by the generated ids (as ``generate`` on ``input_ids`` returns)."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        new_tokens = self.llm.generate(
            inputs_embeds=self.embed_inputs(input_ids, pixel_values),
            attention_mask=attention_mask,
            **kwargs,
        )
        return torch.cat([input_ids, new_tokens.to(input_ids.device)], dim=1)


@dataclass
class VilaProcessor:
    """What the adapter needs from a processor: the LLM tokenizer and the tower's image processor."""

    tokenizer: Any
    image_processor: Any


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise HarnessError(
            f"{path.parent.parent}: not a VILA folder (missing {path.name} in {path.parent.name}/)"
        )
    return json.loads(path.read_text())


def vila_parts(path: Path) -> dict[str, Any]:
    """The settings of a VILA folder that decide how it is assembled."""
    for part in ("llm", "vision_tower", "mm_projector"):
        if not (path / part).is_dir():
            raise HarnessError(f"{path}: not a VILA folder (no {part}/ subfolder)")
    top = _read_json(path / "config.json") if (path / "config.json").is_file() else {}
    projector_cfg = _read_json(path / "mm_projector" / "config.json")
    return {
        "projector": projector_cfg.get("mm_projector_type") or top.get("mm_projector_type"),
        "select_layer": int(top.get("mm_vision_select_layer", -2)),
        "select_feature": top.get("mm_vision_select_feature", "patch"),
        "image_aspect_ratio": top.get("image_aspect_ratio"),
    }


def downsample_tokens(vision_config: Any, select_feature: str) -> int:
    tokens = (vision_config.image_size // vision_config.patch_size) ** 2
    tokens += 1 if vision_config.model_type.startswith("clip") else 0
    tokens -= 1 if select_feature == "patch" else 0
    side = math.isqrt(tokens)
    if side * side != tokens:
        raise HarnessError(f"mlp_downsample needs a square token grid, the tower gives {tokens}")
    return ((side + 1) // 2) ** 2


def _llava_state(
    path: Path, projector: str, text_config: dict[str, Any]
) -> dict[str, torch.Tensor]:
    state: dict[str, torch.Tensor] = {}
    for key, value in read_state_dict(path / "llm").items():
        if key.endswith(".inv_freq"):
            continue
        if key.startswith("model."):
            state["model.language_model." + key.removeprefix("model.")] = value
        elif key == "lm_head.weight":
            state[key] = value
    if "lm_head.weight" not in state and text_config.get("tie_word_embeddings"):
        state["lm_head.weight"] = state["model.language_model.embed_tokens.weight"]
    state.update(vision_state_from_folder(path / "vision_tower"))
    for key, value in read_state_dict(path / "mm_projector").items():
        if not key.startswith("layers."):
            raise HarnessError(f"{path}/mm_projector: unexpected weight {key}")
        state.update(projector_weight(key, value, projector, prefix="layers."))
    if projector == "linear":
        identity_second_linear(state)
    return state


def is_single_folder(path: Path) -> bool:
    """The published VILA-7b/13b layout: one LLaVA-style folder (``LlavaLlamaForCausalLM``,
    tower and projector weights inside), not VILA1.5's llm/ + vision_tower/ + mm_projector/."""
    if (path / "llm").is_dir() or not (path / "config.json").is_file():
        return False
    config = json.loads((path / "config.json").read_text())
    return "LlavaLlamaForCausalLM" in (config.get("architectures") or []) or bool(
        config.get("mm_vision_tower")
    )


def load(entry: ModelEntry, path: Path, *, device: str, dtype: torch.dtype) -> LlavaAdapter:
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer

    path = Path(path)
    options = dict(entry.options or {})
    if is_single_folder(path):
        # VILA-7b / VILA-13b (NVlabs/VILA@1c09a93): LLaVA-1.5's layout and code path
        from harness.models.llava import load_original

        adapter = load_original(entry, path, device=device, dtype=dtype)
        adapter.info["weights"] = "vila_single_folder"
        return adapter
    parts = vila_parts(path)
    profile = entry.eval_profile
    tower_config = _read_json(path / "vision_tower" / "config.json")
    if str(tower_config.get("model_type", "")).startswith("intern"):
        raise HarnessError(
            f"model {entry.name}: {path}/vision_tower is {tower_config.get('model_type')} "
            "(InternViT), which loads only with its remote code; not supported "
            "(`harness prompts` shows this model's prompts)"
        )
    projector = parts["projector"]
    tokenizer = AutoTokenizer.from_pretrained(path / "llm")
    tokenizer.padding_side = "left"
    image_processor = image_processor_from_folder(
        path / "vision_tower", options.get("image_backend", "pil")
    )
    vision_config = vision_config_from_folder(path / "vision_tower")
    aspect = parts["image_aspect_ratio"]
    common = {
        "template": str(profile.template.settings["template"]),
        "image_aspect": options.get("image_aspect"),
        "checkpoint_aspect": aspect,
        "profile": profile,
        "num_frames": options.get("num_frames", profile_frames(profile)),
        "split_prompt": True,
        "fingerprint": fingerprint_folders([path]),
    }
    info = {"weights": "vila", "projector": projector, "image_aspect_ratio": aspect}
    if projector in {"linear", "mlp2x_gelu"}:
        text_config = AutoConfig.from_pretrained(path / "llm").to_dict()
        model, processor, image_token_id, built = build_llava(
            text_config=text_config,
            vision_config=vision_config,
            state=_llava_state(path, projector, text_config),
            tokenizer=tokenizer,
            image_processor=image_processor,
            select_layer=parts["select_layer"],
            select_feature=parts["select_feature"],
            projector_type=projector,
            device=device,
            dtype=dtype,
        )
        return LlavaAdapter(
            entry.name,
            model,
            processor,
            image_token_id=image_token_id,
            info={**info, **built},
            **common,
        )
    if projector != "mlp_downsample":
        raise HarnessError(
            f"{path}: mm_projector_type {projector!r} is not supported "
            "(linear, mlp2x_gelu, mlp_downsample)"
        )
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.unk_token or tokenizer.eos_token
    llm = AutoModelForCausalLM.from_pretrained(path / "llm", dtype=dtype, device_map=device)
    tower = AutoModel.from_pretrained(path / "vision_tower", dtype=dtype, device_map=device)
    proj = DownsampleProjector(vision_config.hidden_size, llm.config.hidden_size)
    proj.load_state_dict(read_state_dict(path / "mm_projector"), strict=True)
    proj.to(device=llm.device, dtype=dtype)
    model = VilaForGeneration(
        llm,
        tower,
        proj,
        select_layer=parts["select_layer"],
        select_feature=parts["select_feature"],
    ).eval()
    info.update(
        {
            "vision_feature_layer": parts["select_layer"],
            "vision_select_feature": parts["select_feature"],
        }
    )
    adapter = LlavaAdapter(
        entry.name,
        model,
        VilaProcessor(tokenizer, image_processor),
        image_token_id=IMAGE_TOKEN_INDEX,
        tokens_per_image=downsample_tokens(vision_config, parts["select_feature"]),
        device=str(llm.device),
        info=info,
        **common,
    )
    adapter.pass_position_ids = False  # VilaForGeneration.forward computes them
    return adapter

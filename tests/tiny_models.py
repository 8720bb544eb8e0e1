"""Tiny offline models for tests: tokenizer, LLaVA (native + original layout), VILA folders.

Everything is built from config classes with fixed seeds, so no hub access is
needed. Sizes are a few tens of thousands of parameters: a forward pass takes
milliseconds on CPU.

``make_tokenizer`` is shared with other families' tests: a WordLevel
vocabulary ``<unk> <s> </s> WORDS... SPECIAL...`` (Llama's id order for the
first three), so a tokenizer built without the trailing specials has the same
ids for everything else, as the original LLaVA tokenizer has for the HF one.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

WORDS = (
    "A chat between a curious human and an artificial intelligence assistant . "
    "The gives helpful , detailed polite answers to the human's questions "
    "USER ASSISTANT : What is in image ? Is there cat dog car tree cup "
    "Answer question using single word or phrase yes no Yes No "
    "color red blue green of this picture describe it"
).split()
BASE_SPECIAL = ("<unk>", "<s>", "</s>")
LLAVA_SPECIAL = ("<image>", "<pad>")


def make_tokenizer(
    special: Sequence[str] = LLAVA_SPECIAL,
    words: Iterable[str] = WORDS,
    *,
    add_bos: bool = True,
    pad_token: str | None = None,
):
    """A ``PreTrainedTokenizerFast`` over ``<unk> <s> </s> words... special...`` (left padding).

    ``special`` tokens are added last, never split, and skipped when decoding;
    ``pad_token`` defaults to ``<pad>`` when it is among them, else ``<unk>``
    (what the original LLaVA tokenizers use).
    """
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab: dict[str, int] = {}
    for token in (*BASE_SPECIAL, *words, *special):
        vocab.setdefault(token, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    if add_bos:
        tok.post_processor = processors.TemplateProcessing(
            single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", vocab["<s>"])]
        )
    if pad_token is None:
        pad_token = "<pad>" if "<pad>" in special else "<unk>"
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token=pad_token,
        additional_special_tokens=[s for s in special if s != pad_token],
        padding_side="left",
    )


def text_config(vocab_size: int, **overrides) -> dict:
    cfg = {
        "model_type": "llama",
        "vocab_size": vocab_size,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 256,
        "initializer_range": 0.2,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "tie_word_embeddings": False,
    }
    cfg.update(overrides)
    return cfg


def clip_vision_config(image_size: int = 16, patch_size: int = 4) -> dict:
    return {
        "model_type": "clip_vision_model",
        "hidden_size": 24,
        "intermediate_size": 48,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "image_size": image_size,
        "patch_size": patch_size,
        "projection_dim": 16,
    }


def siglip_vision_config(image_size: int = 12, patch_size: int = 4) -> dict:
    return {
        "model_type": "siglip_vision_model",
        "hidden_size": 24,
        "intermediate_size": 48,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "image_size": image_size,
        "patch_size": patch_size,
    }


def clip_image_processor(image_size: int = 16):
    from transformers import CLIPImageProcessor

    return CLIPImageProcessor(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
    )


def build_llava(
    folder: Path | None = None, *, seed: int = 0, image_size: int = 16, patch_size: int = 4
):
    """(model, processor): a CLIP + Llama LLaVA, saved to ``folder`` when given."""
    from transformers import LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor

    tokenizer = make_tokenizer()
    config = LlavaConfig(
        vision_config=clip_vision_config(image_size, patch_size),
        text_config=text_config(len(tokenizer)),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        image_seq_length=(image_size // patch_size) ** 2,
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
    )
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config).eval()
    processor = LlavaProcessor(
        image_processor=clip_image_processor(image_size),
        tokenizer=tokenizer,
        patch_size=patch_size,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
    )
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(folder)
        processor.save_pretrained(folder)
    return model, processor


def write_image(path: Path, size: tuple[int, int] = (20, 12), seed: int = 0) -> Path:
    """A random RGB PNG of ``size`` (width, height)."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


# -- the original LLaVA repository layout (inverse of models/convert_llava.py) ----------------


def _save_weights(state: dict[str, torch.Tensor], folder: Path, fmt: str, shards: int) -> None:
    keys = sorted(state)
    chunks = [keys[i::shards] for i in range(shards)]
    weight_map = {}
    for i, chunk in enumerate(chunks, 1):
        if fmt == "bin":
            name = f"pytorch_model-{i:05d}-of-{shards:05d}.bin"
            torch.save({k: state[k].clone() for k in chunk}, folder / name)
        else:
            from safetensors.torch import save_file

            name = f"model-{i:05d}-of-{shards:05d}.safetensors"
            save_file({k: state[k].contiguous() for k in chunk}, folder / name)
        weight_map.update(dict.fromkeys(chunk, name))
    index = "pytorch_model.bin.index.json" if fmt == "bin" else "model.safetensors.index.json"
    (folder / index).write_text(json.dumps({"metadata": {}, "weight_map": weight_map}, indent=1))


def save_clip_folder(model, folder: Path, *, perturb: float = 0.0) -> Path:
    """A full CLIP model folder (like openai/clip-vit-large-patch14-336) holding ``model``'s tower.

    ``perturb`` > 0 adds that much noise to the tower (a "pre-training" tower
    that a checkpoint's own tuned tower must override).
    """
    from transformers import CLIPConfig, CLIPModel

    vision = model.config.vision_config.to_dict()
    config = CLIPConfig(
        text_config={
            "hidden_size": 16,
            "intermediate_size": 20,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "vocab_size": 50,
            "bos_token_id": 1,
            "eos_token_id": 2,
            "pad_token_id": 0,
            "projection_dim": vision["projection_dim"],
        },
        vision_config=vision,
        projection_dim=vision["projection_dim"],
    )
    torch.manual_seed(123)
    clip = CLIPModel(config).eval()
    gen = torch.Generator().manual_seed(7)
    tower = {
        k: v + perturb * torch.randn(v.shape, generator=gen) if v.is_floating_point() else v
        for k, v in model.model.vision_tower.state_dict().items()
    }
    missing, unexpected = clip.vision_model.load_state_dict(
        {k.removeprefix("vision_model."): v for k, v in tower.items()}, strict=False
    )
    assert not unexpected, unexpected
    folder.mkdir(parents=True, exist_ok=True)
    clip.save_pretrained(folder)
    clip_image_processor(vision["image_size"]).save_pretrained(folder)
    return folder


def save_original_llava(
    model,
    folder: Path,
    vision_folder: Path,
    *,
    tower_in_checkpoint: bool = False,
    fmt: str = "bin",
    shards: int = 2,
    image_aspect_ratio: str = "pad",
) -> Path:
    """Write a native tiny LLaVA in liuhaotian's layout (no ``<image>``/``<pad>`` rows).

    The CLIP folder that ``mm_vision_tower`` names is written to
    ``vision_folder``. With ``tower_in_checkpoint`` the (tuned) tower is stored
    in the checkpoint as ``model.vision_tower.vision_tower.*`` and the CLIP
    folder holds different weights, so only the checkpoint's may be used.
    """
    folder.mkdir(parents=True, exist_ok=True)
    text = model.config.text_config
    n_special = len(LLAVA_SPECIAL)
    vocab = text.vocab_size - n_special
    state: dict[str, torch.Tensor] = {}
    for key, value in model.state_dict().items():
        if key.startswith("model.language_model."):
            new = "model." + key.removeprefix("model.language_model.")
        elif key.startswith("model.multi_modal_projector."):
            layer = {"linear_1": "0", "linear_2": "2"}[key.split(".")[2]]
            new = f"model.mm_projector.{layer}.{key.split('.')[-1]}"
        elif key.startswith("model.vision_tower."):
            if not tower_in_checkpoint:
                continue
            new = "model.vision_tower.vision_tower." + key.removeprefix("model.vision_tower.")
        else:
            new = key
        if new in {"model.embed_tokens.weight", "lm_head.weight"}:
            value = value[:vocab]
        state[new] = value.detach().clone()
    head_dim = text.hidden_size // text.num_attention_heads
    for i in range(text.num_hidden_layers):  # old checkpoints carry rotary buffers
        state[f"model.layers.{i}.self_attn.rotary_emb.inv_freq"] = torch.ones(head_dim // 2)
    _save_weights(state, folder, fmt, shards)
    save_clip_folder(model, vision_folder, perturb=0.5 if tower_in_checkpoint else 0.0)
    vision = model.config.vision_config
    config = {
        "_name_or_path": "tiny-llava-original",
        "architectures": ["LlavaLlamaForCausalLM"],
        "model_type": "llava_llama",
        "hidden_size": text.hidden_size,
        "intermediate_size": text.intermediate_size,
        "num_hidden_layers": text.num_hidden_layers,
        "num_attention_heads": text.num_attention_heads,
        "num_key_value_heads": text.num_key_value_heads,
        "max_position_embeddings": text.max_position_embeddings,
        "rms_norm_eps": text.rms_norm_eps,
        "hidden_act": "silu",
        "vocab_size": vocab,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "pad_token_id": 0,
        "tie_word_embeddings": False,
        "torch_dtype": "float32",
        "use_cache": True,
        "mm_vision_tower": str(vision_folder),
        "mm_hidden_size": vision.hidden_size,
        "mm_vision_select_layer": -2,
        "mm_vision_select_feature": "patch",
        "mm_projector_type": "mlp2x_gelu",
        "mm_use_im_start_end": False,
        "mm_use_im_patch_token": False,
        "image_aspect_ratio": image_aspect_ratio,
        "tune_mm_mlp_adapter": False,
    }
    (folder / "config.json").write_text(json.dumps(config, indent=1))
    make_tokenizer(special=()).save_pretrained(folder)
    return folder


# -- VILA folders ---------------------------------------------------------------------------


def _vila_top_config(folder: Path, projector: str, vision: dict, select_feature: str) -> None:
    config = {
        "architectures": ["LlavaLlamaModel"],
        "model_type": "llava_llama",
        "llm_cfg": {"architectures": ["LlamaForCausalLM"], "_name_or_path": "./llm"},
        "vision_tower_cfg": {"_name_or_path": "./vision_tower"},
        "mm_projector_cfg": {"mm_projector_type": projector, "_name_or_path": "./mm_projector"},
        "mm_hidden_size": vision["hidden_size"],
        "mm_vision_select_layer": -2,
        "mm_vision_select_feature": select_feature,
        "image_aspect_ratio": "resize",
        "hidden_size": 32,
        "model_dtype": "torch.float32",
    }
    (folder / "config.json").write_text(json.dumps(config, indent=1))


def _save_llm(folder: Path, text_state: dict[str, torch.Tensor], text_cfg: dict) -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = dict(text_cfg)
    cfg.pop("model_type", None)
    llm = LlamaForCausalLM(LlamaConfig(**cfg)).eval()
    llm.load_state_dict(text_state, strict=True)
    llm.save_pretrained(folder / "llm")
    make_tokenizer(special=()).save_pretrained(folder / "llm")


def _save_projector(folder: Path, projector: str, state: dict[str, torch.Tensor]) -> None:
    from safetensors.torch import save_file

    (folder / "mm_projector").mkdir(parents=True, exist_ok=True)
    (folder / "mm_projector" / "config.json").write_text(
        json.dumps({"model_type": "v2l_projector", "mm_projector_type": projector})
    )
    save_file(
        {k: v.contiguous() for k, v in state.items()},
        folder / "mm_projector" / "model.safetensors",
    )


def save_vila_from_llava(model, folder: Path, projector: str = "mlp2x_gelu") -> Path:
    """A VILA folder (CLIP tower) with exactly ``model``'s weights.

    ``projector="linear"`` stores only ``linear_1`` (for a native model whose
    activation and second layer are identities).
    """
    from transformers import CLIPVisionModel

    folder.mkdir(parents=True, exist_ok=True)
    n_special = len(LLAVA_SPECIAL)
    text_cfg = model.config.text_config.to_dict()
    text_cfg["vocab_size"] -= n_special
    state = model.state_dict()
    text_state = {}
    for key, value in state.items():
        if key.startswith("model.language_model."):
            text_state["model." + key.removeprefix("model.language_model.")] = value
        elif key == "lm_head.weight":
            text_state[key] = value
    for key in ("model.embed_tokens.weight", "lm_head.weight"):
        text_state[key] = text_state[key][: text_cfg["vocab_size"]]
    _save_llm(folder, text_state, text_cfg)
    vision_cfg = model.config.vision_config
    tower = CLIPVisionModel(vision_cfg).eval()
    tower.load_state_dict(model.model.vision_tower.state_dict())
    tower.save_pretrained(folder / "vision_tower")
    clip_image_processor(vision_cfg.image_size).save_pretrained(folder / "vision_tower")
    proj = model.model.multi_modal_projector
    if projector == "linear":
        weights = {"layers.weight": proj.linear_1.weight, "layers.bias": proj.linear_1.bias}
    else:
        weights = {
            "layers.0.weight": proj.linear_1.weight,
            "layers.0.bias": proj.linear_1.bias,
            "layers.2.weight": proj.linear_2.weight,
            "layers.2.bias": proj.linear_2.bias,
        }
    _save_projector(folder, projector, {k: v.detach() for k, v in weights.items()})
    _vila_top_config(folder, projector, vision_cfg.to_dict(), "patch")
    return folder


def build_vila_downsample(
    folder: Path, *, seed: int = 0, image_size: int = 12, patch_size: int = 4
) -> Path:
    """A VILA1.5-style folder: SigLIP tower (odd token grid), mlp_downsample projector, Llama."""
    from transformers import (
        LlamaConfig,
        LlamaForCausalLM,
        SiglipImageProcessor,
        SiglipVisionConfig,
        SiglipVisionModel,
    )

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    vocab = len(make_tokenizer(special=()))
    cfg = text_config(vocab)
    cfg.pop("model_type")
    llm = LlamaForCausalLM(LlamaConfig(**cfg)).eval()
    _save_llm(folder, llm.state_dict(), cfg)
    vision = siglip_vision_config(image_size, patch_size)
    tower = SiglipVisionModel(
        SiglipVisionConfig(**{k: v for k, v in vision.items() if k != "model_type"})
    )
    tower.save_pretrained(folder / "vision_tower")
    # Hub checkpoints (VILA's included) name tower weights vision_model.*; transformers 5 drops it.
    from safetensors.torch import save_file

    save_file(
        {"vision_model." + k: v.contiguous() for k, v in tower.state_dict().items()},
        folder / "vision_tower" / "model.safetensors",
        metadata={"format": "pt"},
    )
    SiglipImageProcessor(size={"height": image_size, "width": image_size}).save_pretrained(
        folder / "vision_tower"
    )
    c, d = vision["hidden_size"], cfg["hidden_size"]
    gen = torch.Generator().manual_seed(seed + 1)
    state = {
        "layers.1.weight": 1 + 0.1 * torch.randn(4 * c, generator=gen),
        "layers.1.bias": 0.1 * torch.randn(4 * c, generator=gen),
        "layers.2.weight": 0.3 * torch.randn(d, 4 * c, generator=gen),
        "layers.2.bias": 0.1 * torch.randn(d, generator=gen),
        "layers.4.weight": 0.3 * torch.randn(d, d, generator=gen),
        "layers.4.bias": 0.1 * torch.randn(d, generator=gen),
    }
    _save_projector(folder, "mlp_downsample", state)
    _vila_top_config(folder, "mlp_downsample", vision, "cls_patch")
    return folder


def write_video(path: Path, n_frames: int = 6, size: int = 16) -> Path:
    """A short MPEG-4 clip whose frames differ (frame i is filled with grey level 40 * i)."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=5)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        for i in range(n_frames):
            pixels = np.full((size, size, 3), (40 * i) % 256, dtype=np.uint8)
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path

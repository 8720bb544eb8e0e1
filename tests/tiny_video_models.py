"""Tiny offline Qwen2-VL / Qwen2.5-VL / Video-LLaVA / VLM-RLAIF checkpoints for tests.

Everything is built from config classes with random weights (no hub access):
a WordLevel tokenizer, ~100k-parameter models, processors with tiny image
sizes, written to a folder that the adapters' ``load`` functions read back.
The original-repository layout of VLM-RLAIF (the LLaVA repository's
``LlavaLlamaForCausalLM``) is produced by the inverse of the adapter's key mapping.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

WORDS = (
    "the a an is are what which who where how many color colour red green blue "
    "yellow black white cat dog car tree sky video image picture frame shows "
    "describe answer question yes no one two three four five left right up down "
    "in on of and or with this that there it person man woman ball box table "
    "user assistant system you helpful chat between human artificial "
    "intelligence gives detailed polite answers to questions curious"
).split()

QWEN_SPECIALS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
]

# The released Qwen2-VL / Qwen2.5-VL chat_template.json (the same text in both; it renders the
# README's expected output exactly), so the tiny models' prompts are the real ones.
QWEN_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}{% for message in messages %}{% if loop.first and message['role'] != 'system' %}<|im_start|>system\n"
    "You are a helpful assistant.<|im_end|>\n"
    "{% endif %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}<|vision_start|><|image_pad|><|vision_end|>{% elif content['type'] == 'video' or 'video' in content %}{% set video_count.value = video_count.value + 1 %}{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% endif %}"
)

PUNCT = [".", ",", "?", ":", "!", "'", "-", "(", ")"]


def word_tokenizer(
    specials: list[str],
    *,
    unk: str = "<unk>",
    bos: str | None = None,
    eos: str | None = None,
    pad: str | None = None,
    extra_words: tuple[str, ...] = (),
):
    """A fast WordLevel tokenizer: ids 0.. are specials, then punctuation and words."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab: dict[str, int] = {}
    for token in [unk, *specials, *PUNCT, *WORDS, *extra_words]:
        vocab.setdefault(token, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=unk))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token=unk,
        bos_token=bos,
        eos_token=eos,
        pad_token=pad,
        padding_side="left",
    )
    fast.add_special_tokens({"additional_special_tokens": [s for s in specials]})
    return fast


def qwen_tokenizer():
    return word_tokenizer(
        QWEN_SPECIALS, eos="<|im_end|>", pad="<|endoftext|>", bos=None, unk="<unk>"
    )


# --------------------------------------------------------------------------------------
# Qwen2-VL / Qwen2.5-VL
# --------------------------------------------------------------------------------------
QWEN_PIXELS = 56 * 56  # one 56x56 image = 4x4 patches of 14 px = 4 merged tokens


def build_qwen(folder: Path, kind: str = "qwen2_vl", seed: int = 0) -> Path:
    """Write a tiny ``kind`` ("qwen2_vl" or "qwen2_5_vl") model + processor to ``folder``."""
    from transformers import (
        AutoProcessor,
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2_5_VLProcessor,
        Qwen2VLConfig,
        Qwen2VLForConditionalGeneration,
        Qwen2VLImageProcessor,
        Qwen2VLProcessor,
        Qwen2VLVideoProcessor,
    )

    tok = qwen_tokenizer()
    ids = {t: tok.convert_tokens_to_ids(t) for t in QWEN_SPECIALS}
    text = {
        "model_type": f"{kind}_text",
        "vocab_size": len(tok),
        "hidden_size": 32,
        "intermediate_size": 37,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 512,
        "initializer_range": 0.3,
        # head_dim 8 -> mrope sections sum to 4
        "rope_parameters": {
            "rope_type": "default",
            "rope_theta": 10000.0,
            "mrope_section": [2, 1, 1],
        },
        "bos_token_id": ids["<|endoftext|>"],
        "eos_token_id": ids["<|im_end|>"],
        "pad_token_id": ids["<|endoftext|>"],
    }
    vision = {
        "depth": 2,
        "num_heads": 4,
        "patch_size": 14,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "in_channels": 3,
        "initializer_range": 0.3,
    }
    if kind == "qwen2_vl":
        vision.update(embed_dim=32, hidden_size=32, mlp_ratio=2)
        cfg_cls, model_cls = Qwen2VLConfig, Qwen2VLForConditionalGeneration
    elif kind == "qwen2_5_vl":
        vision.update(
            hidden_size=32,
            intermediate_size=37,
            out_hidden_size=32,
            window_size=56,
            fullatt_block_indexes=[1],
        )
        cfg_cls, model_cls = Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration
    else:
        raise ValueError(kind)
    config = cfg_cls(
        text_config=text,
        vision_config=vision,
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )
    torch.manual_seed(seed)
    model = model_cls(config).eval()
    folder = Path(folder)
    model.save_pretrained(folder)
    image_processor = Qwen2VLImageProcessor(min_pixels=QWEN_PIXELS, max_pixels=QWEN_PIXELS)
    video_processor = Qwen2VLVideoProcessor(min_pixels=QWEN_PIXELS, max_pixels=QWEN_PIXELS)
    processor_cls = Qwen2VLProcessor if kind == "qwen2_vl" else Qwen2_5_VLProcessor
    processor = processor_cls(
        image_processor=image_processor,
        tokenizer=tok,
        video_processor=video_processor,
        chat_template=QWEN_CHAT_TEMPLATE,
    )
    processor.save_pretrained(folder)
    # Smoke-check that the folder reloads offline.
    AutoProcessor.from_pretrained(folder)
    return folder


# --------------------------------------------------------------------------------------
# Video-LLaVA (transformers layout) and its original (LanguageBind) layout
# --------------------------------------------------------------------------------------
VL_IMAGE = 16  # px; patch 4 -> 16 patches (+ CLS)


def _clip_vision(image_size: int = VL_IMAGE) -> dict:
    return {
        "model_type": "clip_vision_model",
        "hidden_size": 32,
        "intermediate_size": 37,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "image_size": image_size,
        "patch_size": 4,
        "projection_dim": 32,
        "initializer_range": 0.3,
        "initializer_factor": 3.0,
    }


def _llama_text(vocab_size: int, **extra) -> dict:
    return {
        "model_type": "llama",
        "hidden_size": 32,
        "intermediate_size": 37,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 4,
        "vocab_size": vocab_size,
        "max_position_embeddings": 2048,
        "initializer_range": 0.3,
        **extra,
    }


def video_llava_tokenizer():
    return word_tokenizer(
        ["<s>", "</s>", "<image>", "<video>", "<pad>"],
        bos="<s>",
        eos="</s>",
        pad="<pad>",
        extra_words=("USER", "ASSISTANT"),
    )


def _clip_processor(size: int):
    from transformers import CLIPImageProcessor

    return CLIPImageProcessor(
        size={"shortest_edge": size},
        crop_size={"height": size, "width": size},
        do_center_crop=True,
    )


def build_video_llava(folder: Path, seed: int = 0):
    """Write a tiny VideoLlavaForConditionalGeneration + VideoLlavaProcessor; returns the model."""
    from transformers import (
        VideoLlavaConfig,
        VideoLlavaForConditionalGeneration,
        VideoLlavaImageProcessor,
        VideoLlavaProcessor,
    )
    from transformers.models.video_llava.video_processing_video_llava import (
        VideoLlavaVideoProcessor,
    )

    tok = video_llava_tokenizer()
    tok.add_bos_token = True
    config = VideoLlavaConfig(
        vision_config=_clip_vision(),
        text_config=_llama_text(
            len(tok),
            bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
        ),
        image_token_index=tok.convert_tokens_to_ids("<image>"),
        video_token_index=tok.convert_tokens_to_ids("<video>"),
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        image_seq_length=(VL_IMAGE // 4) ** 2,
        video_seq_length=8 * ((VL_IMAGE // 4) ** 2 + 1),
    )
    torch.manual_seed(seed)
    model = VideoLlavaForConditionalGeneration(config).eval()
    folder = Path(folder)
    model.save_pretrained(folder)
    crop = {"height": VL_IMAGE, "width": VL_IMAGE}
    processor = VideoLlavaProcessor(
        image_processor=VideoLlavaImageProcessor(size={"shortest_edge": VL_IMAGE}, crop_size=crop),
        video_processor=VideoLlavaVideoProcessor(size={"shortest_edge": VL_IMAGE}, crop_size=crop),
        tokenizer=tok,
        patch_size=4,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
    )
    processor.save_pretrained(folder)
    return model


def _save_state(folder: Path, state: dict[str, torch.Tensor], fmt: str) -> None:
    state = {k: v.detach().clone().contiguous() for k, v in state.items()}
    if fmt == "bin":
        torch.save(state, folder / "pytorch_model.bin")
    else:
        from safetensors.torch import save_file

        save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})


def _llama_fields(text) -> dict:
    return {
        "architectures": ["LlavaLlamaForCausalLM"],
        "model_type": "llava",
        "hidden_size": text.hidden_size,
        "intermediate_size": text.intermediate_size,
        "num_hidden_layers": text.num_hidden_layers,
        "num_attention_heads": text.num_attention_heads,
        "num_key_value_heads": text.num_key_value_heads,
        "max_position_embeddings": text.max_position_embeddings,
        "rms_norm_eps": text.rms_norm_eps,
        "hidden_act": "silu",
        "rope_theta": text.rope_parameters["rope_theta"],
        "torch_dtype": "float32",
        "use_cache": True,
        "tie_word_embeddings": False,
    }


def _inverse_llava_key(key: str) -> str:
    if key.startswith("model.multi_modal_projector.linear_1."):
        return "model.mm_projector.0." + key.rsplit(".", 1)[1]
    if key.startswith("model.multi_modal_projector.linear_2."):
        return "model.mm_projector.2." + key.rsplit(".", 1)[1]
    if key.startswith("model.language_model."):
        return "model." + key[len("model.language_model.") :]
    if key.startswith("lm_head."):
        return key
    raise KeyError(key)


def _save_cut_tokenizer(tokenizer, folder: Path, keep: int) -> None:
    """Save a tokenizer holding only ids < keep (the original LLaMA tokenizer's view)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for t, i in tokenizer.get_vocab().items() if i < keep}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        padding_side="right",
    )
    fast.add_special_tokens({"additional_special_tokens": ["<s>", "</s>"]})
    fast.save_pretrained(folder)


# --------------------------------------------------------------------------------------
# VLM-RLAIF: LLaVA repository layout (LlavaLlamaForCausalLM + CLIP tower folder)
# --------------------------------------------------------------------------------------
RLAIF_IMAGE = 16


def rlaif_tokenizer():
    # "<image>" and "<pad>" are the last two ids: the original tokenizer stops before them.
    return word_tokenizer(
        ["<s>", "</s>"],
        bos="<s>",
        eos="</s>",
        extra_words=("USER", "ASSISTANT", "<image>", "<pad>"),
    )


def build_native_rlaif(seed: int = 0):
    """A tiny transformers LlavaForConditionalGeneration with LLaVA-1.5 settings; returns (model, tok)."""
    from transformers import LlavaConfig, LlavaForConditionalGeneration

    tok = rlaif_tokenizer()
    tok.add_special_tokens({"pad_token": "<pad>", "additional_special_tokens": ["<image>"]})
    config = LlavaConfig(
        vision_config=_clip_vision(RLAIF_IMAGE),
        text_config=_llama_text(
            len(tok),
            bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
        ),
        image_token_index=tok.convert_tokens_to_ids("<image>"),
        image_seq_length=(RLAIF_IMAGE // 4) ** 2,
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
    )
    torch.manual_seed(seed)
    return LlavaForConditionalGeneration(config).eval(), tok


def write_original_rlaif(
    model, tokenizer, folder: Path, *, tower_in_checkpoint: bool = False, fmt: str = "bin"
) -> Path:
    """Write a native tiny LLaVA in the VLM-RLAIF / LLaVA repository layout.

    The CLIP tower goes to ``folder/clip`` (named by ``mm_vision_tower``), or into
    the checkpoint as ``model.vision_tower.vision_tower.vision_model.*``.
    """
    from transformers import CLIPVisionConfig, CLIPVisionModel

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    keep = len(tokenizer) - 2  # drop <image>, <pad>
    assert tokenizer.convert_tokens_to_ids("<image>") >= keep
    state, tower = {}, {}
    for key, value in model.state_dict().items():
        if key.startswith("model.vision_tower."):
            tower[key[len("model.vision_tower.") :]] = value
            continue
        new = _inverse_llava_key(key)
        if new.endswith(("embed_tokens.weight", "lm_head.weight")):
            value = value[:keep]
        state[new] = value
    clip_dir = folder / "clip"
    clip_config = CLIPVisionConfig(**_clip_vision(RLAIF_IMAGE))
    if tower_in_checkpoint:
        for key, value in tower.items():
            state["model.vision_tower.vision_tower.vision_model." + key] = value
        clip_config.save_pretrained(clip_dir)
    else:
        clip = CLIPVisionModel(clip_config).eval()
        result = clip.load_state_dict(tower, strict=False)
        assert not result.unexpected_keys and not result.missing_keys, result
        clip.save_pretrained(clip_dir)
    _clip_processor(RLAIF_IMAGE).save_pretrained(clip_dir)
    _save_state(folder, state, fmt)
    cfg = _llama_fields(model.config.text_config)
    cfg.update(
        vocab_size=keep,
        mm_vision_tower=str(clip_dir),
        mm_hidden_size=model.config.vision_config.hidden_size,
        mm_projector_type="mlp2x_gelu",
        mm_vision_select_layer=-2,
        mm_vision_select_feature="patch",
        mm_use_im_start_end=False,
        mm_use_im_patch_token=False,
        image_aspect_ratio="pad",
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=0,
    )
    (folder / "config.json").write_text(json.dumps(cfg, indent=1))
    _save_cut_tokenizer(tokenizer, folder, keep)
    return folder


# --------------------------------------------------------------------------------------
# Media
# --------------------------------------------------------------------------------------
def write_image(path: Path, size: tuple[int, int] = (56, 56), seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 255, size=(size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(arr).save(path)
    return Path(path)


def write_video(path: Path, frames: int = 10, size: int = 64, seed: int = 0) -> Path:
    """An mpeg4 / yuv420p video of random-ish coloured frames."""
    import av

    rng = np.random.default_rng(seed)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("mpeg4", rate=5)
        stream.width = size
        stream.height = size
        stream.pix_fmt = "yuv420p"
        for i in range(frames):
            base = rng.integers(0, 255, size=(size // 8, size // 8, 3), dtype=np.uint8)
            arr = np.kron(base, np.ones((8, 8, 1), dtype=np.uint8))
            arr[:, : (i + 1) * size // frames] = 255 - arr[:, : (i + 1) * size // frames]
            frame = av.VideoFrame.from_ndarray(arr, format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return Path(path)

"""Model names -> where the weights are, which adapter loads them, and how they are prompted.

``harness run --model NAME`` looks the name up here; ``--model-path`` points
the same entry at local weights. Adapters are named by import path so that
importing the registry never imports torch-heavy family code.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any

from harness.errors import HarnessError

# adapter name -> "module:function"; the function is
# load(entry: ModelEntry, path: Path, *, device: str, dtype: torch.dtype) -> HFAdapter
ADAPTERS = {
    "llava": "harness.models.llava:load",
    "llava_original": "harness.models.llava:load_original",
    "vila": "harness.models.vila:load",
    "qwen_vl": "harness.models.qwen_vl:load",
    "video_llava": "harness.models.video_llava:load",
    "video_llava_original": "harness.models.video_llava:load_original",
}

BUILTIN = "builtin:"


@dataclass(frozen=True)
class ModelEntry:
    name: str
    adapter: str
    source: str = field(metadata={"help": "hub repo id, local folder, or builtin:NAME"})
    family: str = field(metadata={"help": "key of task prompt_variants"})
    template: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    description: str = ""


def _llava(name: str, source: str, desc: str, **options: Any) -> ModelEntry:
    return ModelEntry(name, "llava", source, "llava", "vicuna_v1", options, desc)


def _orig(name: str, source: str, desc: str, **options: Any) -> ModelEntry:
    options.setdefault("vision_tower", "openai/clip-vit-large-patch14-336")
    return ModelEntry(name, "llava_original", source, "llava", "vicuna_v1", options, desc)


ENTRIES: list[ModelEntry] = [
    ModelEntry(
        "toy-llava",
        "llava",
        BUILTIN + "toy-llava",
        "llava",
        "llava_hf",
        {
            "image_aspect": "pad",
            "num_frames": 4,
            # hooks (inside harness.tasks) giving the model's own calibration data
            "calibration_texts": "toy.training.calibration_texts",
            "calibration_images": "toy.training.calibration_images",
        },
        "LLaVA-architecture model trained by `harness train` on the synthetic world (ships in the repo)",
    ),
    _llava(
        "llava-1.5-7b",
        "llava-hf/llava-1.5-7b-hf",
        "LLaVA-1.5 7B (llava-hf conversion)",
        image_aspect="pad",
    ),
    _llava(
        "llava-1.5-13b",
        "llava-hf/llava-1.5-13b-hf",
        "LLaVA-1.5 13B (llava-hf conversion)",
        image_aspect="pad",
    ),
    _orig(
        "llava-v1.5-7b-original",
        "liuhaotian/llava-v1.5-7b",
        "LLaVA-1.5 7B in the original repository layout (converted at load)",
    ),
    _orig(
        "llava-v1.5-13b-original",
        "liuhaotian/llava-v1.5-13b",
        "LLaVA-1.5 13B in the original repository layout (converted at load)",
    ),
    _orig(
        "quilt-llava-7b",
        "wisdomik/Quilt-Llava-v1.5-7b",
        "Quilt-LLaVA 7B (histopathology; original LLaVA layout)",
    ),
    _orig(
        "dynamic-llava-7b",
        "osilly/Dynamic-LLaVA-7B",
        "Dynamic-LLaVA 7B base weights (original LLaVA layout; sparsification not applied)",
    ),
    _orig(
        "dynamic-llava-13b",
        "osilly/Dynamic-LLaVA-13B",
        "Dynamic-LLaVA 13B base weights (original LLaVA layout; sparsification not applied)",
    ),
    ModelEntry(
        "vila-7b",
        "vila",
        "Efficient-Large-Model/VILA1.5-7b",
        "llava",
        "vicuna_v1",
        {},
        "VILA1.5 7B (llm/ + vision_tower/ + mm_projector/ assembled, no remote code)",
    ),
    ModelEntry(
        "vila-13b",
        "vila",
        "Efficient-Large-Model/VILA1.5-13b",
        "llava",
        "vicuna_v1",
        {},
        "VILA1.5 13B",
    ),
    ModelEntry(
        "qwen2-vl-2b",
        "qwen_vl",
        "Qwen/Qwen2-VL-2B-Instruct",
        "qwen",
        None,
        {},
        "Qwen2-VL 2B Instruct",
    ),
    ModelEntry(
        "qwen2-vl-7b",
        "qwen_vl",
        "Qwen/Qwen2-VL-7B-Instruct",
        "qwen",
        None,
        {},
        "Qwen2-VL 7B Instruct",
    ),
    ModelEntry(
        "qwen2.5-vl-3b",
        "qwen_vl",
        "Qwen/Qwen2.5-VL-3B-Instruct",
        "qwen",
        None,
        {},
        "Qwen2.5-VL 3B Instruct",
    ),
    ModelEntry(
        "qwen2.5-vl-7b",
        "qwen_vl",
        "Qwen/Qwen2.5-VL-7B-Instruct",
        "qwen",
        None,
        {},
        "Qwen2.5-VL 7B Instruct",
    ),
    ModelEntry(
        "video-llava-7b",
        "video_llava",
        "LanguageBind/Video-LLaVA-7B-hf",
        "video_llava",
        "vicuna_v1",
        {"num_frames": 8},
        "Video-LLaVA 7B (llava-hf conversion)",
    ),
    ModelEntry(
        "vlm-rlaif-7b",
        "video_llava_original",
        "SNUMPR/vlm_rlaif_video_llava_7b",
        "llava",
        "vicuna_v1",
        {"num_frames": 50, "vision_tower": "openai/clip-vit-large-patch14-336"},
        "VLM-RLAIF 7B (LLaVA-1.5 layout + CLIP tower; 50 frames pooled over time and space, "
        "as its evaluation scripts do)",
    ),
]
REGISTRY: dict[str, ModelEntry] = {e.name: e for e in ENTRIES}


def get_entry(name: str) -> ModelEntry:
    try:
        return REGISTRY[name]
    except KeyError:
        raise HarnessError(
            f"--model {name}: unknown model; known: {', '.join(sorted(REGISTRY))} "
            "(or pass --model-path with --adapter for other checkpoints)"
        ) from None


def adapter_loader(adapter: str) -> Any:
    try:
        target = ADAPTERS[adapter]
    except KeyError:
        raise HarnessError(
            f"--adapter {adapter}: unknown adapter; known: {', '.join(sorted(ADAPTERS))}"
        ) from None
    module, _, func = target.partition(":")
    return getattr(importlib.import_module(module), func)

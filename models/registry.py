"""Model names -> where the weights are, which adapter loads them, and how they are prompted.

``harness run --model NAME`` looks the name up here; ``--model-path`` points
the same entry at local weights. Adapters are named by import path so that
importing the registry never imports torch-heavy family code.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any

from harness.api.profile import EvalProfile
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
    # how the authors evaluated it (harness.models.profiles); None: the adapter's default
    profile: EvalProfile | None = None

    @property
    def eval_profile(self) -> EvalProfile:
        """The entry's profile, or its adapter's default one built from ``template``."""
        if self.profile is not None:
            return self.profile
        from harness.models.profiles import default_profile

        return default_profile(self)


def _profile(name: str) -> EvalProfile:
    from harness.models.profiles import get_profile

    return get_profile(name)


def _entry(
    name: str,
    adapter: str,
    source: str,
    profile: str,
    desc: str,
    family: str = "llava",
    **options: Any,
) -> ModelEntry:
    prof = _profile(profile)
    template = str(prof.template.settings["template"])
    return ModelEntry(name, adapter, source, family, template, options, desc, prof)


ENTRIES: list[ModelEntry] = [
    _entry(
        "toy-llava",
        "llava",
        BUILTIN + "toy-llava",
        "toy-llava",
        "LLaVA-architecture model trained by `harness train` on the synthetic world (ships in the repo)",
        image_aspect="pad",
        num_frames=4,
        # hooks (inside harness.tasks) giving the model's own calibration data
        calibration_texts="toy.training.calibration_texts",
        calibration_images="toy.training.calibration_images",
    ),
    _entry(
        "llava-1.5-7b",
        "llava",
        "llava-hf/llava-1.5-7b-hf",
        "llava-1.5",
        "LLaVA-1.5 7B (llava-hf conversion), evaluated as scripts/v1_5/eval does",
    ),
    _entry(
        "llava-1.5-13b",
        "llava",
        "llava-hf/llava-1.5-13b-hf",
        "llava-1.5",
        "LLaVA-1.5 13B (llava-hf conversion)",
    ),
    _entry(
        "llava-v1.5-7b-original",
        "llava_original",
        "liuhaotian/llava-v1.5-7b",
        "llava-1.5-original",
        "LLaVA-1.5 7B in the original repository layout (converted at load)",
    ),
    _entry(
        "llava-v1.5-13b-original",
        "llava_original",
        "liuhaotian/llava-v1.5-13b",
        "llava-1.5-original",
        "LLaVA-1.5 13B in the original repository layout (converted at load)",
    ),
    _entry(
        "quilt-llava-7b",
        "llava_original",
        "wisdomik/Quilt-Llava-v1.5-7b",
        "quilt-llava",
        "Quilt-LLaVA 7B (histopathology; original LLaVA layout, its own QuiltNet-B-32 tower "
        "from the checkpoint config)",
    ),
    _entry(
        "dynamic-llava-7b",
        "llava_original",
        "osilly/Dynamic-LLaVA-7B",
        "dynamic-llava",
        "Dynamic-LLaVA 7B base weights (original LLaVA layout; sparsification not applied)",
    ),
    _entry(
        "dynamic-llava-13b",
        "llava_original",
        "osilly/Dynamic-LLaVA-13B",
        "dynamic-llava",
        "Dynamic-LLaVA 13B base weights (original LLaVA layout; sparsification not applied)",
    ),
    _entry(
        "vila-7b",
        "vila",
        "Efficient-Large-Model/VILA-7b",
        "vila",
        "VILA-7B, the published model (one LLaVA-layout folder, CLIP-L/336, mlp2x_gelu)",
    ),
    _entry(
        "vila-13b",
        "vila",
        "Efficient-Large-Model/VILA-13b",
        "vila",
        "VILA-13B, the published model (one LLaVA-layout folder)",
    ),
    _entry(
        "vila1.5-3b",
        "vila",
        "Efficient-Large-Model/VILA1.5-3b",
        "vila1.5",
        "VILA1.5 3B (llm/ + vision_tower/ + mm_projector/ assembled, no remote code)",
    ),
    _entry(
        "llama-3-vila1.5-8b",
        "vila",
        "Efficient-Large-Model/Llama-3-VILA1.5-8b",
        "vila1.5-llama-3",
        "VILA1.5 8B on Llama-3 (conv mode llama_3)",
    ),
    _entry(
        "vila1.5-13b",
        "vila",
        "Efficient-Large-Model/VILA1.5-13b",
        "vila1.5",
        "VILA1.5 13B",
    ),
    _entry(
        "vila1.5-40b",
        "vila",
        "Efficient-Large-Model/VILA1.5-40b",
        "vila1.5-hermes-2",
        "VILA1.5 40B (conv mode hermes-2; its InternViT-6B tower needs remote code: "
        "`harness prompts` only)",
    ),
    _entry(
        "qwen2-vl-2b",
        "qwen_vl",
        "Qwen/Qwen2-VL-2B-Instruct",
        "qwen2-vl",
        "Qwen2-VL 2B Instruct",
        "qwen",
    ),
    _entry(
        "qwen2-vl-7b",
        "qwen_vl",
        "Qwen/Qwen2-VL-7B-Instruct",
        "qwen2-vl",
        "Qwen2-VL 7B Instruct",
        "qwen",
    ),
    _entry(
        "qwen2.5-vl-3b",
        "qwen_vl",
        "Qwen/Qwen2.5-VL-3B-Instruct",
        "qwen2.5-vl",
        "Qwen2.5-VL 3B Instruct",
        "qwen",
    ),
    _entry(
        "qwen2.5-vl-7b",
        "qwen_vl",
        "Qwen/Qwen2.5-VL-7B-Instruct",
        "qwen2.5-vl",
        "Qwen2.5-VL 7B Instruct",
        "qwen",
    ),
    _entry(
        "video-llava-7b",
        "video_llava",
        "LanguageBind/Video-LLaVA-7B-hf",
        "video-llava",
        "Video-LLaVA 7B (llava-hf conversion)",
        "video_llava",
    ),
    _entry(
        "vlm-rlaif-7b",
        "video_llava_original",
        "SNUMPR/vlm_rlaif_video_llava_7b",
        "vlm-rlaif",
        "VLM-RLAIF 7B (LLaVA-1.5 layout + CLIP tower; 50 frames pooled over time and space, "
        "as its evaluation scripts do)",
        "video_llava",
        vision_tower="openai/clip-vit-large-patch14-336",
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

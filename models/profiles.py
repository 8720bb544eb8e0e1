"""Every family's eval profile, read from the authors' evaluation code (sources inline).

Each :class:`~harness.api.profile.Aspect` names the official file and function
it transcribes, at the commit that was read:

- haotian-liu/LLaVA: ``ce1aa08`` (2023-10-11, "Release evaluation scripts": the
  code behind LLaVA-1.5's published numbers) and ``c121f04`` (HEAD);
- NVlabs/VILA: ``1c09a93`` (VILA-7b/13b era) and ``6b941da`` (vila1.5 branch);
- PKU-YuanGroup/Video-LLaVA ``984e65b``; yonseivnl/vlm-rlaif ``610cac7``;
- aldraus/quilt-llava ``a7a9a4c``; Osilly/dynamic_llava ``e1469bc``;
- QwenLM/Qwen2-VL ``35ba6e1``, QwenLM/Qwen2.5-VL ``f0af299``;
- mbzuai-oryx/Video-ChatGPT ``659e04b`` (the VCG judge scripts).

``docs/fidelity.md`` is rendered from these profiles (``harness models
--fidelity``; a test keeps the file in sync), and tests/test_prompt_golden.py
pins the prompt strings they produce.
"""

from __future__ import annotations

from harness.api.profile import Aspect, EvalProfile
from harness.errors import HarnessError

LLAVA = "haotian-liu/LLaVA@ce1aa08"
VILA10 = "NVlabs/VILA@1c09a93"
VILA15 = "NVlabs/VILA@6b941da"
VIDEO_LLAVA = "PKU-YuanGroup/Video-LLaVA@984e65b"
RLAIF = "yonseivnl/vlm-rlaif@610cac7"
QUILT = "aldraus/quilt-llava@a7a9a4c"
DYNAMIC = "Osilly/dynamic_llava@e1469bc"
QWEN2 = "QwenLM/Qwen2-VL@35ba6e1"
QWEN25 = "QwenLM/Qwen2.5-VL@f0af299"
VCG = "mbzuai-oryx/Video-ChatGPT@659e04b"

# -- shared pieces ------------------------------------------------------------------------
PAD_CLIP_336 = {
    "aspect": "pad",
    "fill": "tuple(int(m * 255) for m in image_mean) = (122, 116, 104)",
    "resize": "shortest edge 336, bicubic (CLIPImageProcessor)",
    "crop": "centre 336",
    "normalize": "CLIP mean/std",
}
CROP_CLIP_336 = {
    "aspect": "processor",
    "resize": "shortest edge 336, bicubic (CLIPImageProcessor)",
    "crop": "centre 336",
    "normalize": "CLIP mean/std",
}
FRAMES_AS_IMAGES = {
    "placeholder": "frames",
    "num_frames": 8,
    "sampling": "linspace(0, n-1, num_frames), int-truncated",
}
LLAVA_POST = Aspect(
    {"strip": True, "skip_special_tokens": True},
    f"{LLAVA} llava/eval/model_vqa_loader.py:eval_model (decode new tokens, skip special "
    "tokens, strip; a trailing '</s>' stop string removed)",
)


def _template(name: str, source: str, *, chunks: bool = True, **extra: object) -> Aspect:
    settings: dict[str, object] = {"template": name, "image_token": "<image>"}
    if chunks:
        settings["tokenization"] = "chunks"  # tokenizer_image_token: text around <image> apart
    settings.update(extra)
    return Aspect(settings, source)


def _llava15(name: str, aspect: str, org: str = LLAVA, extra_note: str = "") -> EvalProfile:
    """LLaVA-1.5's protocol (also Dynamic-LLaVA's: its eval scripts are LLaVA's, byte for byte)."""
    image = dict(PAD_CLIP_336)
    if aspect == "checkpoint":
        image["aspect"] = "checkpoint"  # process_images reads model_cfg.image_aspect_ratio (pad)
    return EvalProfile(
        name=name,
        template=_template(
            "vicuna_v1",
            f"{org} scripts/v1_5/eval/*.sh (--conv-mode vicuna_v1); "
            f"{LLAVA} llava/conversation.py:conv_vicuna_v1; llava/mm_utils.py:tokenizer_image_token",
        ),
        image=Aspect(
            image,
            f"{LLAVA} llava/mm_utils.py:process_images, expand2square; "
            "llava/eval/model_vqa_loader.py:CustomDataset.__getitem__",
        ),
        task_image={
            "scienceqa": Aspect(
                dict(CROP_CLIP_336),
                f"{LLAVA} llava/eval/model_vqa_science.py:eval_model "
                "(image_processor.preprocess: no padding at the v1.5 release; HEAD pads)",
            )
        },
        video=Aspect(
            dict(FRAMES_AS_IMAGES),
            "harness (LLaVA-1.5's authors did not evaluate on video)",
            "differs",
            "no official video protocol: num_frames frames, uniformly sampled, each an image",
        ),
        generation=Aspect(
            {},
            f"{org} scripts/v1_5/eval/*.sh (--temperature 0, no other flag); "
            f"{LLAVA} llava/eval/model_vqa_loader.py (max_new_tokens 128), model_vqa_science.py "
            "and model_vqa_mmbench.py (max_new_tokens=1024): the tasks' generation_kwargs",
            note=extra_note,
        ),
        postprocess=LLAVA_POST,
    )


def _vcg_judge(source: str) -> Aspect:
    """The Video-ChatGPT judge as its scripts call it: gpt-3.5-turbo, no temperature or
    max_tokens passed (the API defaults)."""
    return Aspect(
        {"model": "gpt-3.5-turbo", "temperature": "API default", "max_tokens": "API default"},
        source,
        "differs",
        "the harness judges at temperature 0 with max_tokens 128 so that cached "
        "judgements are reproducible (tasks/vcg/vcg.py)",
    )


# -- the profiles -------------------------------------------------------------------------
TOY_LLAVA = EvalProfile(
    name="toy-llava",
    template=_template(
        "llava_hf",
        "this repository: trainers/ trains toy-llava with this template (harness.models.chat)",
        chunks=False,
    ),
    image=Aspect(
        {"aspect": "pad", "fill": "mean colour, int-truncated", "resize": "processor"},
        "this repository: trainers/ (the same preprocessing as training)",
    ),
    video=Aspect({**FRAMES_AS_IMAGES, "num_frames": 4}, "this repository: registry options"),
    generation=Aspect({}, "the tasks' generation_kwargs (greedy)"),
    postprocess=Aspect({"strip": True, "skip_special_tokens": True}, "this repository"),
)

LLAVA_15_HF = _llava15("llava-1.5", "pad")
LLAVA_15_ORIGINAL = _llava15("llava-1.5-original", "checkpoint")
DYNAMIC_LLAVA = _llava15(
    "dynamic-llava",
    "checkpoint",
    org=DYNAMIC,
    extra_note="",
)

QUILT_LLAVA = EvalProfile(
    name="quilt-llava",
    template=_template(
        "vicuna_v1",
        f"{QUILT} scripts/v1_5/eval/quilt_vqa.sh, pvqa.sh ... (--conv-mode vicuna_v1); "
        "llava/conversation.py:conv_vicuna_v1",
    ),
    task_template={
        # README's GPT-assisted evaluation runs model_vqa.py without --conv-mode: its default
        "quilt": _template(
            "llava_v1",
            f"{QUILT} README.md (GPT-assisted evaluation command); "
            "llava/eval/model_vqa.py argparse (--conv-mode default llava_v1)",
        )
    },
    image=Aspect(
        {
            "aspect": "processor",
            "tower": "checkpoint's mm_vision_tower (wisdomik/QuiltNet-B-32, CLIP ViT-B/32)",
            "resize": "shortest edge 224, bicubic (the tower's CLIPImageProcessor)",
            "crop": "centre 224",
            "normalize": "CLIP mean/std",
        },
        f"{QUILT} llava/eval/model_vqa.py:eval_model (image_processor.preprocess, no padding "
        "although training used image_aspect_ratio pad); "
        "llava/model/multimodal_encoder/clip_encoder.py:CLIPVisionTower.load_model",
    ),
    generation=Aspect(
        {},
        f"{QUILT} scripts/v1_5/eval/*.sh (--temperature 0: greedy)",
    ),
    task_generation={
        "quilt": Aspect(
            {"temperature": 0.2, "do_sample": True, "max_new_tokens": 1024, "seed": 0},
            f"{QUILT} README.md (GPT-assisted evaluation command: defaults) + "
            "llava/eval/model_vqa.py (--temperature default 0.2, max_new_tokens=1024)",
            note="the seed is the harness's (the official run was not seeded)",
        )
    },
    postprocess=Aspect(
        {"strip": True, "skip_special_tokens": True},
        f"{QUILT} llava/eval/model_vqa.py:eval_model (strip, drop a trailing '</s>', strip)",
    ),
    judge={
        "quilt": Aspect(
            {"model": "gpt-4", "temperature": 0.2, "max_tokens": 1024},
            f"{QUILT} llava/eval/quilt_gpt_eval.py:get_eval (engine 'gpt4', comment "
            "'gpt-4-0314'; temperature=0.2; --max-tokens 1024) and its rule text ``pt``",
            note="the script's content f-string uses an undefined box_str; the harness leaves "
            "it out (the boxes are inside the caption text)",
        )
    },
)


def _vila(name: str, template: str, source: str, image: dict[str, object]) -> EvalProfile:
    return EvalProfile(
        name=name,
        template=_template(template, source),
        image=Aspect(
            image,
            f"{VILA15 if 'resize' in str(image.get('aspect')) else VILA10} "
            "llava/mm_utils.py:process_images (image_aspect_ratio from the checkpoint)",
        ),
        task_image={
            "scienceqa": Aspect(
                {**image, "aspect": "processor"},
                f"{VILA10} llava/eval/model_vqa_science.py:eval_model "
                "(image_processor.preprocess without padding)",
            )
        },
        video=Aspect(
            dict(FRAMES_AS_IMAGES),
            "harness",
            "unverified",
            "VILA's video evaluation was not read; frames are given as images",
        ),
        generation=Aspect(
            {},
            f"{VILA10} / {VILA15} scripts/v1_5/eval/*.sh (--temperature 0); "
            "llava/eval/model_vqa_loader.py (max_new_tokens 128; science/mmbench 1024)",
        ),
        postprocess=LLAVA_POST,
    )


VILA_V1 = _vila(
    "vila",
    "vicuna_v1",
    f"{VILA10} scripts/v1_5/eval/*.sh (--conv-mode vicuna_v1, hard-coded)",
    {**PAD_CLIP_336, "aspect": "checkpoint"},
)
VILA15_RESIZE = {
    "aspect": "checkpoint",
    "checkpoint_value": "resize: image.resize((s, s)) (PIL default, bicubic), then the "
    "tower's processor",
}
VILA15_VICUNA = _vila(
    "vila1.5",
    "vicuna_v1",
    f"{VILA15} README.md, llava/conversation.py CONVERSATION_MODE_MAPPING (NVILA release: "
    "vila1.5-3b/13b -> vicuna_v1)",
    VILA15_RESIZE,
)
VILA15_LLAMA3 = _vila(
    "vila1.5-llama-3",
    "llama_3",
    f"{VILA15} README.md (Llama-3-VILA1.5-8b --conv-mode llama_3); "
    "CONVERSATION_MODE_MAPPING vila1.5-8b -> llama_3",
    VILA15_RESIZE,
)
VILA15_HERMES = _vila(
    "vila1.5-hermes-2",
    "hermes_2",
    f"{VILA15} README.md (VILA1.5-40b --conv-mode hermes-2); "
    "CONVERSATION_MODE_MAPPING vila1.5-40b -> hermes-2",
    {**VILA15_RESIZE, "tower": "OpenGVLab/InternViT-6B-448px-V1-2 (448 px)"},
)

VIDEO_LLAVA_HF = EvalProfile(
    name="video-llava",
    prompt_family="video_llava",
    template=Aspect(
        {"template": "llava_v1", "image_token": "<image>", "video_token": "<video>"},
        f"{VIDEO_LLAVA} videollava/eval/video/run_inference_video_qa.py:get_model_output "
        "(conv_mode llava_v1); videollava/conversation.py:conv_llava_v1",
        note="the official prompt holds 8 '<image>' tokens (one per frame) before '\\n'; the "
        "llava-hf conversion's '<video>' placeholder is expanded by its processor into the same "
        "frames' tokens",
    ),
    image=Aspect(
        {
            "aspect": "processor",
            "resize": "shortest edge 224, bicubic",
            "crop": "centre 224",
            "normalize": "CLIP mean/std",
        },
        f"{VIDEO_LLAVA} videollava/model/multimodal_encoder/languagebind/image/"
        "processing_image.py (ToTensor, Resize(224, BICUBIC), CenterCrop(224), Normalize)",
        "differs",
        "the llava-hf processor resizes the PIL image (bicubic, uint8); the official "
        "transform resizes the float tensor, whose antialiasing default changed across "
        "torchvision versions (the version behind the paper is not pinned), so it is not "
        "reproduced",
    ),
    video=Aspect(
        {
            "placeholder": "video",
            "num_frames": 8,
            "sampling": "np.linspace(0, n-1, 8, dtype=int)",
            "transform": "x/255, NormalizeVideo(CLIP mean/std), ShortSideScale(224) bilinear "
            "(align_corners=False), CenterCropVideo(224)",
        },
        f"{VIDEO_LLAVA} videollava/model/multimodal_encoder/languagebind/video/"
        "processing_video.py:get_video_transform, load_and_transform_video",
        "differs",
        "RandomHorizontalFlipVideo(p=0.5) of the official eval transform is left out: it "
        "mirrors each video at random, unseeded, which cannot be reproduced",
    ),
    generation=Aspect(
        {},
        f"{VIDEO_LLAVA} run_inference_video_qa.py:get_model_output (max_new_tokens=1024; "
        "do_sample=True with temperature=0.0 fails on its pinned transformers; greedy per the "
        "maintainers in issue #114)",
    ),
    postprocess=Aspect(
        {"strip": True, "skip_special_tokens": True, "stop": "</s>"},
        f"{VIDEO_LLAVA} run_inference_video_qa.py:get_model_output (strip, drop '</s>', strip)",
    ),
    judge={
        "vcg": _vcg_judge(
            f"{VIDEO_LLAVA} / {VCG} quantitative_evaluation/evaluate_benchmark_*.py:annotate"
        )
    },
)

VLM_RLAIF = EvalProfile(
    name="vlm-rlaif",
    template=_template(
        "llava_v0",
        f"{RLAIF} Evaluation/videochatgpt/infer_general.py (no --conv-mode: the model path "
        "matches neither llama-2, v1 nor mpt, so llava_v0); llava/conversation.py:conv_llava_v0",
    ),
    image=Aspect(
        dict(PAD_CLIP_336),
        f"{RLAIF} Evaluation/videochatgpt/infer_general.py (expand2square, CLIPImageProcessor)",
    ),
    video=Aspect(
        {
            "placeholder": "pooled",
            "num_frames": 50,
            "sampling": "np.linspace(0, n-1, 50, dtype=int)",
            "per_frame": "pad to square with the mean colour, CLIPImageProcessor (336)",
            "pooling": "T temporal tokens (mean over patches) + S spatial (mean over frames)",
        },
        f"{RLAIF} Evaluation/videochatgpt/infer_general.py; "
        "llava/model/llava_arch.py:get_spatio_temporal_features",
        note="the official scripts read pre-extracted frame folders (how they were extracted "
        "is not shipped); the harness samples the video file the same way",
    ),
    generation=Aspect(
        {
            "temperature": 0.2,
            "do_sample": True,
            "max_new_tokens": 512,
            "stop": ["###"],
            "seed": 0,
        },
        f"{RLAIF} Evaluation/videochatgpt/infer_general.py, infer_consistency.py, "
        "zeroshotqa/qa_infer.py (do_sample=True, temperature=0.2, max_new_tokens=512, "
        "KeywordsStoppingCriteria('###'))",
        note="the seed is the harness's (the official runs were not seeded)",
    ),
    postprocess=Aspect(
        {"strip": True, "skip_special_tokens": True, "stop": "###"},
        f"{RLAIF} Evaluation/videochatgpt/infer_general.py (tokenizer.decode(...).strip())",
        "differs",
        "the official decode keeps special tokens and the '###' that stopped generation; the "
        "harness cuts at '###' and skips special tokens",
    ),
    judge={
        "vcg": _vcg_judge(f"{RLAIF} Evaluation/videochatgpt/evaluate_benchmark_*.py (as {VCG})")
    },
)


def _qwen(name: str, repo: str) -> EvalProfile:
    return EvalProfile(
        name=name,
        prompt_family="qwen",
        template=Aspect(
            {
                "template": "qwen2_vl",
                "image_token": "<|vision_start|><|image_pad|><|vision_end|>",
                "video_token": "<|vision_start|><|video_pad|><|vision_end|>",
                "runtime": "the checkpoint's chat_template (checked against this at load)",
            },
            f"{repo} README.md (chat template 'Excepted output'); checkpoint chat_template.json",
            note="the question wording is the tasks' (LLaVA-1.5's suffixes); VLMEvalKit's "
            "per-benchmark Qwen2-VL prompts were not read",
        ),
        image=Aspect(
            {
                "aspect": "dynamic resolution (smart_resize to multiples of 28)",
                "min_pixels": 3136,
                "max_pixels": 12845056,
                "resize": "bicubic",
            },
            f"{repo} qwen-vl-utils/src/qwen_vl_utils/vision_process.py:smart_resize, "
            "fetch_image; checkpoint preprocessor_config.json",
        ),
        video=Aspect(
            {
                "placeholder": "video",
                "num_frames": 8,
                "sampling": "linspace(0, n-1, num_frames), int-truncated",
                "pixels": "qwen-vl-utils per-frame budget (video_pixel_cap)",
            },
            f"{repo} qwen-vl-utils/src/qwen_vl_utils/vision_process.py:fetch_video",
            "differs",
            "qwen-vl-utils samples at 2 fps (4 to 768 frames); the harness samples num_frames "
            "uniformly",
        ),
        generation=Aspect(
            {},
            f"{repo} README.md",
            "unverified",
            "the official repositories state no benchmark settings beyond 'we use VLMEvalKit'; "
            "the harness decodes greedily with the task's max_new_tokens",
        ),
        postprocess=Aspect(
            {"strip": True, "skip_special_tokens": True},
            f"{repo} README.md (batch_decode(skip_special_tokens=True))",
        ),
    )


QWEN2_VL = _qwen("qwen2-vl", QWEN2)
QWEN25_VL = _qwen("qwen2.5-vl", QWEN25)

PROFILES: dict[str, EvalProfile] = {
    p.name: p
    for p in (
        TOY_LLAVA,
        LLAVA_15_HF,
        LLAVA_15_ORIGINAL,
        QUILT_LLAVA,
        DYNAMIC_LLAVA,
        VILA_V1,
        VILA15_VICUNA,
        VILA15_LLAMA3,
        VILA15_HERMES,
        VIDEO_LLAVA_HF,
        VLM_RLAIF,
        QWEN2_VL,
        QWEN25_VL,
    )
}


def get_profile(name: str) -> EvalProfile:
    try:
        return PROFILES[name]
    except KeyError:
        raise HarnessError(
            f"unknown eval profile {name!r}; known: {', '.join(sorted(PROFILES))}"
        ) from None


def default_profile(entry: object) -> EvalProfile:
    """A profile for an ad-hoc entry (``--adapter`` without a registry profile): the
    adapter's family with the entry's template."""
    from dataclasses import replace

    adapter = getattr(entry, "adapter", "llava")
    base = {
        "llava": LLAVA_15_HF,
        "llava_original": LLAVA_15_ORIGINAL,
        "vila": VILA_V1,
        "qwen_vl": QWEN2_VL,
        "video_llava": VIDEO_LLAVA_HF,
        "video_llava_original": VLM_RLAIF,
    }.get(str(adapter), LLAVA_15_HF)
    template = getattr(entry, "template", None)
    if template and template != base.template.settings.get("template"):
        settings = {**base.template.settings, "template": template}
        base = replace(
            base,
            name=f"{base.name}+{template}",
            template=Aspect(settings, "registry entry template", "differs", "ad-hoc entry"),
        )
    return base

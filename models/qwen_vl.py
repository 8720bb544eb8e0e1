"""Qwen2-VL and Qwen2.5-VL through transformers' native classes.

The prompt is the checkpoint's own chat template (system turn, one user turn
holding the images / videos followed by the text, ``add_generation_prompt``).
Images go through the Qwen2-VL image processor (dynamic resolution bounded by
``min_pixels`` / ``max_pixels``); a video is ``num_frames`` frames sampled
uniformly with :func:`harness.media.sample_frames`, handed to the video
processor as one clip (with its sampled frame rate, which Qwen2.5-VL's
temporal position ids use).

Qwen2-VL computes 3-D (M-RoPE) position ids from ``mm_token_type_ids`` and
the attention mask, so left-padded batches give the same tokens as single
requests; the processor output always carries ``mm_token_type_ids`` (computed
here when a processor does not return it: Qwen2-VL raises without it and
Qwen2.5-VL silently falls back to 1-D positions).

Options (registry ``options``; ``--num-frames`` sets ``num_frames``): ``num_frames`` (default 8,
rounded to the temporal patch size by the processor), ``min_pixels``,
``max_pixels`` (images and video frames), ``video_pixel_cap`` (default true:
qwen-vl-utils' per-frame pixel budget for videos).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from harness.api.profile import EvalProfile
from harness.api.requests import Request
from harness.errors import DataFileError, HarnessError
from harness.media import frame_indices, is_video, load_image, sample_frames
from harness.models.hf_adapter import HFAdapter, fingerprint_files
from harness.models.prompting import num_frames as profile_frames
from harness.models.registry import ModelEntry

DEFAULT_FRAMES = 8

log = logging.getLogger(__name__)

MODEL_CLASSES = {
    "qwen2_vl": "Qwen2VLForConditionalGeneration",
    "qwen2_5_vl": "Qwen2_5_VLForConditionalGeneration",
}


def video_metadata(path: str | Path, n: int) -> Any:
    """``VideoMetadata`` for ``n`` uniformly sampled frames (None when the container has no rate)."""
    import av
    from transformers.video_utils import VideoMetadata

    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            total = stream.frames
            rate = float(stream.average_rate) if stream.average_rate else None
            if not total:
                total = sum(1 for p in container.demux(stream) if p.size and p.pts is not None)
    except (av.error.FFmpegError, OSError, ValueError, IndexError) as exc:
        raise DataFileError(f"cannot read video {path}: {exc}") from exc
    if not total or not rate:
        return None
    indices = frame_indices(total, n)
    return VideoMetadata(
        total_num_frames=total,
        fps=rate,
        duration=total / rate,
        frames_indices=indices,
        video_backend="pyav",
    )


def set_pixel_bounds(processor: Any, min_pixels: Any = None, max_pixels: Any = None) -> None:
    """Bound the pixels per image and per video frame (the processors' ``size`` edges)."""
    if min_pixels is None and max_pixels is None:
        return
    from transformers.image_utils import SizeDict

    for proc in (processor.image_processor, getattr(processor, "video_processor", None)):
        if proc is None:
            continue
        size = {k: v for k, v in dict(proc.size).items() if v is not None}
        if min_pixels is not None:
            size["shortest_edge"] = int(min_pixels)
        if max_pixels is not None:
            size["longest_edge"] = int(max_pixels)
        if size["shortest_edge"] > size["longest_edge"]:
            raise HarnessError(f"qwen_vl: min_pixels {min_pixels} > max_pixels {max_pixels}")
        proc.size = SizeDict(**size)


class QwenVLAdapter(HFAdapter):
    family = "qwen"

    def __init__(
        self,
        *args: Any,
        num_frames: int = DEFAULT_FRAMES,
        profile: EvalProfile | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.profile = profile
        self.num_frames = int(num_frames)
        tok = self.tokenizer
        config = self.model.config
        self.image_token_id = getattr(config, "image_token_id", None)
        self.video_token_id = getattr(config, "video_token_id", None)
        if getattr(tok, "padding_side", "left") != "left":
            tok.padding_side = "left"
        self.video_pixel_cap = bool(self.info.get("video_pixel_cap", True))

    # -- visuals -----------------------------------------------------------------
    def load_visuals(self, request: Request) -> list[tuple[str, Any, Any]]:
        items: list[tuple[str, Any, Any]] = []
        for visual in request.visuals:
            if is_video(visual):
                frames = sample_frames(visual, self.num_frames)
                items.append(("video", frames, video_metadata(visual, self.num_frames)))
            else:
                items.append(("image", load_image(visual), None))
        return items

    # -- prompts -----------------------------------------------------------------
    def messages(self, request: Request, visuals: Sequence[tuple[str, Any, Any]]) -> list[dict]:
        content: list[dict[str, str]] = [{"type": kind} for kind, _, _ in visuals]
        content.append({"type": "text", "text": request.prompt})
        return [{"role": "user", "content": content}]

    def prompt_text(self, request: Request, visuals: Sequence[tuple[str, Any, Any]]) -> str:
        messages = self.messages(request, visuals)
        if getattr(self.processor, "chat_template", None):
            return self.processor.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=True
            )
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=True
            )
        raise HarnessError(f"model {self.name}: the processor and tokenizer have no chat template")

    def check_template(self) -> str:
        """Whether the checkpoint's chat template renders what the eval profile says (the
        profile's copy is what ``harness prompts`` shows); ``matched`` or the difference."""
        from harness.api.requests import Request as _Request
        from harness.models.prompting import render_prompt

        if self.profile is None:
            return "no profile"
        probe = _Request("probe", "probe", "What is shown?", ("x.jpg", "y.mp4"))
        kinds = [("image", None, None), ("video", None, None)]
        ours = render_prompt(self.profile, probe, self.num_frames)
        theirs = self.prompt_text(probe, kinds)
        if ours == theirs:
            return "matched"
        log.warning(
            f"model {self.name}: the checkpoint's chat template renders {theirs!r}, the eval "
            f"profile {ours!r}; the checkpoint's is used"
        )
        return "differs from the profile (the checkpoint's is used)"

    def rendered_prompt(self, request: Request) -> str:
        kinds = [("video" if is_video(v) else "image", None, None) for v in request.visuals]
        return self.prompt_text(request, kinds)

    pass_position_ids = False  # Qwen2-VL computes its 3-D rope positions from the mask

    def encode(
        self,
        requests: Sequence[Request],
        visuals: Sequence[Any],
        continuations: Sequence[str] | None = None,
    ) -> dict[str, Any]:
        texts = [self.prompt_text(r, v) for r, v in zip(requests, visuals, strict=True)]
        if continuations is not None:
            texts = [t + c for t, c in zip(texts, continuations, strict=True)]
        images = [item for v in visuals for kind, item, _ in v if kind == "image"]
        videos = [item for v in visuals for kind, item, _ in v if kind == "video"]
        metas = [meta for v in visuals for kind, _, meta in v if kind == "video"]
        kwargs: dict[str, Any] = {"padding": True, "return_tensors": "pt"}
        if images:
            kwargs["images"] = images
        if videos:
            kwargs["videos"] = videos
            kwargs["do_sample_frames"] = False
            kwargs["cap_pixels_per_frame"] = self.video_pixel_cap
            if all(m is not None for m in metas):
                kwargs["video_metadata"] = metas
        self.tokenizer.padding_side = "left"
        enc = dict(self.processor(text=texts, **kwargs))
        enc.pop("video_metadata", None)
        ids = enc["input_ids"]
        if "mm_token_type_ids" not in enc:
            types = torch.zeros_like(ids)
            if self.image_token_id is not None:
                types[ids == self.image_token_id] = 1
            if self.video_token_id is not None:
                types[ids == self.video_token_id] = 2
            enc["mm_token_type_ids"] = types
        mask = enc["attention_mask"]
        if bool((mask[:, -1] == 0).any()):
            raise HarnessError(f"model {self.name}: the processor padded on the right")
        return enc


def load(entry: ModelEntry, path: Path, *, device: str, dtype: torch.dtype) -> QwenVLAdapter:
    import transformers
    from transformers import AutoConfig, AutoProcessor

    path = Path(path)
    options = dict(entry.options)
    config = AutoConfig.from_pretrained(path)
    class_name = MODEL_CLASSES.get(config.model_type)
    if class_name is None:
        raise HarnessError(
            f"model {entry.name}: {path} holds model_type {config.model_type!r}; "
            f"the qwen_vl adapter loads {', '.join(sorted(MODEL_CLASSES))}"
        )
    model = getattr(transformers, class_name).from_pretrained(path, dtype=dtype, device_map=device)
    processor = AutoProcessor.from_pretrained(path)
    processor.tokenizer.padding_side = "left"
    set_pixel_bounds(processor, options.get("min_pixels"), options.get("max_pixels"))
    num_frames = int(options.get("num_frames", profile_frames(entry.eval_profile)))
    image_size = processor.image_processor.size
    video_proc = getattr(processor, "video_processor", None)
    info = {
        "adapter": "qwen_vl",
        "model_type": config.model_type,
        "template": "chat_template",
        "min_pixels": image_size["shortest_edge"],
        "max_pixels": image_size["longest_edge"],
        "num_frames": num_frames,
        "frame_sampling": "linspace(0, n-1, num_frames), int-truncated",
        "video_pixel_cap": bool(options.get("video_pixel_cap", True)),
    }
    if video_proc is not None:
        info["video_min_pixels"] = video_proc.size["shortest_edge"]
        info["video_max_pixels"] = video_proc.size["longest_edge"]
    adapter = QwenVLAdapter(
        entry.name,
        model,
        processor,
        fingerprint=fingerprint_files(path),
        device=device,
        info=info,
        num_frames=num_frames,
        profile=entry.eval_profile,
    )
    adapter.info["template_check"] = adapter.check_template()
    return adapter

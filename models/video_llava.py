"""Video-LLaVA (transformers layout) and VLM-RLAIF (original LLaVA repository layout).

``load``: ``VideoLlavaForConditionalGeneration`` + ``VideoLlavaProcessor``
(llava-hf conversions such as ``LanguageBind/Video-LLaVA-7B-hf``). The prompt
is the registry template with one ``<video>`` (or ``<image>``) line per
visual; a video is ``num_frames`` (default 8) frames at
``linspace(0, n-1, num_frames)``, resized to short side 224, centre-cropped,
CLIP-normalised by the processor; frames are never flipped.

``load_original``: checkpoints saved by the LLaVA code base
(``LlavaLlamaForCausalLM``), converted to ``LlavaForConditionalGeneration``
in memory by :func:`harness.models.convert_llava.convert_original`. This is
what VLM-RLAIF (``SNUMPR/vlm_rlaif_video_llava_7b``) ships, despite its name:
its code (github.com/yonseivnl/vlm-rlaif, ``llava/model/llava_arch.py``) is
LLaVA ``6cea223`` with the CLIP tower named by ``mm_vision_tower``, not
Video-LLaVA's LanguageBind towers. A video is a stack of frames, each
processed like a LLaVA image (``image_aspect_ratio`` "pad": pad to square
with the mean colour, then the CLIP processor), encoded by the tower +
projector, then pooled Video-ChatGPT style (``get_spatio_temporal_features``):
T temporal tokens (mean over the patches of each frame) followed by S
spatial tokens (mean over the frames of each patch), spliced in at the
single ``<image>`` placeholder. VLM-RLAIF's evaluation scripts sample 50
frames (``--num_frames 50``); an image is one frame, not pooled.

Checkpoints in the original Video-LLaVA layout (``mm_image_tower`` /
``mm_video_tower``: LanguageBind towers) are refused with a pointer to the
``-hf`` conversion.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from harness.api.profile import EvalProfile
from harness.api.requests import Request
from harness.errors import HarnessError
from harness.media import is_video, load_image, sample_frames
from harness.models.chat import get_template
from harness.models.hf_adapter import HFAdapter, fingerprint_files
from harness.models.images import expand_to_square
from harness.models.prompting import num_frames as profile_frames
from harness.models.prompting import render_prompt
from harness.models.registry import ModelEntry

log = logging.getLogger(__name__)

DEFAULT_FRAMES = 8
IMAGE = "<image>"
VIDEO = "<video>"


def load_media(request: Request, num_frames: int) -> list[tuple[str, Any]]:
    """("video", [frames]) or ("image", PIL image) per visual; DataFileError when unreadable."""
    items: list[tuple[str, Any]] = []
    for visual in request.visuals:
        if is_video(visual):
            items.append(("video", sample_frames(visual, num_frames)))
        else:
            items.append(("image", load_image(visual)))
    return items


def video_transform(
    frames: Sequence[Any], mean: Sequence[float], std: Sequence[float], size: int = 224
) -> torch.Tensor:
    """Video-LLaVA's eval video transform, ``(T, 3, size, size)``.

    PKU-YuanGroup/Video-LLaVA@984e65b videollava/model/multimodal_encoder/languagebind/
    video/processing_video.py:get_video_transform: frames as a ``(C, T, H, W)`` float
    tensor, ``/ 255``, ``NormalizeVideo(mean, std)``, pytorchvideo ``ShortSideScale(size)``
    (the short side to ``size``, the long side ``floor(long / short * size)``,
    ``interpolate(mode="bilinear", align_corners=False)``), ``CenterCropVideo(size)``
    (offsets ``round((h - size) / 2)``). Its ``RandomHorizontalFlipVideo(p=0.5)`` is left
    out (unseeded random mirroring cannot be reproduced; see the eval profile).
    """
    import math

    import numpy as np

    arrays = [np.asarray(f.convert("RGB") if hasattr(f, "convert") else f) for f in frames]
    x = torch.from_numpy(np.stack(arrays)).permute(3, 0, 1, 2).float() / 255.0
    m = torch.tensor(list(mean), dtype=x.dtype)[:, None, None, None]
    s = torch.tensor(list(std), dtype=x.dtype)[:, None, None, None]
    x = (x - m) / s
    _, _, h, w = x.shape
    if w < h:
        new_h, new_w = int(math.floor((float(h) / w) * size)), size
    else:
        new_h, new_w = size, int(math.floor((float(w) / h) * size))
    x = torch.nn.functional.interpolate(
        x, size=(new_h, new_w), mode="bilinear", align_corners=False
    )
    i = int(round((new_h - size) / 2.0))
    j = int(round((new_w - size) / 2.0))
    x = x[..., i : i + size, j : j + size]
    return x.permute(1, 0, 2, 3).contiguous()


def _check_left_padded(enc: Mapping[str, Any], name: str) -> None:
    mask = enc["attention_mask"]
    if bool((mask[:, -1] == 0).any()):
        raise HarnessError(f"model {name}: the tokenizer padded on the right")


# --------------------------------------------------------------------------------------
# Video-LLaVA, transformers layout
# --------------------------------------------------------------------------------------
class VideoLlavaAdapter(HFAdapter):
    family = "video_llava"

    def __init__(
        self,
        *args: Any,
        template: str = "llava_v1",
        num_frames: int = DEFAULT_FRAMES,
        profile: EvalProfile | None = None,
        official_video_transform: bool = True,
        **kw: Any,
    ) -> None:
        super().__init__(*args, **kw)
        self.template = get_template(template)
        self.num_frames = int(num_frames)
        self.profile = profile
        # Video-LLaVA's own transform (bilinear short-side scale) instead of the processor's
        self.official_video_transform = official_video_transform
        self.tokenizer.padding_side = "left"

    def load_visuals(self, request: Request) -> list[tuple[str, Any]]:
        return load_media(request, self.num_frames)

    def prompt(self, request: Request, visuals: Sequence[tuple[str, Any]]) -> str:
        media = [VIDEO if kind == "video" else IMAGE for kind, _ in visuals]
        return self.template.prompt(request.prompt, media)

    def rendered_prompt(self, request: Request) -> str:
        if self.profile is not None:
            return render_prompt(self.profile, request, self.num_frames)
        kinds = [("video" if is_video(v) else "image", None) for v in request.visuals]
        return self.prompt(request, kinds)

    def video_pixels(self, videos: Sequence[Any]) -> torch.Tensor:
        """``(n_videos, T, 3, H, W)`` by Video-LLaVA's eval transform."""
        proc = self.processor.video_processor
        crop = dict(getattr(proc, "crop_size", None) or {}).get("height") or 224
        return torch.stack(
            [video_transform(v, proc.image_mean, proc.image_std, int(crop)) for v in videos]
        )

    def encode(
        self,
        requests: Sequence[Request],
        visuals: Sequence[Any],
        continuations: Sequence[str] | None = None,
    ) -> dict[str, Any]:
        texts = [self.prompt(r, v) for r, v in zip(requests, visuals, strict=True)]
        if continuations is not None:
            texts = [t + c for t, c in zip(texts, continuations, strict=True)]
        images = [item for v in visuals for kind, item in v if kind == "image"]
        videos = [item for v in visuals for kind, item in v if kind == "video"]
        kwargs: dict[str, Any] = {"padding": True, "return_tensors": "pt"}
        if images:
            kwargs["images"] = images
        if videos:
            kwargs["videos"] = videos
        self.tokenizer.padding_side = "left"
        enc = dict(self.processor(text=texts, **kwargs))
        if videos and self.official_video_transform:
            ours = self.video_pixels(videos)
            theirs = enc["pixel_values_videos"]
            if tuple(ours.shape) != tuple(theirs.shape):
                raise HarnessError(
                    f"model {self.name}: video pixels {tuple(ours.shape)} by Video-LLaVA's "
                    f"transform, {tuple(theirs.shape)} expected by the processor"
                )
            enc["pixel_values_videos"] = ours.to(theirs.dtype)
        _check_left_padded(enc, self.name)
        return enc


def load(entry: ModelEntry, path: Path, *, device: str, dtype: torch.dtype) -> VideoLlavaAdapter:
    from transformers import VideoLlavaForConditionalGeneration, VideoLlavaProcessor

    path = Path(path)
    config = _read_config(path)
    if config.get("model_type") != "video_llava":
        hint = (
            " (original layout: use --adapter video_llava_original)" if _is_original(config) else ""
        )
        raise HarnessError(
            f"model {entry.name}: {path}/config.json has model_type "
            f"{config.get('model_type')!r}, expected 'video_llava'{hint}"
        )
    model = VideoLlavaForConditionalGeneration.from_pretrained(path, dtype=dtype, device_map=device)
    processor = VideoLlavaProcessor.from_pretrained(path)
    processor.tokenizer.padding_side = "left"
    profile = entry.eval_profile
    num_frames = int(entry.options.get("num_frames", profile_frames(profile)))
    template = str(profile.template.settings["template"])
    info = {
        "adapter": "video_llava",
        "template": template,
        "num_frames": num_frames,
        "frame_sampling": "linspace(0, n-1, num_frames), int-truncated, no flips",
        "video_preprocess": "Video-LLaVA transform: /255, normalize, short side 224 "
        "bilinear, centre crop 224",
        "image_preprocess": _size_text(processor.image_processor),
    }
    return VideoLlavaAdapter(
        entry.name,
        model,
        processor,
        fingerprint=fingerprint_files(path),
        device=device,
        info=info,
        template=template,
        num_frames=num_frames,
        profile=profile,
    )


def _size_text(proc: Any) -> str:
    size = dict(getattr(proc, "size", None) or {})
    crop = dict(getattr(proc, "crop_size", None) or {})
    size = {k: v for k, v in size.items() if v is not None}
    crop = {k: v for k, v in crop.items() if v is not None}
    return f"{type(proc).__name__} size={size} crop={crop}"


# --------------------------------------------------------------------------------------
# Original LLaVA repository layout (VLM-RLAIF) -> LlavaForConditionalGeneration
# --------------------------------------------------------------------------------------
def _read_config(path: Path) -> dict[str, Any]:
    file = Path(path) / "config.json"
    try:
        return json.loads(file.read_text())
    except (OSError, ValueError) as exc:
        raise HarnessError(f"{file}: cannot read the model config: {exc}") from exc


def _is_original(config: Mapping[str, Any]) -> bool:
    return any(k in config for k in ("mm_vision_tower", "mm_image_tower", "mm_video_tower"))


class PooledVideoLlavaAdapter(HFAdapter):
    """VLM-RLAIF: LLaVA + Video-ChatGPT-style temporal / spatial mean-pooled video tokens."""

    family = "video_llava"

    def __init__(
        self,
        *args: Any,
        image_processor: Any,
        template: str = "llava_v0",
        num_frames: int = DEFAULT_FRAMES,
        pad_to_square: bool = True,
        profile: EvalProfile | None = None,
        **kw: Any,
    ) -> None:
        super().__init__(*args, **kw)
        self.image_processor = image_processor
        self.profile = profile
        self.template = get_template(template)
        self.num_frames = int(num_frames)
        self.pad_to_square = pad_to_square
        self.tokenizer.padding_side = "left"

    def load_visuals(self, request: Request) -> list[tuple[str, Any]]:
        return load_media(request, self.num_frames)

    def rendered_prompt(self, request: Request) -> str:
        if self.profile is not None:
            return render_prompt(self.profile, request, self.num_frames)
        return self.template.prompt(request.prompt, [IMAGE] * len(request.visuals))

    def pixel_values(self, frames: Sequence[Any]) -> torch.Tensor:
        if self.pad_to_square:
            frames = [expand_to_square(f, self.image_processor.image_mean) for f in frames]
        out = self.image_processor(images=list(frames), return_tensors="pt")
        return out["pixel_values"]

    def visual_tokens(self, kind: str, media: Any) -> torch.Tensor:
        """(tokens, hidden) embeddings for one image or one video."""
        frames = media if kind == "video" else [media]
        pixels = self.pixel_values(frames).to(self.device, self.model.dtype)
        cfg = self.model.config
        out = self.model.model.get_image_features(
            pixel_values=pixels,
            vision_feature_layer=cfg.vision_feature_layer,
            vision_feature_select_strategy=cfg.vision_feature_select_strategy,
        )
        feats = torch.stack(list(out.pooler_output))  # (T, S, D)
        if kind == "video":
            return pool_video_features(feats)
        return feats[0]

    def encode(
        self,
        requests: Sequence[Request],
        visuals: Sequence[Any],
        continuations: Sequence[str] | None = None,
    ) -> dict[str, Any]:
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        from harness.models.llava import left_pad

        tok = self.tokenizer
        image_id = tok.convert_tokens_to_ids(IMAGE)
        sequences: list[list[int]] = []
        features: list[torch.Tensor] = []
        tails = continuations if continuations is not None else [""] * len(requests)
        for request, media, tail in zip(requests, visuals, tails, strict=True):
            text = self.template.prompt(request.prompt, [IMAGE] * len(media)) + tail
            # tokenizer_image_token (llava/mm_utils.py): the text around each <image> is
            # tokenized apart, BOS on the first chunk only; the image's tokens go between
            head, *rest = text.split(IMAGE)
            ids = list(tok(head).input_ids)
            for (kind, item), chunk in zip(media, rest, strict=True):
                feats = self.visual_tokens(kind, item)
                features.append(feats)
                ids.extend([image_id] * feats.shape[0])
                if chunk:
                    ids.extend(tok(chunk, add_special_tokens=False).input_ids)
            sequences.append(ids)
        pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        enc: dict[str, Any] = left_pad(sequences, pad_id)
        if features:
            enc["mm_encoder_outputs"] = {
                "image": BaseModelOutputWithPooling(pooler_output=features)
            }
        return enc


def pool_video_features(feats: torch.Tensor) -> torch.Tensor:
    """(T, S, D) frame features -> (T + S, D): per-frame means, then per-patch means."""
    if feats.dim() != 3:
        raise ValueError(f"expected (frames, patches, hidden) features, got {tuple(feats.shape)}")
    return torch.cat([feats.mean(dim=1), feats.mean(dim=0)], dim=0)


def load_original(
    entry: ModelEntry, path: Path, *, device: str, dtype: torch.dtype
) -> PooledVideoLlavaAdapter:
    from harness.models.convert_llava import convert_original

    path = Path(path)
    config = _read_config(path)
    if "mm_image_tower" in config or "mm_video_tower" in config:
        raise HarnessError(
            f"model {entry.name}: {path} is in the original Video-LLaVA layout (LanguageBind "
            "image/video towers), which is not converted here; use the transformers conversion "
            "LanguageBind/Video-LLaVA-7B-hf with --adapter video_llava"
        )
    if config.get("mm_use_im_start_end"):
        raise HarnessError(f"model {entry.name}: mm_use_im_start_end checkpoints are not supported")
    converted = convert_original(
        path, vision_tower=entry.options.get("vision_tower"), device=device, dtype=dtype
    )
    processor = converted.processor
    profile = entry.eval_profile
    num_frames = int(entry.options.get("num_frames", profile_frames(profile)))
    template = str(profile.template.settings["template"])
    aspect = entry.options.get("image_aspect", config.get("image_aspect_ratio") or "square")
    info = {
        **converted.info,
        "adapter": "video_llava_original",
        "template": template,
        "num_frames": num_frames,
        "frame_sampling": "linspace(0, n-1, num_frames), int-truncated",
        "video_tokens": "temporal (mean over patches) + spatial (mean over frames)",
        "image_aspect": aspect,
        "image_preprocess": _size_text(processor.image_processor),
    }
    fingerprint = "+".join(fingerprint_files(Path(f)) for f in converted.folders)
    return PooledVideoLlavaAdapter(
        entry.name,
        converted.model,
        processor.tokenizer,
        fingerprint=fingerprint,
        device=device,
        info=info,
        image_processor=processor.image_processor,
        template=template,
        num_frames=num_frames,
        profile=profile,
        pad_to_square=aspect == "pad",
    )

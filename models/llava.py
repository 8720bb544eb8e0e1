"""LLaVA on transformers' ``LlavaForConditionalGeneration``: llava-hf folders and original checkpoints.

Prompts are the registry entry's chat template with one ``<image>`` line per
image (a video request becomes ``num_frames`` images). What changes scores
besides the weights is recorded in ``adapter.info`` and so in the fingerprint:

- ``image_aspect``: ``pad`` = LLaVA-1.5's official evaluation (pad to a square
  with the processor's mean colour, truncated to integers as ``expand2square``
  callers do, then the processor); ``resize`` = VILA's plain resize to the
  processor's square size; anything else = the processor's own resize + crop.
- ``prompt_tokenization``: ``processor`` (llava-hf: the tokenizer sees
  ``<image>`` as a token and the processor expands it) or ``chunks`` (the
  original repositories: the text around each ``<image>`` is tokenized
  separately and the image positions are spliced in as ids, as their
  ``tokenizer_image_token`` does; only the first chunk gets BOS).
- ``image_processor``: the processor class (PIL backend by default, as the
  original evaluation scripts used).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from harness.api.profile import EvalProfile
from harness.api.requests import Request
from harness.errors import HarnessError
from harness.media import is_video, load_image, sample_frames
from harness.models.chat import get_template
from harness.models.hf_adapter import HFAdapter, fingerprint_files, image_token_check
from harness.models.images import expand_to_square
from harness.models.prompting import num_frames, render_prompt
from harness.models.registry import ModelEntry

IMAGE_PLACEHOLDER = "<image>"
DEFAULT_FRAMES = 8


def fingerprint_folders(folders: Sequence[Path]) -> str:
    """One fingerprint over several folders (checkpoint + separate vision tower)."""
    parts = [fingerprint_files(Path(f)) for f in folders]
    if len(parts) == 1:
        return parts[0]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def tokenize_with_images(
    tokenizer: Any,
    prompt: str,
    image_token_id: int,
    tokens_per_image: int,
    placeholder: str = IMAGE_PLACEHOLDER,
) -> list[int]:
    """Token ids of ``prompt`` with each placeholder replaced by ``tokens_per_image`` image ids.

    Each text chunk is tokenized on its own; special tokens (BOS) are added
    to the first chunk only, as the original LLaVA/VILA code does.
    """
    chunks = prompt.split(placeholder)
    ids: list[int] = list(tokenizer(chunks[0]).input_ids)
    for chunk in chunks[1:]:
        ids.extend([image_token_id] * tokens_per_image)
        if chunk:
            ids.extend(tokenizer(chunk, add_special_tokens=False).input_ids)
    return ids


def left_pad(sequences: Sequence[Sequence[int]], pad_id: int) -> dict[str, torch.Tensor]:
    """``input_ids`` / ``attention_mask`` with every sequence right-aligned."""
    width = max(len(s) for s in sequences)
    input_ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        if seq:
            input_ids[row, width - len(seq) :] = torch.tensor(list(seq), dtype=torch.long)
            attention_mask[row, width - len(seq) :] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask}


def square_size(image_processor: Any) -> tuple[int, int]:
    """(width, height) the processor produces: crop size (CLIP) or size (SigLIP)."""
    size = getattr(image_processor, "crop_size", None) or getattr(image_processor, "size", None)
    if size is None:
        raise HarnessError(f"{type(image_processor).__name__}: no crop_size or size")
    size = dict(size) if not isinstance(size, int) else {"height": size, "width": size}
    if "height" in size and "width" in size:
        return int(size["width"]), int(size["height"])
    edge = size.get("shortest_edge") or size.get("longest_edge")
    if not edge:
        raise HarnessError(
            f"{type(image_processor).__name__}: cannot read a square size from {size}"
        )
    return int(edge), int(edge)


def default_tokens_per_image(config: Any) -> int:
    from harness.models.convert_llava import tokens_per_image

    return tokens_per_image(config.vision_config, config.vision_feature_select_strategy)


class LlavaAdapter(HFAdapter):
    """LLaVA-style models: images -> placeholder tokens in a chat-template prompt."""

    family = "llava"

    def __init__(
        self,
        name: str,
        model: torch.nn.Module,
        processor: Any,
        *,
        template: str = "llava_hf",
        image_aspect: str | None = None,
        num_frames: int = DEFAULT_FRAMES,
        split_prompt: bool = False,
        image_token_id: int | None = None,
        tokens_per_image: int | None = None,
        fingerprint: str | None = None,
        device: str | None = None,
        info: dict[str, Any] | None = None,
        profile: EvalProfile | None = None,
        checkpoint_aspect: str | None = None,
    ) -> None:
        super().__init__(name, model, processor, fingerprint=fingerprint, device=device, info=info)
        self.template = get_template(template)
        self.profile = profile
        # the checkpoint config's image_aspect_ratio: what a profile's "checkpoint" means
        self.checkpoint_aspect = checkpoint_aspect
        # an explicit aspect (registry option / adapter argument) wins over the profile's
        self.forced_aspect = image_aspect
        self.image_aspect = self._resolve_aspect(
            image_aspect or (profile.image.settings.get("aspect") if profile else None)
        )
        self.num_frames = int(num_frames)
        self.split_prompt = split_prompt
        config = getattr(model, "config", None)
        self.image_token_id = (
            image_token_id if image_token_id is not None else config.image_token_id
        )
        self.tokens_per_image = (
            tokens_per_image if tokens_per_image is not None else default_tokens_per_image(config)
        )
        self.info.update(
            {
                "template": self.template.name,
                "image_aspect": self.image_aspect,
                "num_frames": self.num_frames,
                "prompt_tokenization": "chunks" if split_prompt else "processor",
                "image_processor": type(self.image_processor).__name__,
                "tokens_per_image": self.tokens_per_image,
            }
        )

    def _resolve_aspect(self, aspect: Any) -> str:
        if aspect == "checkpoint":
            aspect = self.checkpoint_aspect
        aspect = aspect if aspect in {"pad", "resize", "crop"} else "processor"
        return aspect

    def aspect_for(self, request: Request) -> str:
        """The image preprocessing for a request (the profile may set it per benchmark)."""
        if self.forced_aspect or self.profile is None:
            return self.image_aspect
        return self._resolve_aspect(self.profile.image_for(request.task).get("aspect"))

    def template_for(self, request: Request) -> Any:
        if self.profile is None:
            return self.template
        name = self.profile.template_for(request.task).get("template")
        return get_template(str(name)) if name else self.template

    @property
    def image_processor(self) -> Any:
        return getattr(self.processor, "image_processor", self.processor)

    # -- inputs --------------------------------------------------------------------------------
    def load_visuals(self, request: Request) -> list[Any]:
        images: list[Any] = []
        for item in request.visuals:
            if is_video(item):
                images.extend(sample_frames(item, self.num_frames))
            else:
                images.append(load_image(item))
        return images

    def prompt(self, request: Request, n_images: int) -> str:
        return self.template_for(request).prompt(request.prompt, [IMAGE_PLACEHOLDER] * n_images)

    def rendered_prompt(self, request: Request) -> str:
        if self.profile is not None:
            return render_prompt(self.profile, request, self.num_frames)
        n_images = sum(self.num_frames if is_video(v) else 1 for v in request.visuals)
        return self.prompt(request, n_images)

    def prepare_image(self, image: Any, aspect: str | None = None) -> Any:
        """The aspect-ratio step that runs before the processor."""
        aspect = aspect or self.image_aspect
        if aspect == "pad":
            return expand_to_square(image, self.image_processor.image_mean)
        if aspect == "resize":
            size = square_size(self.image_processor)
            return image if image.size == size else image.resize(size)
        return image

    def pixel_values(
        self, images: Sequence[Any], aspects: Sequence[str] | None = None
    ) -> torch.Tensor:
        """Processor pixels for loaded images, after the aspect-ratio step."""
        aspects = aspects or [self.image_aspect] * len(images)
        prepared = [self.prepare_image(img, a) for img, a in zip(images, aspects, strict=True)]
        return self.image_processor(images=prepared, return_tensors="pt")["pixel_values"]

    def encode(
        self,
        requests: Sequence[Request],
        visuals: Sequence[Any],
        continuations: Sequence[str] | None = None,
    ) -> dict[str, Any]:
        prompts = [self.prompt(r, len(v)) for r, v in zip(requests, visuals, strict=True)]
        if continuations is not None:
            prompts = [p + c for p, c in zip(prompts, continuations, strict=True)]
        images = [img for v in visuals for img in v]
        aspects = [self.aspect_for(r) for r, v in zip(requests, visuals, strict=True) for _ in v]
        tok = self.tokenizer
        if self.split_prompt:
            pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
            ids = [
                tokenize_with_images(tok, p, self.image_token_id, self.tokens_per_image)
                for p in prompts
            ]
            batch: dict[str, Any] = left_pad(ids, pad_id)
            if images:
                batch["pixel_values"] = self.pixel_values(images, aspects)
        else:
            prepared = [self.prepare_image(img, a) for img, a in zip(images, aspects, strict=True)]
            batch = dict(
                self.processor(
                    text=prompts, images=prepared or None, return_tensors="pt", padding=True
                )
            )
        image_token_check(
            batch["input_ids"],
            self.image_token_id,
            len(images) * self.tokens_per_image,
            f"model {self.name}",
        )
        return batch


# -- loaders (registry signature) -----------------------------------------------------------------


def _options(entry: ModelEntry) -> dict[str, Any]:
    return dict(entry.options or {})


def load(entry: ModelEntry, path: Path, *, device: str, dtype: torch.dtype) -> LlavaAdapter:
    """A llava-hf style folder (``LlavaForConditionalGeneration`` + processor)."""
    from transformers import AutoImageProcessor, AutoProcessor, LlavaForConditionalGeneration

    options = _options(entry)
    path = Path(path)
    if not (path / "config.json").is_file():
        # without it transformers builds the default LlavaConfig: a 7B model in memory
        raise HarnessError(f"model {entry.name}: {path} has no config.json (not a llava-hf folder)")
    processor = AutoProcessor.from_pretrained(path)
    backend = options.get("image_backend", "pil")
    processor.image_processor = AutoImageProcessor.from_pretrained(path, backend=backend)
    processor.tokenizer.padding_side = "left"
    model = LlavaForConditionalGeneration.from_pretrained(path, dtype=dtype, device_map=device)
    profile = entry.eval_profile
    # tokenizer_image_token (the original eval): the text around <image> tokenized apart
    chunks = profile.template.settings.get("tokenization") == "chunks"
    return LlavaAdapter(
        entry.name,
        model,
        processor,
        template=str(profile.template.settings["template"]),
        image_aspect=options.get("image_aspect"),
        num_frames=options.get("num_frames", num_frames(profile)),
        split_prompt=chunks,
        fingerprint=fingerprint_files(path),
        info={"weights": "llava_hf"},
        profile=profile,
    )


def load_original(
    entry: ModelEntry, path: Path, *, device: str, dtype: torch.dtype
) -> LlavaAdapter:
    """An original-layout LLaVA folder, converted in memory (see :mod:`convert_llava`)."""
    from harness.models.convert_llava import convert_original

    options = _options(entry)
    converted = convert_original(
        Path(path),
        vision_tower=options.get("vision_tower"),
        device=device,
        dtype=dtype,
        image_backend=options.get("image_backend", "pil"),
    )
    profile = entry.eval_profile
    return LlavaAdapter(
        entry.name,
        converted.model,
        converted.processor,
        template=str(profile.template.settings["template"]),
        image_aspect=options.get("image_aspect"),
        checkpoint_aspect=converted.info.get("image_aspect_ratio"),
        profile=profile,
        num_frames=options.get("num_frames", num_frames(profile)),
        split_prompt=True,
        image_token_id=converted.image_token_id,
        fingerprint=fingerprint_folders(converted.folders),
        info=converted.info,
    )

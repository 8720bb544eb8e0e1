"""Pixels, frames and decoding as the official eval code makes them, on the tiny models.

Each "official" function below transcribes the family's own code (named in its
docstring), calling the same library objects it calls; the adapters, loaded
from the registry's entries (their eval profiles) on tiny weights, must give
the same tensors exactly (max abs diff 0) and render the prompts
``harness prompts`` shows.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from harness.api.requests import Request
from harness.media import sample_frames
from harness.models.prompting import render_prompt
from harness.models.registry import REGISTRY, adapter_loader
from harness.models.video_llava import pool_video_features, video_transform
from tests import tiny_video_models as tiny_video
from tests.tiny_models import build_llava, save_original_llava, write_image


def official_expand2square(img: Image.Image, background: tuple[int, ...]) -> Image.Image:
    """haotian-liu/LLaVA llava/mm_utils.py:expand2square."""
    width, height = img.size
    if width == height:
        return img
    if width > height:
        result = Image.new(img.mode, (width, width), background)
        result.paste(img, (0, (width - height) // 2))
        return result
    result = Image.new(img.mode, (height, height), background)
    result.paste(img, ((height - width) // 2, 0))
    return result


def official_process_images(img: Image.Image, image_processor, aspect: str) -> torch.Tensor:
    """llava/mm_utils.py:process_images ('pad'), or model_vqa_science.py at ce1aa08 (none)."""
    if aspect == "pad":
        img = official_expand2square(img, tuple(int(x * 255) for x in image_processor.image_mean))
    return image_processor.preprocess(img, return_tensors="pt")["pixel_values"][0]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("fidelity")
    wide = write_image(root / "wide.png", (23, 13), seed=1)
    tall = write_image(root / "tall.png", (11, 19), seed=2)
    return {"root": root, "wide": wide, "tall": tall}


@pytest.fixture(scope="module")
def llava15(files):
    folder = files["root"] / "llava_hf"
    build_llava(folder)
    entry = replace(REGISTRY["llava-1.5-7b"], name="tiny-llava-1.5", source=str(folder))
    return adapter_loader("llava")(entry, folder, device="cpu", dtype=torch.float32)


@pytest.fixture(scope="module")
def quilt(files):
    native, _ = build_llava()
    folder = save_original_llava(native, files["root"] / "quilt", files["root"] / "tower")
    entry = replace(REGISTRY["quilt-llava-7b"], name="tiny-quilt", source=str(folder))
    return adapter_loader("llava_original")(entry, folder, device="cpu", dtype=torch.float32)


def _pixels(adapter, task: str, image) -> torch.Tensor:
    request = Request(task, "1", "What is in the image ?", (str(image),), {})
    return adapter.encode([request], [adapter.load_visuals(request)])["pixel_values"][0]


@pytest.mark.parametrize("name", ["wide", "tall"])
def test_llava15_pads_as_process_images(llava15, files, name):
    img = Image.open(files[name]).convert("RGB")
    ours = _pixels(llava15, "pope_random", files[name])
    official = official_process_images(img, llava15.image_processor, "pad")
    assert (ours - official).abs().max().item() == 0
    # and padding changed something (a non-square image)
    plain = official_process_images(img, llava15.image_processor, "none")
    assert (ours - plain).abs().max().item() > 0


def test_llava15_scienceqa_is_not_padded_as_at_the_release(llava15, files):
    img = Image.open(files["wide"]).convert("RGB")
    ours = _pixels(llava15, "scienceqa_img", files["wide"])
    official = official_process_images(img, llava15.image_processor, "none")
    assert (ours - official).abs().max().item() == 0


def test_llava15_tokenizes_around_image_as_tokenizer_image_token(llava15):
    assert llava15.info["prompt_tokenization"] == "chunks"
    request = Request("gqa-toy", "1", "What is in the image ?", ("x.png",), {})
    assert llava15.rendered_prompt(request) == render_prompt(llava15.profile, request)
    assert "curious user" in llava15.rendered_prompt(request)


def test_quilt_crops_without_padding_and_uses_its_checkpoints_tower(quilt, files):
    assert quilt.checkpoint_aspect == "pad"  # the checkpoint config says pad ...
    img = Image.open(files["wide"]).convert("RGB")
    ours = _pixels(quilt, "quilt_gpt_review", files["wide"])
    official = official_process_images(img, quilt.image_processor, "none")  # ... eval does not
    assert (ours - official).abs().max().item() == 0
    assert "vision_tower" not in REGISTRY["quilt-llava-7b"].options
    assert quilt.info["vision_tower"].endswith("tower")  # the config's mm_vision_tower


def test_quilt_review_prompt_and_generation(quilt):
    review = Request("quilt_gpt_review", "1", "Describe it .", ("x.png",), {})
    assert "curious human" in quilt.rendered_prompt(review)  # llava_v1 (README command)
    vqa = Request("pope_random", "1", "Is there a cat ?", ("x.png",), {})
    assert "curious user" in quilt.rendered_prompt(vqa)  # vicuna_v1 (eval scripts)
    assert quilt.rendered_prompt(vqa) == render_prompt(quilt.profile, vqa)


# -- Video-LLaVA ---------------------------------------------------------------------------------
def official_short_side_scale(x: torch.Tensor, size: int) -> torch.Tensor:
    """pytorchvideo/transforms/functional.py:short_side_scale (backend pytorch, bilinear)."""
    c, t, h, w = x.shape
    if w < h:
        new_h, new_w = int(math.floor((float(h) / w) * size)), size
    else:
        new_h, new_w = size, int(math.floor((float(w) / h) * size))
    return torch.nn.functional.interpolate(
        x, size=(new_h, new_w), mode="bilinear", align_corners=False
    )


def official_video_transform(frames, mean, std, size=224) -> torch.Tensor:
    """Video-LLaVA processing_video.py:get_video_transform without the random flip:
    Lambda(x / 255.0), NormalizeVideo, ShortSideScale, CenterCropVideo on (C, T, H, W)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from torchvision.transforms._transforms_video import CenterCropVideo, NormalizeVideo
    video = torch.from_numpy(np.stack([np.asarray(f.convert("RGB")) for f in frames]))
    x = video.permute(3, 0, 1, 2).float() / 255.0  # decord (T,H,W,C) -> (C,T,H,W)
    x = NormalizeVideo(mean=mean, std=std)(x)
    x = official_short_side_scale(x, size)
    x = CenterCropVideo(size)(x)
    return x.permute(1, 0, 2, 3)


@pytest.mark.parametrize("shape", [(40, 30), (30, 44), (32, 32)])
def test_video_llava_transform_is_the_official_one(shape):
    rng = np.random.default_rng(0)
    frames = [
        Image.fromarray(rng.integers(0, 256, (shape[1], shape[0], 3), dtype=np.uint8))
        for _ in range(3)
    ]
    mean, std = [0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]
    ours = video_transform(frames, mean, std, 16)
    official = official_video_transform(frames, mean, std, 16)
    assert ours.shape == (3, 3, 16, 16)
    assert (ours - official).abs().max().item() == 0


def test_video_llava_adapter_feeds_the_official_pixels(tmp_path):
    folder = tmp_path / "vl"
    tiny_video.build_video_llava(folder)
    entry = replace(REGISTRY["video-llava-7b"], name="tiny-vl", source=str(folder))
    adapter = adapter_loader("video_llava")(entry, folder, device="cpu", dtype=torch.float32)
    video = tiny_video.write_video(tmp_path / "clip.mp4", frames=10, size=48)
    request = Request("vcg_generic", "1", "describe", (str(video),), {})
    enc = adapter.encode([request], [adapter.load_visuals(request)])
    proc = adapter.processor.video_processor
    frames = sample_frames(video, 8)
    crop = dict(proc.crop_size)["height"]
    official = official_video_transform(frames, proc.image_mean, proc.image_std, crop)
    assert (enc["pixel_values_videos"][0] - official).abs().max().item() == 0
    assert adapter.rendered_prompt(request) == render_prompt(adapter.profile, request)


# -- VLM-RLAIF -----------------------------------------------------------------------------------
def official_spatio_temporal(features: torch.Tensor) -> torch.Tensor:
    """yonseivnl/vlm-rlaif llava/model/llava_arch.py:get_spatio_temporal_features."""
    temporal_tokens = torch.mean(features, dim=1)
    spatial_tokens = torch.mean(features, dim=0)
    return torch.cat((temporal_tokens, spatial_tokens), dim=0)


def test_rlaif_frame_pooling_is_the_official_one():
    feats = torch.randn(50, 9, 6, generator=torch.Generator().manual_seed(0))
    ours = pool_video_features(feats)
    assert ours.shape == (59, 6)
    assert torch.equal(ours, official_spatio_temporal(feats))


def test_rlaif_samples_fifty_frames_uniformly():
    frames = np.linspace(0, 99, 50, dtype=int)  # infer_general.py on a 100-frame video
    from harness.media import frame_indices

    assert list(frame_indices(100, 50)) == frames.tolist()
    assert REGISTRY["vlm-rlaif-7b"].eval_profile.video.settings["num_frames"] == 50


# -- decoding ------------------------------------------------------------------------------------
def test_stop_strings_cut_the_output_and_sampling_is_seeded(llava15, files):
    base = {"max_new_tokens": 6, "temperature": 0.0}
    request = Request("t", "1", "What is in the image ?", (str(files["wide"]),), base)
    text = llava15.generate([request])[0]
    words = text.split()
    assert len(words) >= 2, text
    stop = words[1]
    cut = llava15.generate([replace(request, gen_kwargs={**base, "stop": [stop]})])[0]
    assert cut == text[: text.find(stop)].strip()
    sampled = {"max_new_tokens": 6, "temperature": 1.5, "do_sample": True, "seed": 3}
    a = llava15.generate([replace(request, gen_kwargs=sampled)])[0]
    b = llava15.generate([replace(request, gen_kwargs=sampled)])[0]
    assert a == b

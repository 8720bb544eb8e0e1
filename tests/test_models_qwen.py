"""Qwen2-VL / Qwen2.5-VL adapter on tiny offline checkpoints (images, video, batching)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("av")

from harness.api.requests import Failure, Request  # noqa: E402
from harness.errors import HarnessError  # noqa: E402
from harness.models.registry import ModelEntry, adapter_loader  # noqa: E402
from tests import tiny_video_models as tiny  # noqa: E402
from tests.likelihood_checks import check_loglikelihood

GEN = {"max_new_tokens": 6}


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("qwen_media")
    return {
        "square": tiny.write_image(root / "square.png", (56, 56), seed=1),
        "wide": tiny.write_image(root / "wide.png", (84, 56), seed=2),
        "video": tiny.write_video(root / "clip.mp4", frames=10, seed=3),
        "video2": tiny.write_video(root / "clip2.mp4", frames=13, seed=4),
        "corrupt": _corrupt(root / "broken.mp4"),
    }


def _corrupt(path: Path) -> Path:
    path.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 40)
    return path


def _entry(folder: Path, **options) -> ModelEntry:
    return ModelEntry("tiny-qwen", "qwen_vl", str(folder), "qwen", None, options)


@pytest.fixture(scope="module", params=["qwen2_vl", "qwen2_5_vl"])
def adapter(request, tmp_path_factory):
    folder = tiny.build_qwen(tmp_path_factory.mktemp(request.param), request.param)
    load = adapter_loader("qwen_vl")
    return load(_entry(folder, num_frames=4), folder, device="cpu", dtype=torch.float32)


def _requests(media: dict[str, Path]) -> list[Request]:
    return [
        Request("t", "img", "what color is the cat ?", (str(media["square"]),), GEN),
        Request("t", "vid", "describe", (str(media["video"]),), GEN),
        Request(
            "t",
            "wide",
            "how many dogs are there in this picture ? answer yes or no",
            (str(media["wide"]),),
            GEN,
        ),
        Request("t", "text", "is it red", (), GEN),
    ]


def test_loads_with_native_class_and_records_settings(adapter):
    assert adapter.family == "qwen"
    assert type(adapter.model).__name__ in {
        "Qwen2VLForConditionalGeneration",
        "Qwen2_5_VLForConditionalGeneration",
    }
    assert adapter.info["min_pixels"] == tiny.QWEN_PIXELS
    assert adapter.info["max_pixels"] == tiny.QWEN_PIXELS
    assert adapter.info["num_frames"] == 4
    fp = adapter.fingerprint()
    assert isinstance(fp, str) and len(fp) == 16 and fp == adapter.fingerprint()


def test_chat_template_prompt(adapter, media):
    request = _requests(media)[0]
    text = adapter.prompt_text(request, adapter.load_visuals(request))
    assert text.startswith("<|im_start|>system")
    assert "<|vision_start|><|image_pad|><|vision_end|>what color is the cat ?" in text
    assert text.endswith("<|im_start|>assistant\n")


def test_video_is_passed_as_video_with_mm_token_types(adapter, media):
    request = Request("t", "v", "describe", (str(media["video2"]),), GEN)
    visuals = adapter.load_visuals(request)
    assert [kind for kind, _, _ in visuals] == ["video"]
    assert len(visuals[0][1]) == 4
    enc = adapter.encode([request], [visuals])
    assert "pixel_values_videos" in enc and "pixel_values" not in enc
    t, h, w = enc["video_grid_thw"][0].tolist()
    assert t == 2  # 4 frames / temporal patch 2
    types = enc["mm_token_type_ids"]
    n_video = int((enc["input_ids"] == adapter.video_token_id).sum())
    assert n_video == t * h * w // 4
    assert int((types == 2).sum()) == n_video
    assert int((types == 1).sum()) == 0


def test_batch_invariance(adapter, media):
    requests = _requests(media)
    batch = adapter.generate(requests)  # images, a video and text only, different lengths
    assert all(isinstance(o, str) and o for o in batch)
    single = [adapter.generate([r])[0] for r in requests]
    assert batch == single
    # Stronger than the greedy tokens: next-token logits under left padding.
    visuals = [adapter.load_visuals(r) for r in requests]
    with torch.inference_mode():
        enc = adapter.encode(requests, visuals)
        assert int((enc["attention_mask"] == 0).sum()) > 0  # really padded
        batch_logits = adapter.model(**enc).logits[:, -1]
        for i, (request, vis) in enumerate(zip(requests, visuals, strict=True)):
            one = adapter.model(**adapter.encode([request], [vis])).logits[:, -1]
            assert torch.allclose(batch_logits[i], one[0], atol=1e-4), (
                request.doc_id,
                (batch_logits[i] - one[0]).abs().max(),
            )


def test_corrupt_video_is_a_per_sample_error(adapter, media):
    requests = _requests(media)[:2] + [
        Request("t", "bad", "describe", (str(media["corrupt"]),), GEN)
    ]
    outputs = adapter.generate(requests)
    assert isinstance(outputs[2], Failure) and "broken" in outputs[2].error
    assert isinstance(outputs[0], str) and outputs[0] and outputs[1]
    assert outputs[:2] == adapter.generate(requests[:2])


def test_pixel_options_reach_the_processor(tmp_path):
    folder = tiny.build_qwen(tmp_path / "q", "qwen2_vl")
    big = 28 * 28 * 16
    adapter = adapter_loader("qwen_vl")(
        _entry(folder, max_pixels=big, min_pixels=28 * 28 * 4),
        folder,
        device="cpu",
        dtype=torch.float32,
    )
    assert adapter.info["max_pixels"] == big
    assert adapter.info["video_max_pixels"] == big
    img = tiny.write_image(tmp_path / "big.png", (112, 112))
    request = Request("t", "a", "what", (str(img),), GEN)
    enc = adapter.encode([request], [adapter.load_visuals(request)])
    assert enc["image_grid_thw"][0].tolist() == [1, 8, 8]


def test_wrong_model_type_is_refused(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(HarnessError, match="model_type 'llama'"):
        adapter_loader("qwen_vl")(_entry(tmp_path), tmp_path, device="cpu", dtype=torch.float32)


def test_loglikelihood_is_batch_invariant_and_right(adapter, media):
    check_loglikelihood(adapter, _requests(media))

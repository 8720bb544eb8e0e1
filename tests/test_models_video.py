"""Video-LLaVA (transformers layout) and VLM-RLAIF (original LLaVA layout) adapters."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("av")

from harness.api.requests import Failure, Request  # noqa: E402
from harness.errors import HarnessError  # noqa: E402
from harness.media import sample_frames  # noqa: E402
from harness.models import video_llava  # noqa: E402
from harness.models.registry import REGISTRY, ModelEntry, adapter_loader  # noqa: E402
from tests import tiny_video_models as tiny  # noqa: E402
from tests.likelihood_checks import check_loglikelihood

GEN = {"max_new_tokens": 6}


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("video_media")
    broken = root / "broken.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 40)
    return {
        "square": tiny.write_image(root / "square.png", (56, 56), seed=1),
        "wide": tiny.write_image(root / "wide.png", (84, 56), seed=2),
        "video": tiny.write_video(root / "clip.mp4", frames=10, seed=3),
        "video2": tiny.write_video(root / "clip2.mp4", frames=13, seed=4),
        "corrupt": broken,
    }


def _requests(media: dict[str, Path]) -> list[Request]:
    return [
        Request("t", "img", "what color is the cat ?", (str(media["square"]),), GEN),
        Request("t", "vid", "describe", (str(media["video"]),), GEN),
        Request(
            "t",
            "vid2",
            "how many dogs are there in this video ? answer yes or no",
            (str(media["video2"]),),
            GEN,
        ),
        Request("t", "wide", "is it red", (str(media["wide"]),), GEN),
    ]


def _assert_batch_invariant(adapter, requests):
    batch = adapter.generate(requests)
    single = [adapter.generate([r])[0] for r in requests]
    assert batch == single
    assert all(batch)
    visuals = [adapter.load_visuals(r) for r in requests]
    with torch.inference_mode():
        enc = adapter.encode(requests, visuals)
        assert int((enc["attention_mask"] == 0).sum()) > 0  # really padded
        logits = adapter.model(**enc).logits[:, -1]
        for i, (request, vis) in enumerate(zip(requests, visuals, strict=True)):
            one = adapter.model(**adapter.encode([request], [vis])).logits[0, -1]
            assert torch.allclose(logits[i], one, atol=1e-4), request.doc_id
    return batch


# --------------------------------------------------------------------------------------
# Video-LLaVA (transformers layout)
# --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def vllava(tmp_path_factory):
    folder = tmp_path_factory.mktemp("video_llava")
    tiny.build_video_llava(folder)
    # the registry's own entry (its eval profile) on the tiny weights
    entry = replace(REGISTRY["video-llava-7b"], name="tiny-vl", source=str(folder))
    return adapter_loader("video_llava")(entry, folder, device="cpu", dtype=torch.float32)


def test_video_llava_prompt_and_frames(vllava, media):
    assert vllava.family == "video_llava"
    assert vllava.info["num_frames"] == 8
    request = _requests(media)[1]
    visuals = vllava.load_visuals(request)
    assert [kind for kind, _ in visuals] == ["video"]
    frames = visuals[0][1]
    assert len(frames) == 8
    # linspace(0, 9, 8) frames, exactly as sample_frames gives them (no flips).
    expected = sample_frames(media["video"], 8)
    assert [f.tobytes() for f in frames] == [f.tobytes() for f in expected]
    text = vllava.prompt(request, visuals)
    assert text.startswith("A chat between a curious human")
    assert text.endswith("USER: <video>\ndescribe ASSISTANT:")
    enc = vllava.encode([request], [visuals])
    assert tuple(enc["pixel_values_videos"].shape) == (1, 8, 3, tiny.VL_IMAGE, tiny.VL_IMAGE)
    patches = (tiny.VL_IMAGE // 4) ** 2
    video_id = vllava.model.config.video_token_index
    assert int((enc["input_ids"] == video_id).sum()) == 8 * (patches + 1)  # CLS kept per frame
    again = vllava.encode([request], [vllava.load_visuals(request)])
    assert torch.equal(enc["pixel_values_videos"], again["pixel_values_videos"])


def test_video_llava_image_request(vllava, media):
    request = _requests(media)[0]
    visuals = vllava.load_visuals(request)
    assert vllava.prompt(request, visuals).endswith(
        "USER: <image>\nwhat color is the cat ? ASSISTANT:"
    )
    enc = vllava.encode([request], [visuals])
    image_id = vllava.model.config.image_token_index
    assert int((enc["input_ids"] == image_id).sum()) == (tiny.VL_IMAGE // 4) ** 2  # CLS dropped
    assert vllava.generate([request])[0]


def test_video_llava_batch_invariance(vllava, media):
    _assert_batch_invariant(vllava, _requests(media))


def test_video_llava_corrupt_video_is_per_sample(vllava, media):
    requests = _requests(media)[:3] + [
        Request("t", "bad", "describe", (str(media["corrupt"]),), GEN)
    ]
    outputs = vllava.generate(requests)
    assert isinstance(outputs[3], Failure) and "broken.mp4" in outputs[3].error
    assert all(isinstance(o, str) and o for o in outputs[:3])
    assert outputs[:3] == vllava.generate(requests[:3])


def test_video_llava_refuses_other_layouts(tmp_path):
    (tmp_path / "config.json").write_text(
        json.dumps({"model_type": "llava", "mm_vision_tower": "x"})
    )
    entry = ModelEntry("x", "video_llava", str(tmp_path), "video_llava", "vicuna_v1", {})
    with pytest.raises(HarnessError, match="video_llava_original"):
        video_llava.load(entry, tmp_path, device="cpu", dtype=torch.float32)


# --------------------------------------------------------------------------------------
# VLM-RLAIF: original LLaVA layout, converted at load, pooled video tokens
# --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def native():
    return tiny.build_native_rlaif()


def _rlaif_entry(folder: Path, **options) -> ModelEntry:
    options.setdefault("num_frames", 4)
    base = REGISTRY["vlm-rlaif-7b"]
    # the registry's entry without its hub tower (the tiny checkpoint names its own)
    kept = {k: v for k, v in base.options.items() if k != "vision_tower"}
    return replace(base, name="tiny-rlaif", source=str(folder), options={**kept, **options})


@pytest.fixture(scope="module")
def rlaif(native, tmp_path_factory):
    model, tok = native
    folder = tiny.write_original_rlaif(model, tok, tmp_path_factory.mktemp("rlaif"))
    load = adapter_loader("video_llava_original")
    return load(_rlaif_entry(folder), folder, device="cpu", dtype=torch.float32)


@pytest.mark.parametrize("tower_in_checkpoint", [False, True])
def test_converted_logits_equal_native(native, tmp_path, tower_in_checkpoint):
    model, tok = native
    folder = tiny.write_original_rlaif(
        model,
        tok,
        tmp_path / "orig",
        tower_in_checkpoint=tower_in_checkpoint,
        fmt="bin" if tower_in_checkpoint else "safetensors",
    )
    adapter = video_llava.load_original(
        _rlaif_entry(folder), folder, device="cpu", dtype=torch.float32
    )
    converted, ctok = adapter.model, adapter.tokenizer
    assert adapter.info["vision_tower_in_checkpoint"] is tower_in_checkpoint
    assert ctok.convert_tokens_to_ids("<image>") == tok.convert_tokens_to_ids("<image>")
    assert ctok.pad_token_id == tok.pad_token_id
    keep = len(tok) - 2
    image = model.config.image_token_index
    ids = torch.tensor([[1, 5, 7] + [image] * 16 + [20, 30, 40], [2, 9] + [image] * 16 + [8] * 4])
    torch.manual_seed(0)
    pixels = torch.randn(2, 3, tiny.RLAIF_IMAGE, tiny.RLAIF_IMAGE)
    with torch.no_grad():
        want = model(input_ids=ids, pixel_values=pixels).logits[..., :keep]
        got = converted(input_ids=ids, pixel_values=pixels).logits[..., :keep]
    assert torch.equal(want, got), (want - got).abs().max()


def test_rlaif_video_tokens_are_temporal_then_spatial_means(rlaif, native, media):
    model, _ = native
    request = _requests(media)[1]
    visuals = rlaif.load_visuals(request)
    assert len(visuals[0][1]) == 4
    enc = rlaif.encode([request], [visuals])
    patches = (tiny.RLAIF_IMAGE // 4) ** 2
    image = rlaif.model.config.image_token_index
    assert int((enc["input_ids"] == image).sum()) == 4 + patches
    # By hand on the native model: pad-to-square + CLIP per frame, tower + projector, pool.
    pixels = rlaif.pixel_values(visuals[0][1])
    with torch.no_grad():
        out = model.model.get_image_features(
            pixel_values=pixels, vision_feature_layer=-2, vision_feature_select_strategy="default"
        )
        feats = torch.stack(list(out.pooler_output))
        pooled = torch.cat([feats.mean(1), feats.mean(0)])
        assert torch.allclose(enc["mm_encoder_outputs"]["image"].pooler_output[0], pooled)
        ids = enc["input_ids"]
        embeds = model.get_input_embeddings()(
            ids.clamp(max=model.config.text_config.vocab_size - 1)
        )
        embeds[ids == image] = pooled
        want = model(inputs_embeds=embeds, attention_mask=enc["attention_mask"]).logits
        got = rlaif.model(**enc).logits
    keep = want.shape[-1] - 2  # the original vocabulary
    assert (want[..., :keep] - got[..., :keep]).abs().max() < 1e-5


def test_rlaif_prompt_uses_one_image_placeholder(rlaif, media):
    request = _requests(media)[0]
    enc = rlaif.encode([request], [rlaif.load_visuals(request)])
    text = rlaif.tokenizer.decode(enc["input_ids"][0])
    assert text.count("<image>") == (tiny.RLAIF_IMAGE // 4) ** 2
    assert rlaif.info["image_aspect"] == "pad"
    assert rlaif.info["vision_feature_select_strategy"] == "default"  # CLS dropped


def test_rlaif_batch_invariance(rlaif, media):
    requests = _requests(media) + [Request("t", "text", "is it red ?", (), GEN)]
    _assert_batch_invariant(rlaif, requests)


def test_rlaif_corrupt_video_is_per_sample(rlaif, media):
    requests = _requests(media)[:2] + [
        Request("t", "bad", "describe", (str(media["corrupt"]),), GEN)
    ]
    outputs = rlaif.generate(requests)
    assert isinstance(outputs[2], Failure) and all(isinstance(o, str) and o for o in outputs[:2])


def test_original_video_llava_layout_is_refused(tmp_path):
    (tmp_path / "config.json").write_text(
        json.dumps({"model_type": "llava", "mm_image_tower": "a", "mm_video_tower": "b"})
    )
    with pytest.raises(HarnessError, match="Video-LLaVA-7B-hf"):
        video_llava.load_original(
            _rlaif_entry(tmp_path), tmp_path, device="cpu", dtype=torch.float32
        )


def test_video_llava_loglikelihood(vllava, media):
    check_loglikelihood(vllava, _requests(media))


def test_rlaif_loglikelihood(rlaif, media):
    check_loglikelihood(rlaif, _requests(media)[:3])

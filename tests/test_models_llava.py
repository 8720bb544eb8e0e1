"""LLaVA adapter on tiny offline models: loading, batch invariance, preprocessing, conversion."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from harness.api.requests import Failure, Request
from harness.errors import HarnessError
from harness.evaluator import EvalConfig, evaluate
from harness.models.convert_llava import convert_state_dict, resolve_vision_tower
from harness.models.llava import LlavaAdapter, left_pad, tokenize_with_images
from harness.models.registry import ModelEntry, adapter_loader
from tests.fakes import make_pope
from tests.likelihood_checks import check_loglikelihood
from tests.tiny_models import (
    build_llava,
    make_tokenizer,
    save_original_llava,
    write_image,
    write_video,
)

QUESTIONS = (
    "What is in the image ?",
    "Is there a cat ?",
    "describe this picture",
    "What color of the tree is it ? Answer the question using a single word or phrase .",
)
GEN = {"max_new_tokens": 8, "temperature": 0}
N_TEXT = 61  # tiny vocabulary without <image>, <pad>


def entry(name: str, adapter: str, folder, template: str = "llava_hf", **options) -> ModelEntry:
    return ModelEntry(name, adapter, str(folder), "llava", template, options)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models gain nothing from intra-op threads, which only spin on a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("llava")
    model, _ = build_llava(root / "native")
    images = [write_image(root / f"img{i}.png", (20 + 5 * i, 12 + i), seed=i) for i in range(4)]
    return root, model, images


@pytest.fixture(scope="module")
def adapter(tiny):
    root, _, _ = tiny
    load = adapter_loader("llava")
    return load(
        entry("tiny-llava", "llava", root / "native", image_aspect="pad"),
        root / "native",
        device="cpu",
        dtype=torch.float32,
    )


def make_requests(images, gen=GEN):
    return [
        Request("t", str(i), q, (str(img),), dict(gen))
        for i, (q, img) in enumerate(zip(QUESTIONS, images, strict=True))
    ]


def attended_logits(model, batch):
    with torch.no_grad():
        logits = model(**batch).logits
    return logits[batch["attention_mask"].bool()][:, :N_TEXT]


def test_load_through_registry_signature_generates(adapter, tiny):
    outputs = adapter.generate(make_requests(tiny[2]))
    assert len(outputs) == 4 and all(isinstance(o, str) for o in outputs)
    assert any(outputs), outputs
    assert adapter.family == "llava" and adapter.name == "tiny-llava"
    assert adapter.tokenizer.padding_side == "left"
    assert adapter.info["image_aspect"] == "pad" and adapter.info["template"] == "llava_hf"
    assert adapter.info["image_processor"] == "CLIPImageProcessorPil"


def test_outputs_do_not_depend_on_batch_size(adapter, tiny):
    requests = make_requests(tiny[2])
    batched = adapter.generate(requests)
    single = [adapter.generate([r])[0] for r in requests]
    reordered = adapter.generate(requests[::-1])[::-1]
    assert batched == single == reordered
    # The prompts really were padded differently (left padding, differing lengths).
    enc = adapter.encode(requests, [adapter.load_visuals(r) for r in requests])
    assert (enc["attention_mask"][:, 0] == 0).any() and enc["attention_mask"][:, -1].all()


def test_evaluator_scores_do_not_depend_on_batch_size(adapter, tmp_path):
    root = make_pope(tmp_path / "data", n=7)
    for i, path in enumerate(sorted((root / "val2014").iterdir())):
        rgb = Image.open(write_image(tmp_path / f"src{i}.png", (18 + i, 14), seed=10 + i))
        rgb.save(path, format="JPEG")
    outputs = {}
    for batch_size in (1, 4):
        result = evaluate(
            "pope_random",
            adapter,
            None,
            EvalConfig(
                data_root=root,
                batch_size=batch_size,
                n_boot=0,
                gen_overrides={"max_new_tokens": 5},
            ),
        )
        outputs[batch_size] = {s.doc_id: s.raw_output for s in result.scores["pope_random"].samples}
    assert outputs[1] == outputs[4] and len(outputs[1]) == 7
    assert all(isinstance(o, str) for o in outputs[1].values())


def test_pad_to_square_uses_truncated_mean_colour(adapter):
    image = Image.new("RGB", (24, 12), (250, 10, 10))
    padded = adapter.pixel_values([image])
    manual = Image.new("RGB", (24, 24), (122, 116, 104))  # int(255 * CLIP mean), as LLaVA pads
    manual.paste(image, (0, 6))
    expected = adapter.image_processor(images=[manual], return_tensors="pt")["pixel_values"]
    assert torch.equal(padded, expected)
    cropping = LlavaAdapter("crop", adapter.model, adapter.processor, image_aspect="crop")
    cropped = cropping.pixel_values([image])
    assert cropped.shape == padded.shape and not torch.allclose(cropped, padded)
    assert cropping.info["image_aspect"] == "crop"
    assert cropping.fingerprint() != adapter.fingerprint()


def test_video_request_becomes_frames(adapter, tmp_path):
    video = write_video(tmp_path / "clip.mp4", n_frames=6)
    frames = LlavaAdapter("v", adapter.model, adapter.processor, num_frames=3)
    request = Request("t", "v1", "describe this picture", (str(video),), dict(GEN))
    visuals = frames.load_visuals(request)
    assert len(visuals) == 3
    batch = frames.encode([request], [visuals])
    assert batch["pixel_values"].shape[0] == 3
    assert int((batch["input_ids"] == frames.image_token_id).sum()) == 3 * 16
    assert isinstance(frames.generate([request])[0], str)


def test_unreadable_image_is_a_per_sample_error(adapter, tiny):
    requests = make_requests(tiny[2])[:2]
    broken = Request("t", "bad", "Is there a cat ?", (b"not an image",), dict(GEN))
    outputs = adapter.generate([requests[0], broken, requests[1]])
    # a Failure, never an (empty) answer: stored as a failure and retried by the next run
    assert isinstance(outputs[1], Failure) and "cannot read image" in outputs[1].error
    assert isinstance(outputs[0], str) and outputs[0] == adapter.generate([requests[0]])[0]


def test_fingerprint_follows_weights(tmp_path):
    model, _ = build_llava(tmp_path / "m", seed=3)
    load = adapter_loader("llava")
    first = load(
        entry("a", "llava", tmp_path / "m"), tmp_path / "m", device="cpu", dtype=torch.float32
    )
    again = load(
        entry("a", "llava", tmp_path / "m"), tmp_path / "m", device="cpu", dtype=torch.float32
    )
    assert first.fingerprint() == again.fingerprint()
    with torch.no_grad():
        model.model.multi_modal_projector.linear_2.bias[0] += 1e-3
    model.save_pretrained(tmp_path / "m")
    changed = load(
        entry("a", "llava", tmp_path / "m"), tmp_path / "m", device="cpu", dtype=torch.float32
    )
    assert changed.fingerprint() != first.fingerprint()


def test_chunked_tokenization_and_left_pad():
    tok = make_tokenizer()
    ids = tokenize_with_images(tok, "USER : <image>\nWhat is it ? ASSISTANT :", 99, 3)
    assert ids[0] == tok.bos_token_id and ids.count(tok.bos_token_id) == 1
    assert ids[3:6] == [99, 99, 99]
    batch = left_pad([[5, 6, 7], [8]], pad_id=0)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [0, 0, 8]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [0, 0, 1]]


# -- original repository layout ----------------------------------------------------------------


def test_convert_state_dict_key_mapping():
    t = torch.zeros(1)
    state = {
        "model.embed_tokens.weight": t,
        "model.layers.0.self_attn.q_proj.weight": t,
        "model.layers.0.self_attn.rotary_emb.inv_freq": t,
        "model.norm.weight": t,
        "lm_head.weight": t,
        "model.mm_projector.0.weight": t,
        "model.mm_projector.2.bias": t,
        "model.vision_tower.vision_tower.vision_model.embeddings.class_embedding": t,
        "model.predictor.fc.weight": t,
    }
    converted, dropped = convert_state_dict(state)
    assert sorted(converted) == [
        "lm_head.weight",
        "model.language_model.embed_tokens.weight",
        "model.language_model.layers.0.self_attn.q_proj.weight",
        "model.language_model.norm.weight",
        "model.multi_modal_projector.linear_1.weight",
        "model.multi_modal_projector.linear_2.bias",
        "model.vision_tower.embeddings.class_embedding",
    ]
    assert dropped == ["model.predictor.fc.weight"]
    with pytest.raises(HarnessError, match="mlp3x_gelu"):
        convert_state_dict({"model.mm_projector.4.weight": t}, projector_type="mlp3x_gelu")


@pytest.mark.parametrize(("tower_in_checkpoint", "fmt"), [(False, "bin"), (True, "safetensors")])
def test_original_layout_gives_native_logits(tiny, tmp_path, tower_in_checkpoint, fmt):
    _, native, images = tiny
    folder = save_original_llava(
        native,
        tmp_path / "orig",
        tmp_path / "clip",
        tower_in_checkpoint=tower_in_checkpoint,
        fmt=fmt,
    )
    load = adapter_loader("llava_original")
    converted = load(
        entry("orig", "llava_original", folder, "vicuna_v1"),
        folder,
        device="cpu",
        dtype=torch.float32,
    )
    assert converted.info["vision_tower_in_checkpoint"] is tower_in_checkpoint
    assert converted.info["image_aspect"] == "pad"  # from the checkpoint's image_aspect_ratio
    assert converted.info["prompt_tokenization"] == "chunks"
    assert converted.image_token_id == native.config.image_token_id
    requests = make_requests(images)
    batch = converted.encode(requests, [converted.load_visuals(r) for r in requests])
    ours = attended_logits(converted.model, batch)
    theirs = attended_logits(native, batch)
    assert torch.allclose(ours, theirs, atol=1e-5), (ours - theirs).abs().max()
    # The ids added by the conversion are never generated.
    assert converted.model.generation_config.suppress_tokens == [61, 62, 63]
    batched = converted.generate(requests)
    assert batched == [converted.generate([r])[0] for r in requests]
    if fmt == "bin":  # the chunk-tokenized (original LLaVA) prompt path scores likelihoods too
        check_loglikelihood(converted, requests)


def test_original_layout_matches_llava_hf_generation(tiny, adapter, tmp_path):
    _, native, images = tiny
    folder = save_original_llava(native, tmp_path / "orig", tmp_path / "clip")
    converted = adapter_loader("llava_original")(
        entry("orig", "llava_original", folder, "llava_hf", vision_tower=str(tmp_path / "clip")),
        folder,
        device="cpu",
        dtype=torch.float32,
    )
    requests = make_requests(images)
    # The tiny native model may emit <image>/<pad> (random rows); the original vocabulary cannot.
    generation = adapter.model.generation_config
    try:
        generation.suppress_tokens = [61, 62]
        expected = adapter.generate(requests)
    finally:
        generation.suppress_tokens = None
    assert converted.generate(requests) == expected
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "llava_llama" and config["vocab_size"] == N_TEXT


def test_missing_vision_tower_names_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(HarnessError, match="vision tower nobody/no-such-clip not found"):
        resolve_vision_tower("nobody/no-such-clip")


def test_loglikelihood_is_batch_invariant_and_right(adapter, tiny):
    check_loglikelihood(adapter, make_requests(tiny[2]))

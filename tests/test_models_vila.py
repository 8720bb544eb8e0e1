"""VILA folders (llm/ + vision_tower/ + mm_projector/) assembled without remote code."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from harness.api.requests import Request
from harness.errors import HarnessError
from harness.models.registry import ModelEntry, adapter_loader
from harness.models.vila import (
    IMAGE_TOKEN_INDEX,
    DownsampleProjector,
    VilaForGeneration,
    merge_2x2,
)
from tests.likelihood_checks import check_loglikelihood
from tests.tiny_models import (
    build_llava,
    build_vila_downsample,
    save_vila_from_llava,
    write_image,
)

QUESTIONS = (
    "What is in the image ?",
    "Is there a cat ?",
    "describe this picture",
    "What color of the tree is it ? Answer the question using a single word or phrase .",
)
GEN = {"max_new_tokens": 8, "temperature": 0}
N_TEXT = 61


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("img")
    return [write_image(root / f"img{i}.png", (20 + 5 * i, 12 + i), seed=i) for i in range(4)]


def make_requests(images):
    return [
        Request("t", str(i), q, (str(img),), dict(GEN))
        for i, (q, img) in enumerate(zip(QUESTIONS, images, strict=True))
    ]


def load_vila(folder, template="vicuna_v1", **options):
    entry = ModelEntry("tiny-vila", "vila", str(folder), "llava", template, options)
    return adapter_loader("vila")(entry, folder, device="cpu", dtype=torch.float32)


@pytest.fixture(scope="module")
def downsample(tmp_path_factory):
    folder = build_vila_downsample(tmp_path_factory.mktemp("vila15") / "VILA1.5-tiny")
    return load_vila(folder)


# -- the 2x2 token merge --------------------------------------------------------------------


def test_merge_2x2_even_grid_order():
    x = torch.arange(16.0).reshape(1, 16, 1)  # token r*4+q holds value r*4+q
    merged = merge_2x2(x)
    assert merged.shape == (1, 4, 4)
    # Blocks come out column-block major; inside a block: (2i,2j) (2i,2j+1) (2i+1,2j) (2i+1,2j+1).
    assert merged[0].tolist() == [
        [0, 1, 4, 5],
        [8, 9, 12, 13],
        [2, 3, 6, 7],
        [10, 11, 14, 15],
    ]


def test_merge_2x2_odd_grid_pads_with_zeros_and_keeps_channels_together():
    x = torch.arange(1.0, 10.0).reshape(1, 9, 1)  # 3x3 grid of 1..9
    assert merge_2x2(x)[0].tolist() == [[1, 2, 4, 5], [7, 8, 0, 0], [3, 0, 6, 0], [9, 0, 0, 0]]
    two = torch.stack([torch.arange(4.0), -torch.arange(4.0)], -1).reshape(1, 4, 2)
    assert merge_2x2(two)[0].tolist() == [[0, 0, 1, -1, 2, -2, 3, -3]]
    with pytest.raises(HarnessError, match="square"):
        merge_2x2(torch.zeros(1, 5, 2))


def test_downsample_projector_shapes_and_names():
    proj = DownsampleProjector(vision_hidden=6, text_hidden=10)
    assert sorted(proj.state_dict()) == [
        "layers.1.bias",
        "layers.1.weight",
        "layers.2.bias",
        "layers.2.weight",
        "layers.4.bias",
        "layers.4.weight",
    ]
    assert proj(torch.randn(3, 27 * 27, 6)).shape == (3, 14 * 14, 10)


# -- mlp_downsample (VILA1.5) ------------------------------------------------------------------


def test_downsample_generation_is_batch_invariant(downsample, images):
    assert isinstance(downsample.model, VilaForGeneration)
    assert downsample.info["projector"] == "mlp_downsample"
    assert (
        downsample.info["image_aspect"] == "resize" and downsample.info["template"] == "vicuna_v1"
    )
    assert downsample.tokens_per_image == 4  # 3x3 SigLIP patches -> 2x2 merged tokens
    requests = make_requests(images)
    batched = downsample.generate(requests)
    assert any(batched)
    assert batched == [downsample.generate([r])[0] for r in requests]
    assert batched == downsample.generate(requests[::-1])[::-1]


def test_downsample_forward_matches_manual_computation(downsample, images):
    model = downsample.model
    requests = make_requests(images)
    batch = downsample.encode(requests, [downsample.load_visuals(r) for r in requests])
    ids = batch["input_ids"]
    assert int((ids == IMAGE_TOKEN_INDEX).sum()) == 4 * 4
    assert (batch["attention_mask"][:, 0] == 0).any()  # left padded
    with torch.no_grad():
        logits = model(**batch).logits
        row = 3  # the longest prompt: no padding
        assert batch["attention_mask"][row].all()
        hidden = model.vision_tower(batch["pixel_values"][row : row + 1], output_hidden_states=True)
        feats = hidden.hidden_states[-2]  # cls_patch: all 9 SigLIP tokens
        layers = model.projector.layers
        tokens = layers[4](layers[3](layers[2](layers[1](merge_2x2(feats)))))
        embeds = model.llm.get_input_embeddings()(ids[row : row + 1].clamp(min=0)).clone()
        embeds[0, ids[row] == IMAGE_TOKEN_INDEX] = tokens[0]
        manual = model.llm(inputs_embeds=embeds).logits
        assert torch.allclose(logits[row], manual[0], atol=1e-5)
        # Padded rows give the logits their unpadded prompts give.
        for i in range(3):
            single = downsample.encode([requests[i]], [downsample.load_visuals(requests[i])])
            alone = model(**single).logits[0]
            mask = batch["attention_mask"][i].bool()
            assert torch.allclose(logits[i][mask], alone, atol=1e-5)


def test_resize_preprocessing(downsample):
    image = Image.new("RGB", (30, 12), (200, 30, 30))
    pixels = downsample.pixel_values([image])
    expected = downsample.image_processor(images=[image.resize((12, 12))], return_tensors="pt")
    assert torch.equal(pixels, expected["pixel_values"])


def test_prompt_is_chunk_tokenized_vicuna(downsample):
    request = Request("t", "0", "Is there a cat ?", ("x",), dict(GEN))
    text = downsample.prompt(request, 1)
    assert text.startswith("A chat between") and text.endswith(
        "USER: <image>\nIs there a cat ? ASSISTANT:"
    )
    batch = downsample.encode([request], [[Image.new("RGB", (12, 12))]])
    ids = batch["input_ids"][0].tolist()
    tok = downsample.tokenizer
    assert ids[0] == tok.bos_token_id and ids.count(tok.bos_token_id) == 1
    assert ids.count(IMAGE_TOKEN_INDEX) == 4


# -- linear / mlp2x_gelu: the same computation as transformers' LLaVA ---------------------------


def test_mlp2x_gelu_folder_gives_llava_logits(tmp_path, images):
    native, _ = build_llava(seed=5)
    folder = save_vila_from_llava(native, tmp_path / "vila")
    adapter = load_vila(folder, "llava_hf")
    assert type(adapter.model).__name__ == "LlavaForConditionalGeneration"
    assert adapter.info["projector"] == "mlp2x_gelu" and adapter.info["image_aspect"] == "resize"
    requests = make_requests(images)
    batch = adapter.encode(requests, [adapter.load_visuals(r) for r in requests])
    mask = batch["attention_mask"].bool()
    with torch.no_grad():
        ours = adapter.model(**batch).logits[mask][:, :N_TEXT]
        theirs = native(**batch).logits[mask][:, :N_TEXT]
    assert torch.allclose(ours, theirs, atol=1e-5), (ours - theirs).abs().max()
    assert adapter.generate(requests) == [adapter.generate([r])[0] for r in requests]


def test_linear_projector_folder_gives_llava_logits(tmp_path, images):
    native, _ = build_llava(seed=6)
    proj = native.model.multi_modal_projector
    with torch.no_grad():
        proj.act = torch.nn.Identity()
        proj.linear_2.weight.copy_(torch.eye(proj.linear_2.weight.shape[0]))
        proj.linear_2.bias.zero_()
    folder = save_vila_from_llava(native, tmp_path / "vila", projector="linear")
    adapter = load_vila(folder, "llava_hf")
    assert_llava_logits(adapter, native, make_requests(images)[:2])


def assert_llava_logits(adapter, native, requests) -> None:
    batch = adapter.encode(requests, [adapter.load_visuals(r) for r in requests])
    mask = batch["attention_mask"].bool()
    with torch.no_grad():
        ours = adapter.model(**batch).logits[mask][:, :N_TEXT]
        theirs = native(**batch).logits[mask][:, :N_TEXT]
    assert torch.allclose(ours, theirs, atol=1e-5), (ours - theirs).abs().max()


def test_not_a_vila_folder(tmp_path):
    (tmp_path / "llm").mkdir()
    with pytest.raises(HarnessError, match="vision_tower"):
        load_vila(tmp_path)


def test_downsample_loglikelihood(downsample, images):
    check_loglikelihood(downsample, make_requests(images))


def test_published_vila_single_folder_loads_as_llava(tmp_path, images):
    """VILA-7b/13b (NVlabs/VILA@1c09a93) ship one LLaVA-layout folder, tower inside."""
    from dataclasses import replace

    from harness.models.registry import REGISTRY
    from tests.tiny_models import save_original_llava

    native, _ = build_llava(seed=7)
    folder = save_original_llava(
        native, tmp_path / "VILA-7b", tmp_path / "clip", tower_in_checkpoint=True
    )
    entry = replace(REGISTRY["vila-7b"], name="tiny-vila-7b", source=str(folder))
    adapter = adapter_loader("vila")(entry, folder, device="cpu", dtype=torch.float32)
    assert adapter.info["weights"] == "vila_single_folder"
    assert adapter.info["vision_tower_in_checkpoint"] is True
    assert adapter.profile.name == "vila" and adapter.template.name == "vicuna_v1"
    assert adapter.image_aspect == "pad"  # the checkpoint's image_aspect_ratio
    assert_llava_logits(adapter, native, make_requests(images)[:2])


def test_internvit_tower_is_refused_with_a_reason(tmp_path):
    import json as _json

    for part in ("llm", "vision_tower", "mm_projector"):
        (tmp_path / part).mkdir()
    (tmp_path / "mm_projector" / "config.json").write_text(
        '{"mm_projector_type": "mlp_downsample"}'
    )
    (tmp_path / "vision_tower" / "config.json").write_text(
        _json.dumps({"model_type": "intern_vit_6b"})
    )
    with pytest.raises(HarnessError, match="InternViT"):
        load_vila(tmp_path)

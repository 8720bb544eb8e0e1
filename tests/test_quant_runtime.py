"""Quantized adapters: INT4 layers installed in place, fingerprints, cache reuse, recipe errors."""

from __future__ import annotations

import copy

import pytest
import torch

from harness.api.requests import Request
from harness.errors import HarnessError
from harness.kernels.linear import W4A16Linear
from harness.models.registry import ModelEntry, adapter_loader
from harness.quantizers import apply_fake_quant, quantize_model
from harness.quantizers.runtime import install, parse_quant, quantize_adapter
from tests.tiny_models import build_llava, write_image

GEN = {"max_new_tokens": 6, "temperature": 0.0}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("qllava")
    build_llava(root / "m", seed=1)
    images = [write_image(root / f"i{i}.png", (16, 16), seed=i) for i in range(3)]
    return root, images


def load(root):
    entry = ModelEntry("tiny", "llava", str(root / "m"), "llava", "llava_hf", {})
    return adapter_loader("llava")(entry, root / "m", device="cpu", dtype=torch.float32)


def requests(images):
    return [
        Request("t", str(i), "what is in the image ?", (str(p),), GEN) for i, p in enumerate(images)
    ]


def test_rtn_installs_w4a16_layers_and_changes_the_fingerprint(tiny):
    root, images = tiny
    fp = load(root)
    q = load(root)
    qmodel = quantize_adapter(q, "rtn-w4g32")
    # every decoder Linear is quantized and packed (out_features are multiples of 8)
    assert qmodel.stats["install"]["w4a16"] > 0
    kinds = {type(m).__name__ for m in q.model.model.language_model.layers[0].modules()}
    assert "W4A16Linear" in kinds
    assert not any(isinstance(m, W4A16Linear) for m in q.model.model.vision_tower.modules())
    assert q.fingerprint() != fp.fingerprint()
    assert q.info["quant"]["recipe"] == "rtn-w4g32"
    assert len(q.generate(requests(images))) == 3


def test_installed_layers_compute_the_dequantized_weights(tiny):
    root, _ = tiny
    a = load(root)
    qmodel = quantize_model(a.model, "rtn-w4g32")
    ref = copy.deepcopy(a.model)
    apply_fake_quant(ref, qmodel)
    install(a.model, qmodel, backend="torch")
    ids = torch.tensor([[1, 5, 6, 7, 8, 9]])
    with torch.no_grad():
        got = a.model(input_ids=ids).logits
        want = ref(input_ids=ids).logits
    # AWQ's on-disk layout keeps fp16 scales: the only difference from fake quant.
    assert torch.allclose(got, want, atol=2e-3, rtol=1e-3), (got - want).abs().max()


def test_quant_cache_reuses_the_search(tiny, tmp_path):
    root, images = tiny
    first = load(root)
    s1 = quantize_adapter(first, "awq-w4g32-n4-s32", cache_dir=tmp_path)
    second = load(root)
    s2 = quantize_adapter(second, "awq-w4g32-n4-s32", cache_dir=tmp_path)
    assert (s1.stats["cache"], s2.stats["cache"]) == ("miss", "hit")
    assert first.fingerprint() == second.fingerprint()
    assert first.generate(requests(images)) == second.generate(requests(images))


def test_bad_recipe_names_the_flag():
    with pytest.raises(HarnessError, match="--quant awq-w4"):
        parse_quant("awq-w4")


def test_quant_dump_and_load_skip_the_search_and_check_what_they_hold(tiny, tmp_path):
    root, images = tiny
    first = load(root)
    dumped = quantize_adapter(first, "gptq-w4g32-n4-s32", dump=tmp_path / "dump")
    second = load(root)
    loaded = quantize_adapter(second, "gptq-w4g32-n4-s32", load=tmp_path / "dump")
    assert loaded.stats["cache"] == "loaded"
    for name, qw in dumped.weights.items():
        assert torch.equal(qw.codes, loaded.weights[name].codes)
        assert torch.equal(qw.scales, loaded.weights[name].scales)
    assert first.fingerprint() == second.fingerprint()
    assert first.generate(requests(images)) == second.generate(requests(images))
    # another recipe, other weights, or no dump at all: refused, naming the flag
    with pytest.raises(HarnessError, match="holds gptq-w4g32-n4-s32.*asks for gptq-w4g32-n8"):
        quantize_adapter(load(root), "gptq-w4g32-n8-s32", load=tmp_path / "dump")
    other = load(root)
    with torch.no_grad():
        other.model.lm_head.weight.add_(1.0)
    other._fingerprint = None
    with pytest.raises(HarnessError, match="searched on other weights"):
        quantize_adapter(other, "gptq-w4g32-n4-s32", load=tmp_path / "dump")
    with pytest.raises(HarnessError, match="--quant-load .*missing"):
        quantize_adapter(load(root), "gptq-w4g32-n4-s32", load=tmp_path / "missing")
    weights = tmp_path / "dump" / "quantized.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])  # truncated
    with pytest.raises(HarnessError, match="not a readable quantization dump"):
        quantize_adapter(load(root), "gptq-w4g32-n4-s32", load=tmp_path / "dump")


def test_a_stale_quant_cache_entry_is_a_one_line_error_of_harness_run(tmp_path, capsys):
    import json

    from harness.cli import main
    from harness.quantizers.apply import META_FILE

    cache = tmp_path / "cache"
    run = ["run", "--model", "toy-llava", "--tasks", "pope_random-toy", "--limit", "2"]
    run += ["--no-db", "--quant-cache", str(cache), "--quant"]
    assert main([*run, "rtn-w4g128"]) == 0
    assert main([*run, "rtn-w3g128"]) == 0
    entries = {
        json.loads((d / META_FILE).read_text())["recipe"]["bits"]: d for d in cache.iterdir()
    }
    assert sorted(entries) == [3, 4]
    # the W4 entry now holds the W3 search (a copied or hand-edited cache)
    for f in entries[4].iterdir():
        f.unlink()
    for f in entries[3].iterdir():
        (entries[4] / f.name).write_bytes(f.read_bytes())
    capsys.readouterr()
    assert main([*run, "rtn-w4g128"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    last = err.strip().splitlines()[-1]  # after the progress lines, one line of error
    assert [line for line in err.splitlines() if line.startswith("error:")] == [last]
    assert last.startswith("error: --quant rtn-w4g128: quant cache ") and "stale" in last, err


def test_an_unsupported_model_structure_is_a_harness_error_naming_the_flag(tiny):
    root, _ = tiny
    adapter = load(root)
    language = adapter.model.model.language_model
    language.layers = torch.nn.Sequential(*language.layers)  # no ModuleList of decoder layers
    with pytest.raises(HarnessError) as caught:
        quantize_adapter(adapter, "rtn-w4g32")
    message = str(caught.value)
    assert message.startswith("--quant rtn-w4g32: ") and "\n" not in message
    assert "no nn.ModuleList of decoder layers" in message

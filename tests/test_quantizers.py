"""Quantizers: group quantizer formulas, recipes, module scope, AWQ/GPTQ/SignRound quality, cache.

Tiny models are built from config classes (no hub). The quality model is a Llama-based
LLaVA (hidden 64, intermediate 128, 2 layers) whose RMSNorm weights carry a few
outlier channels, so its Linear inputs have activation outliers as real LLMs do.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch import nn

from harness.quantizers import (
    CalibrationError,
    QuantRecipe,
    RecipeError,
    apply_fake_quant,
    builtin_texts,
    fake_quantize,
    find_parts,
    load_quantized,
    parse_recipe,
    quantize_model,
    quantize_weight,
    save_quantized,
    select_linears,
    text_calibration,
)
from harness.quantizers import awq as awq_mod
from harness.quantizers.algorithms import ALGORITHMS, Algorithm
from harness.quantizers.apply import WEIGHTS_FILE, RecipeDoesNotFit
from harness.quantizers.calibration import CalibrationSet, layer_output
from harness.quantizers.modules import llama_scale_groups

DECODER_PROJ = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # Tiny matmuls on a shared 2-core machine are ~30x slower with 2 threads.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# -- tiny models ---------------------------------------------------------------------------------


def _tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for word in sorted({w for t in builtin_texts() for w in t.split()}):
        vocab.setdefault(word, len(vocab))
    for special in ("<image>", "<pad>"):
        vocab[special] = len(vocab)
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        additional_special_tokens=["<image>"],
    )


def _clip(hidden: int = 32, image: int = 16) -> dict:
    return {
        "model_type": "clip_vision_model",
        "hidden_size": hidden,
        "intermediate_size": 2 * hidden,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "image_size": image,
        "patch_size": 4,
        "projection_dim": 16,
    }


def _llama(vocab: int, kv_heads: int = 4) -> dict:
    return {
        "model_type": "llama",
        "vocab_size": vocab,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": kv_heads,
        "initializer_range": 0.1,
        "max_position_embeddings": 256,
        "bos_token_id": 1,
        "eos_token_id": 2,
    }


def _llava(tok, *, outliers: bool = True, kv_heads: int = 4, seed: int = 0):
    from transformers import LlavaConfig, LlavaForConditionalGeneration

    config = LlavaConfig(
        vision_config=_clip(),
        text_config=_llama(len(tok), kv_heads),
        image_token_index=tok.convert_tokens_to_ids("<image>"),
        image_seq_length=16,
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
    )
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config).eval()
    if outliers:  # a few input channels 10x larger: what AWQ's scaling is for
        gen = torch.Generator().manual_seed(seed + 1)
        with torch.no_grad():
            for layer in model.model.language_model.layers:
                for norm in (layer.input_layernorm, layer.post_attention_layernorm):
                    norm.weight[torch.randperm(64, generator=gen)[:4]] *= 10
    return model


@pytest.fixture(scope="module")
def tok():
    return _tokenizer()


@pytest.fixture(scope="module")
def llava(tok):
    return _llava(tok)


@pytest.fixture(scope="module")
def calib(tok):
    return text_calibration(tok, 16, 64, batch_size=8)


# -- group quantizer ---------------------------------------------------------------------------


def test_group_quantizer_hand_example_asymmetric():
    w = torch.tensor([[-1.0, -0.45, 0.33, 2.0]])
    qw = quantize_weight(w, bits=4, group_size=4)
    # scale = (2 - -1) / 15 = 0.2; zero = -round(-1 / 0.2) = 5; q = round(w / 0.2) + 5
    assert torch.allclose(qw.scales, torch.tensor([[0.2]]))
    assert qw.zeros.tolist() == [[5]]
    assert qw.codes.tolist() == [[0, 3, 7, 15]]
    assert torch.allclose(qw.dequantize(), torch.tensor([[-1.0, -0.4, 0.4, 2.0]]), atol=1e-6)
    assert qw.codes.dtype == torch.uint8 and qw.zeros.dtype == torch.uint8
    assert qw.scales.dtype == torch.float32 and not qw.symmetric
    # 3 bits: scale 3/7, zero round(7/3) = 2
    q3 = quantize_weight(w, bits=3, group_size=4)
    assert torch.allclose(q3.scales, torch.tensor([[3 / 7]]))
    assert q3.zeros.tolist() == [[2]] and q3.codes.tolist() == [[0, 1, 3, 7]]


def test_group_quantizer_hand_example_symmetric():
    w = torch.tensor([[-1.0, -0.45, 0.33, 2.0]])
    qw = quantize_weight(w, bits=4, group_size=4, symmetric=True)
    # scale = max|w| / 8 = 0.25; q = clamp(round(w / 0.25), -8, 7); codes = q + 8; zero = 8
    assert torch.allclose(qw.scales, torch.tensor([[0.25]]))
    assert qw.zeros.tolist() == [[8]] and qw.symmetric
    assert qw.codes.tolist() == [[4, 6, 9, 15]]
    assert torch.allclose(qw.dequantize(), torch.tensor([[-1.0, -0.5, 0.25, 1.75]]))


@pytest.mark.parametrize("bits", [3, 4, 8])
@pytest.mark.parametrize("symmetric", [False, True])
def test_group_quantizer_error_bound(bits, symmetric):
    gen = torch.Generator().manual_seed(bits)
    w = torch.randn(48, 128, generator=gen) * torch.rand(1, 128, generator=gen) * 3
    w[0, :32] = w[0, :32].abs() + 0.1  # a one-signed group
    qw = quantize_weight(w, bits=bits, group_size=32, symmetric=symmetric)
    assert int(qw.codes.max()) <= 2**bits - 1 and int(qw.zeros.max()) <= 2**bits - 1
    deq = qw.dequantize()
    scale = qw.scales.repeat_interleave(32, dim=1)
    err = (deq - w).abs()
    if symmetric:
        assert (qw.zeros == 2 ** (bits - 1)).all()
        top = (2 ** (bits - 1) - 1) * scale  # largest representable positive value
        inside = w <= top + 0.5 * scale
        assert (err[inside] <= scale[inside] / 2 + 1e-6).all()
        assert (err <= scale + 1e-6).all()
    else:
        assert (err <= scale / 2 + 1e-6).all()
    assert torch.equal(fake_quantize(w, bits, 32, symmetric), deq)


def test_group_quantizer_clip_and_bad_group():
    w = torch.tensor([[-1.0, -0.45, 0.33, 2.0]])
    clipped = quantize_weight(w, 4, 4, clip=torch.tensor([[1.0]]))
    assert torch.allclose(clipped.scales, torch.tensor([[2 / 15]]))  # range [-1, 1]
    clamped = w.clamp(-1, 1)
    assert ((clipped.dequantize() - clamped).abs() <= 1 / 15 + 1e-6).all()
    with pytest.raises(ValueError, match="multiple of group size"):
        quantize_weight(torch.zeros(2, 6), 4, 4)


# -- recipes -------------------------------------------------------------------------------------


def test_recipe_parse_and_name():
    r = parse_recipe("awq-w4g128")
    assert (r.method, r.bits, r.group_size, r.symmetric) == ("awq", 4, 128, False)
    assert (r.calib_source, r.calib_samples, r.calib_seqlen) == ("text", 128, 512)
    assert not (r.quantize_vision or r.quantize_lm_head or r.quantize_projector)
    assert r.name == "awq-w4g128"
    for name in ("rtn-w4g128", "gptq-w4g128", "autoround-w4g128", "awq-w3g128", "rtn-w8g64"):
        assert parse_recipe(name).name == name
    assert parse_recipe("signround-w4g128").method == "autoround"
    full = parse_recipe("gptq-w4g32-sym-vision-lmhead-proj-image_text-n64-s256")
    assert full.symmetric and full.quantize_vision and full.quantize_lm_head
    assert full.quantize_projector and full.calib_source == "image_text"
    assert (full.calib_samples, full.calib_seqlen) == (64, 256)
    assert parse_recipe(full.name) == full
    assert parse_recipe("autoround-w4g128-iters50").iters == 50
    assert QuantRecipe.from_dict(full.to_dict()) == full


def test_recipe_hash_is_stable_and_sensitive():
    a, b = parse_recipe("awq-w4g128"), parse_recipe("awq-w4g128")
    assert a.hash() == b.hash() and len(a.hash()) == 64
    assert a.hash() == QuantRecipe(method="awq").hash()
    variants = [
        "awq-w4g128-sym",
        "awq-w4g128-vision",
        "awq-w4g128-lmhead",
        "awq-w4g128-image_text",
        "awq-w4g128-n64",
        "awq-w4g128-s256",
        "awq-w3g128",
        "awq-w4g64",
        "gptq-w4g128",
        "awq-w4g128-duo",
    ]
    hashes = {parse_recipe(v).hash() for v in variants} | {a.hash()}
    assert len(hashes) == len(variants) + 1
    assert a.with_options(damp=0.02).hash() != a.hash()


@pytest.mark.parametrize(
    ("name", "part"),
    [
        ("awx-w4g128", "awx"),
        ("awq-w4x128", "w4x128"),
        ("awq-w9g128", "w9g128"),
        ("awq-w4g128-foo", "foo"),
        ("awq", "METHOD-wBITSgGROUP"),
        ("awq-w4g128-sym-asym", "asym"),
        ("", "non-empty"),
    ],
)
def test_recipe_bad_names_name_the_bad_part(name, part):
    with pytest.raises(RecipeError, match=part):
        parse_recipe(name)


# -- module scope --------------------------------------------------------------------------------


def _expected_decoder(prefix: str, n_layers: int = 2) -> set[str]:
    names = set()
    for i in range(n_layers):
        for proj in DECODER_PROJ:
            part = "self_attn" if proj in DECODER_PROJ[:4] else "mlp"
            names.add(f"{prefix}.{i}.{part}.{proj}")
    return names


def test_scope_llava(llava):
    parts = find_parts(llava)
    assert parts.layers == "model.language_model.layers"
    assert parts.lm_head == "lm_head"
    assert parts.vision_towers == ["model.vision_tower"]
    assert parts.projectors == ["model.multi_modal_projector"]
    sel = select_linears(llava)
    assert set(sel.quantize) == _expected_decoder("model.language_model.layers")
    assert "lm_head" in sel.keep
    assert {"model.multi_modal_projector.linear_1", "model.multi_modal_projector.linear_2"} <= set(
        sel.keep
    )
    vision = [n for n, c in sel.category.items() if c == "vision"]
    assert vision and all(n.startswith("model.vision_tower.") for n in vision)
    assert not set(vision) & set(sel.quantize)
    with_all = select_linears(llava, vision=True, projector=True, lm_head=True)
    assert set(with_all.quantize) == set(sel.category)
    only_vision = select_linears(llava, vision=True)
    assert set(only_vision.quantize) == set(sel.quantize) | set(vision)


def test_scope_video_llava_and_qwen2_vl():
    from transformers import (
        Qwen2VLForConditionalGeneration,
        VideoLlavaConfig,
        VideoLlavaForConditionalGeneration,
    )

    torch.manual_seed(0)
    text = _llama(60)
    vl = VideoLlavaForConditionalGeneration(
        VideoLlavaConfig(
            vision_config=_clip(), text_config=text, image_token_index=58, video_token_index=59
        )
    )
    parts = find_parts(vl)
    assert set(parts.vision_towers) == {"model.image_tower", "model.video_tower"}
    sel = select_linears(vl)
    assert set(sel.quantize) == _expected_decoder("model.language_model.layers")
    assert {sel.category[n] for n in sel.keep} == {"vision", "projector", "lm_head"}

    qwen = Qwen2VLForConditionalGeneration(_qwen_config())
    parts = find_parts(qwen)
    assert parts.vision_towers == ["model.visual"]
    assert parts.projectors == ["model.visual.merger"]
    sel = select_linears(qwen)
    assert set(sel.quantize) == _expected_decoder("model.language_model.layers")
    assert sel.category["model.visual.merger.mlp.0"] == "projector"
    assert sel.category["model.visual.blocks.0.mlp.fc1"] == "vision"
    assert set(select_linears(qwen, vision=True).quantize) - set(sel.quantize) == {
        n for n, c in sel.category.items() if c == "vision"
    }


def _qwen_config():
    from transformers import Qwen2VLConfig

    text = {
        "model_type": "qwen2_vl_text",
        "vocab_size": 60,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "rope_parameters": {
            "rope_type": "default",
            "rope_theta": 10000.0,
            "mrope_section": [2, 1, 1],
        },
        "bos_token_id": 1,
        "eos_token_id": 2,
        "pad_token_id": 0,
    }
    vision = {
        "depth": 2,
        "num_heads": 4,
        "patch_size": 14,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "in_channels": 3,
        "embed_dim": 32,
        "hidden_size": 32,
        "mlp_ratio": 2,
    }
    return Qwen2VLConfig(
        text_config=text,
        vision_config=vision,
        image_token_id=55,
        video_token_id=56,
        vision_start_token_id=57,
        vision_end_token_id=58,
    )


def test_scope_generic_wrapper():
    """A plain nn.Module holding llm / vision_tower / projector (VILA-style) is walked too."""
    from transformers import CLIPVisionConfig, CLIPVisionModel, LlamaConfig, LlamaForCausalLM

    class Wrapper(nn.Module):
        def __init__(self):
            super().__init__()
            cfg = _llama(60)
            cfg.pop("model_type")
            self.llm = LlamaForCausalLM(LlamaConfig(**cfg))
            self.vision_tower = CLIPVisionModel(CLIPVisionConfig(**{**_clip(), "model_type": None}))
            self.projector = nn.Sequential(nn.Linear(32, 64), nn.GELU(), nn.Linear(64, 64))

    parts = find_parts(Wrapper())
    assert parts.layers == "llm.model.layers" and parts.lm_head == "llm.lm_head"
    assert parts.vision_towers == ["vision_tower"] and parts.projectors == ["projector"]


def test_qwen2_vl_quantizes_with_gqa_and_bias():
    from transformers import Qwen2VLForConditionalGeneration

    torch.manual_seed(0)
    qwen = Qwen2VLForConditionalGeneration(_qwen_config()).eval()
    ids = torch.randint(3, 50, (4, 16))
    cs = CalibrationSet(
        [{"input_ids": ids, "attention_mask": torch.ones_like(ids)}], "text", 4, int(ids.numel())
    )
    groups = llama_scale_groups(qwen.model.language_model.layers[0])
    assert [g.kind for g in groups] == ["attn_in", "mlp_in", "up_down"]  # no v->o with GQA
    qm = quantize_model(qwen, "awq-w4g16", cs)
    assert set(qm.weights) == _expected_decoder("model.language_model.layers")
    assert qm.weights["model.language_model.layers.0.self_attn.q_proj"].bias is not None
    model = apply_fake_quant(copy.deepcopy(qwen), qm)
    with torch.no_grad():
        assert torch.isfinite(model(input_ids=ids).logits).all()


# -- quality: AWQ / GPTQ / SignRound against RTN, every decoder layer ---------------------------


def _layer_records(model, batches):
    """Per decoder layer: (input hidden, kwargs, output) for each batch of a full forward."""
    layers = find_parts(model).layer_names
    records = {name: [] for name in layers}
    handles = []
    for name in layers:

        def hook(_m, args, kwargs, out, name=name):
            h = args[0] if args else kwargs["hidden_states"]
            kw = {k: v for k, v in kwargs.items() if k not in ("hidden_states", "past_key_values")}
            records[name].append((h.detach(), kw, layer_output(out).detach()))

        handles.append(model.get_submodule(name).register_forward_hook(hook, with_kwargs=True))
    try:
        with torch.no_grad():
            for batch in batches:
                model(**batch, use_cache=False)
    finally:
        for h in handles:
            h.remove()
    return records


def _mse(pairs):
    err = sum(float((a - b).pow(2).sum()) for a, b in pairs)
    return err / sum(b.numel() for _, b in pairs)


def layer_errors(model, qmodel, batches):
    """(local, end_to_end) per decoder layer.

    local: the quantized layer on the FP model's inputs vs the FP layer output.
    end_to_end: the fully quantized model's layer output vs the FP model's.
    """
    fp = _layer_records(model, batches)
    qm = apply_fake_quant(copy.deepcopy(model), qmodel)
    qrec = _layer_records(qm, batches)
    local, e2e = {}, {}
    with torch.no_grad():
        for name, recs in fp.items():
            layer = qm.get_submodule(name)
            local[name] = _mse([(layer_output(layer(h, **kw)), y) for h, kw, y in recs])
            e2e[name] = _mse([(q[2], f[2]) for q, f in zip(qrec[name], recs, strict=True)])
    return local, e2e


RECIPES = {
    "rtn": "rtn-w4g32",
    "awq": "awq-w4g32-n16-s64",
    "gptq": "gptq-w4g32-n16-s64",
    "signround": "autoround-w4g32-n16-s64-iters100",
}


@pytest.fixture(scope="module")
def quality(llava, tok, calib):
    results = {}
    for key, recipe in RECIPES.items():
        qmodel = quantize_model(llava, recipe, calib)
        results[key] = (qmodel, *layer_errors(llava, qmodel, calib.batches))
    return results


def test_quality_every_layer_beats_rtn(quality, capsys):
    rtn_local, rtn_e2e = quality["rtn"][1], quality["rtn"][2]
    lines = ["layer | metric | " + " | ".join(RECIPES)]
    for name in rtn_local:
        for metric, idx in (("local", 1), ("end-to-end", 2)):
            row = " | ".join(f"{quality[k][idx][name]:.4f}" for k in RECIPES)
            lines.append(f"{name.rsplit('.', 1)[-1]} | {metric} | {row}")
    with capsys.disabled():
        print("\nper-layer output MSE on calibration data (W4 G32):\n" + "\n".join(lines))
    for name in rtn_local:
        # AWQ and GPTQ: lower error than RTN with the FP model's inputs to each layer ...
        assert quality["awq"][1][name] < rtn_local[name], name
        assert quality["gptq"][1][name] < rtn_local[name], name
        # ... and in the fully quantized model. SignRound optimises exactly the latter
        # (its quantized block runs on the quantized previous blocks' outputs).
        for key in ("awq", "gptq", "signround"):
            assert quality[key][2][name] < rtn_e2e[name], (key, name)
    assert (
        quality["signround"][1]["model.language_model.layers.0"]
        < rtn_local["model.language_model.layers.0"]
    )


def test_quality_stats_and_scope(quality, calib):
    for key in ("awq", "gptq", "signround"):
        qmodel = quality[key][0]
        assert set(qmodel.weights) == _expected_decoder("model.language_model.layers")
        assert qmodel.stats["calib_tokens"] == calib.n_tokens == 16 * 64
        assert "lm_head" in qmodel.not_quantized
        assert set(qmodel.stats["layer_errors"]) == set(quality["rtn"][1])
    # the runner's own local error stat agrees with the independent measurement
    for name, value in quality["awq"][0].stats["layer_errors"].items():
        assert value == pytest.approx(quality["awq"][1][name], rel=1e-3)
    awq_stats = quality["awq"][0].stats
    assert len(awq_stats["modified_params"]) == 4  # two RMSNorms per layer
    groups = awq_stats["layers"]["model.language_model.layers.0"]["groups"]
    assert set(groups) == {"attn_in", "v_o", "mlp_in", "up_down"}
    assert all(g["loss"] <= g["rtn_loss"] for g in groups.values())


# -- AWQ folding keeps the function --------------------------------------------------------------


def test_awq_fold_preserves_fp_function(llava, tok, calib):
    """Scales folded into the norms / previous Linear leave the FP model's logits unchanged.

    Checked in float64, where rounding is far below the 1e-5 tolerance (in fp32 the
    folded model differs by fp32 rounding: ~5e-7 of the output magnitude).
    """
    model = copy.deepcopy(llava).double()
    reference = copy.deepcopy(llava).double()
    batch = calib.batches[0]
    gen = torch.Generator().manual_seed(3)
    for name in find_parts(model).layer_names:
        layer = model.get_submodule(name)
        for group in llama_scale_groups(layer):
            k = layer.get_submodule(group.linears[0]).in_features
            s = torch.rand(k, generator=gen, dtype=torch.float64) * 1.5 + 0.5
            awq_mod.fold_scale(layer, group, s)
    with torch.no_grad():
        before = reference(**batch).logits
        after = model(**batch).logits
    norm = model.model.language_model.layers[0].input_layernorm.weight
    assert not torch.allclose(norm, reference.model.language_model.layers[0].input_layernorm.weight)
    assert torch.allclose(after, before, atol=1e-5, rtol=0)


def test_awq_searched_scales_fold_exactly(llava, calib):
    """The searched scales, folded into a layer, leave its FP output unchanged."""
    from harness.quantizers.calibration import capture_layer_inputs, run_layer

    layer0 = llava.model.language_model.layers[0]
    hidden, kwargs = capture_layer_inputs(llava, layer0, calib.batches)
    work = copy.deepcopy(layer0)
    exact = copy.deepcopy(layer0).double()
    ref = run_layer(work, hidden, kwargs)
    hidden64 = [h.double() for h in hidden]
    kwargs64 = [
        {
            k: tuple(t.double() for t in v) if k == "position_embeddings" else v
            for k, v in kw.items()
        }
        for kw in kwargs
    ]
    ref64 = [layer_output(exact(h, **kw)) for h, kw in zip(hidden64, kwargs64, strict=True)]
    recipe = parse_recipe("awq-w4g32")
    for group in llama_scale_groups(work):
        s, info = awq_mod.search_scale(work, group, hidden, kwargs, recipe)
        assert info["ratio"] > 0 and info["loss"] < info["rtn_loss"]  # outliers: scaling wins
        awq_mod.fold_scale(work, group, s)
        awq_mod.fold_scale(exact, group, s.double())
    with torch.no_grad():
        for h, kw, r in zip(hidden64, kwargs64, ref64, strict=True):
            assert torch.allclose(layer_output(exact(h, **kw)), r, atol=1e-5, rtol=0)
    for a, b in zip(run_layer(work, hidden, kwargs), ref, strict=True):  # fp32: rounding only
        assert float((a - b).abs().max()) <= 1e-5 * float(b.abs().max())


# -- NaN / inf -----------------------------------------------------------------------------------


def test_nonfinite_activations_name_the_layer(llava, calib):
    bad = copy.deepcopy(llava)
    with torch.no_grad():
        bad.model.language_model.layers[1].mlp.down_proj.weight[0, 0] = float("inf")
    with pytest.raises(CalibrationError, match=r"model\.language_model\.layers\.1\b"):
        quantize_model(bad, "gptq-w4g32-n16-s64", calib)
    bad = copy.deepcopy(llava)
    with torch.no_grad():
        bad.model.language_model.embed_tokens.weight.fill_(float("nan"))
    with pytest.raises(CalibrationError, match=r"input of model\.language_model\.layers\.0"):
        quantize_model(bad, "awq-w4g32-n16-s64", calib)


# -- cache, fake quant, calibration options -----------------------------------------------------


def test_cache_second_run_loads(llava, calib, tmp_path, monkeypatch):
    recipe = "awq-w4g32-n16-s64"
    first = quantize_model(llava, recipe, calib, cache_dir=tmp_path, fingerprint="tiny-llava-v1")
    assert first.stats["cache"] == "miss"

    def no_search(*_a, **_k):
        raise AssertionError("searched again instead of loading the cache")

    monkeypatch.setitem(ALGORITHMS, "awq", Algorithm("awq", no_search))
    second = quantize_model(llava, recipe, calib, cache_dir=tmp_path, fingerprint="tiny-llava-v1")
    assert second.stats["cache"] == "hit"
    assert set(second.weights) == set(first.weights)
    for name, qw in first.weights.items():
        other = second.weights[name]
        assert torch.equal(qw.codes, other.codes) and torch.equal(qw.zeros, other.zeros)
        assert torch.equal(qw.scales, other.scales)
        assert (qw.bits, qw.group_size, qw.symmetric) == (other.bits, other.group_size, False)
    for name, value in first.stats["modified_params"].items():
        assert torch.equal(value, second.stats["modified_params"][name])
    assert second.not_quantized == first.not_quantized and second.recipe == first.recipe
    ids = calib.batches[0]["input_ids"]
    with torch.no_grad():
        a = apply_fake_quant(copy.deepcopy(llava), first)(input_ids=ids).logits
        b = apply_fake_quant(copy.deepcopy(llava), second)(input_ids=ids).logits
    assert torch.equal(a, b)
    # another fingerprint or recipe misses (and would search)
    with pytest.raises(AssertionError, match="searched again"):
        quantize_model(llava, recipe, calib, cache_dir=tmp_path, fingerprint="tiny-llava-v2")


def test_unreadable_cache_entry_is_searched_again_and_replaced(llava, calib, tmp_path):
    recipe = "rtn-w4g32"
    first = quantize_model(llava, recipe, calib, cache_dir=tmp_path, fingerprint="v1")
    weights = Path(first.stats["cache_path"]) / WEIGHTS_FILE
    whole = weights.read_bytes()
    weights.write_bytes(whole[: len(whole) // 2])  # a write cut short
    seen = []
    again = quantize_model(
        llava, recipe, calib, cache_dir=tmp_path, fingerprint="v1", log=seen.append
    )
    assert again.stats["cache"] == "replaced" and again.stats["cache_error"]
    assert any("unreadable" in line for line in seen)
    assert weights.read_bytes() == whole  # rewritten (RTN is deterministic)
    third = quantize_model(llava, recipe, calib, cache_dir=tmp_path, fingerprint="v1")
    assert third.stats["cache"] == "hit"
    for name, qw in first.weights.items():
        assert torch.equal(qw.codes, third.weights[name].codes)


def test_save_load_roundtrip_with_bias(tmp_path):
    w = torch.randn(8, 64)
    qw = quantize_weight(w, 4, 32, bias=torch.randn(8))
    from harness.quantized import QuantizedModel

    qm = QuantizedModel({"a.b": qw}, parse_recipe("rtn-w4g32").to_dict(), ["c"], {"x": 1})
    loaded = load_quantized(save_quantized(qm, tmp_path / "q"))
    assert torch.equal(loaded.weights["a.b"].bias, qw.bias)
    assert torch.equal(loaded.weights["a.b"].dequantize(), qw.dequantize())
    assert loaded.stats["x"] == 1 and loaded.not_quantized == ["c"]


def test_rtn_fake_quant_and_vision_option(llava):
    state = {k: v.clone() for k, v in llava.state_dict().items()}
    qm = quantize_model(llava, "rtn-w4g32-vision-lmhead")
    vision = [n for n, c in qm.stats["categories"].items() if c == "vision"]
    assert set(vision) <= set(qm.weights) and "lm_head" in qm.weights
    assert "model.multi_modal_projector.linear_1" in qm.not_quantized
    model = apply_fake_quant(copy.deepcopy(llava), qm)
    name = "model.language_model.layers.0.mlp.down_proj"
    w = model.get_submodule(name).weight
    assert torch.equal(w, qm.weights[name].dequantize())
    assert not torch.equal(w, llava.get_submodule(name).weight)
    assert len(torch.unique(w[0, :32])) <= 16
    # the model passed to quantize_model is untouched
    assert all(torch.equal(v, state[k]) for k, v in llava.state_dict().items())


def test_image_text_calibration_and_skipped_shapes(llava, tok):
    image_id = tok.convert_tokens_to_ids("<image>")
    text_ids = tok("describe the picture of a red car", add_special_tokens=False)["input_ids"]
    ids = torch.tensor([[1] + [image_id] * 16 + text_ids] * 2)
    gen = torch.Generator().manual_seed(0)
    batch = {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "pixel_values": torch.randn(2, 3, 16, 16, generator=gen),
    }
    with pytest.raises(CalibrationError, match="image_text"):
        quantize_model(llava, "gptq-w4g32-image_text", tokenizer=tok)
    qm = quantize_model(llava, "gptq-w4g32-image_text-vision", [batch])
    assert qm.stats["calib_source"] == "image_text"
    assert qm.stats["calib_tokens"] == ids.numel()
    assert qm.stats["rtn_fallback"] and all(
        qm.stats["categories"][n] == "vision" for n in qm.stats["rtn_fallback"]
    )
    assert not qm.not_quantized or all(
        qm.stats["categories"].get(n) != "decoder" for n in qm.not_quantized
    )
    # a group size that does not divide a selected layer is refused, naming it (the label
    # would claim a precision the layer does not have)
    with pytest.raises(RecipeDoesNotFit, match=r"group size 48 .* 14 of the 14 layers .*"
                       r"self_attn.q_proj: 64; sizes \[64, 128\]"):  # fmt: skip
        quantize_model(llava, "rtn-w4g48")
    with pytest.raises(RecipeDoesNotFit, match=r"group size 64 .*vision_tower.*: 32"):
        quantize_model(llava, "rtn-w4g64-vision")  # fits the decoder, not the tower
    quantize_model(llava, "rtn-w4g64")


def test_text_calibration_is_deterministic(tok):
    a = text_calibration(tok, 4, 32, batch_size=2)
    b = text_calibration(tok, 4, 32, batch_size=2)
    assert a.n_tokens == 128 and len(a.batches) == 2
    assert all(
        torch.equal(x["input_ids"], y["input_ids"])
        for x, y in zip(a.batches, b.batches, strict=True)
    )
    assert (a.batches[0]["input_ids"] != 0).float().mean() > 0.9  # few unknown tokens
    own = text_calibration(tok, 2, 8, texts=["red car near green tree"])  # cycled
    assert own.batches[0]["input_ids"].shape == (2, 8)


def test_gptq_core_blocks_and_identity_hessian():
    from harness.quantizers.gptq import HessianAccumulator, gptq_quantize

    gen = torch.Generator().manual_seed(0)
    w = torch.randn(24, 384, generator=gen)
    # an identity Hessian gives no error feedback: exactly round-to-nearest
    same = gptq_quantize(w, torch.eye(384), 4, 96, damp=0.0)
    rtn = quantize_weight(w, 4, 96)
    assert torch.equal(same.codes, rtn.codes) and torch.allclose(same.scales, rtn.scales)
    # correlated inputs, groups of 96 straddling the 128-column blocks: less output error
    mix = torch.randn(384, 384, generator=gen) / 20 + torch.eye(384)
    x = torch.randn(2048, 384, generator=gen) @ mix
    acc = HessianAccumulator(384, x.device)
    for chunk in x.split(500):
        acc.add(chunk)
    assert torch.allclose(acc.H, 2 * x.t() @ x / x.shape[0], rtol=1e-4, atol=1e-3)
    q = gptq_quantize(w, acc.H, 4, 96, block_size=128)
    err_gptq = float((x @ (q.dequantize() - w).t()).pow(2).mean())
    err_rtn = float((x @ (rtn.dequantize() - w).t()).pow(2).mean())
    assert err_gptq < 0.9 * err_rtn


def test_text_calibration_from_tokenizer(llava, tok):
    qm = quantize_model(llava, "gptq-w4g32-n4-s32", tokenizer=tok)
    assert qm.stats["calib_source"] == "text"
    assert qm.stats["calib_tokens"] == 4 * 32 and qm.stats["calib_samples"] == 4

"""Checkpoint writers: AWQ GEMM, GPTQ v1, compressed-tensors pack-quantized.

The tiny model is a CLIP + Llama LLaVA (text hidden 64, intermediate 128, vision hidden
32) built from config classes, with a few outlier RMSNorm channels so that AWQ's scale
folding really changes the norm weights. Loader checks use the real
``compressed-tensors`` package (its model-free dequantizer, its AutoAWQ converter) and
transformers' compressed-tensors loader on CPU; they are skipped when the package is
missing. Scales are stored in 16 bit, so "bit for bit" means: the loader's weights equal
``QuantizedWeight.dequantize`` computed with the same 16-bit-rounded scales, rounded
once to the scale dtype (the library dequantizes in the scale dtype; both round the
exact product ``(code - zero) * scale`` once).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from harness.kernels.awq_layout import AWQ_ORDER
from harness.quantized import pack_bits, unpack_bits
from harness.quantizers import QuantizedModel, QuantizedWeight, builtin_texts, quantize_model
from harness.quantizers.checkpoint import write_checkpoint
from harness.quantizers.formats import WRITERS, get_writer, read_checkpoint
from harness.quantizers.formats.base import (
    CheckpointError,
    read_config,
    read_harness_meta,
    read_tensors,
)
from harness.quantizers.recipe import parse_recipe
from tests.tiny_models import WORDS, clip_image_processor, make_tokenizer

G = 32
PARTS = ["model.vision_tower", "model.multi_modal_projector", "lm_head"]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matmuls on a shared 2-core machine
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def processor():
    from transformers import LlavaProcessor

    words = [*WORDS, *sorted({w for t in builtin_texts() for w in t.split()})]
    return LlavaProcessor(
        image_processor=clip_image_processor(16),
        tokenizer=make_tokenizer(words=words),
        patch_size=4,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
    )


@pytest.fixture(scope="module")
def model(processor):
    from transformers import LlavaConfig, LlavaForConditionalGeneration

    tok = processor.tokenizer
    config = LlavaConfig(
        vision_config={
            "model_type": "clip_vision_model",
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "image_size": 16,
            "patch_size": 4,
            "projection_dim": 16,
        },
        text_config={
            "model_type": "llama",
            "vocab_size": len(tok),
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 4,
            "initializer_range": 0.1,
            "max_position_embeddings": 256,
            "bos_token_id": 1,
            "eos_token_id": 2,
            "tie_word_embeddings": False,
        },
        image_token_index=tok.convert_tokens_to_ids("<image>"),
        image_seq_length=16,
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
    )
    torch.manual_seed(0)
    m = LlavaForConditionalGeneration(config).eval()
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for layer in m.model.language_model.layers:
            for norm in (layer.input_layernorm, layer.post_attention_layernorm):
                norm.weight[torch.randperm(64, generator=gen)[:4]] *= 10
    return m


@pytest.fixture(scope="module")
def quantized(model, processor):
    cache: dict[str, QuantizedModel] = {}

    def get(recipe: str) -> QuantizedModel:
        if recipe not in cache:
            cache[recipe] = quantize_model(model, recipe, tokenizer=processor.tokenizer)
        return cache[recipe]

    return get


def _ours(qw: QuantizedWeight, scale_dtype: torch.dtype) -> torch.Tensor:
    """Our dequantization with the stored (rounded) scales, rounded once to scale_dtype."""
    rounded = QuantizedWeight(
        qw.codes, qw.scales.to(scale_dtype).float(), qw.zeros, qw.bits, qw.group_size
    )
    return rounded.dequantize(torch.float32).to(scale_dtype)


def _check_round_trip(folder: Path, qmodel: QuantizedModel, scale_dtype=torch.float16):
    back = read_checkpoint(folder)
    assert set(back) == set(qmodel.weights)
    for name, qw in qmodel.weights.items():
        got = back[name]
        assert torch.equal(got.codes, qw.codes), name
        assert torch.equal(got.zeros, qw.zeros), name
        assert torch.equal(got.scales, qw.scales.to(scale_dtype).float()), name
        assert (got.bits, got.group_size, got.symmetric) == (qw.bits, qw.group_size, qw.symmetric)


def _check_plain_tensors(folder: Path, model, qmodel: QuantizedModel):
    """Every non-quantized tensor is in the file, equal to the model's (or AWQ's folded one)."""
    tensors = read_tensors(folder)
    modified = qmodel.stats.get("modified_params", {})
    for name, value in model.state_dict().items():
        module = name.rsplit(".", 1)[0]
        if module in qmodel.weights and name.endswith(".weight"):
            assert name not in tensors
            continue
        expect = modified[name].to(value.dtype) if name in modified else value
        assert torch.equal(tensors[name], expect), name
    return tensors


def _unquantized_linears(model, qmodel) -> list[str]:
    return [
        n
        for n, m in model.named_modules()
        if isinstance(m, torch.nn.Linear) and n not in qmodel.weights
    ]


# -- dense bit packing -------------------------------------------------------------------------


def test_pack_bits_hand_examples():
    row = torch.tensor([list(range(8))])
    assert pack_bits(row, 4, dim=1).tolist() == [[0x76543210]]
    assert pack_bits(row.t(), 4, dim=0).tolist() == [[0x76543210]]
    top = torch.tensor([[0, 0, 0, 0, 0, 0, 0, 15]])  # nibble 7 set: a negative int32
    assert pack_bits(top, 4, dim=1).tolist() == [[0xF0000000 - 2**32]]
    assert pack_bits(torch.tensor([[1, 2, 3, 255]]), 8, dim=1).tolist() == [[0xFF030201 - 2**32]]
    # 3 bit: element 10 straddles words 0 and 1 (bits 30, 31 | bit 0), element 21 words 1 / 2
    v = torch.zeros(1, 32, dtype=torch.int64)
    v[0, 10] = 0b101
    v[0, 21] = 0b011
    words = pack_bits(v, 3, dim=1)
    assert words.shape == (1, 3)
    assert (int(words[0, 0]) & 0xFFFFFFFF) == 0b01 << 30
    assert int(words[0, 1]) == 0b1 | ((0b1 << 31) - 2**32)
    assert int(words[0, 2]) == 0b01
    assert torch.equal(unpack_bits(words, 3, 32, dim=1), v.to(torch.uint8))


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_pack_bits_round_trip(bits):
    gen = torch.Generator().manual_seed(bits)
    v = torch.randint(0, 2**bits, (40, 64), generator=gen, dtype=torch.int64).to(torch.uint8)
    for dim in (0, 1):
        packed = pack_bits(v, bits, dim)
        assert packed.dtype == torch.int32
        assert packed.shape[dim] == -(-v.shape[dim] * bits // 32)  # ceil
        assert torch.equal(unpack_bits(packed, bits, v.shape[dim], dim), v)
    with pytest.raises(ValueError, match="values must lie"):
        pack_bits(torch.full((1, 32), 2**bits), bits, 1)


@pytest.mark.parametrize("bits", [3, 4, 8])
def test_pack_bits_matches_compressed_tensors(bits):
    helpers = pytest.importorskip("compressed_tensors.compressors.pack_quantized.helpers")
    gen = torch.Generator().manual_seed(bits)
    v = torch.randint(0, 2**bits, (8, 64), generator=gen, dtype=torch.int64)
    signed = (v - 2 ** (bits - 1)).to(torch.int8)
    for dim in (0, 1):
        lib = helpers.pack_to_int32(signed, bits, packed_dim=dim)
        assert torch.equal(pack_bits(v, bits, dim), lib)


# -- AWQ GEMM ----------------------------------------------------------------------------------


def test_awq_checkpoint(model, processor, quantized, tmp_path):
    qmodel = quantized(f"awq-w4g{G}-n8-s32")
    modified = qmodel.stats["modified_params"]
    assert modified  # the folded norms
    out = write_checkpoint(model, qmodel, processor, tmp_path / "awq", "awq")
    assert out == tmp_path / "awq"

    qc = read_config(out)["quantization_config"]
    assert qc == {
        "quant_method": "awq",
        "bits": 4,
        "group_size": G,
        "zero_point": True,
        "version": "gemm",
        "modules_to_not_convert": PARTS,
    }
    from transformers.quantizers.quantizers_utils import should_convert_module

    for name, mod in model.named_modules():
        if isinstance(mod, torch.nn.Linear):
            assert should_convert_module(name, qc["modules_to_not_convert"]) == (
                name in qmodel.weights
            ), name

    tensors = _check_plain_tensors(out, model, qmodel)
    for name in modified:  # the folded norms really differ from the model's
        assert not torch.equal(tensors[name], model.state_dict()[name]), name
    _check_round_trip(out, qmodel)

    # hand-checked layout: q_proj [N 64, K 64], qweight [K, N/8]
    name = "model.language_model.layers.0.self_attn.q_proj"
    qw = qmodel.weights[name]
    assert tensors[f"{name}.qweight"].shape == (64, 8)
    assert tensors[f"{name}.qzeros"].shape == (64 // G, 8)
    assert tensors[f"{name}.scales"].shape == (64 // G, 64)
    assert tensors[f"{name}.scales"].dtype == torch.float16
    word = int(tensors[f"{name}.qweight"][5, 1]) & 0xFFFFFFFF  # row k=5, columns 8..15
    for nibble, column in enumerate(AWQ_ORDER):
        assert (word >> (4 * nibble)) & 0xF == int(qw.codes[8 + column, 5])
    zword = int(tensors[f"{name}.qzeros"][1, 0]) & 0xFFFFFFFF  # group 1, columns 0..7
    for nibble, column in enumerate(AWQ_ORDER):
        assert (zword >> (4 * nibble)) & 0xF == int(qw.zeros[column, 1])

    # tokenizer / processor files and the harness record
    assert (out / "tokenizer.json").is_file() and (out / "processor_config.json").is_file()
    meta = read_harness_meta(out)
    recipe = parse_recipe(f"awq-w4g{G}-n8-s32")
    assert meta["recipe"] == qmodel.recipe and meta["recipe_hash"] == recipe.hash()
    assert meta["format"] == "awq" and meta["stats"]["method"] == "awq"
    assert sorted(meta["modified_params"]) == sorted(modified)
    with open(out / "model.safetensors", "rb") as fh:  # safetensors metadata
        header = json.loads(fh.read(int.from_bytes(fh.read(8), "little")))
    assert header["__metadata__"] == {"format": "pt"}


def test_awq_through_compressed_tensors_converter(model, processor, quantized, tmp_path):
    """A third-party AWQ reader: compressed-tensors' AutoAWQ converter + its decompressor."""
    conv_mod = pytest.importorskip("compressed_tensors.entrypoints.convert.converters.autoawq")
    from compressed_tensors.compressors.pack_quantized import PackedQuantizationCompressor

    qmodel = quantized(f"awq-w4g{G}-n8-s32")
    out = write_checkpoint(model, qmodel, processor, tmp_path / "awq", "awq")
    converter = conv_mod.AutoAWQConverter.from_pretrained(str(out))
    scheme = converter._build_quant_config().config_groups["config_group_0"]
    tensors = converter.process(read_tensors(out))
    assert not any(k.endswith((".qweight", ".qzeros", ".scales")) for k in tensors)
    for name, qw in qmodel.weights.items():
        state = {
            k: tensors[f"{name}.{k}"]
            for k in ("weight_packed", "weight_scale", "weight_shape", "weight_zero_point")
        }
        weight = PackedQuantizationCompressor.decompress(state, scheme)["weight"]
        assert weight.dtype == torch.float16
        assert torch.equal(weight, _ours(qw, torch.float16)), name


def test_awq_refuses_other_bits(model, processor, quantized, tmp_path):
    with pytest.raises(CheckpointError, match=r"format 'awq'.*bits=3"):
        write_checkpoint(model, quantized(f"rtn-w3g{G}"), processor, tmp_path / "a", "awq")
    assert not (tmp_path / "a").exists()


# -- GPTQ v1 -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "recipe",
    [f"gptq-w4g{G}-n8-s32", f"rtn-w2g{G}", f"rtn-w3g{G}-sym", f"rtn-w8g{G}", f"rtn-w4g{G}-sym"],
)
def test_gptq_checkpoint(model, processor, quantized, tmp_path, recipe):
    qmodel = quantized(recipe)
    bits, sym = qmodel.recipe["bits"], qmodel.recipe["symmetric"]
    out = write_checkpoint(model, qmodel, processor, tmp_path / "gptq", "gptq")
    qc = read_config(out)["quantization_config"]
    assert qc["quant_method"] == "gptq" and qc["checkpoint_format"] == "gptq"
    assert (qc["bits"], qc["group_size"], qc["sym"], qc["desc_act"]) == (bits, G, sym, False)
    skips = [k.removeprefix("-:") for k in qc["dynamic"]]
    assert all(k.startswith("-:") and v == {} for k, v in qc["dynamic"].items())
    for name, mod in model.named_modules():
        if isinstance(mod, torch.nn.Linear):
            skipped = any(re.match(p, name) for p in skips)
            assert skipped == (name not in qmodel.weights), name
    tensors = _check_plain_tensors(out, model, qmodel)
    _check_round_trip(out, qmodel)
    name = "model.language_model.layers.1.mlp.down_proj"  # N 64, K 128
    qw = qmodel.weights[name]
    assert tensors[f"{name}.qweight"].shape == (128 * bits // 32, 64)
    assert tensors[f"{name}.qzeros"].shape == (128 // G, 64 * bits // 32)
    assert tensors[f"{name}.scales"].shape == (128 // G, 64)
    assert tensors[f"{name}.scales"].dtype == torch.float16
    assert torch.equal(tensors[f"{name}.g_idx"], torch.arange(128, dtype=torch.int32) // G)
    if bits in (2, 4, 8):  # hand-checked: word r of column n holds rows r*per .. in order
        per = 32 // bits
        word = int(tensors[f"{name}.qweight"][2, 7]) & 0xFFFFFFFF
        for i in range(per):
            assert (word >> (bits * i)) & (2**bits - 1) == int(qw.codes[7, 2 * per + i])
        zword = int(tensors[f"{name}.qzeros"][3, 1]) & 0xFFFFFFFF  # group 3, columns per..
        for i in range(per):
            assert (zword >> (bits * i)) & (2**bits - 1) == (int(qw.zeros[per + i, 3]) - 1) % (
                2**bits
            )


def test_gptq_zero_minus_one_storage(model, processor, tmp_path):
    """qzeros hold zero - 1: a hand example, and a zero point of 0 (refused unless allowed)."""
    name = "model.language_model.layers.0.self_attn.q_proj"
    codes = torch.arange(64 * 64).reshape(64, 64).remainder(16).to(torch.uint8)
    zeros = torch.tensor([[5, 9]] * 64, dtype=torch.uint8)
    zeros[3, 0] = 0
    qw = QuantizedWeight(codes, torch.full((64, 2), 0.5), zeros, 4, G)
    qmodel = QuantizedModel({name: qw}, recipe={"method": "rtn", "bits": 4})
    with pytest.raises(CheckpointError, match="zero points of 0"):
        write_checkpoint(model, qmodel, processor, tmp_path / "g", "gptq")
    out = write_checkpoint(
        model, qmodel, processor, tmp_path / "g", "gptq", gptq_allow_zero_wrap=True
    )
    t = read_tensors(out)
    # group 0, columns 0..7: zero 5 -> stored 4, except column 3 (zero 0 -> stored 15)
    assert int(t[f"{name}.qzeros"][0, 0]) & 0xFFFFFFFF == 0x4444F444
    assert int(t[f"{name}.qzeros"][1, 0]) & 0xFFFFFFFF == 0x88888888  # zero 9 -> 8
    # qweight row 0 of column 1: codes[1, 0..7] = 64..71 mod 16 = 0..7
    assert int(t[f"{name}.qweight"][0, 1]) == 0x76543210
    back = read_checkpoint(out)[name]
    assert torch.equal(back.zeros, zeros) and torch.equal(back.codes, codes)


# -- compressed-tensors pack-quantized ---------------------------------------------------------


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("sym", [False, True])
def test_compressed_tensors_bit_exact(model, processor, quantized, tmp_path, bits, sym):
    ct = pytest.importorskip("compressed_tensors")
    from compressed_tensors.entrypoints.convert.converters.ct_dequantizer import (
        CompressedTensorsDequantizer,
    )

    recipe = f"awq-w{bits}g{G}-n8-s32" + ("-sym" if sym else "")
    qmodel = quantized(recipe)
    out = write_checkpoint(model, qmodel, processor, tmp_path / "ct", "compressed-tensors")
    qc = read_config(out)["quantization_config"]
    assert qc["quant_method"] == "compressed-tensors" and qc["format"] == "pack-quantized"
    assert qc["quantization_status"] == "compressed"
    group = qc["config_groups"]["group_0"]
    assert group["targets"] == ["Linear"]
    assert {k: group["weights"][k] for k in ("num_bits", "type", "symmetric", "strategy")} == {
        "num_bits": bits,
        "type": "int",
        "symmetric": sym,
        "strategy": "group",
    }
    assert group["weights"]["group_size"] == G and group["weights"]["dynamic"] is False
    assert qc["ignore"] == _unquantized_linears(model, qmodel)
    assert "lm_head" in qc["ignore"] and "model.multi_modal_projector.linear_1" in qc["ignore"]

    tensors = _check_plain_tensors(out, model, qmodel)
    name = "model.language_model.layers.1.mlp.down_proj"  # N 64, K 128
    assert tensors[f"{name}.weight_packed"].shape == (64, 128 * bits // 32)
    assert tensors[f"{name}.weight_scale"].shape == (64, 128 // G)
    assert tensors[f"{name}.weight_shape"].tolist() == [64, 128]
    if sym:
        assert f"{name}.weight_zero_point" not in tensors
    else:
        assert tensors[f"{name}.weight_zero_point"].shape == (64 * bits // 32, 128 // G)
    per = 32 // bits  # hand check: element j of word c is column per*c + j, stored unsigned
    word = int(tensors[f"{name}.weight_packed"][3, 2]) & 0xFFFFFFFF
    for j in range(per):
        assert (word >> (bits * j)) & (2**bits - 1) == int(
            qmodel.weights[name].codes[3, per * 2 + j]
        )
    _check_round_trip(out, qmodel)

    # the library's own model-free loader: config parsing, ignore list, unpacking, dequant
    deq = CompressedTensorsDequantizer(out, dtype=torch.float16)
    loaded = deq.validate(read_tensors(out))  # raises on leftover / missing qparams
    for n, qw in qmodel.weights.items():
        assert torch.equal(loaded[f"{n}.weight"], _ours(qw, torch.float16)), n
    assert ct.__version__


def test_compressed_tensors_through_transformers(model, processor, quantized, tmp_path):
    """transformers' compressed-tensors loader (CPU, dequantize=True) gives our weights."""
    pytest.importorskip("compressed_tensors")
    from transformers import CompressedTensorsConfig, LlavaForConditionalGeneration

    qmodel = quantized(f"awq-w4g{G}-n8-s32")
    out = write_checkpoint(
        model, qmodel, processor, tmp_path / "ct", "ct", scale_dtype=torch.bfloat16
    )
    assert read_tensors(out)["lm_head.weight"].dtype == torch.float32
    loaded, info = LlavaForConditionalGeneration.from_pretrained(
        out,
        quantization_config=CompressedTensorsConfig(dequantize=True),
        output_loading_info=True,
    )
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    state = loaded.state_dict()
    for n, qw in qmodel.weights.items():
        assert torch.equal(state[f"{n}.weight"].to(torch.bfloat16), _ours(qw, torch.bfloat16)), n
    modified = qmodel.stats["modified_params"]
    for name, value in model.state_dict().items():
        if name.rsplit(".", 1)[0] in qmodel.weights:
            continue
        expect = modified[name] if name in modified else value
        assert torch.equal(state[name], expect), name


# -- general -----------------------------------------------------------------------------------


def test_atomic_write_and_overwrite(model, processor, quantized, tmp_path):
    qmodel = quantized(f"rtn-w4g{G}")
    out = tmp_path / "ckpt"
    out.mkdir()  # an empty folder is fine
    write_checkpoint(model, qmodel, processor, out, "awq")
    first = (out / "config.json").read_text()
    (out / "extra.txt").write_text("old")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        write_checkpoint(model, qmodel, processor, out, "compressed-tensors")
    assert (out / "config.json").read_text() == first and (out / "extra.txt").is_file()

    class Broken:
        def save_pretrained(self, folder):
            (Path(folder) / "partial.json").write_text("{}")
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        write_checkpoint(model, qmodel, Broken(), out, "compressed-tensors", overwrite=True)
    assert (out / "config.json").read_text() == first and (out / "extra.txt").is_file()
    with pytest.raises(RuntimeError, match="disk full"):
        write_checkpoint(model, qmodel, Broken(), tmp_path / "new", "gptq")
    assert not (tmp_path / "new").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]  # no temp folders left

    write_checkpoint(model, qmodel, processor, out, "compressed-tensors", overwrite=True)
    assert not (out / "extra.txt").exists()
    assert read_config(out)["quantization_config"]["quant_method"] == "compressed-tensors"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_config_keeps_model_config_and_rejects_bad_input(model, processor, quantized, tmp_path):
    qmodel = quantized(f"rtn-w4g{G}")
    out = write_checkpoint(model, qmodel, None, tmp_path / "c", "gptq")
    cfg = read_config(out)
    assert cfg["model_type"] == "llava" and cfg["text_config"]["hidden_size"] == 64
    assert not (out / "tokenizer.json").exists()
    with pytest.raises(ValueError, match="unknown checkpoint format"):
        write_checkpoint(model, qmodel, None, tmp_path / "d", "exl2")
    mixed = dict(qmodel.weights)
    first = next(iter(mixed))
    qw = mixed[first]
    mixed[first] = QuantizedWeight(
        qw.codes.clamp(max=7), qw.scales, qw.zeros.clamp(max=7), 3, qw.group_size
    )
    with pytest.raises(CheckpointError, match="different bits"):
        write_checkpoint(model, QuantizedModel(mixed, {}), None, tmp_path / "e", "ct")
    with pytest.raises(CheckpointError, match="scale"):
        write_checkpoint(model, qmodel, None, tmp_path / "f", "awq", scale_dtype=torch.bfloat16)
    assert set(WRITERS) == {"awq", "gptq", "compressed-tensors"}
    assert get_writer("compressed_tensors") is WRITERS["compressed-tensors"]


def test_not_converted_lists_follow_the_recipe(model, processor, quantized, tmp_path):
    """With the vision tower quantized, only the projector and lm_head stay listed."""
    qmodel = quantized(f"rtn-w4g{G}-vision")
    assert any(n.startswith("model.vision_tower.") for n in qmodel.weights)
    out = write_checkpoint(model, qmodel, processor, tmp_path / "v", "awq")
    kept = read_config(out)["quantization_config"]["modules_to_not_convert"]
    assert kept == ["model.multi_modal_projector", "lm_head"]
    _check_round_trip(out, qmodel)
    _check_plain_tensors(out, model, qmodel)

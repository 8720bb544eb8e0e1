"""Image+text calibration: samples drawn from task documents or the toy world, through the adapter."""

from __future__ import annotations

import pytest
import torch

from harness.cli import main as harness
from harness.errors import HarnessError
from harness.models.loading import load_model
from harness.quantizers.calibration_data import _draw, image_text_inputs, task_requests
from harness.quantizers.recipe import QuantRecipe, RecipeError, parse_recipe
from harness.quantizers.runtime import compute_quantization, resolve_recipe


@pytest.fixture(scope="module")
def toy():
    torch.set_num_threads(2)
    return load_model("toy-llava", device="cpu")


def test_draw_spreads_over_pools_and_is_seeded():
    pools = [list(range(10)), list(range(100, 103)), list(range(200, 210))]
    got = _draw(pools, 9, seed=3)
    assert len(got) == 9 and len(set(got)) == 9
    assert [sum(1 for x in got if lo <= x < lo + 100) for lo in (0, 100, 200)] == [3, 3, 3]
    assert got == _draw(pools, 9, seed=3) and got != _draw(pools, 9, seed=4)
    # a short pool runs out; the others fill the rest
    assert sorted(x for x in _draw(pools, 20, seed=0) if 100 <= x < 200) == [100, 101, 102]
    assert len(_draw(pools, 100, seed=0)) == 23


def test_calib_tasks_imply_image_text_and_change_the_hash():
    plain = parse_recipe("awq-w4g128")
    a = resolve_recipe("awq-w4g128", ["gqa-toy"])
    b = resolve_recipe("awq-w4g128", ["gqa-toy", "vqav2-toy"])
    assert a.calib_source == "image_text" and a.calib_tasks == ("gqa-toy",)
    assert (
        len({plain.hash(), a.hash(), b.hash(), parse_recipe("awq-w4g128-image_text").hash()}) == 4
    )
    # recipes without calibration tasks keep the hash they had before the field existed
    assert "calib_tasks" not in plain.to_dict()
    assert QuantRecipe.from_dict(b.to_dict()) == b
    with pytest.raises(RecipeError, match="image_text"):
        parse_recipe("awq-w4g128", calib_tasks=("gqa-toy",))
    with pytest.raises(HarnessError, match="rtn does not calibrate"):
        resolve_recipe("rtn-w4g128", ["gqa-toy"])
    with pytest.raises(Exception, match="no-such-task"):
        resolve_recipe("awq-w4g128", ["no-such-task"])


def test_task_documents_are_encoded_like_the_evaluation(toy):
    recipe = resolve_recipe("gptq-w4g128-n6", ["gqa-toy", "pope_random-toy"])
    requests = task_requests(toy, recipe.calib_tasks, 6, recipe.seed)
    assert sorted(r.task for r in requests) == ["gqa-toy"] * 3 + ["pope_random-toy"] * 3
    inputs = image_text_inputs(toy, recipe)
    assert len(inputs) == 6
    image_id = toy.model.config.image_token_id
    for request, batch in zip(requests, inputs, strict=True):
        expected = toy.encode([request], [toy.load_visuals(request)])
        assert torch.equal(batch["input_ids"], expected["input_ids"])
        assert batch["input_ids"].shape[0] == 1  # one sample per forward: no padding
        assert int((batch["input_ids"] == image_id).sum()) == 16
        assert batch["pixel_values"].dtype == next(toy.model.parameters()).dtype


def test_toy_model_calibrates_on_its_training_world_by_default(toy):
    recipe = parse_recipe("awq-w4g128-image_text-n5")
    inputs = image_text_inputs(toy, recipe)
    assert len(inputs) == 5
    image_id = toy.model.config.image_token_id
    assert all(int((b["input_ids"] == image_id).sum()) % 16 == 0 for b in inputs)
    assert inputs[0]["input_ids"].equal(image_text_inputs(toy, recipe)[0]["input_ids"])


def test_image_text_quantization_differs_from_text(toy):
    text = compute_quantization(toy, "gptq-w4g128-n4-s64")
    image = compute_quantization(toy, "gptq-w4g128-image_text-n4")
    assert text.stats["calib_source"] == "text"
    assert image.stats["calib_source"] == "image_text" and image.stats["calib_samples"] == 4
    # 16 image tokens per image at least, besides the prompt
    assert image.stats["calib_tokens"] > 4 * 16
    name = next(iter(text.weights))
    assert not torch.equal(text.weights[name].codes, image.weights[name].codes)


def test_image_text_without_a_source_names_the_flag(toy, monkeypatch):
    monkeypatch.setattr(toy, "entry", None)
    with pytest.raises(HarnessError, match="--calib-tasks"):
        image_text_inputs(toy, parse_recipe("awq-w4g128-image_text-n2"))


def test_run_with_calib_tasks_labels_the_precision(tmp_path, capsys):
    import sqlite3

    db = tmp_path / "r.db"
    args = ["run", "--model", "toy-llava", "--tasks", "pope_random-toy", "--limit", "8"]
    args += ["--quant", "gptq-w4g128-n4", "--calib-tasks", "gqa-toy", "--device", "cpu"]
    assert harness([*args, "--db", str(db), "--bootstrap", "0"]) == 0
    with sqlite3.connect(db) as con:
        (precision,) = con.execute("select precision from runs").fetchone()
    assert precision == "gptq-w4g128-n4(gqa-toy)"
    plain = ["run", "--model", "toy-llava", "--tasks", "pope_random-toy", "--no-db"]
    assert harness([*plain, "--calib-tasks", "gqa-toy"]) == 2
    assert "--calib-tasks needs --quant" in capsys.readouterr().err


def test_quantize_cli_records_the_calibration_tasks(tmp_path):
    import json

    out = tmp_path / "ckpt"
    argv = ["quantize", "--model", "toy-llava", "--quant", "gptq-w4g128-n2", "--out", str(out)]
    argv += ["--calib-tasks", "vqav2-toy", "--device", "cpu", "--format", "compressed-tensors"]
    assert harness([*argv, "--quant-dump", str(tmp_path / "dump")]) == 0
    meta = json.loads((out / "harness_quant.json").read_text())
    assert meta["recipe"]["calib_tasks"] == ["vqav2-toy"]
    assert meta["recipe"]["calib_source"] == "image_text"
    # the dump is loaded, not searched again, for the same recipe and calibration tasks
    again = ["quantize", "--model", "toy-llava", "--quant", "gptq-w4g128-n2", "--device", "cpu"]
    again += ["--calib-tasks", "vqav2-toy", "--out", str(tmp_path / "b"), "--format", "awq"]
    assert harness([*again, "--quant-load", str(tmp_path / "dump")]) == 0
    # without the calibration tasks it is another recipe: refused, nothing written
    text_only = ["quantize", "--model", "toy-llava", "--quant", "gptq-w4g128-n2", "--device", "cpu"]
    text_only += ["--out", str(tmp_path / "c"), "--quant-load", str(tmp_path / "dump")]
    assert harness(text_only) == 2
    assert not (tmp_path / "c").exists()

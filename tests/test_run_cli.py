"""`harness run` end to end on the shipped default model and the synthetic world (CPU)."""

from __future__ import annotations

import json

import pytest
import torch

from harness.cli import main
from harness.models.loading import WEIGHTS_DIR, load_model
from harness.results.store import ResultsStore
from harness.task import get_task

pytestmark = pytest.mark.skipif(
    not (WEIGHTS_DIR / "toy-llava" / "config.json").is_file(), reason="toy-llava not built"
)


@pytest.fixture(scope="module", autouse=True)
def toy_world(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("HARNESS_TOY_DIR", str(tmp_path_factory.mktemp("world")))
    yield
    mp.undo()


def run_json(capsys, *argv: str) -> dict:
    assert main(["run", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_default_model_answers_multiple_choice_and_reads_signs(tmp_path, capsys):
    tasks = "scienceqa-toy,mmbench-toy,textvqa-toy,vqav2-toy"
    args = ["--model", "toy-llava", "--tasks", tasks, "--no-db"]
    scores = run_json(capsys, *args, "--batch-size", "32", "--bootstrap", "0")
    # Chance: ScienceQA about 34 (44 for always "A"); MMBench circular about 0.4 (all four
    # rotations right); TextVQA 8 and VQAv2 18.5 (best constant answers). The shipped
    # model: 82.7, 58.0, 90.0 and 96.0 (docs/research/toy-llava-training.md).
    assert scores["scienceqa-toy/img_accuracy"] >= 80, scores
    assert scores["mmbench-toy/accuracy"] >= 50, scores
    assert scores["textvqa-toy/accuracy"] >= 85, scores
    assert scores["vqav2-toy/accuracy"] >= 90, scores


def test_default_model_meets_the_quality_bar_and_reuses_outputs(tmp_path, capsys):
    db = str(tmp_path / "r.db")
    args = ["--model", "toy-llava", "--tasks", "pope-toy,gqa-toy", "--db", db, "--bootstrap", "0"]
    scores = run_json(capsys, *args, "--batch-size", "32")
    # Held-out scenes; chance is F1 66.7 / accuracy 50 (POPE, always "yes") and about 15
    # (GQA's best constant answer); the aim is 90. The shipped model: POPE-toy mean F1
    # 96.5, GQA-toy accuracy 92.0 (docs/research/toy-llava-training.md).
    assert scores["pope-toy/f1"] >= 94, scores
    assert scores["pope-toy/accuracy"] >= 94, scores
    assert scores["gqa-toy/accuracy"] >= 90, scores
    for split in ("random", "popular", "adversarial"):
        assert 35 <= scores[f"pope_{split}-toy/yes_ratio"] <= 65, scores

    again = run_json(capsys, *args, "--batch-size", "8")
    assert again == scores  # every output came from the DB
    store = ResultsStore(db)
    runs = store.runs()
    assert len(runs) == 2 and {r["precision"] for r in runs} == {"fp32"}
    store.close()


def test_outputs_do_not_depend_on_batch_size():
    torch.set_num_threads(2)
    model = load_model("toy-llava", device="cpu")
    task = get_task("vqav2-toy")
    docs, _ = task.load_docs(None)
    requests = task.build_requests(docs[:48], None, model.family)
    one = [model.generate([r])[0] for r in requests]
    batched = []
    for i in range(0, len(requests), 16):
        batched += model.generate(requests[i : i + 16])
    assert one == batched
    assert sum(o != "" for o in one) == len(one)


def test_bad_flags_fail_before_loading(capsys):
    assert main(["run", "--model", "nope", "--tasks", "gqa-toy", "--no-db"]) == 2
    assert "unknown model" in capsys.readouterr().err
    assert main(["run", "--model", "toy-llava", "--tasks", "gqa-toy", "--quant", "awq-w4"]) == 2
    assert "--quant awq-w4" in capsys.readouterr().err
    assert main(["run", "--model", "toy-llava", "--tasks", "gqa", "--no-db"]) == 2
    assert "--data-root" in capsys.readouterr().err  # a real benchmark never runs on toy data


def test_quantized_run_is_stored_under_its_recipe(tmp_path, capsys):
    db = str(tmp_path / "q.db")
    common = ["--model", "toy-llava", "--tasks", "gqa-toy", "--db", db, "--bootstrap", "0"]
    common += ["--limit", "60", "--batch-size", "30"]
    base = run_json(capsys, *common)
    quant = run_json(capsys, *common, "--quant", "rtn-w4g128")
    # W4 G128 RTN on a 0.96M-parameter model: some loss, nowhere near chance.
    assert quant["gqa-toy/accuracy"] >= base["gqa-toy/accuracy"] - 25, (base, quant)
    store = ResultsStore(db)
    runs = {r["precision"]: r for r in store.runs()}
    assert set(runs) == {"fp32", "rtn-w4g128"}
    assert (
        runs["rtn-w4g128"]["quant_hash"]
        and runs["rtn-w4g128"]["model_fingerprint"] != (runs["fp32"]["model_fingerprint"])
    )
    store.close()


def test_quantize_writes_a_checkpoint(tmp_path):
    out = tmp_path / "toy-awq"
    argv = ["quantize", "--model", "toy-llava", "--quant", "rtn-w4g128", "--out", str(out)]
    assert main([*argv, "--format", "awq"]) == 0
    config = json.loads((out / "config.json").read_text())
    q = config["quantization_config"]
    assert (q["quant_method"], q["bits"], q["group_size"], q["version"]) == ("awq", 4, 128, "gemm")
    assert any("vision_tower" in m for m in q["modules_to_not_convert"])
    assert (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file()
    assert main([*argv, "--format", "awq"]) == 2  # refuses to overwrite

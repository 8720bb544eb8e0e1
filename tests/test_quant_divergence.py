"""benchmarks/quant_divergence.py: KL from full precision per recipe, model left unchanged."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def divergence(benchmark_script):
    with benchmark_script("quant_divergence") as module:
        yield module


def test_kl_divergence_is_exact_on_known_distributions(divergence):
    p = torch.tensor([[0.5, 0.5], [0.9, 0.1]]).log()
    q = torch.tensor([[0.5, 0.5], [0.5, 0.5]]).log()
    kl = divergence.kl_divergence(p, q)
    assert kl[0].item() == 0.0
    expected = 0.9 * math.log(0.9 / 0.5) + 0.1 * math.log(0.1 / 0.5)
    assert kl[1].item() == pytest.approx(expected, rel=1e-6)


def test_fewer_bits_diverge_more_and_the_model_is_restored(divergence, tmp_path):
    from harness.models.loading import load_model
    from harness.quantizers.calibration_data import task_requests

    torch.set_num_threads(1)
    adapter = load_model("toy-llava", device="cpu", dtype="fp32")
    before = {k: v.clone() for k, v in adapter.model.state_dict().items()}
    requests = task_requests(adapter, ["pope_random-toy", "gqa-toy"], 24, 0)
    inputs = [adapter.model_inputs([r], [adapter.load_visuals(r)]) for r in requests]
    recipes = ["rtn-w8g128", "rtn-w3g128", "gptq-w3g128-n8-s64", "rtn-w3g128"]
    rows = divergence.divergence_rows(adapter, inputs, recipes, cache_dir=tmp_path)
    w8, w3, gptq, w3_again = rows
    assert w8.kl_mean < 0.1 * w3.kl_mean and w8.agree >= w3.agree
    assert w3.kl_mean > 0 and w3.vs_rtn == 1.0 and w8.vs_rtn == 1.0
    assert gptq.vs_rtn == pytest.approx(gptq.kl_mean / w3.kl_mean)
    # each recipe starts from the full-precision weights: the repeat gives the same numbers
    assert w3_again == w3
    after = adapter.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)

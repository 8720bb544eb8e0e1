"""harness.quantizers.divergence: KL from full precision per recipe, through the adapter,
model left unchanged (benchmarks/quant_divergence.py is its command line)."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from harness.quantizers.divergence import divergence_rows, kl_divergence  # noqa: E402


def test_kl_divergence_is_exact_on_known_distributions():
    p = torch.tensor([[0.5, 0.5], [0.9, 0.1]]).log()
    q = torch.tensor([[0.5, 0.5], [0.5, 0.5]]).log()
    kl = kl_divergence(p, q)
    assert kl[0].item() == 0.0
    expected = 0.9 * math.log(0.9 / 0.5) + 0.1 * math.log(0.1 / 0.5)
    assert kl[1].item() == pytest.approx(expected, rel=1e-6)


@pytest.fixture(scope="module")
def toy():
    from harness.models.loading import load_model
    from harness.quantizers.calibration_data import task_requests

    torch.set_num_threads(1)
    adapter = load_model("toy-llava", device="cpu", dtype="fp32")
    requests = task_requests(adapter, ["pope_random-toy", "gqa-toy"], 24, 0)
    return adapter, requests


def test_next_token_logprobs_are_what_greedy_generation_starts_with(toy):
    adapter, requests = toy
    few = requests[:6]
    batched = adapter.next_token_logprobs(few)
    alone = torch.cat([adapter.next_token_logprobs([r]) for r in few])
    assert batched.shape == (6, alone.shape[1])
    assert torch.allclose(batched, alone, atol=1e-4)  # left padding does not move a row
    first_words = [o.split()[0].lower() for o in adapter.generate(few)]
    tok = adapter.tokenizer
    greedy = [tok.decode([int(i)]).strip().lower() for i in batched.argmax(-1)]
    assert all(w.startswith(g) for w, g in zip(first_words, greedy, strict=True) if g)


def test_fewer_bits_diverge_more_and_the_model_is_restored(toy, tmp_path):
    adapter, requests = toy
    before = {k: v.clone() for k, v in adapter.model.state_dict().items()}
    recipes = ["rtn-w8g128", "rtn-w3g128", "gptq-w3g128-n8-s64", "rtn-w3g128"]
    rows = divergence_rows(adapter, requests, recipes, cache_dir=tmp_path)
    w8, w3, gptq, w3_again = rows
    assert w8.kl_mean < 0.1 * w3.kl_mean and w8.agree >= w3.agree
    assert w3.kl_mean > 0 and w3.vs_rtn == 1.0 and w8.vs_rtn == 1.0
    assert gptq.vs_rtn == pytest.approx(gptq.kl_mean / w3.kl_mean)
    # each recipe starts from the full-precision weights: the repeat gives the same numbers
    assert w3_again == w3
    after = adapter.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)

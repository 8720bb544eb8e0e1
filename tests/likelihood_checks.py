"""The loglikelihood contract, checked on any adapter: batch invariance and the sum by hand."""

from __future__ import annotations

import torch

from harness.api.requests import Loglikelihood, LoglikelihoodRequest, Request

CONTINUATIONS = (" yes", " no")


def likelihood_requests(requests: list[Request]) -> list[LoglikelihoodRequest]:
    return [
        LoglikelihoodRequest(r.task, r.doc_id, r.prompt, c, r.visuals)
        for r in requests
        for c in CONTINUATIONS
    ]


def by_hand(adapter, request: LoglikelihoodRequest) -> tuple[float, bool]:
    """One unpadded forward of prompt + continuation, the continuation's log-probs summed."""
    visuals = adapter.load_visuals(request)
    with torch.inference_mode():
        context = adapter.model_inputs([request], [visuals])
        whole = adapter.model_inputs([request], [visuals], [request.continuation])
        n = whole["input_ids"].shape[1] - context["input_ids"].shape[1]
        logits = adapter.model(**whole).logits[0].float()
    ids = whole["input_ids"][0]
    width = len(ids)
    total, greedy = 0.0, True
    for j in range(width - n, width):
        logprobs = torch.log_softmax(logits[j - 1], -1)
        total += float(logprobs[ids[j]])
        greedy &= int(logprobs.argmax()) == int(ids[j])
    return total, greedy


def check_loglikelihood(adapter, requests: list[Request]) -> None:
    """Batched scores equal one-at-a-time scores and the sum by hand (float tolerance)."""
    lls = likelihood_requests(requests)
    batch = adapter.loglikelihood(lls)
    assert all(isinstance(b, Loglikelihood) for b in batch), batch
    single = [adapter.loglikelihood([x])[0] for x in lls]
    reversed_batch = adapter.loglikelihood(lls[::-1])[::-1]
    for b, s, r, x in zip(batch, single, reversed_batch, lls, strict=True):
        assert abs(b.logprob - s.logprob) < 1e-4, (x.doc_id, x.continuation, b, s)
        assert abs(b.logprob - r.logprob) < 1e-4 and b.is_greedy == s.is_greedy == r.is_greedy
        assert b.logprob < 0
    for x, b in list(zip(lls, batch, strict=True))[:2]:
        total, greedy = by_hand(adapter, x)
        assert abs(total - b.logprob) < 1e-4 and greedy == b.is_greedy, (x, total, b)
    # the two continuations of one prompt get different scores
    assert batch[0].logprob != batch[1].logprob

"""Tasks scored by likelihood (``output_type: multiple_choice``) on the shipped toy model."""

from __future__ import annotations

import pytest

from harness.api.requests import LoglikelihoodRequest
from harness.errors import HarnessError
from harness.evaluator import EvalConfig, evaluate
from harness.models.loading import load_model
from harness.results.store import ResultsStore
from harness.task import get_task
from tests.fakes import HashModel, make_pope


@pytest.fixture(scope="module", autouse=True)
def toy_world(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("HARNESS_TOY_DIR", str(tmp_path_factory.mktemp("world")))
    yield
    mp.undo()


@pytest.fixture(scope="module")
def toy():
    return load_model("toy-llava", device="cpu")


def test_a_multiple_choice_task_asks_for_each_choice_after_the_same_prompt():
    mc, gen = get_task("scienceqa_mc-toy"), get_task("scienceqa-toy")
    docs, _ = mc.load_docs(None)
    requests = mc.build_requests(docs[:3], None, "llava")
    assert all(isinstance(r, LoglikelihoodRequest) for r in requests)
    first = [r for r in requests if r.doc_id == docs[0]["doc_id"]]
    letters = "ABCDE"[: docs[0]["n_choices"]]
    assert [r.continuation for r in first] == [" " + c for c in letters]
    assert {r.prompt for r in first} == {gen.prompt(docs[0], "llava")}
    assert mc.task_hash({}) != gen.task_hash({})  # another protocol, never the same cache


def test_likelihood_choices_agree_with_generated_letters(toy, tmp_path):
    store = ResultsStore(tmp_path / "r.db")
    config = EvalConfig(limit=40, n_boot=0, batch_size=7, show_progress=False)
    result = evaluate("scienceqa_mc-toy,scienceqa-toy", toy, store, config)
    mc, gen = result.scores["scienceqa_mc-toy"], result.scores["scienceqa-toy"]
    by_doc = {s.doc_id: s.raw_output for s in gen.samples}
    letters = [s for s in mc.samples if len(by_doc[s.doc_id]) == 1]
    assert len(letters) >= 30  # the model answers with a bare letter almost always
    # greedy decoding picks the likeliest first token, so the likeliest letter is its letter
    assert all(s.raw_output == by_doc[s.doc_id] for s in letters)
    rows = store.run_samples(result.run_id, "scienceqa_mc-toy")
    docs = {d["doc_id"]: d for d in get_task("scienceqa_mc-toy").load_docs(None)[0]}
    for row in rows:
        scores = row["choice_logprobs"]
        assert len(scores) == docs[row["doc_id"]]["n_choices"] and max(scores) < 0
        assert "ABCDE"[scores.index(max(scores))] == row["raw_output"]
    # batch size 1 chooses the same, and a second run reuses every document
    one = evaluate("scienceqa_mc-toy", toy, None, EvalConfig(limit=40, n_boot=0, batch_size=1))
    assert [s.raw_output for s in one.scores["scienceqa_mc-toy"].samples] == [
        s.raw_output for s in mc.samples
    ]
    again = evaluate("scienceqa_mc-toy", toy, store, config)
    assert again.generated["scienceqa_mc-toy"] == 0 and again.reused["scienceqa_mc-toy"] == 40


def test_mmbench_circular_scoring_runs_on_likelihood_choices(toy):
    config = EvalConfig(limit=20, n_boot=0, batch_size=16, show_progress=False)
    result = evaluate("mmbench_mc-toy", toy, None, config)
    score = result.scores["mmbench_mc-toy"]
    assert score.n == 20 and score.n_missing == 0
    assert all(s.raw_output in "ABCDE" for s in score.samples)


def test_a_model_without_likelihoods_is_one_error(tmp_path):
    root = make_pope(tmp_path / "data", n=4)
    with pytest.raises(HarnessError, match="cannot score continuations by likelihood"):
        evaluate("scienceqa_mc-toy", HashModel(), None, EvalConfig(data_root=root, limit=2))

"""Video-ChatGPT tasks scored through a real local judge server, with hand-computed numbers.

Predicted answers carry the score the scripted judge gives them (``c=3`` ->
correctness 3, ``d`` detail, ``x`` context, ``t`` temporal, ``k``
consistency: the judge answers the smallest such value in the predictions),
plus markers for scripted trouble: FLAKY (HTTP 502 the first time), DOWN
(HTTP 500 while the server is down), GARBAGE (no dict), OUT (score 7),
BAD400 (HTTP 400), CHATTY (dict inside prose, JSON quotes).
"""

from __future__ import annotations

import json
import math
import random
import re

import pytest

from harness.judge_client import OpenAIJudge
from harness.registry import default_registry
from harness.results.store import ResultsStore
from harness.scoring import group_metrics, score_outputs, score_predictions
from harness.task import Extracted, ScoreContext, get_task
from harness.tasks.vcg import vcg
from tests.judge_server import Flaky, JudgeServer, Reply, system_text, user_text

CODES = {"correctness": "c", "detail": "d", "context": "x", "temporal": "t", "consistency": "k"}
SYSTEM_TO_CRITERION = {vcg.CRITERIA[name].system: name for name in CODES}


class VcgJudge:
    """Scripted judge behaviour; ``down`` switches the DOWN marker's outage on and off."""

    def __init__(self) -> None:
        self.down = True
        self.flaky = Flaky()

    def __call__(self, body) -> Reply:
        criterion = SYSTEM_TO_CRITERION[system_text(body)]
        preds = "\n".join(
            line for line in user_text(body).splitlines() if line.startswith("Predicted answer")
        )
        if "DOWN" in preds and self.down:
            return Reply(status=500)
        if "FLAKY" in preds and self.flaky.seen(body) == 1:
            return Reply(status=502)
        if "BAD400" in preds:
            return Reply(status=400)
        if "GARBAGE" in preds:
            return Reply(content="The prediction looks reasonable to me.")
        if "OUT" in preds:
            return Reply(content="{'score': 7}")
        score = min(int(v) for v in re.findall(CODES[criterion] + r"=(\d)", preds))
        if "CHATTY" in preds:
            return Reply(content=f'Here is my evaluation: {{"score": {score}}} -- thanks')
        return Reply(content=f"{{'score': {score}}}")


@pytest.fixture
def judge_server():
    script = VcgJudge()
    server = JudgeServer(script).start()
    server.script = script
    yield server
    server.stop()


def make_judge(server: JudgeServer, store=None) -> OpenAIJudge:
    return OpenAIJudge(
        model="judge-test",
        base_url=server.url,
        api_key="sk-x",
        store=store,
        max_attempts=3,
        backoff=0,
        sleep=lambda s: None,
        timeout=5,
    )


GENERIC = [  # (video, question, answer, prediction or None when the model gave none)
    ("v1", "What is the man doing?", "He runs along a beach.", "c=3 d=4 x=2"),
    ("v2", "What animal is shown?", "A brown dog.", "c=5 d=1 x=0 FLAKY"),
    ("v3", "Who appears first?", "A woman in red.", "c=1 d=2 x=3 DOWN"),
    ("v1", "Where does the video take place?", "On a beach.", "GARBAGE c=2 d=2 x=2"),
    ("v4", "What color is the car?", "Blue.", "c=0 d=5 x=4"),
    ("v5", "How many people are there?", "Three.", None),
]
TEMPORAL = [
    ("v1", "What happens after the man stops?", "He sits down.", "t=2"),
    ("v2", "What does the dog do first?", "It barks.", "t=5 CHATTY"),
    ("v3", "When does the woman leave?", "At the end.", "t=4 OUT"),
    ("v4", "What happens at the start?", "A car arrives.", "t=1 BAD400"),
]
CONSISTENCY = [  # (video, q1, q2, answer, pred1, pred2)
    (
        "v1",
        "What is the man doing?",
        "Which activity is the man engaged in?",
        "Running.",
        "k=4",
        "k=2",
    ),
    ("v2", "What animal is it?", "Which animal appears?", "A dog.", "k=5", "k=5"),
    ("v3", "Who is in the video?", "Which person appears?", "A woman.", "k=3", None),
    ("v4", "What is parked?", "What vehicle is shown?", "A car.", "k=1 GARBAGE", "k=1"),
]


def write_data(root):
    qa = root / "Benchmarking_QA"
    qa.mkdir(parents=True)
    (qa / "generic_qa.json").write_text(
        json.dumps([{"video_name": v, "Q": q, "A": a} for v, q, a, _ in GENERIC])
    )
    (qa / "temporal_qa.json").write_text(
        json.dumps([{"video_name": v, "Q": q, "A": a} for v, q, a, _ in TEMPORAL])
    )
    (qa / "consistency_qa.json").write_text(
        json.dumps(
            [{"video_name": v, "Q1": q1, "Q2": q2, "A": a} for v, q1, q2, a, _, _ in CONSISTENCY]
        )
    )
    videos = root / "Test_Videos"
    videos.mkdir()
    for name in ("v1.mp4", "v2.avi", "v3.mkv", "v3.MOV", "notes.txt"):  # v4, v5: no video file
        (videos / name).write_bytes(b"\x00")
    return root


def official_predictions(path, rows):
    """Video-ChatGPT inference output: a JSON list of {video_name, Q, A, pred}."""
    path.write_text(
        json.dumps(
            [{"video_name": v, "Q": q, "A": a, "pred": p} for v, q, a, p in rows if p is not None]
        )
    )
    return path


def consistency_outputs(docs):
    by_pair = {vcg.make_doc_id(v, q1 + "\n" + q2): (p1, p2) for v, q1, q2, _, p1, p2 in CONSISTENCY}
    out = {}
    for doc in docs:
        p1, p2 = by_pair[doc["pair_id"]]
        text = p1 if doc["role"] == "q1" else p2
        if text is not None:
            out[doc["doc_id"]] = text
    return out


# -- loading ------------------------------------------------------------------------------
def test_loader_finds_video_extensions_and_ids(tmp_path):
    root = write_data(tmp_path)
    task = get_task("vcg_generic")
    docs, files = task.load_docs(root)
    assert files["questions"] == root / "Benchmarking_QA" / "generic_qa.json"
    by_q = {d["question"]: d for d in docs}
    assert len(docs) == 6
    assert by_q["What is the man doing?"]["video"] == "v1.mp4"
    assert by_q["What animal is shown?"]["video"] == "v2.avi"
    assert by_q["Who appears first?"]["video"] == "v3.MOV"  # .mov is preferred over .mkv
    missing = by_q["What color is the car?"]
    assert missing["video"] == "v4.mp4" and missing["video_found"] is False
    assert by_q["What is the man doing?"]["doc_id"] == vcg.make_doc_id(
        "v1", "What is the man doing?"
    )
    request = task.build_requests(docs[:1], root)[0]
    assert request.prompt == "What is the man doing?"
    assert request.visuals == (str(root / "Test_Videos" / "v1.mp4"),)
    assert request.gen_kwargs["max_new_tokens"] == 1024


def test_consistency_docs_are_pairs(tmp_path):
    docs, _ = get_task("vcg_consistency").load_docs(write_data(tmp_path))
    assert len(docs) == 8
    first, second = docs[0], docs[1]
    assert first["pair_id"] == second["pair_id"]
    assert (first["doc_id"], second["doc_id"]) == (
        f"{first['pair_id']}/q1",
        f"{first['pair_id']}/q2",
    )
    assert first["question"] == "What is the man doing?"
    assert second["question"] == "Which activity is the man engaged in?"


def test_duplicate_questions_get_distinct_ids(tmp_path):
    path = tmp_path / "temporal_qa.json"
    path.write_text(json.dumps([{"video_name": "v", "Q": "q?", "A": "a"}] * 2))
    docs, _ = get_task("vcg_temporal").load_docs(tmp_path)
    assert [d["doc_id"] for d in docs] == [
        vcg.make_doc_id("v", "q?"),
        vcg.make_doc_id("v", "q?") + "~2",
    ]


def test_judge_settings_match_yaml():
    for name in ("vcg_generic", "vcg_temporal", "vcg_consistency"):
        spec = default_registry().tasks[name].judge
        assert spec.model == "gpt-3.5-turbo" and spec.required
        assert (spec.temperature, spec.max_tokens) == (vcg.JUDGE_TEMPERATURE, vcg.JUDGE_MAX_TOKENS)


def test_parse_score():
    assert vcg.parse_score("{'score': 4}") == 4
    assert vcg.parse_score('Sure. {"score": 0} done') == 0
    assert vcg.parse_score("{'score': '3'}") == 3
    assert vcg.parse_score("{'score': 4.8}") == 4  # int() as the official scorer does
    for bad in (
        "score 4",
        "{'score': 6}",
        "{'score': -1}",
        "{'pred': 4}",
        "{'score': True}",
        "{'score': 'four'}",
        "{score: 4}",
        "",
        "{'score': [4]}",
    ):
        assert vcg.parse_score(bad) is None, bad


def test_judge_required(tmp_path):
    task = get_task("vcg_temporal")
    docs, _ = task.load_docs(write_data(tmp_path))
    with pytest.raises(Exception, match="judge"):
        task.score(docs, {docs[0]["doc_id"]: "t=1"}, ScoreContext(options=task.options), n_boot=0)


# -- scoring ------------------------------------------------------------------------------
def test_generic_scores_retries_and_failures(tmp_path, judge_server):
    root = write_data(tmp_path / "data")
    preds = official_predictions(tmp_path / "generic_preds.json", GENERIC)
    store = ResultsStore(tmp_path / "r.db")
    judge = make_judge(judge_server, store)
    s = score_predictions("vcg_generic", preds, root, judge=judge, n_boot=0).score
    # Judged: A (3,4,2), B (5,1,0 after one 502 each), E (0,5,4); C down, D unparsable, F missing.
    assert s.metrics["correctness"] == pytest.approx(8 / 3)
    assert s.metrics["detail"] == pytest.approx(10 / 3)
    assert s.metrics["context"] == pytest.approx(2.0)
    assert s.metrics["vcg_final_part"] == pytest.approx((8 / 3 + 10 / 3 + 2) / 5)
    assert s.extra == {"judge_failures": 6, "judge_needed": 15}
    assert (s.n, s.n_missing, s.n_parse_failures) == (6, 1, 0)  # no answer is not a parse failure
    # requests: A 3, B 3x2, C 3 criteria x 3 attempts, D 3, E 3
    assert judge_server.n_requests == 24
    assert (judge.failures, judge.cache_hits) == (3, 0)
    fields = {smp.doc_id: smp.fields for smp in s.samples}
    c_doc = fields[vcg.make_doc_id("v3", "Who appears first?")]
    assert (
        math.isnan(c_doc["correctness"])
        and c_doc["judge_failed"] == 3
        and "500" in c_doc["judge_error"]
    )
    d_doc = fields[vcg.make_doc_id("v1", "Where does the video take place?")]
    assert d_doc["judge_failed"] == 3 and "unparsable" in d_doc["judge_error"]
    missing = next(
        smp
        for smp in s.samples
        if smp.doc_id == vcg.make_doc_id("v5", "How many people are there?")
    )
    assert missing.missing and fields[missing.doc_id] == {}  # not judged, left out
    assert fields[vcg.make_doc_id("v1", "What is the man doing?")]["judge_model"] == "judge-test"
    # Every request carried the task's judge settings and one criterion's system prompt.
    assert {(b["temperature"], b["max_tokens"]) for b in judge_server.received} == {(0.0, 128)}
    user = user_text(judge_server.received[0])
    assert (
        "Question: What is the man doing?" in user
        and "Correct answer: He runs along a beach." in user
    )
    assert "Predicted answer: c=3 d=4 x=2" in user

    # Second run, new client, same store: successes (garbage replies included) come from the
    # cache; only C, still down, is asked again.
    rerun_judge = make_judge(judge_server, store)
    s2 = score_predictions("vcg_generic", preds, root, judge=rerun_judge, n_boot=0).score
    assert judge_server.n_requests == 24 + 9
    assert rerun_judge.cache_hits == 12 and s2.metrics == s.metrics

    # The outage ends: the stored failures are retried and now count.
    judge_server.script.down = False
    s3 = score_predictions(
        "vcg_generic", preds, root, judge=make_judge(judge_server, store), n_boot=0
    ).score
    assert judge_server.n_requests == 24 + 9 + 3
    assert s3.metrics["correctness"] == pytest.approx((3 + 5 + 1 + 0) / 4)
    assert s3.metrics["detail"] == pytest.approx((4 + 1 + 2 + 5) / 4)
    assert s3.metrics["context"] == pytest.approx((2 + 0 + 3 + 4) / 4)
    assert s3.extra == {"judge_failures": 3, "judge_needed": 15}
    store.close()


def test_temporal_scores(tmp_path, judge_server):
    root = write_data(tmp_path / "data")
    preds = official_predictions(tmp_path / "temporal_preds.json", TEMPORAL)
    s = score_predictions(
        "vcg_temporal", preds, root, judge=make_judge(judge_server), n_boot=20
    ).score
    assert s.metrics["temporal"] == pytest.approx(3.5)  # 2 and 5; OUT and BAD400 fail
    assert s.metrics["vcg_final_part"] == pytest.approx(0.7)
    assert s.extra == {"judge_failures": 2, "judge_needed": 4}
    assert judge_server.n_requests == 4  # BAD400 is not retried; OUT is a reply, not retried
    assert s.primary == "temporal"


def test_consistency_judges_each_pair_once(tmp_path, judge_server):
    task = get_task("vcg_consistency")
    docs, _ = task.load_docs(write_data(tmp_path))
    outputs = consistency_outputs(docs)
    s = score_outputs(task, docs, outputs, judge=make_judge(judge_server), n_boot=50)
    # P1 min(4, 2) = 2, P2 5; P3 lacks its Q2 answer; P4's reply is unparsable.
    assert s.metrics["consistency"] == pytest.approx(3.5)
    assert s.metrics["vcg_final_part"] == pytest.approx(0.7)
    assert s.extra == {"judge_failures": 1, "judge_needed": 3}
    assert (s.n, s.n_missing) == (8, 1)
    assert judge_server.n_requests == 3
    assert "consistency" in s.ci
    first = user_text(judge_server.received[0])
    assert "Question 1: What is the man doing?" in first
    assert "Question 2: Which activity is the man engaged in?" in first
    assert "Predicted answer to question 1: k=4" in first
    assert "Predicted answer to question 2: k=2" in first
    per_doc = {smp.doc_id: smp.fields for smp in s.samples}
    pair = docs[0]["pair_id"]
    assert (
        math.isnan(per_doc[f"{pair}/q1"]["consistency"])
        and per_doc[f"{pair}/q2"]["consistency"] == 2.0
    )

    # Order of documents does not matter: q2 before q1 gives the same judgements (all cached).
    shuffled = docs[::-1]
    random.Random(0).shuffle(shuffled)
    again = score_outputs(task, shuffled, outputs, judge=make_judge(judge_server), n_boot=0)
    assert again.metrics["consistency"] == pytest.approx(3.5)
    assert again.extra == {"judge_failures": 1, "judge_needed": 3}


def test_consistency_pending_state_is_per_context():
    doc = {"pair_id": "p", "role": "q1", "question1": "a?", "question2": "b?", "answer": "x"}
    first = vcg.process_consistency(doc, Extracted("k=1"), ScoreContext())
    assert first["judge_needed"] == 0 and math.isnan(first["consistency"])
    # A fresh context (a new scoring pass) does not see the earlier pass's pending answer.
    other = vcg.process_consistency({**doc, "role": "q2"}, Extracted("k=1"), ScoreContext())
    assert other["judge_needed"] == 0


def test_group_final_score_and_cache(tmp_path, judge_server):
    """All judgements succeed: the vcg group's final score is the mean of the five criteria,
    and a second scoring run with the same store makes no HTTP request at all."""
    judge_server.script.down = False
    root = write_data(tmp_path / "data")
    clean = {
        "vcg_generic": [r for r in GENERIC if r[3] and "GARBAGE" not in r[3]],
        "vcg_temporal": [r for r in TEMPORAL if not re.search("OUT|BAD400", r[3])],
    }
    store = ResultsStore(tmp_path / "r.db")

    def run():
        scores = {}
        for name, rows in clean.items():
            preds = official_predictions(tmp_path / f"{name}.json", rows)
            scores[name] = score_predictions(
                name, preds, root, judge=make_judge(judge_server, store), n_boot=0
            ).score
        task = get_task("vcg_consistency")
        docs, _ = task.load_docs(root)
        outputs = {k: v for k, v in consistency_outputs(docs).items() if "GARBAGE" not in v}
        scores["vcg_consistency"] = score_outputs(
            task, docs, outputs, judge=make_judge(judge_server, store), n_boot=0
        )
        return scores

    scores = run()
    generic, temporal, consistency = (
        scores[n].metrics for n in ("vcg_generic", "vcg_temporal", "vcg_consistency")
    )
    # generic: A (3,4,2) B (5,1,0) C (1,2,3) E (0,5,4); temporal 2, 5; consistency 2, 5
    assert (generic["correctness"], generic["detail"], generic["context"]) == (2.25, 3.0, 2.25)
    assert (temporal["temporal"], consistency["consistency"]) == (3.5, 3.5)
    group = group_metrics(default_registry().groups["vcg"], scores)
    assert group["vcg_final_part"] == pytest.approx((2.25 + 3.0 + 2.25 + 3.5 + 3.5) / 5)
    assert all(s.extra["judge_failures"] == 0 for s in scores.values())

    before = judge_server.n_requests
    again = run()
    assert judge_server.n_requests == before  # zero HTTP requests on the second run
    assert {n: s.metrics for n, s in again.items()} == {n: s.metrics for n, s in scores.items()}
    store.close()

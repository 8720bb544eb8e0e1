"""Results that cannot be silently wrong (issue 16): cache keys, failures, missing and
foreign predictions, run resolution and the terminal.

Each test here failed on the code before the issue: the bug printed a wrong number (or
lost it) with exit status 0.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from harness import digests
from harness.api.requests import Failure
from harness.cli import main
from harness.errors import HarnessError, PredictionsError
from harness.evaluator import EvalConfig, evaluate
from harness.models.hf_adapter import fingerprint_files
from harness.models.loading import WEIGHTS_DIR, load_model
from harness.registry import default_registry
from harness.results.gate import run_gate
from harness.results.leaderboard import build_leaderboard
from harness.results.store import ResultsStore
from harness.scoring import score_outputs, score_predictions, score_tasks
from harness.task import get_task
from tests.conftest import REPO
from tests.fakes import HashModel, make_pope

TOY = WEIGHTS_DIR / "toy-llava"


@pytest.fixture(scope="module", autouse=True)
def toy_world_and_caches(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("HARNESS_TOY_DIR", str(tmp_path_factory.mktemp("world")))
    mp.setenv("HARNESS_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    yield
    mp.undo()


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    status = main(list(argv))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def flip_one_bit_in_the_middle(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


# -- cache keys -----------------------------------------------------------------------------
def test_one_flipped_bit_in_a_middle_tensor_is_another_model(tmp_path):
    copy = tmp_path / "fine-tuned"
    shutil.copytree(TOY, copy)
    flip_one_bit_in_the_middle(copy / "model.safetensors")
    assert fingerprint_files(copy) != fingerprint_files(TOY)  # head and tail are the same

    config = EvalConfig(limit=6, n_boot=0, show_progress=False)
    store = ResultsStore(tmp_path / "r.db")
    original = load_model("toy-llava", device="cpu")
    first = evaluate("gqa-toy", original, store, config)
    assert (first.generated["gqa-toy"], first.reused["gqa-toy"]) == (6, 0)
    changed = load_model("toy-llava", model_path=copy, device="cpu")
    second = evaluate("gqa-toy", changed, store, config)
    assert (second.generated["gqa-toy"], second.reused["gqa-toy"]) == (6, 0)
    again = evaluate("gqa-toy", load_model("toy-llava", device="cpu"), store, config)
    assert (again.generated["gqa-toy"], again.reused["gqa-toy"]) == (0, 6)


def test_digests_are_full_sha256_computed_once_per_file_version(tmp_path):
    path = tmp_path / "w.bin"
    path.write_bytes(os.urandom(3 << 20) + b"end")
    before = dict(digests.stats)
    first = digests.file_digest(path)
    assert first == digests.sha256_file(path)
    assert digests.file_digest(path) == first
    assert digests.stats["hashed_files"] == before["hashed_files"] + 1  # the second came cached
    assert digests.stats["cached"] == before["cached"] + 1
    flip_one_bit_in_the_middle(path)  # same size, new mtime: hashed again
    assert digests.file_digest(path) != first
    assert digests.stats["hashed_files"] == before["hashed_files"] + 2
    # A Hugging Face cache blob is named by its sha256: that name is the digest.
    blobs = tmp_path / "models--x" / "blobs"
    blobs.mkdir(parents=True)
    digest = digests.sha256_file(path)
    shutil.copy(path, blobs / digest)
    snapshot = tmp_path / "models--x" / "snapshots" / "abc"
    snapshot.mkdir(parents=True)
    (snapshot / "model.safetensors").symlink_to(blobs / digest)
    hashed = digests.stats["hashed_files"]
    assert digests.file_digest(snapshot / "model.safetensors") == digest
    assert digests.stats["hashed_files"] == hashed


def test_dtype_threads_and_settings_are_in_the_key_and_shown(tmp_path, capsys):
    db = str(tmp_path / "r.db")
    args = ["run", "--model", "toy-llava", "--tasks", "gqa-toy", "--limit", "4", "--db", db]
    assert cli(capsys, *args, "--bootstrap", "0", "--threads", "1")[0] == 0
    status, _, err = cli(capsys, *args, "--bootstrap", "0", "--quant", "FP16", "--json")
    assert status == 0
    store = ResultsStore(db)
    fp32, fp16 = store.runs()
    assert fp16["precision"] == "fp16" and fp32["precision"] == "fp32"
    assert fp16["model_fingerprint"] != fp32["model_fingerprint"]
    run = store.run_samples(fp16["run_id"], "gqa-toy")
    assert len(run) == 4
    settings = json.loads(fp32["settings"])["runtime"]
    assert settings["dtype"] == "float32" and settings["device"] == "cpu"
    assert settings["cpu_threads"] == 1 and settings["attention"]
    assert json.loads(fp16["settings"])["runtime"]["dtype"] == "float16"
    status, out, _ = cli(capsys, "runs", "--db", db)
    assert status == 0 and "float16, cpu" in out and "float32, cpu, attn" in out
    assert "1 threads" in out and "--limit 4" in out
    runs = json.loads(cli(capsys, "runs", "--db", db, "--json")[1])
    assert runs[0]["settings"]["runtime"]["cpu_threads"] == 1


class FlakyImageModel(HashModel):
    """Fails the documents named in ``broken`` (their image 'cannot be read')."""

    def __init__(self, broken: set[str]) -> None:
        super().__init__()
        self.broken = broken

    def generate(self, requests):
        answers = super().generate(requests)
        return [
            Failure(f"cannot read image {r.visuals[0]}") if r.doc_id in self.broken else a
            for r, a in zip(requests, answers, strict=True)
        ]


def test_a_failed_sample_is_stored_as_a_failure_and_retried(tmp_path, capsys):
    root = make_pope(tmp_path / "data", n=10)
    store = ResultsStore(tmp_path / "r.db")
    config = EvalConfig(data_root=root, n_boot=0, show_progress=False)
    first = evaluate("pope_random", FlakyImageModel({"3", "7"}), store, config)
    score = first.scores["pope_random"]
    assert (score.n, score.n_missing) == (10, 2) and sorted(score.missing_ids) == ["3", "7"]
    assert set(first.failures["pope_random"]) == {"3", "7"}
    rows = {r["doc_id"]: r for r in store.run_samples(first.run_id, "pope_random")}
    assert rows["3"]["raw_output"] is None and "cannot read image" in rows["3"]["error"]
    assert not rows["3"]["answered"] and rows["1"]["answered"]
    # the image is fixed: only the two failures are generated again
    fixed = HashModel()
    second = evaluate("pope_random", fixed, store, config)
    assert sorted(fixed.generated) == ["3", "7"] and second.reused["pope_random"] == 8
    assert second.scores["pope_random"].n_missing == 0
    reference = evaluate("pope_random", HashModel(), None, config).scores["pope_random"]
    assert second.scores["pope_random"].metrics == reference.metrics


# -- predictions that are not answers ----------------------------------------------------------
def _write(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def _llava_pope(reference: Path) -> list[dict]:
    return [json.loads(x) for x in (reference / "pope" / "answers.jsonl").open()]


def test_one_answer_of_2910_is_not_an_f1_with_exit_0(reference, tmp_path, capsys):
    pope = reference / "pope"
    random_ids = {
        json.loads(x)["question_id"]
        for x in (pope / "questions.jsonl").open()
        if json.loads(x)["category"] == "random"
    }
    one = [r for r in _llava_pope(reference) if r["question_id"] in random_ids][:1]
    preds = _write(tmp_path / "one.jsonl", one)
    argv = ["score", "pope_random", "--predictions", str(preds), "--data-root", str(pope)]
    argv += ["--data-file", "questions=questions.jsonl", "--bootstrap", "0", "--json"]
    status, out, err = cli(capsys, *argv)
    scores = json.loads(out)
    assert status == 3 and scores["pope_random/n_missing"] == 2909
    assert "2909 of 2910 documents have no answer (left out" in err
    assert "--allow-missing" in err
    assert scores["pope_random/f1"] in (0.0, 100.0)  # one answered question, not 68.0
    assert cli(capsys, *argv, "--allow-missing")[0] == 0
    # a null or blank text is no answer either (it used to become "" and then "yes")
    for text in (None, "", "  "):
        _write(preds, [{**one[0], "text": text}])
        status, out, _ = cli(capsys, *argv)
        assert status == 3 and json.loads(out)["pope_random/n_missing"] == 2910
        assert json.loads(out)["pope_random/f1"] is None  # valid JSON: null, not NaN


def test_every_task_states_its_rule_and_never_extracts_a_missing_answer(monkeypatch):
    registry = default_registry()
    rules = {name: cfg.missing for name, cfg in registry.tasks.items()}
    assert set(rules.values()) <= {"skip", "wrong"}
    assert rules["pope_random"] == rules["textvqa_val"] == rules["vcg_generic"] == "skip"
    assert rules["gqa_testdev"] == rules["scienceqa_img"] == rules["mmbench_en_dev"] == "wrong"
    for name in registry.expand("toy-nojudge"):
        task = get_task(name)
        docs, _ = task.load_docs(None)
        monkeypatch.setattr(task, "_extract", lambda *a: pytest.fail("extracted a non-answer"))
        outputs = {d["doc_id"]: (None if i % 2 else " ") for i, d in enumerate(docs)}
        score = score_outputs(task, docs, outputs, n_boot=0)
        assert score.n_missing == len(docs) == score.n, name
        value = score.metrics[score.primary]
        if task.config.missing == "skip":
            assert value != value, name  # NaN: nothing answered, nothing scored
        elif name == "scienceqa-toy":  # LLaVA's rule: missing problems leave IMG-accuracy
            assert score.metrics["accuracy"] == 0.0 and value != value
        else:
            assert value == 0.0, (name, value)  # every missing document is wrong


def test_scienceqa_missing_problems_count_wrong_but_leave_img_accuracy():
    task = get_task("scienceqa-toy")
    docs, _ = task.load_docs(None)
    image_docs = [d for d in docs if d["has_image"]]
    outputs = {d["doc_id"]: d["answer"] for d in docs}  # all right
    del outputs[image_docs[0]["doc_id"]]
    score = score_outputs(task, docs, outputs, n_boot=0)
    n_img = len(image_docs)
    assert score.metrics["img_accuracy"] == pytest.approx(100.0)  # over n_img - 1 problems
    assert score.metrics["accuracy"] == pytest.approx(100 * (len(docs) - 1) / len(docs))
    assert n_img > 1


# -- predictions for other documents ------------------------------------------------------------
def test_llava_pope_answers_with_only_the_official_files_are_refused(reference, tmp_path, capsys):
    pope = reference / "pope"
    gt = tmp_path / "gt"
    shutil.copytree(pope / "gt", gt)  # only coco_pope_*.json, as the README's example had
    answers = str(pope / "answers.jsonl")
    status, out, err = cli(
        capsys, "score", "pope", "--predictions", answers, "--data-root", str(gt)
    )
    assert status == 2 and out == ""
    assert "fit documents of several tasks" in err and "llava_pope_test.jsonl" in err
    status, _, err = cli(
        capsys, "score", "pope_popular", "--predictions", answers, "--data-root", str(gt)
    )
    assert status == 2 and "answer other questions than the documents their ids name" in err
    assert "answers.jsonl:2: id '2' is pope_popular's question 'Is there a dining table" in err
    # with LLaVA's question file the same answers give the published numbers
    argv = ["score", "pope", "--predictions", answers, "--data-root", str(pope), "--json"]
    status, out, _ = cli(
        capsys, *argv, "--data-file", "questions=questions.jsonl", "--bootstrap", "0"
    )
    scores = json.loads(out)
    assert status == 0
    assert [round(scores[f"pope_{s}/f1"], 2) for s in ("adversarial", "popular", "random")] == [
        84.46,
        86.25,
        87.14,
    ]
    assert round(scores["pope/f1"], 2) == 85.95  # the mean F1 LLaVA-1.5-13B reports (85.9)


def test_duplicated_foreign_and_excess_predictions_name_file_and_ids(reference, tmp_path):
    pope = reference / "pope"
    files = {"questions": "questions.jsonl"}
    answers = _llava_pope(reference)
    dup = _write(tmp_path / "dup.jsonl", answers + [answers[5]])  # identical text, still refused
    with pytest.raises(PredictionsError, match=r"dup.jsonl:8911: second prediction for "
                       r"pope_adversarial document '6' \(first at .*dup.jsonl:6\)"):  # fmt: skip
        score_tasks(["pope_adversarial", "pope_popular", "pope_random"], dup, pope,
                    {n: files for n in ("pope_adversarial", "pope_popular", "pope_random")})  # fmt: skip
    foreign = _write(tmp_path / "foreign.jsonl", answers + [{"question_id": 99999, "text": "Yes"}])
    group = ["pope_adversarial", "pope_popular", "pope_random"]
    with pytest.raises(PredictionsError, match=r"1 of 8911 predictions belong to no document .*"
                       r"foreign.jsonl:8911 \(id 99999\)"):  # fmt: skip
        score_tasks(group, foreign, pope, {n: files for n in group})
    with pytest.raises(PredictionsError, match="5910 of 8910 predictions belong to no document"):
        score_predictions("pope_adversarial", pope / "answers.jsonl", pope, files)
    allowed = score_predictions(
        "pope_adversarial", pope / "answers.jsonl", pope, files, n_boot=0, allow_extra=True
    )
    assert round(allowed.score.metrics["f1"], 2) == 84.46 and allowed.match.n_unmatched == 5910


def test_every_task_reader_refuses_contradicting_and_duplicated_predictions(tmp_path):
    """Sample-log records for each toy task (every loader and id rule) whose ids point at
    documents that ask other questions."""
    for name in default_registry().expand("toy"):
        task = get_task(name)
        docs, _ = task.load_docs(None)
        asked = [d for d in docs if isinstance(d.get("question"), str)]
        others = [d for d in asked if d["question"] != asked[0]["question"]]
        if not others:
            continue
        good = {"doc_id": asked[0]["doc_id"], "prompt": asked[0]["question"], "text": "x"}
        wrong = {"doc_id": asked[0]["doc_id"], "prompt": others[0]["question"], "text": "x"}
        path = _write(tmp_path / f"{name}.jsonl", [wrong])
        with pytest.raises(PredictionsError, match="answer other questions"):
            score_tasks([name], path, None)
        _write(path, [good, good])
        with pytest.raises(PredictionsError, match="second prediction"):
            score_tasks([name], path, None)


# -- runs that are not what the user named ------------------------------------------------------
def test_a_limit_run_is_never_what_model_at_precision_names(tmp_path, capsys):
    db = str(tmp_path / "r.db")
    base = ["run", "--model", "toy-llava", "--db", db, "--bootstrap", "0", "--json"]
    assert cli(capsys, *base, "--tasks", "gqa-toy")[0] == 0
    assert cli(capsys, *base, "--tasks", "gqa-toy", "--limit", "12")[0] == 0
    store = ResultsStore(db)
    full, smoke = store.runs()
    assert smoke["limit_docs"] == 12 and full["limit_docs"] is None
    assert store.run("toy-llava@fp32")["run_id"] == full["run_id"]
    # the smoke run is still reachable by its id, and the gate says what differs
    with pytest.raises(HarnessError, match=r"gqa-toy: the runs scored different documents "
                       r"\(200 in \w+, 12 in \w+; only the base: 188"):  # fmt: skip
        run_gate(store, full["run_id"], smoke["run_id"])
    status, out, err = cli(capsys, "gate", "--db", db, "--base", "toy-llava@fp32",
                           "--candidate", full["run_id"])  # fmt: skip
    assert status == 2 and "same run" in err  # the name resolved to the full run, not the smoke
    board = build_leaderboard(store)
    (row,) = board.rows
    assert {c.run_id for c in row.cells.values()} == {full["run_id"]}  # limited runs: off


def test_recipes_that_do_not_quantize_what_they_say_are_refused(tmp_path, capsys):
    argv = ["run", "--model", "toy-llava", "--tasks", "gqa-toy", "--limit", "2", "--no-db"]
    status, out, err = cli(capsys, *argv, "--quant", "awq-w5g100")
    assert status == 2 and out == ""
    assert "--quant awq-w5g100: group size 100 does not divide the in_features" in err
    status, out, err = cli(capsys, *argv, "--quant", "AWQ-W4G128-N8-S64", "--bootstrap", "0")
    assert status == 0 and "layer 1/3 model.language_model.layers.0" in err  # per layer
    assert "toy-llava @ awq-w4g128-n8-s64" in out  # the recipe's canonical spelling
    status, _, err = cli(capsys, *argv, "--quant", "awq-w9g128")
    assert status == 2 and "bits in 'w9g128' must be 2..8" in err


def test_judge_failures_exit_non_zero_with_valid_json(tmp_path, capsys):
    argv = ["run", "--model", "toy-llava", "--tasks", "vcg_generic-toy", "--limit", "2"]
    argv += ["--no-db", "--json", "--bootstrap", "0", "--judge-retries", "1"]
    status, out, err = cli(capsys, *argv, "--judge-base-url", "http://127.0.0.1:9/v1")
    scores = json.loads(out)  # parses: no NaN
    assert status == 3
    assert scores["vcg_generic-toy/correctness"] is None
    assert scores["vcg_generic-toy/judge_failures"] == 6
    assert "6 judgements failed" in err


# -- the results DB ----------------------------------------------------------------------------
def test_scores_are_printed_before_a_failing_db_write(tmp_path, capsys, monkeypatch):
    from harness.errors import StoreError

    db = tmp_path / "r.db"

    def broken(self, *args, **kwargs):
        raise StoreError(
            f"--db {db}: the database file is damaged (database disk image is malformed)"
        )

    monkeypatch.setattr(ResultsStore, "put_task_score", broken)
    argv = ["run", "--model", "toy-llava", "--tasks", "gqa-toy", "--limit", "3", "--db", str(db)]
    status, out, err = cli(capsys, *argv, "--json", "--bootstrap", "0")
    assert status == 2
    assert json.loads(out)["gqa-toy/n"] == 3  # the scores came out
    assert err.count("error:") == 1 and "damaged" in err and "not all were stored" in err


def test_damaged_db_is_one_line_naming_the_file(tmp_path, capsys):
    db = tmp_path / "r.db"
    argv = ["run", "--model", "toy-llava", "--tasks", "gqa-toy", "--limit", "2", "--db", str(db)]
    assert cli(capsys, *argv, "--bootstrap", "0")[0] == 0
    store = ResultsStore(db)
    store.db.conn.execute("pragma wal_checkpoint(truncate)")
    page = store.db.conn.execute("pragma page_size").fetchone()[0]
    store.close()
    data = bytearray(db.read_bytes())
    for offset in range(page, len(data), page):  # every page but the header page
        data[offset : offset + 64] = b"\xab" * 64
    db.write_bytes(bytes(data))
    status, out, err = cli(capsys, "runs", "--db", str(db))
    assert status == 2 and out == "" and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and str(db) in err


def test_read_only_db_is_refused_before_the_model_loads(tmp_path, capsys):
    db = tmp_path / "r.db"
    argv = ["run", "--model", "toy-llava", "--tasks", "gqa-toy", "--limit", "2", "--db", str(db)]
    assert cli(capsys, *argv, "--bootstrap", "0")[0] == 0
    ResultsStore(db).close()
    if subprocess.run(["chattr", "+i", str(db)], capture_output=True).returncode != 0:
        if os.geteuid() == 0:
            pytest.skip("cannot make a file read-only for root here (no chattr)")
        db.chmod(0o444)
    try:
        before = db.read_bytes()
        status, out, err = cli(capsys, *argv)
        assert status == 2 and out == ""
        assert "read-only" in err and "loading" not in err  # refused before the model loads
        assert cli(capsys, "runs", "--db", str(db))[0] == 0  # reading still works
        assert db.read_bytes() == before
    finally:
        subprocess.run(["chattr", "-i", str(db)], capture_output=True)
        db.chmod(0o644)


# -- the checkout and the terminal ---------------------------------------------------------------
def test_transformers_and_python_m_harness_work_from_the_repository_root(tmp_path):
    env = {**os.environ, "HARNESS_TOY_DIR": os.environ["HARNESS_TOY_DIR"]}
    code = "from transformers import LlavaForConditionalGeneration; import kernels; print(kernels.__file__)"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, env=env
    )
    assert out.returncode == 0, out.stderr
    assert not out.stdout.strip().startswith(str(REPO))  # Hugging Face's package, if installed
    run = [sys.executable, "-m", "harness", "run", "--model", "toy-llava", "--tasks", "gqa-toy"]
    out = subprocess.run(
        [*run, "--limit", "2", "--no-db", "--json", "--bootstrap", "0"],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=env,
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["gqa-toy/n"] == 2


def test_a_closed_pipe_does_not_fail_the_run(tmp_path):
    db = tmp_path / "r.db"
    cmd = [sys.executable, "-m", "harness", "run", "--model", "toy-llava", "--tasks", "gqa-toy"]
    cmd += ["--limit", "3", "--db", str(db), "--bootstrap", "0"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # like `| head` exiting at once
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err.decode()
    assert b"Traceback" not in err
    (run,) = ResultsStore(db).runs()
    assert run["status"] == "complete"


def test_progress_goes_to_stderr_and_piped_tables_are_whole(tmp_path, capsys):
    root = make_pope(tmp_path / "data", n=6)
    capsys.readouterr()
    evaluate("pope_random", HashModel(), None, EvalConfig(data_root=root, show_progress=True))
    assert capsys.readouterr().out == ""  # the bar is drawn on stderr (when it is a terminal)
    db = str(tmp_path / "r.db")
    long_name = "a-model-name-long-enough-to-be-cut-at-eighty-columns-by-a-terminal-table"
    store = ResultsStore(db)
    result = evaluate("pope_random", HashModel(name=long_name), store, EvalConfig(data_root=root))
    status, out, _ = cli(capsys, "runs", "--db", db)
    assert status == 0 and long_name in out and result.run_id in out and "…" not in out


def test_log_samples_hold_the_prompt_the_model_got(tmp_path, capsys):
    argv = ["run", "--model", "toy-llava", "--tasks", "gqa-toy", "--limit", "2", "--no-db"]
    status, _, err = cli(capsys, *argv, "--log-samples", str(tmp_path / "logs"), "--bootstrap", "0")
    assert status == 0
    assert err.index("loading toy-llava") < err.index("loaded toy-llava")
    model = load_model("toy-llava", device="cpu")
    task = get_task("gqa-toy")
    docs, _ = task.load_docs(None)
    request = task.build_requests(docs[:1], None, model.family)[0]
    (first, _) = [json.loads(x) for x in (tmp_path / "logs" / "gqa-toy.jsonl").open()]
    assert first["prompt"] == model.rendered_prompt(request) != request.prompt
    assert request.prompt in first["prompt"] and "<image>" in first["prompt"]


def test_errors_keep_bracketed_text(tmp_path, capsys):
    status, _, err = cli(
        capsys, "run", "--model", "toy-llava", "--tasks", "gqa-toy", "--data-file", "[plot]=x"
    )
    assert status == 2 and "'[plot]=x'" in err


def test_quantize_says_the_flag_and_writes_readable_files(tmp_path, capsys):
    out = tmp_path / "q"
    out.mkdir()
    (out / "old.txt").write_text("x")
    argv = ["quantize", "--model", "toy-llava", "--quant", "rtn-w4g128", "--format", "awq"]
    status, _, err = cli(capsys, *argv, "--out", str(out), "--device", "cpu")
    assert status == 2 and "--overwrite" in err and "overwrite=True" not in err
    old = os.umask(0o022)
    try:
        assert cli(capsys, *argv, "--out", str(out), "--device", "cpu", "--overwrite")[0] == 0
    finally:
        os.umask(old)
    assert (out.stat().st_mode & 0o777) == 0o755
    modes = {p.name: p.stat().st_mode & 0o777 for p in out.iterdir()}
    assert modes and set(modes.values()) == {0o644}, modes


def test_fp16_on_cpu_key_differs_from_fp32(tmp_path):
    model = load_model("toy-llava", device="cpu", dtype="fp32")
    half = load_model("toy-llava", device="cpu", dtype="fp16")
    assert model.weights_fingerprint() == half.weights_fingerprint()
    assert model.fingerprint() != half.fingerprint()
    torch.set_num_threads(torch.get_num_threads())

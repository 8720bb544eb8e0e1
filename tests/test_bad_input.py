"""Bad input, as a corpus: every case exits with status 2 and one ``error:`` line that names
the file, field or flag at fault, prints no traceback and nothing on stdout, and leaves the
results DB as it was.

A case is (id, command line, setup, expected text). The command line's ``{db}``, ``{data}``
(a POPE-format data root with images), ``{preds}`` (LLaVA answers for it) and ``{tmp}``
(a fresh folder per case) are filled in; ``setup(tmp, data)`` writes the case's bad files.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest

from harness import registry as registry_module
from harness.cli import main
from harness.evaluator import EvalConfig, evaluate
from harness.models.loading import WEIGHTS_DIR
from harness.results.store import ResultsStore
from tests.fakes import HashModel, make_pope

RUN = ["run", "--model", "toy-llava", "--tasks", "pope_random", "--data-root", "{data}"]
TOY = ["run", "--model", "toy-llava", "--tasks", "gqa-toy", "--db", "{db}"]
SCORE = ["score", "pope_random", "--data-root", "{data}", "--predictions"]


def _write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


def _lines(records: list[dict]) -> str:
    return "".join(json.dumps(r) + "\n" for r in records)


def _answers(n: int = 6, **extra) -> list[dict]:
    return [
        {"question_id": i + 1, "prompt": f"Is there a {q} in the image?", "text": "Yes", **extra}
        for i, q in enumerate(["cat", "dog", "car", "tree", "cup", "bus"][:n])
    ]


def _copy_data(tmp: Path, data: Path) -> Path:
    out = tmp / "data"
    shutil.copytree(data, out)
    return out


def _bad_annotations(text: str):
    def setup(tmp: Path, data: Path) -> None:
        _write(_copy_data(tmp, data) / "coco_pope_random.json", text)

    return setup


def _preds(text: str | bytes, name: str = "p.jsonl"):
    def setup(tmp: Path, data: Path) -> None:
        _write(tmp / name, text)

    return setup


def _db_file(content: bytes):
    def setup(tmp: Path, data: Path) -> None:
        _write(tmp / "bad.db", content)

    return setup


def _newer_db(tmp: Path, data: Path) -> None:
    ResultsStore(tmp / "new.db").close()
    with sqlite3.connect(tmp / "new.db") as conn:
        conn.execute("pragma user_version = 99")


def _damaged_db(tmp: Path, data: Path) -> None:
    store = ResultsStore(tmp / "dmg.db")
    evaluate("pope_random", HashModel(), store, EvalConfig(data_root=data, n_boot=0))
    store.db.conn.execute("pragma wal_checkpoint(truncate)")
    page = store.db.conn.execute("pragma page_size").fetchone()[0]
    store.close()
    raw = bytearray((tmp / "dmg.db").read_bytes())
    for offset in range(page, len(raw), page):
        raw[offset : offset + 64] = b"\xab" * 64
    (tmp / "dmg.db").write_bytes(bytes(raw))


def _broken_checkpoint(tmp: Path, data: Path) -> None:
    shutil.copytree(WEIGHTS_DIR / "toy-llava", tmp / "ckpt")
    (tmp / "ckpt" / "model.safetensors").write_bytes(b"\x00" * 100)  # a truncated download


def _no_config_checkpoint(tmp: Path, data: Path) -> None:
    shutil.copytree(WEIGHTS_DIR / "toy-llava", tmp / "ckpt")
    (tmp / "ckpt" / "config.json").unlink()


def _two_copies(tmp: Path, data: Path) -> None:
    root = _copy_data(tmp, data)
    for sub in ("a", "b"):
        _write(root / sub / "coco_pope_random.json", (data / "coco_pope_random.json").read_text())
    (root / "coco_pope_random.json").unlink()


def _no_images(tmp: Path, data: Path) -> None:
    shutil.rmtree(_copy_data(tmp, data) / "val2014")
    (tmp / "data" / "val2014").mkdir()


def _non_empty(tmp: Path, data: Path) -> None:
    _write(tmp / "out" / "keep.txt", "x")


def _killed_run(tmp: Path, data: Path) -> None:
    store = ResultsStore(tmp / "k.db")
    for fp in ("a", "b"):
        evaluate("pope_random", HashModel(salt=fp), store, EvalConfig(data_root=data, n_boot=0))
    run_id = store.runs()[-1]["run_id"]
    store.db.conn.execute("update runs set status = 'killed' where run_id = ?", [run_id])
    (tmp / "k.id").write_text(run_id)


def _task_yaml(text: str, name: str = "broken.yaml"):
    """A tasks folder with one more YAML file (the registry reads the copy)."""

    def setup(tmp: Path, data: Path) -> None:
        tasks = tmp / "tasks"
        shutil.copytree(registry_module._tasks_dir(), tasks)
        _write(tasks / "extra" / name, text)

    return setup


GOOD_TASK = """\
task: extra_task
version: 1
dataset:
  loader: !hook pope.pope.load
  files: {annotations: coco_pope_random.json}
doc_to_text: "{question}"
extractor: !hook pope.pope.extract_yes_no
process_results: !hook pope.pope.process
aggregate: !hook pope.pope.aggregate
options: {split: random}
"""
METRICS = "metrics:\n  - {name: f1, primary: true}\n"


CASES = [
    # -- harness run: flags ---------------------------------------------------------------
    ("limit-negative", [*TOY, "--limit", "-195"], None, "argument --limit: -195: expected a whole number >= 1"),
    ("limit-zero", [*TOY, "--limit", "0"], None, "argument --limit: 0"),
    ("limit-text", [*TOY, "--limit", "ten"], None, "argument --limit: 'ten'"),
    ("batch-size-zero", [*TOY, "--batch-size", "0"], None, "argument --batch-size: 0"),
    ("gen-zero-tokens", [*TOY, "--gen", "max_new_tokens=0"], None, "--gen: max_new_tokens=0: expected a whole number >= 1"),
    ("gen-unknown-key", [*TOY, "--gen", "foo=bar"], None, "--gen: unknown generation setting 'foo'"),
    ("gen-negative-temperature", [*TOY, "--gen", "temperature=-1"], None, "--gen: temperature=-1"),
    ("gen-top-p", [*TOY, "--gen", "top_p=1.5"], None, "--gen: top_p=1.5: expected a number in (0, 1]"),
    ("gen-beams-text", [*TOY, "--gen", "num_beams=two"], None, "--gen: num_beams='two'"),
    ("gen-no-equals", [*TOY, "--gen", "max_new_tokens"], None, "--gen 'max_new_tokens': expected KEY=VALUE"),
    ("bootstrap-negative", [*TOY, "--bootstrap", "-5"], None, "argument --bootstrap: -5: expected a whole number >= 0"),
    ("num-frames-zero", [*TOY, "--num-frames", "0"], None, "argument --num-frames: 0"),
    ("num-frames-image-task", [*TOY, "--num-frames", "4"], None, "--num-frames 4: none of the tasks (gqa-toy) has a video"),
    ("threads-zero", [*TOY, "--threads", "0"], None, "argument --threads: 0"),
    ("judge-retries-zero", [*TOY, "--judge-retries", "0"], None, "argument --judge-retries: 0"),
    ("unknown-flag", [*TOY, "--frobnicate"], None, "unrecognized arguments: --frobnicate"),
    ("missing-tasks", ["run", "--model", "toy-llava"], None, "the following arguments are required: --tasks"),
    ("unknown-task", ["run", "--model", "toy-llava", "--tasks", "gqa_toy", "--db", "{db}"], None, "unknown task or group 'gqa_toy'. Did you mean: gqa-toy"),
    ("empty-tasks", ["run", "--model", "toy-llava", "--tasks", ",", "--db", "{db}"], None, "--tasks ',': no task named"),
    ("unknown-model", ["run", "--model", "llava-9b", "--tasks", "gqa-toy", "--db", "{db}"], None, "--model llava-9b: unknown model"),
    ("model-path-missing", [*TOY, "--model-path", "{tmp}/nowhere"], None, "--model-path {tmp}/nowhere: no such folder"),
    ("quant-no-group", [*TOY, "--quant", "awq-w4"], None, "--quant awq-w4: recipe 'awq-w4': bad bits/group part 'w4'"),
    ("quant-unknown-method", [*TOY, "--quant", "hqq-w4g128"], None, "unknown method 'hqq'"),
    ("quant-unknown-option", [*TOY, "--quant", "awq-w4g128-fast"], None, "unknown option 'fast'"),
    ("quant-nine-bits", [*TOY, "--quant", "awq-w9g128"], None, "bits in 'w9g128' must be 2..8"),
    ("quant-repeated-option", [*TOY, "--quant", "awq-w4g128-sym-asym"], None, "option 'asym' conflicts"),
    ("quant-group-does-not-fit", [*TOY, "--quant", "awq-w5g100"], None, "--quant awq-w5g100: group size 100 does not divide"),
    ("quant-dtype-conflict", [*TOY, "--quant", "fp16", "--dtype", "bf16"], None, "--quant fp16 conflicts with --dtype bf16"),
    ("dtype-unknown", [*TOY, "--dtype", "fp64"], None, "--dtype fp64: expected one of"),
    ("device-cuda-absent", [*TOY, "--device", "cuda:0"], None, "--device cuda:0: CUDA is not available"),
    ("calib-without-recipe", [*TOY, "--calib-tasks", "vqav2-toy"], None, "--calib-tasks needs --quant"),
    ("calib-unknown-task", [*TOY, "--quant", "awq-w4g128", "--calib-tasks", "nope"], None, "unknown task or group 'nope'"),
    ("calib-rtn", [*TOY, "--quant", "rtn-w4g128", "--calib-tasks", "vqav2-toy"], None, "--calib-tasks: rtn does not calibrate"),
    ("quant-load-missing", [*TOY, "--quant", "awq-w4g128", "--quant-load", "{tmp}/nodump"], None, "--quant-load {tmp}/nodump"),
    ("data-file-format", [*RUN, "--data-file", "annotations=x.json", "--db", "{db}"], None, "--data-file 'annotations=x.json': expected TASK:ROLE=PATH"),
    ("data-file-brackets", [*RUN, "--data-file", "[plot]=x", "--db", "{db}"], None, "--data-file '[plot]=x'"),
    ("data-file-no-role", [*RUN, "--data-file", "pope_random:labels=x.json", "--db", "{db}"], None, "task pope_random has no data file role 'labels'"),
    ("data-file-missing", [*RUN, "--data-file", "pope_random:annotations={tmp}/none.json", "--db", "{db}"], None, "--data-file annotations={tmp}/none.json: no such file"),
    # -- benchmark data ---------------------------------------------------------------------
    ("data-root-empty", ["run", "--model", "toy-llava", "--tasks", "pope_random", "--data-root", "{tmp}", "--db", "{db}"], None, "data file 'annotations' (coco_pope_random.json) not found under {tmp}"),
    ("data-invalid-json", ["run", "--model", "toy-llava", "--tasks", "pope_random", "--data-root", "{tmp}/data", "--db", "{db}"], _bad_annotations(_lines([{"question_id": 1, "image": "a.jpg", "text": "Is it?", "label": "yes"}]) + "{not json\n"), "coco_pope_random.json:2: invalid JSON"),
    ("data-bad-label", ["run", "--model", "toy-llava", "--tasks", "pope_random", "--data-root", "{tmp}/data", "--db", "{db}"], _bad_annotations(_lines([{"question_id": 1, "image": "a.jpg", "text": "Is it?", "label": "maybe"}])), "coco_pope_random.json:1: field 'label' should be 'yes' or 'no', got 'maybe'"),
    ("data-missing-field", ["run", "--model", "toy-llava", "--tasks", "pope_random", "--data-root", "{tmp}/data", "--db", "{db}"], _bad_annotations(_lines([{"question_id": 1, "text": "Is it?", "label": "yes"}])), "coco_pope_random.json:1: missing field 'image'"),
    ("data-not-utf8", ["run", "--model", "toy-llava", "--tasks", "pope_random", "--data-root", "{tmp}/data", "--db", "{db}"], _bad_annotations(b"\xff\xfe\x00bad"), "coco_pope_random.json: not UTF-8 text"),
    ("data-ambiguous", ["run", "--model", "toy-llava", "--tasks", "pope_random", "--data-root", "{tmp}/data", "--db", "{db}"], _two_copies, "data file 'annotations' (coco_pope_random.json) is ambiguous"),
    ("data-images-missing", ["run", "--model", "toy-llava", "--tasks", "pope_random", "--data-root", "{tmp}/data", "--db", "{db}"], _no_images, "task pope_random: 10 of 10 visual files are missing"),
    # -- harness score: predictions ---------------------------------------------------------
    ("preds-missing", [*SCORE, "{tmp}/none.jsonl"], None, "--predictions {tmp}/none.jsonl: no such file"),
    ("preds-unknown-format", [*SCORE, "{tmp}/p.jsonl"], _preds("question_id,text\n1,Yes\n"), "p.jsonl: unrecognised predictions format"),
    ("preds-invalid-json-line", [*SCORE, "{tmp}/p.jsonl"], _preds('{"question_id": 1, "text": "Yes"}\n{oops\n'), "p.jsonl:2: invalid JSON"),
    ("preds-no-text-field", [*SCORE, "{tmp}/p.jsonl"], _preds(_lines([{"question_id": 1, "answer_id": "x"}])), "p.jsonl:1: no model output field"),
    ("preds-match-nothing", [*SCORE, "{tmp}/p.jsonl"], _preds(_lines([{"question_id": 500 + i, "text": "Yes"} for i in range(3)])), "3 of 3 predictions belong to no document of pope_random"),
    ("preds-duplicated", [*SCORE, "{tmp}/p.jsonl"], _preds(_lines(_answers() + _answers()[:1])), "p.jsonl:7: second prediction for pope_random document '1' (first at"),
    ("preds-foreign-id", [*SCORE, "{tmp}/p.jsonl"], _preds(_lines([*_answers(), {"question_id": 77, "text": "No"}])), "1 of 7 predictions belong to no document of pope_random: {tmp}/p.jsonl:7 (id 77)"),
    ("preds-contradict-prompt", [*SCORE, "{tmp}/p.jsonl"], _preds(_lines([{"question_id": 1, "prompt": "Is there a zebra in the image?", "text": "No"}])), "p.jsonl:1: id '1' is pope_random's question 'Is there a cat in the image?'"),
    ("preds-json-list-of-strings", [*SCORE, "{tmp}/p.json"], _preds('["Yes", "No"]', "p.json"), "p.json: expected a JSON list of result objects"),
    ("preds-bad-xlsx", ["score", "mmbench-toy", "--predictions", "{tmp}/p.xlsx"], _preds(b"PK\x03\x04not a zip", "p.xlsx"), "p.xlsx: not a readable xlsx workbook"),
    ("score-data-file-role", [*SCORE, "{preds}", "--data-file", "labels=x.json"], None, "--data-file labels=...: no task here has the role 'labels'"),
    ("score-needs-judge", ["score", "vcg_generic-toy", "--predictions", "{tmp}/p.jsonl"], _preds(_lines([{"doc_id": "x", "text": "y"}])), "belong to no document of vcg_generic-toy"),
    ("score-db-directory", [*SCORE, "{preds}", "--db", "{tmp}"], None, "--db {tmp}: is a directory"),
    ("score-db-not-sqlite", [*SCORE, "{preds}", "--db", "{tmp}/bad.db"], _db_file(b'{"question_id": 1}\n' * 40), "--db {tmp}/bad.db: exists and is not an SQLite database"),
    # -- results DB ---------------------------------------------------------------------------
    ("runs-no-db", ["runs", "--db", "{tmp}/none.db"], None, "--db {tmp}/none.db: no such results database"),
    ("runs-damaged-db", ["runs", "--db", "{tmp}/dmg.db"], _damaged_db, "--db {tmp}/dmg.db: "),
    ("runs-newer-schema", ["runs", "--db", "{tmp}/new.db"], _newer_db, "new.db: schema version 99 was written by a newer vlm-harness"),
    ("leaderboard-base-unknown", ["leaderboard", "--db", "{db}", "--base", "int3"], None, "--base int3: no complete run has this precision"),
    ("leaderboard-task-unknown", ["leaderboard", "--db", "{db}", "--tasks", "gqa"], None, "--tasks 'gqa': no complete run has this task or group"),
    ("leaderboard-metric-unknown", ["leaderboard", "--db", "{db}", "--metric", "bleu"], None, "--metric: no selected task has metric 'bleu'"),
    ("leaderboard-format", ["leaderboard", "--db", "{db}", "--format", "pdf"], None, "argument --format: invalid choice: 'pdf'"),
    ("gate-unknown-run", ["gate", "--db", "{db}", "--base", "hash-model@fp16", "--candidate", "nope@int4"], None, "no complete run of model 'nope' at precision 'int4'"),
    ("gate-same-run", ["gate", "--db", "{db}", "--base", "hash-model@fp16", "--candidate", "hash-model@fp16"], None, "--base and --candidate are the same run"),
    ("gate-alpha", ["gate", "--db", "{db}", "--base", "a", "--candidate", "b", "--alpha", "2"], None, "argument --alpha: 2: expected a level between 0 and 1"),
    ("gate-max-drop-nan", ["gate", "--db", "{db}", "--base", "a", "--candidate", "b", "--max-drop", "nan"], None, "argument --max-drop: nan: expected a finite number"),
    ("gate-bootstrap-negative", ["gate", "--db", "{db}", "--base", "a", "--candidate", "b", "--bootstrap", "-1"], None, "argument --bootstrap: -1"),
    ("gate-significance-no-boot", ["gate", "--db", "{db}", "--base", "hash-model@fp16", "--candidate", "hash-model@fp16", "--require-significance", "--bootstrap", "0"], None, "--require-significance needs bootstrap resamples"),
    ("gate-killed-run", ["gate", "--db", "{tmp}/k.db", "--base", "hash-model@fp16", "--candidate", "{file:k.id}"], _killed_run, "is killed, not complete"),
    ("gate-task-unknown", ["gate", "--db", "{tmp}/k.db", "--base", "hash-model@fp16", "--candidate", "{file:k.id}", "--tasks", "gqa"], _killed_run, "is killed"),
    ("export-no-format", ["export", "pope_random", "--out", "{tmp}/x.json", "--predictions", "{preds}", "--data-root", "{data}"], None, "task pope_random has no eval-server export format"),
    ("export-no-source", ["export", "vqav2-toy", "--out", "{tmp}/x.json"], None, "export needs --run RUN (from --db) or --predictions FILE"),
    ("export-two-sources", ["export", "vqav2-toy", "--out", "{tmp}/x.json", "--run", "x", "--predictions", "{preds}"], None, "export takes --run RUN or --predictions FILE, not both"),
    # -- task YAML --------------------------------------------------------------------------
    ("yaml-syntax", ["tasks"], _task_yaml("task: x\n  version: [1\n"), "broken.yaml:2:"),
    ("yaml-unknown-field", ["tasks"], _task_yaml(GOOD_TASK + METRICS + "shots: 5\n"), "broken.yaml: field 'shots': Extra inputs are not permitted"),
    ("yaml-two-primaries", ["tasks"], _task_yaml(GOOD_TASK + "metrics:\n  - {name: f1, primary: true}\n  - {name: accuracy, primary: true}\n"), "only one metric may be primary"),
    ("yaml-unknown-generation-key", ["tasks"], _task_yaml(GOOD_TASK + METRICS + "generation_kwargs: {max_tokens: 8}\n"), "generation_kwargs: unknown generation setting 'max_tokens'"),
    ("yaml-missing-rule", ["tasks"], _task_yaml(GOOD_TASK + METRICS + "missing: sometimes\n"), "broken.yaml: field 'missing': Input should be 'skip' or 'wrong'"),
    ("yaml-choice-without-choices", ["tasks"], _task_yaml(GOOD_TASK + METRICS + "output_type: multiple_choice\n"), "output_type multiple_choice needs doc_to_choice"),
    ("yaml-no-metrics", ["tasks"], _task_yaml(GOOD_TASK), "broken.yaml: field 'metrics': Field required"),
    ("yaml-bad-hook", ["run", "--model", "toy-llava", "--tasks", "extra_task", "--db", "{db}"], _task_yaml(GOOD_TASK.replace("pope.pope.process", "pope.nothere.process") + METRICS), "broken.yaml"),
    ("yaml-duplicate-name", ["tasks"], _task_yaml(GOOD_TASK.replace("extra_task", "pope_random") + METRICS), "name 'pope_random' is already defined"),
    ("yaml-group-unknown-member", ["tasks"], _task_yaml("group: g\ntask: [pope_random, nope]\n"), "field 'task': 'nope' is not a known task"),
    # -- checkpoints and other commands ----------------------------------------------------------
    ("checkpoint-truncated", [*TOY, "--model-path", "{tmp}/ckpt"], _broken_checkpoint, "cannot load {tmp}/ckpt with the llava adapter"),
    ("checkpoint-no-config", [*TOY, "--model-path", "{tmp}/ckpt"], _no_config_checkpoint, "{tmp}/ckpt has no config.json"),
    ("quantize-format", ["quantize", "--model", "toy-llava", "--quant", "rtn-w4g128", "--out", "{tmp}/q", "--format", "gguf"], None, "--format gguf: expected awq, gptq or compressed-tensors"),
    ("quantize-out-not-empty", ["quantize", "--model", "toy-llava", "--quant", "rtn-w4g128", "--out", "{tmp}/out"], _non_empty, "--out {tmp}/out: exists and is not an empty folder; pass --overwrite"),
    ("train-unknown-recipe", ["train", "toy-vila", "--out", "{tmp}/t"], None, "harness train toy-vila: unknown recipe"),
]  # fmt: skip


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("HARNESS_TOY_DIR", str(tmp_path_factory.mktemp("world")))
    mp.setenv("HARNESS_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    root = tmp_path_factory.mktemp("bad-input")
    data = make_pope(root / "pope", n=10)
    # the fake images are not JPEGs: enough for the flag checks, which come first
    db = root / "r.db"
    store = ResultsStore(db)
    evaluate(
        "pope_random", HashModel(), store, EvalConfig(data_root=data, n_boot=0, precision="fp16")
    )
    store.close()
    preds = _write(root / "answers.jsonl", _lines(_answers()))
    yield {"db": db, "data": data, "preds": preds}
    mp.undo()


def _dump(db: Path) -> list[str] | bytes:
    """A database's content (its rows and schema version), or the bytes of a file that is
    not a readable database."""
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            return [*conn.iterdump(), str(conn.execute("pragma user_version").fetchone())]
        finally:
            conn.close()
    except sqlite3.Error:
        return db.read_bytes()


def test_the_corpus_is_large_enough():
    assert len(CASES) >= 60
    assert len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize(("case", "argv", "setup", "expected"), CASES, ids=[c[0] for c in CASES])
def test_bad_input(case, argv, setup, expected, workspace, tmp_path, capsys, monkeypatch):
    data, db = workspace["data"], workspace["db"]
    if setup is not None:
        setup(tmp_path, data)
    if (tmp_path / "tasks").is_dir():
        monkeypatch.setattr(registry_module, "_tasks_dir", lambda: tmp_path / "tasks")
        registry_module.default_registry.cache_clear()
    fill = {
        "db": str(db),
        "data": str(data),
        "preds": str(workspace["preds"]),
        "tmp": str(tmp_path),
    }

    def expand(arg: str) -> str:
        if arg.startswith("{file:"):
            return (tmp_path / arg[6:-1]).read_text()
        return arg.format(**fill)

    before = _dump(db)
    files_before = {p: _dump(p) for p in tmp_path.glob("*.db")}
    capsys.readouterr()
    try:
        status = main([expand(a) for a in argv])
    except SystemExit as exc:  # argparse
        status = exc.code
    finally:
        registry_module.default_registry.cache_clear()
    out, err = capsys.readouterr()
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert status == 2, (case, err)
    assert len(errors) == 1, err
    assert expected.format(**fill) in errors[0], errors[0]
    assert "Traceback" not in err and out == ""
    assert _dump(db) == before  # the shared results DB is unchanged
    for path, content in files_before.items():
        assert _dump(path) == content, path  # and so is a bad DB the case pointed at

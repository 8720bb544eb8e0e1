"""Submission files for VQAv2, GQA, TextVQA and VizWiz: rows, processed answers, schema checks."""

from __future__ import annotations

import json

import pytest

from harness.errors import HarnessError
from harness.predictions import match_predictions, read_predictions
from harness.results.export import export_task
from harness.scoring import score_outputs
from harness.submission import validate_rows
from harness.task import get_task
from harness.tasks.gqa.export import GQA_SCHEMA
from harness.tasks.vizwiz.export import VIZWIZ_SCHEMA, write_vizwiz
from harness.tasks.vqav2.export import VQAV2_SCHEMA

SHORT = "Answer the question using a single word or phrase."


def export_reference(reference, task_name, folder, out):
    root = reference / folder
    task = get_task(task_name)
    docs, files = task.load_docs(root, {"questions": "questions.jsonl"})
    outputs = match_predictions(task, docs, read_predictions(root / "answers.jsonl")).outputs
    rows = export_task(task, docs, outputs, out, files)
    return rows, json.loads(out.read_text()), (task, docs)


def test_gqa_predictions_from_reference(reference, tmp_path):
    out = tmp_path / "gqa" / "testdev_balanced_predictions.json"
    n, rows, (task, docs) = export_reference(reference, "gqa_testdev", "gqa", out)
    assert n == len(rows) == 12578
    assert rows[0] == {"questionId": "201307251", "prediction": "no"}
    assert rows[1] == {"questionId": "201640614", "prediction": "woman"}  # "Woman"
    assert rows[2512] == {"questionId": "20856845", "prediction": "none"}  # GQA: no number words
    assert [p.name for p in out.parent.iterdir()] == [out.name]  # no temporary file left
    # the file reads back as predictions of the same task
    back = match_predictions(task, docs, read_predictions(out))
    assert back.n_unmatched == 0 and len(back.outputs) == 12578
    assert score_outputs(task, docs, back.outputs, n_boot=0).metrics == {"answered": 100.0}


def test_textvqa_from_reference(reference, tmp_path):
    n, rows, _ = export_reference(reference, "textvqa_val", "textvqa", tmp_path / "textvqa.json")
    assert n == len(rows) == 5000
    assert rows[0] == {"question_id": "003a8ae2ef43b901", "answer": "dakota digital"}
    assert rows[11]["answer"] == "hershey 's"  # "Hershey's"
    assert rows[218]["answer"] == ""  # "A": an article only
    assert rows[256]["answer"] == "02 28 2009"  # "02/28/2009"
    assert rows[282]["answer"] == "0"  # "None"
    assert sum(r["answer"] == "" for r in rows) == 16


def test_vizwiz_from_reference(reference, tmp_path):
    n, rows, _ = export_reference(reference, "vizwiz_testdev", "vizwiz", tmp_path / "vizwiz.json")
    assert n == len(rows) == 8000
    assert rows[0] == {"image": "VizWiz_test_00000000.jpg", "answer": "black"}
    assert rows[1] == {"image": "VizWiz_test_00000001.jpg", "answer": "unanswerable"}
    assert rows[436]["answer"] == "macy 's"
    assert rows[1133]["answer"] == "1 2 cup"  # "1/2 cup"
    assert sum(r["answer"] == "unanswerable" for r in rows) == 2361


def test_vqav2_covers_every_test2015_question(tmp_path):
    testdev = [1000, 1001, 2000]
    (tmp_path / "llava_vqav2_mscoco_test-dev2015.jsonl").write_text("".join(
        json.dumps({"question_id": q, "image": f"COCO_test2015_{q // 1000:012d}.jpg",
                    "text": f"Q{q}?\n{SHORT}", "category": "default"}) + "\n" for q in testdev
    ))  # fmt: skip
    all_ids = [1000, 1001, 1002, 2000, 3000]
    (tmp_path / "v2_OpenEnded_mscoco_test2015_questions.json").write_text(json.dumps(
        {"questions": [{"image_id": q // 1000, "question": f"Q{q}?", "question_id": q} for q in all_ids]}
    ))  # fmt: skip
    task = get_task("vqav2_testdev")
    docs, files = task.load_docs(tmp_path)
    out = tmp_path / "upload.json"
    outputs = {"1000": "Yes", "2000": "Two dogs."}
    assert export_task(task, docs, outputs, out, files) == 5
    assert json.loads(out.read_text()) == [
        {"question_id": 1000, "answer": "yes"},
        {"question_id": 1001, "answer": ""},  # test-dev question without output
        {"question_id": 1002, "answer": ""},  # test2015 question outside test-dev
        {"question_id": 2000, "answer": "2 dogs"},
        {"question_id": 3000, "answer": ""},
    ]
    # without the test2015 file: the test-dev documents only
    files["all_questions"] = None
    assert export_task(task, docs, outputs, out, files) == 3
    # a test-dev question missing from the "test2015" file means a wrong file
    (tmp_path / "v2_OpenEnded_mscoco_test2015_questions.json").write_text(
        json.dumps({"questions": [{"image_id": 1, "question": "Q?", "question_id": 1000}]})
    )
    docs, files = task.load_docs(tmp_path)
    with pytest.raises(HarnessError, match="question 1001 of task vqav2_testdev is not in"):
        export_task(task, docs, outputs, out, files)


def test_schema_rejects_bad_rows():
    validate_rows([{"question_id": 1, "answer": "yes"}], VQAV2_SCHEMA, "vqav2_evalai")
    with pytest.raises(
        HarnessError, match=r"vqav2_evalai export: row 1, field 'answer': 3 is not of type 'string'"
    ):
        validate_rows(
            [{"question_id": 1, "answer": "yes"}, {"question_id": 2, "answer": 3}],
            VQAV2_SCHEMA,
            "vqav2_evalai",
        )
    with pytest.raises(HarnessError, match=r"row 0: 'question_id' is a required property"):
        validate_rows([{"answer": "yes"}], VQAV2_SCHEMA, "vqav2_evalai")
    with pytest.raises(HarnessError, match=r"row 0: Additional properties are not allowed"):
        validate_rows(
            [{"questionId": "1", "prediction": "", "extra": 1}], GQA_SCHEMA, "gqa_predictions"
        )
    with pytest.raises(HarnessError, match=r"rows 0 and 1 have the same image"):
        validate_rows(
            [{"image": "a.jpg", "answer": ""}, {"image": "a.jpg", "answer": "x"}], VIZWIZ_SCHEMA,
            "vizwiz_evalai", unique="image",
        )  # fmt: skip


def test_failed_export_writes_nothing(tmp_path):
    docs = [{"doc_id": "0", "image": "a.jpg"}, {"doc_id": "1", "image": 7}]
    out = tmp_path / "vizwiz.json"
    with pytest.raises(HarnessError, match=r"row 1, field 'image': 7 is not of type 'string'"):
        write_vizwiz(None, docs, {"0": "Yes"}, out, {}, {})
    assert list(tmp_path.iterdir()) == []

"""VQAv2, GQA, TextVQA and VizWiz tasks: loaders on official and LLaVA files, hand-computed scores."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from harness.errors import DataFileError
from harness.predictions import match_predictions, read_predictions
from harness.scoring import score_outputs, score_predictions
from harness.task import get_task

SHORT = "Answer the question using a single word or phrase."
UNANS = "When the provided information is insufficient, respond with 'Unanswerable'."


def write_json(path: Path, data: object) -> Path:
    path.write_text(json.dumps(data))
    return path


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def llava_answers(
    path: Path, pairs: list[tuple[object, str]], prompts: list[str] | None = None
) -> Path:
    """A LLaVA answer file: one line per (question_id, text)."""
    prompts = prompts or [""] * len(pairs)
    return write_jsonl(
        path,
        [
            {"question_id": qid, "prompt": p, "text": text, "answer_id": f"a{i}",
             "model_id": "m", "metadata": {}}
            for i, ((qid, text), p) in enumerate(zip(pairs, prompts, strict=True))
        ],
    )  # fmt: skip


def score(task: str, preds: Path, root: Path, files: dict | None = None):
    return score_predictions(task, preds, root, files, n_boot=0).score


# -- VQAv2 ------------------------------------------------------------------------------------
VQA_QUESTIONS = [
    (42000, 42, "Is it sunny?", "yes/no", ["yes"] * 10),
    (42001, 42, "How many dogs?", "number", ["2", "two"] + ["3"] * 8),
    (7000, 7, "What color is the car?", "other", ["red"] * 3 + ["dark red"] * 7),
    (7001, 7, "What is on the table?", "other", ["book"] * 10),
]


def write_vqav2_val(root: Path) -> None:
    write_json(
        root / "v2_OpenEnded_mscoco_val2014_questions.json",
        {"data_subtype": "val2014", "questions": [
            {"image_id": img, "question": q, "question_id": qid} for qid, img, q, _, _ in VQA_QUESTIONS
        ]},
    )  # fmt: skip
    write_json(
        root / "v2_mscoco_val2014_annotations.json",
        {"annotations": [
            {"question_id": qid, "image_id": img, "question_type": q.split()[0].lower(),
             "answer_type": at, "multiple_choice_answer": ans[0],
             "answers": [{"answer": a, "answer_confidence": "yes", "answer_id": i + 1}
                         for i, a in enumerate(ans)]}
            for qid, img, q, at, ans in VQA_QUESTIONS
        ]},
    )  # fmt: skip


def test_vqav2_val_official_files(tmp_path):
    write_vqav2_val(tmp_path)
    task = get_task("vqav2_val")
    docs, _ = task.load_docs(tmp_path)
    assert [d["doc_id"] for d in docs] == ["42000", "42001", "7000", "7001"]
    assert docs[0]["image"] == "COCO_val2014_000000000042.jpg"
    assert task.prompt(docs[1]) == f"How many dogs?\n{SHORT}"
    assert task.visuals(docs[0], tmp_path) == (str(tmp_path / "val2014" / docs[0]["image"]),)
    preds = llava_answers(
        tmp_path / "answers.jsonl",
        [(42000, "Yes"), (42001, "two"), (7000, "Red."), (7001, "a book")],
    )
    s = score("vqav2_val", preds, tmp_path)
    # Yes vs ten "yes": raw comparison -> 0; "two" -> "2" matches 2 -> 0.6;
    # "Red." -> "red" matches 3 -> 0.9; "a book" vs ten "book": raw -> 0.
    assert [x.fields["score"] for x in s.samples] == pytest.approx([0.0, 0.6, 0.9, 0.0])
    m = s.metrics
    assert m["accuracy"] == pytest.approx(37.5)
    assert (m["yes_no"], m["number"], m["other"]) == pytest.approx((0.0, 60.0, 45.0))
    assert s.primary == "accuracy"


def test_vqav2_val_llava_question_file(tmp_path):
    write_vqav2_val(tmp_path)
    write_jsonl(
        tmp_path / "llava_vqav2_mscoco_val2014.jsonl",
        [{"question_id": qid, "image": f"COCO_val2014_{img:012d}.jpg", "text": f"{q}\n{SHORT}",
          "category": "default"} for qid, img, q, _, _ in VQA_QUESTIONS],
    )  # fmt: skip
    task = get_task("vqav2_val")
    official, _ = task.load_docs(tmp_path)
    llava, files = task.load_docs(
        tmp_path, {"questions": tmp_path / "llava_vqav2_mscoco_val2014.jsonl"}
    )
    assert files["questions"].suffix == ".jsonl"
    assert llava == official


def test_vqav2_testdev_answered_share(tmp_path):
    write_jsonl(
        tmp_path / "llava_vqav2_mscoco_test-dev2015.jsonl",
        [{"question_id": qid, "image": f"COCO_test2015_{qid // 1000:012d}.jpg",
          "text": f"Question {qid}?\n{SHORT}", "category": "default"} for qid in (1000, 1001, 2000)],
    )  # fmt: skip
    task = get_task("vqav2_testdev")
    docs, files = task.load_docs(tmp_path)
    assert files["all_questions"] is None
    assert task.prompt(docs[2]) == f"Question 2000?\n{SHORT}"
    preds = llava_answers(tmp_path / "a.jsonl", [(1000, "Yes"), (2000, "Two.")])
    s = score("vqav2_testdev", preds, tmp_path)
    assert s.metrics == {"answered": pytest.approx(200 / 3)}
    assert [x.answer for x in s.samples] == ["yes", None, "2"]  # no answer is never extracted
    assert s.n_missing == 1 and s.missing_ids == ["1001"]
    assert s.n_missing == 1


def test_vqav2_malformed_files_name_file_entry_and_field(tmp_path):
    write_vqav2_val(tmp_path)
    ann = tmp_path / "v2_mscoco_val2014_annotations.json"
    data = json.loads(ann.read_text())
    del data["annotations"][1]["answer_type"]
    write_json(ann, data)
    with pytest.raises(
        DataFileError, match=r"annotations.json:annotations\[1\]: missing field 'answer_type'"
    ):
        get_task("vqav2_val").load_docs(tmp_path)
    data["annotations"] = data["annotations"][2:]
    write_json(ann, data)
    with pytest.raises(DataFileError, match="no annotation for question 42000"):
        get_task("vqav2_val").load_docs(tmp_path)
    q = tmp_path / "llava_vqav2_mscoco_test-dev2015.jsonl"
    q.write_text(json.dumps({"question_id": 1, "image": "a.jpg", "text": f"q?\n{SHORT}"}) + "\n"
                 + json.dumps({"question_id": 2, "image": "b.jpg"}) + "\n")  # fmt: skip
    with pytest.raises(DataFileError, match=r"test-dev2015.jsonl:2: missing field 'text'"):
        get_task("vqav2_testdev").load_docs(tmp_path)
    q.write_text(json.dumps({"question_id": 1, "image": "a.jpg", "text": "q?"}) + "\n")
    with pytest.raises(DataFileError, match=r"test-dev2015.jsonl:1: field 'text' should end with"):
        get_task("vqav2_testdev").load_docs(tmp_path)
    q.write_text(
        json.dumps({"question_id": 1, "image": "a.jpg", "text": f"q?\n{SHORT}"}) + "\n{oops\n"
    )
    with pytest.raises(DataFileError, match=r"test-dev2015.jsonl:2: invalid JSON"):
        get_task("vqav2_testdev").load_docs(tmp_path)


# -- GQA --------------------------------------------------------------------------------------
GQA = {
    "201": ("n1", "Is it overcast?", "no", True, "verify"),
    "202": ("n2", "Who is wearing the dress?", "woman", True, "query"),
    "203": ("n2", "Is the cup on the left or right?", "left", True, "choose"),
    "204": ("n3", "What color is it?", "blue", False, "query"),
}


def write_gqa(root: Path) -> None:
    write_json(
        root / "testdev_balanced_questions.json",
        {qid: {"imageId": img, "question": q, "answer": a, "isBalanced": bal,
               "types": {"structural": st, "semantic": "attr", "detailed": "x"},
               "groups": {"global": None, "local": None}, "semantic": [], "entailed": []}
         for qid, (img, q, a, bal, st) in GQA.items()},
    )  # fmt: skip


def write_gqa_llava(root: Path) -> Path:
    return write_jsonl(
        root / "llava_gqa_testdev_balanced.jsonl",
        [{"question_id": qid, "image": f"{img}.jpg", "text": f"{q}\n{SHORT}", "category": "default"}
         for qid, (img, q, *_rest) in GQA.items()],
    )  # fmt: skip


def test_gqa_official_scoring(tmp_path):
    write_gqa(tmp_path)
    task = get_task("gqa_testdev")
    docs, _ = task.load_docs(tmp_path)
    assert [d["doc_id"] for d in docs] == list(GQA)
    assert docs[0]["image"] == "n1.jpg" and task.prompt(docs[0]) == f"Is it overcast?\n{SHORT}"
    preds = llava_answers(
        tmp_path / "a.jsonl", [("201", "No."), ("202", "Woman"), ("203", "right"), ("204", "Blue")]
    )
    s = score("gqa_testdev", preds, tmp_path)
    assert [x.answer for x in s.samples] == ["no", "woman", "right", "blue"]
    # balanced questions 201-203: 2 of 3 right; binary 201, 203 -> 1/2; open 202 -> 1/1
    assert s.metrics == pytest.approx(
        {"accuracy": 200 / 3, "binary": 50.0, "open": 100.0, "answered": 100.0}
    )


def test_gqa_with_llava_file_only_reports_answered(tmp_path):
    write_gqa_llava(tmp_path)
    task = get_task("gqa_testdev")
    docs, _ = task.load_docs(tmp_path)
    assert [task.prompt(d) for d in docs] == [f"{q}\n{SHORT}" for _, q, *_r in GQA.values()]
    preds = llava_answers(tmp_path / "a.jsonl", [("201", "No."), ("203", "...")])
    s = score("gqa_testdev", preds, tmp_path)
    assert s.metrics == {"answered": 25.0}  # "..." strips to nothing; no ground truth
    write_gqa(tmp_path)  # both files: the same documents, now with answers
    both, _ = task.load_docs(tmp_path)
    assert [d["doc_id"] for d in both] == [d["doc_id"] for d in docs]


def test_gqa_errors(tmp_path):
    with pytest.raises(DataFileError, match="testdev_balanced_questions.json"):
        get_task("gqa_testdev").load_docs(tmp_path)
    write_gqa(tmp_path)
    path = tmp_path / "testdev_balanced_questions.json"
    data = json.loads(path.read_text())
    del data["202"]["isBalanced"]
    write_json(path, data)
    with pytest.raises(
        DataFileError, match=r"questions.json:question 202: missing field 'isBalanced'"
    ):
        get_task("gqa_testdev").load_docs(tmp_path)
    write_gqa(tmp_path)
    llava = write_gqa_llava(tmp_path)
    lines = llava.read_text().splitlines()
    llava.write_text("\n".join([lines[0].replace("overcast", "sunny"), *lines[1:]]) + "\n")
    with pytest.raises(DataFileError, match=r"balanced.jsonl:1: question/image .* differs"):
        get_task("gqa_testdev").load_docs(tmp_path)


# -- TextVQA ----------------------------------------------------------------------------------
TEXTVQA = [
    (100, "abc", "What brand?", ["dakota digital"] * 2 + ["dakota"] * 8),
    (101, "abc", "What year?", ["1999"] * 10),
    (102, "def", "What does it say?", ["stop"] * 4 + ["stop sign"] * 6),
]
OCR = {"abc": ["DAKOTA", "1999"], "def": []}


def write_textvqa(root: Path, ocr: bool = True) -> None:
    write_json(
        root / "TextVQA_0.5.1_val.json",
        {"dataset_name": "textvqa", "data": [
            {"question_id": qid, "image_id": img, "question": q, "answers": ans,
             "question_tokens": q.split()} for qid, img, q, ans in TEXTVQA
        ]},
    )  # fmt: skip
    if ocr:
        write_json(
            root / "TextVQA_Rosetta_OCR_v0.2_val.json",
            {"data": [{"image_id": k, "ocr_tokens": v, "ocr_info": []} for k, v in OCR.items()]},
        )


def textvqa_prompt(q: str, img: str, with_ocr: bool = True) -> str:
    if not with_ocr:
        return f"{q}\n{SHORT}"
    return f"{q}\nReference OCR token: {', '.join(OCR[img])}\n{SHORT}"


def test_textvqa_official_with_ocr_file(tmp_path):
    write_textvqa(tmp_path)
    task = get_task("textvqa_val")
    docs, _ = task.load_docs(tmp_path)
    assert [d["doc_id"] for d in docs] == [
        "abc|what brand?",
        "abc|what year?",
        "def|what does it say?",
    ]
    assert [task.prompt(d) for d in docs] == [textvqa_prompt(q, img) for _, img, q, _ in TEXTVQA]
    assert task.prompt(docs[2]) == f"What does it say?\nReference OCR token: \n{SHORT}"
    assert docs[0]["image"] == "abc.jpg" and docs[0]["question_id"] == 100
    # LLaVA answers: question_id is the image id, matched through the question in the prompt
    preds = llava_answers(
        tmp_path / "a.jsonl",
        [("abc", "Dakota Digital"), ("abc", "1999."), ("def", "Stop sign")],
        [textvqa_prompt(q, img) for _, img, q, _ in TEXTVQA],
    )
    s = score("textvqa_val", preds, tmp_path)
    assert [x.fields["score"] for x in s.samples] == pytest.approx([0.6, 1.0, 1.0])
    assert s.metrics == pytest.approx({"accuracy": 260 / 3, "answered": 100.0})


def test_textvqa_noocr_variant_and_llava_file(tmp_path):
    write_textvqa(tmp_path, ocr=False)
    noocr = get_task("textvqa_val_noocr")
    assert noocr.options == {"ocr_tokens": False}
    docs, _ = noocr.load_docs(tmp_path)
    assert [noocr.prompt(d) for d in docs] == [f"{q}\n{SHORT}" for _, _, q, _ in TEXTVQA]
    preds = llava_answers(
        tmp_path / "a.jsonl", [("abc", "dakota"), ("def", "STOP")],
        [f"What brand?\n{SHORT}", f"What does it say?\n{SHORT}"],
    )  # fmt: skip
    s = score("textvqa_val_noocr", preds, tmp_path)
    # eval_textvqa.py scores the answered questions: the unanswered third is left out
    assert s.metrics["accuracy"] == pytest.approx(100.0)
    assert (s.n, s.n_missing) == (3, 1)
    with pytest.raises(DataFileError, match="textvqa_val_noocr"):
        get_task("textvqa_val").load_docs(tmp_path)  # OCR asked for, but no source
    # LLaVA's question file supplies the OCR line (verbatim) and pairs by image + question
    write_jsonl(
        tmp_path / "llava_textvqa_val_v051_ocr.jsonl",
        [{"question_id": img, "image": f"{img}.jpg", "text": textvqa_prompt(q.upper(), img),
          "category": "default"} for _, img, q, _ in reversed(TEXTVQA)],
    )  # fmt: skip
    task = get_task("textvqa_val")
    docs, _ = task.load_docs(tmp_path)
    assert [d["question_id"] for d in docs] == [100, 101, 102]
    assert [task.prompt(d) for d in docs] == [textvqa_prompt(q, img) for _, img, q, _ in TEXTVQA]


def test_textvqa_needs_exactly_ten_answers(tmp_path):
    write_textvqa(tmp_path)
    path = tmp_path / "TextVQA_0.5.1_val.json"
    data = json.loads(path.read_text())
    data["data"][1]["answers"] = data["data"][1]["answers"][:9]
    write_json(path, data)
    with pytest.raises(
        DataFileError,
        match=r"TextVQA_0.5.1_val.json:data\[1\]: field 'answers' should hold exactly 10 human answers, got 9",
    ):
        get_task("textvqa_val").load_docs(tmp_path)


# -- VizWiz -----------------------------------------------------------------------------------
VIZWIZ = [
    ("What is this?", ["soup"] * 6 + ["unanswerable"] * 4, 1, "other"),
    ("Is it on?", ["yes"] * 3 + ["no"] * 7, 1, "yes/no"),
    ("What is it?", ["unanswerable"] * 10, 0, "unanswerable"),
]


def write_vizwiz_val(root: Path) -> Path:
    return write_json(
        root / "val.json",
        [{"image": f"VizWiz_val_{i:08d}.jpg", "question": q,
          "answers": [{"answer": a, "answer_confidence": "yes"} for a in ans],
          "answerable": answerable, "answer_type": at}
         for i, (q, ans, answerable, at) in enumerate(VIZWIZ)],
    )  # fmt: skip


def test_vizwiz_val_scoring(tmp_path):
    write_vizwiz_val(tmp_path)
    task = get_task("vizwiz_val")
    docs, _ = task.load_docs(tmp_path)
    assert [d["doc_id"] for d in docs] == ["0", "1", "2"]
    assert task.prompt(docs[1]) == f"Is it on?\n{UNANS}\n{SHORT}"
    preds = llava_answers(tmp_path / "a.jsonl", [(0, "Soup."), (1, "Yes"), (2, "Unanswerable")])
    s = score("vizwiz_val", preds, tmp_path)
    m = s.metrics
    assert m["accuracy"] == pytest.approx(100 * 2.9 / 3)
    assert (m["other"], m["yes_no"], m["unanswerable"]) == pytest.approx((100.0, 90.0, 100.0))
    assert math.isnan(m["number"])  # no number question


def test_vizwiz_testdev_formats_agree(tmp_path):
    questions = ["What is this?", "What color is this shirt?"]
    write_json(tmp_path / "test.json", [
        {"image": f"VizWiz_test_{i:08d}.jpg", "question": q} for i, q in enumerate(questions)
    ])  # fmt: skip
    task = get_task("vizwiz_testdev")
    official, _ = task.load_docs(tmp_path)
    write_jsonl(tmp_path / "llava_test.jsonl", [
        {"question_id": i, "image": f"VizWiz_test_{i:08d}.jpg", "text": f"{q}\n{UNANS}\n{SHORT}",
         "category": "default"} for i, q in enumerate(questions)
    ])  # fmt: skip
    llava, files = task.load_docs(tmp_path)
    assert files["questions"].name == "llava_test.jsonl"
    assert llava == official
    preds = llava_answers(tmp_path / "a.jsonl", [(0, "Unanswerable"), (1, "Blue")])
    s = score("vizwiz_testdev", preds, tmp_path)
    assert s.metrics == pytest.approx({"answered": 100.0, "unanswerable": 50.0})


def test_vizwiz_malformed_val(tmp_path):
    path = write_vizwiz_val(tmp_path)
    data = json.loads(path.read_text())
    data[2]["answer_type"] = "maybe"
    write_json(path, data)
    with pytest.raises(
        DataFileError, match=r"val.json:\[2\]: field 'answer_type' should be one of"
    ):
        get_task("vizwiz_val").load_docs(tmp_path)
    data[2]["answer_type"] = "other"
    data[0]["answers"][3] = {"answer_confidence": "yes"}
    write_json(path, data)
    with pytest.raises(DataFileError, match=r"val.json:\[0\].answers\[3\]: missing field 'answer'"):
        get_task("vizwiz_val").load_docs(tmp_path)


# -- LLaVA-1.5-13B reference files ----------------------------------------------------------------
@pytest.mark.parametrize(
    ("task_name", "folder", "n", "metrics"),
    [
        ("gqa_testdev", "gqa", 12578, {"answered": 100.0}),
        ("textvqa_val", "textvqa", 5000, {"answered": 99.68}),  # 16 answers are only "A"/"The"
        ("vizwiz_testdev", "vizwiz", 8000, {"answered": 100.0, "unanswerable": 29.51}),
    ],
)
def test_reference_prompts_and_outputs(reference, task_name, folder, n, metrics):
    root = reference / folder
    task = get_task(task_name)
    docs, _ = task.load_docs(root, {"questions": "questions.jsonl"})
    texts = [json.loads(line)["text"] for line in (root / "questions.jsonl").open()]
    assert len(docs) == n
    assert [task.prompt(d) for d in docs] == texts  # LLaVA's prompts, rebuilt exactly
    match = match_predictions(task, docs, read_predictions(root / "answers.jsonl"))
    assert match.n_unmatched == 0
    scored = score_outputs(task, docs, match.outputs, n_boot=0)
    assert scored.n_missing == 0
    assert {k: round(v, 2) for k, v in scored.metrics.items()} == metrics

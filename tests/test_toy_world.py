"""The synthetic toy world: deterministic generation, real loaders and scorers, training data."""

from __future__ import annotations

import hashlib
import io
import json
import random
import re
from collections import Counter

import numpy as np
import pytest

from harness.errors import HarnessError
from harness.judge import JudgeReply
from harness.media import is_video, load_image, sample_frames
from harness.registry import default_registry
from harness.scoring import score_outputs
from harness.task import get_task
from harness.tasks.toy import data as toy_data
from harness.tasks.toy import world
from harness.tasks.toy.training import (
    KIND_TASKS,
    TOY_TASKS,
    answer_of,
    lookup_questions,
    training_samples,
    vocabulary_texts,
    where_questions,
)

RULE_SCORED = {  # task -> (primary metric, perfect value)
    "pope_random-toy": ("f1", 100.0),
    "pope_popular-toy": ("f1", 100.0),
    "pope_adversarial-toy": ("f1", 100.0),
    "gqa-toy": ("accuracy", 100.0),
    "vqav2-toy": ("accuracy", 100.0),
    "textvqa-toy": ("accuracy", 100.0),
    "textvqa_noocr-toy": ("accuracy", 100.0),
    "scienceqa-toy": ("img_accuracy", 100.0),
    "mme-toy": ("perception", 1000.0),
    "mmbench-toy": ("accuracy", 100.0),
}
JUDGE_SCORED = [
    "vcg_generic-toy",
    "vcg_temporal-toy",
    "vcg_consistency-toy",
    "quilt-toy",
]


@pytest.fixture(scope="module")
def toy_world(tmp_path_factory):
    path = tmp_path_factory.mktemp("toy") / "world"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(toy_data.ENV_DIR, str(path))
        yield path


@pytest.fixture(scope="module")
def loaded(toy_world):
    out = {}
    for name in TOY_TASKS:
        task = get_task(name)
        docs, _ = task.load_docs(None)
        out[name] = (task, docs)
    return out


def _tree(path):
    return {
        p.relative_to(path).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(path.rglob("*"))
        if p.is_file()
    }


# -- generation -----------------------------------------------------------------------------
def test_generation_is_deterministic_and_atomic(tmp_path):
    a = toy_data.generate_world(tmp_path / "a")
    b = toy_data.generate_world(tmp_path / "b")
    tree_a, tree_b = _tree(a), _tree(b)
    assert tree_a == tree_b
    manifest = json.loads((a / toy_data.MANIFEST).read_text())
    assert manifest["version"] == toy_data.WORLD_VERSION
    assert {k: v for k, v in tree_a.items() if k != toy_data.MANIFEST} == manifest["files"]
    assert any(k.endswith(".mp4") for k in tree_a) and any(k.endswith(".jpg") for k in tree_a)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]  # no build folders left
    # a complete world is reused as is
    mtime = (a / toy_data.MANIFEST).stat().st_mtime_ns
    assert toy_data.generate_world(a) == a
    assert (a / toy_data.MANIFEST).stat().st_mtime_ns == mtime


def test_generation_refuses_foreign_folders_and_replaces_stale_worlds(tmp_path):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x.txt").write_text("mine")
    with pytest.raises(HarnessError, match="not a toy world"):
        toy_data.generate_world(tmp_path / "busy")
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / toy_data.MANIFEST).write_text('{"version": -1}')
    (tmp_path / "old" / "leftover.txt").write_text("from an older generator")
    toy_data.generate_world(tmp_path / "old")  # a stale world is replaced
    assert not (tmp_path / "old" / "leftover.txt").exists()
    manifest = json.loads((tmp_path / "old" / toy_data.MANIFEST).read_text())
    assert manifest["fingerprint"] == toy_data.fingerprint()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert (toy_data.generate_world(empty) / toy_data.MANIFEST).is_file()


# -- tasks ----------------------------------------------------------------------------------
def test_toy_tasks_are_registered_apart_from_the_real_ones():
    registry = default_registry()
    toy = registry.expand("toy")
    assert sorted(toy) == sorted(TOY_TASKS)
    assert all(name.endswith("-toy") for name in toy)
    assert sorted(registry.expand("toy-nojudge")) == sorted(RULE_SCORED)
    assert sorted(registry.expand("toy-judge")) == sorted(JUDGE_SCORED)
    assert registry.expand("pope-toy") == [
        "pope_adversarial-toy",
        "pope_popular-toy",
        "pope_random-toy",
    ]
    assert len(registry.expand("vcg-toy")) == 3
    for real in ("pope", "vqav2", "textvqa", "gqa", "vcg", "quilt", "mmbench_dev"):
        assert not any(n.endswith("-toy") for n in registry.expand(real))
    # the toy tasks keep the real loader, files and scorer
    toy_cfg, real_cfg = registry.tasks["pope_random-toy"], registry.tasks["pope_random"]
    assert toy_cfg.dataset.files == real_cfg.dataset.files
    assert str(toy_cfg.dataset.loader) == str(real_cfg.dataset.loader)
    assert str(toy_cfg.process_results) == str(real_cfg.process_results)
    assert str(toy_cfg.dataset.root) == "!hook toy.data.root"
    assert real_cfg.dataset.root is None


@pytest.mark.parametrize(
    "name",
    [
        "pope_random",
        "gqa_testdev",
        "vqav2_val",
        "textvqa_val",
        "scienceqa_img",
        "mme",
        "mmbench_en_dev",
        "vcg_generic",
        "quilt_gpt_review",
    ],
)
def test_real_tasks_still_need_real_data(toy_world, loaded, name):
    task = get_task(name)
    assert task.data_root(None) is None
    with pytest.raises(HarnessError):
        task.load_docs(None)


def test_every_toy_task_loads_through_its_real_loader(loaded, toy_world):
    for name, (task, docs) in loaded.items():
        assert 40 <= len(docs) <= 300, name
        assert task.data_root(None) == toy_world / toy_data.benchmark_of(name)
        for doc in docs[:5]:
            visuals = task.visuals(doc, None)
            assert len(visuals) == 1, name
            if isinstance(visuals[0], bytes):
                assert load_image(visuals[0]).size == (64, 64)
            else:
                assert str(visuals[0]).startswith(str(toy_world)), name
                if not is_video(visuals[0]):
                    assert load_image(visuals[0]).size == (64, 64)


@pytest.mark.parametrize("name", sorted(RULE_SCORED))
def test_ground_truth_scores_perfect(loaded, name):
    task, docs = loaded[name]
    outputs = {d["doc_id"]: answer_of(task, d) for d in docs}
    score = score_outputs(task, docs, outputs, n_boot=10)
    metric, perfect = RULE_SCORED[name]
    assert score.metrics[metric] == pytest.approx(perfect)
    assert score.n_parse_failures == 0


def _share(docs, key, value):
    return 100 * float(np.mean([d[key] == value for d in docs]))


def test_constant_answers_score_at_chance(loaded):
    def metrics(name, text):
        task, docs = loaded[name]
        return score_outputs(
            task, docs, dict.fromkeys((d["doc_id"] for d in docs), text), n_boot=10
        ).metrics

    for split in ("random", "popular", "adversarial"):
        m = metrics(f"pope_{split}-toy", "Yes")
        assert (m["accuracy"], m["recall"], m["yes_ratio"]) == (50.0, 100.0, 100.0)
        assert m["f1"] == pytest.approx(200 / 3)
        assert metrics(f"pope_{split}-toy", "No")["accuracy"] == 50.0
    mme = metrics("mme-toy", "yes")
    for category in ("existence", "count", "position", "color", "OCR"):
        assert (mme[f"{category}_acc"], mme[f"{category}_acc_plus"]) == (50.0, 0.0)
    assert mme["perception"] == 250.0
    assert metrics("mmbench-toy", "A")["accuracy"] == 0.0  # one rotation in four is A
    _, sqa = loaded["scienceqa-toy"]
    assert metrics("scienceqa-toy", "A")["img_accuracy"] == pytest.approx(
        _share(sqa, "answer", "A")
    )
    assert 25 < _share(sqa, "answer", "A") < 50
    _, gqa = loaded["gqa-toy"]
    assert metrics("gqa-toy", "yes")["accuracy"] == pytest.approx(_share(gqa, "answer", "yes"))
    assert 5 < _share(gqa, "answer", "yes") < 30
    _, vqa = loaded["vqav2-toy"]
    m = metrics("vqav2-toy", "yes")
    assert m["accuracy"] == pytest.approx(
        100 * float(np.mean([d["answers"][0] == "yes" for d in vqa]))
    )
    assert m["number"] == 0.0 and m["other"] == 0.0 and 30 < m["yes_no"] < 70
    assert metrics("vqav2-toy", "Yes")["accuracy"] == 0.0  # raw case counts (official)
    assert metrics("textvqa-toy", "cat")["accuracy"] < 15


def test_vqav2_number_answers_exercise_normalisation(loaded):
    task, docs = loaded["vqav2-toy"]
    numbers = [d for d in docs if d["answer_type"] == "number"]
    assert numbers and all(len(set(d["answers"])) == 2 for d in numbers)
    outputs = {d["doc_id"]: world.NUMBER_WORDS[int(answer_of(task, d))] for d in numbers}
    assert score_outputs(task, numbers, outputs, n_boot=10).metrics["accuracy"] == 100.0


class _EchoJudge:
    """Gives full marks when the model's answer equals the reference, else zero."""

    model = "echo-judge"

    def judge(self, system, user, *, temperature=0.0, max_tokens=256):
        if "[Assistant 1]" in user:  # Quilt review
            ref = user.split("[Assistant 1]\n")[1].split("\n\n[End")[0]
            ans = user.split("[Assistant 2]\n")[1].split("\n\n[End")[0]
            return JudgeReply(f"10 {10 if ans == ref else 1}\nok")
        right = re.search(r"Correct answer[^:]*: (.*)", user).group(1)
        preds = re.findall(r"Predicted answer[^:]*: (.*)", user)
        return JudgeReply(str({"score": 5 if all(p == right for p in preds) else 0}))


@pytest.mark.parametrize("name", JUDGE_SCORED)
def test_judge_scored_tasks_take_the_reference_answers(loaded, name):
    task, docs = loaded[name]
    outputs = {d["doc_id"]: answer_of(task, d) for d in docs}
    with pytest.raises(HarnessError, match="judge"):
        score_outputs(task, docs, outputs, n_boot=10)
    score = score_outputs(task, docs, outputs, judge=_EchoJudge(), n_boot=10)
    if name.startswith("quilt"):
        assert score.metrics["relative_score"] == 100.0
    else:
        criteria = [m.name for m in task.config.metrics if m.name != "vcg_final_part"]
        assert all(score.metrics[c] == 5.0 for c in criteria)
        assert score.metrics["vcg_final_part"] == pytest.approx(len(criteria))
    assert score.extra.get("judge_failures", 0) == 0


def _centre(img):
    pixels = np.asarray(img, dtype=float)
    mask = np.abs(pixels - np.array(world.BACKGROUND)).sum(axis=2) > 60
    ys, xs = np.nonzero(mask)
    return xs.mean(), ys.mean()


def test_videos_decode_and_move_as_described(loaded):
    task, docs = loaded["vcg_generic-toy"]
    for doc in docs:
        (path,) = task.visuals(doc, None)
        frames = sample_frames(path, 8)
        assert len(frames) == 8 and frames[0].size == (64, 64)
        (x0, y0), (x1, y1) = _centre(frames[0]), _centre(frames[-1])
        answer = doc["answer"]
        if "from left to right" in answer:
            assert x1 - x0 > 30
        elif "from right to left" in answer:
            assert x0 - x1 > 30
        elif "to the top" in answer:
            assert y0 - y1 > 30
        else:
            assert "to the bottom" in answer and y1 - y0 > 30


# -- training data --------------------------------------------------------------------------
def test_world_split_is_by_hash():
    rng = random.Random(0)
    for heldout in (True, False):
        for _ in range(50):
            assert world.sample_scene(rng, heldout).heldout == heldout
            assert world.sample_sign(rng, heldout).heldout == heldout
            assert world.sample_motion(rng, heldout).heldout == heldout


def _pixels(img):
    return hashlib.sha256(img.convert("RGB").tobytes()).hexdigest()


def test_training_images_never_appear_in_evaluation(loaded):
    seen = set()
    for task, docs in loaded.values():
        for doc in docs:
            for item in task.visuals(doc, None):
                frames = sample_frames(item, 8) if is_video(item) else [load_image(item)]
                seen.update(_pixels(f) for f in frames[:1])
    assert len(seen) > 700
    samples = training_samples("instruct", 1200, seed=3, frames=8)
    samples += training_samples("align", 300, seed=3, frames=8)
    train = {_pixels(s.images[0]) for s in samples}
    assert len(train) > 800
    assert not seen & train
    # control: signs drawn from the held-out part do collide with the evaluation ones,
    # so the check above would catch a leak
    rng = random.Random(1)
    leaked = set()
    for _ in range(300):
        img = world.sample_sign(rng, heldout=True).render()
        jpeg = io.BytesIO()
        img.save(jpeg, format="JPEG", quality=95, subsampling=0)  # as world.save_image
        leaked |= {_pixels(img), _pixels(load_image(jpeg.getvalue()))}
    assert len(leaked & seen) > 10


def test_training_samples_contract(loaded):
    a = training_samples("instruct", 400, seed=11, frames=3)
    b = training_samples("instruct", 400, seed=11, frames=3)
    assert [(s.prompt, s.answer, s.kind) for s in a] == [(s.prompt, s.answer, s.kind) for s in b]
    assert [_pixels(s.images[-1]) for s in a] == [_pixels(s.images[-1]) for s in b]
    assert len(a) == 400
    assert {s.kind for s in a} == {*KIND_TASKS, "caption"}
    for s in a:
        video = s.kind == "video" or s.prompt == "Describe the video briefly."
        assert len(s.images) == (3 if video else 1)
        assert all(img.size == (64, 64) and img.mode == "RGB" for img in s.images)
        assert s.answer and s.prompt
    c = training_samples("instruct", 400, seed=12, frames=3)
    assert [s.prompt for s in a] != [s.prompt for s in c]
    align = training_samples("align", 50, seed=0)
    assert {s.kind for s in align} == {"caption"}
    assert all(s.prompt.startswith("Describe the") for s in align)
    with pytest.raises(ValueError):
        training_samples("pretrain", 5, seed=0)


def test_lookup_questions_name_the_option_their_letter_points_to():
    a = lookup_questions(200, random.Random(4))
    assert [(q.prompt, q.answer) for q in a] == [
        (q.prompt, q.answer) for q in lookup_questions(200, random.Random(4))
    ]
    sizes = set()
    for q in a:
        lines = q.prompt.split("\n")
        assert lines[-1] == "Answer with the option's letter from the given choices directly."
        asked = lines[0].removeprefix("Which option is ").removesuffix("?")
        options = dict(line.split(". ", 1) for line in lines[1:-1])
        assert list(options) == [chr(65 + i) for i in range(len(options))]
        assert options[q.answer] == asked
        assert len(set(options.values())) == len(options)
        sizes.add(len(options))
        assert q.images == [] and q.kind == "lookup"
    assert sizes == {2, 3, 4}
    assert len({q.answer for q in a}) == 4


def test_a_custom_mix_draws_only_its_kinds(loaded):
    mc = training_samples("instruct", 40, seed=3, frames=1, mix={"scienceqa": 1, "mmbench": 1})
    kinds = Counter(s.kind for s in mc)
    assert set(kinds) == {"scienceqa", "mmbench"} and sum(kinds.values()) == 40
    assert all(s.answer in "ABCD" and len(s.images) == 1 for s in mc)
    again = training_samples("instruct", 40, seed=3, frames=1, mix={"scienceqa": 1, "mmbench": 1})
    assert [(s.prompt, s.answer) for s in again] == [(s.prompt, s.answer) for s in mc]
    with pytest.raises(ValueError, match="unknown kinds \\['lookup'\\]"):
        training_samples("instruct", 4, seed=3, mix={"lookup": 1.0})


def test_where_questions_name_the_cell_that_holds_the_object():
    """The training-only "where" kind: GQA-toy's prompt form, the object's own cell."""
    qs = where_questions(120, random.Random(6))
    assert [(q.prompt, q.answer) for q in qs] == [
        (q.prompt, q.answer) for q in where_questions(120, random.Random(6))
    ]
    assert {q.answer for q in qs} == set(world.POSITIONS)
    for q in qs:
        question, instruction = q.prompt.split("\n")
        assert instruction == "Answer the question using a single word or phrase."
        color, _shape = question.removeprefix("Where is the ").removesuffix("?").split()
        pixels = np.asarray(q.images[0])
        half = world.CELL
        row, col = divmod(world.POSITIONS.index(q.answer), 2)
        cell = pixels[row * half : (row + 1) * half, col * half : (col + 1) * half]
        assert (cell == world.COLORS[color]).all(-1).sum() >= 4, q.prompt  # drawn in that cell
        assert q.kind == "where"
    # a stage's mix may name it, next to the toy task kinds
    mixed = training_samples("instruct", 30, seed=3, frames=1, mix={"where": 1, "gqa": 1})
    assert {s.kind for s in mixed} == {"where", "gqa"}


def test_training_prompts_have_the_evaluation_form(loaded):
    """Each toy kind's training prompts end with the same instruction as its eval prompts,
    and the answers come from the same answer sets."""
    samples = training_samples("instruct", 600, seed=5, frames=1)
    for kind, tasks in KIND_TASKS.items():
        evals = [
            (t.prompt(d), answer_of(t, d)) for name in tasks for t, ds in [loaded[name]] for d in ds
        ]
        train = [(s.prompt, s.answer) for s in samples if s.kind == kind]
        assert train, kind
        tails = {p.split("\n")[-1] for p, _ in evals if "\n" in p}
        assert {p.split("\n")[-1] for p, _ in train if "\n" in p} <= tails | {""}, kind
        if kind in ("pope", "mme", "scienceqa", "mmbench", "gqa", "vqav2", "textvqa"):
            answers = {a for _, a in evals}
            assert {a for _, a in train} <= answers | set(world.WORDS) | {"0"}, kind


def test_vocabulary_covers_prompts_and_answers(loaded):
    vocab = list(vocabulary_texts())
    assert len(vocab) == len(set(vocab))
    words = {w for text in vocab for w in text.split()}
    for name, (task, docs) in loaded.items():
        for doc in docs:
            for text in (task.prompt(doc), answer_of(task, doc)):
                assert set(text.split()) <= words, (name, text)
    for s in training_samples("instruct", 300, seed=99, frames=1):
        missing = set(s.prompt.split()) | set(s.answer.split())
        assert missing <= words, (s.kind, missing - words)

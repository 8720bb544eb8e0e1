"""The LLaVA two-stage trainer, the toy-llava recipe, and the shipped toy-llava weights."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import warnings
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from PIL import Image  # noqa: E402
from transformers import AutoProcessor, LlavaForConditionalGeneration  # noqa: E402

from harness.models.chat import get_template  # noqa: E402
from harness.trainers import llava_stages as ls  # noqa: E402
from harness.trainers import portable, recipes  # noqa: E402
from harness.trainers import toy_model as tm  # noqa: E402
from harness.trainers.recipes import TOY_LLAVA, train_toy_llava  # noqa: E402
from harness.trainers.vision_pretrain import VisionPretrainConfig  # noqa: E402

SHIPPED = Path(__file__).resolve().parents[1] / "models" / "weights" / "toy-llava"
MICRO = tm.TinyLlavaSpec(
    image_size=16,
    patch_size=8,
    vision_hidden=32,
    vision_layers=1,
    vision_heads=2,
    vision_intermediate=64,
    text_hidden=32,
    text_layers=1,
    text_heads=2,
    text_kv_heads=2,
    text_intermediate=64,
    max_positions=128,
)
COLORS = {"red": (230, 20, 20), "green": (20, 200, 20), "blue": (20, 40, 230)}
SHORT = "\nAnswer the question using a single word or phrase."


@dataclass
class Sample:
    images: list[Image.Image]
    prompt: str
    answer: str
    kind: str


class MicroWorld:
    """A stand-in for harness.tasks.toy.training: solid-colour images."""

    @staticmethod
    def training_samples(
        stage: str, n: int, seed: int, frames: int = 4, mix: dict | None = None
    ) -> list[Sample]:
        rng = random.Random(f"{stage}{seed}{sorted(mix or {})}")
        out = []
        for _ in range(n):
            name = rng.choice(sorted(COLORS))
            n_img = frames if rng.random() < 0.2 else 1
            images = [Image.new("RGB", (16, 16), COLORS[name]) for _ in range(n_img)]
            if stage == "align":
                out.append(Sample(images, "Describe the image.", f"A {name} picture.", "caption"))
            else:
                out.append(Sample(images, "What color is the image?" + SHORT, name, "color"))
        return out

    @staticmethod
    def vocabulary_texts():
        yield "Describe the image. A picture. What color is the image?" + SHORT
        yield " ".join(COLORS)


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


def _micro():
    tok = tm.build_tokenizer(MicroWorld.vocabulary_texts())
    return tok, tm.build_processor(tok, MICRO), tm.build_model(tok, MICRO, seed=0)


def _encoded(processor, stage="instruct", n=48):
    samples = MicroWorld.training_samples(stage, n, seed=1, frames=2)
    return ls.encode_all(processor, get_template("llava_hf"), samples)


def test_encoding_masks_prompt_and_matches_inference_prompt():
    tok, proc, _ = _micro()
    images = [Image.new("RGB", (16, 16), COLORS["red"])] * 2
    enc = ls.encode_example(
        proc, get_template("llava_hf"), "What color is the image?", "red", images
    )
    prompt = get_template("llava_hf").prompt("What color is the image?", ["<image>"] * 2)
    expected = proc(text=[prompt], images=images, return_tensors="pt")
    n = expected["input_ids"].shape[1]
    assert torch.equal(enc.input_ids[:n], expected["input_ids"][0])
    assert torch.equal(enc.pixel_values, expected["pixel_values"])
    assert (enc.input_ids == proc.tokenizer.convert_tokens_to_ids("<image>")).sum() == 2 * 4
    answer = enc.labels[enc.labels != ls.IGNORE_INDEX]
    assert (enc.labels[:n] == ls.IGNORE_INDEX).all()
    assert answer.tolist() == [tok.convert_tokens_to_ids("red"), tok.eos_token_id]
    assert tok.decode(answer, skip_special_tokens=True).strip() == "red"


def test_option_letter_positions_are_the_letters_that_open_options():
    tok = tm.build_tokenizer(["A picture. Which option is red? A. red B. blue C. green letter."])
    proc = tm.build_processor(tok, MICRO)
    text = "A picture.\nWhich option is red?\nA. red\nB. blue\nC. green\nAnswer: letter."
    template = get_template("llava_hf")
    ids = ls.encode_example(proc, template, text, "A", []).input_ids
    letters = ls.option_letter_positions(tok, ids)
    # the option letters, not the "A" of "A picture" and not the answer
    assert tok.convert_ids_to_tokens(ids[letters].tolist()) == ["A", "B", "C"]
    # "E" is not in this vocabulary: "E." (an <unk> and a dot) is not an option letter
    unknown = ls.encode_example(proc, template, "E. red", "A", []).input_ids
    assert not ls.option_letter_positions(tok, unknown).any()


def test_option_check_labels_mark_each_option_right_or_wrong():
    words = "What is at the top left? A. red B. top left C. blue D. no Answer with letter. yes"
    tok = tm.build_tokenizer([words])
    proc = tm.build_processor(tok, MICRO)
    template = get_template("llava_hf")
    text = "What is at the top left?\nA. red\nB. top left\nC. blue\nAnswer with letter."
    plain = ls.encode_example(proc, template, text, "B", [])
    checked = ls.encode_example(proc, template, text, "B", [], option_check_loss=True)
    assert torch.equal(plain.input_ids, checked.input_ids)
    extra = ((checked.labels != ls.IGNORE_INDEX) & (plain.labels == ls.IGNORE_INDEX)).nonzero()
    names = tok.convert_ids_to_tokens
    # each label sits on the token after an option (its last token predicts it)
    before = [names(int(checked.input_ids[i - 1])) for i in extra.flatten()]
    assert before == ["red", "left", "blue"]  # "top left" is checked at its last word
    assert names(checked.labels[extra.flatten()].tolist()) == ["no", "B", "no"]
    # the answer keeps its label
    answer = plain.labels != ls.IGNORE_INDEX
    assert torch.equal(checked.labels[answer], plain.labels[answer])

    ids = checked.input_ids
    # not multiple choice, an answer that is no option, options that cannot be located
    assert ls.option_check_labels(tok, ids, text, "red") == {}
    assert ls.option_check_labels(tok, ids, text, "D") == {}
    assert ls.option_check_labels(tok, ids, text.replace("B. top left", "B. blue"), "B") == {}
    with pytest.raises(ValueError, match="'nope' is not in the vocabulary"):
        ls.option_check_labels(tok, ids, text, "B", reject="nope")


class _Always(torch.nn.Module):
    """A stand-in model whose greedy next token is always ``token``."""

    def __init__(self, token: int, vocab: int) -> None:
        super().__init__()
        self.token, self.vocab, self.seen = token, vocab, []

    def forward(self, input_ids, pixel_values=None):
        self.seen.append(input_ids.shape[1])
        logits = torch.zeros(1, input_ids.shape[1], self.vocab)
        logits[..., self.token] = 1.0
        return type("Out", (), {"logits": logits})


def test_answer_accuracy_scores_the_first_completion_token():
    tok = tm.build_tokenizer(["Which option is red? A. red B. blue letter. no"])
    proc = tm.build_processor(tok, MICRO)
    template = get_template("llava_hf")
    text = "Which option is red?\nA. red\nB. blue\nletter."
    right = ls.encode_example(proc, template, text, "A", [], option_check_loss=True)
    wrong = ls.encode_example(proc, template, text, "B", [], option_check_loss=True)
    model = _Always(tok.convert_tokens_to_ids("A"), len(tok))
    assert ls.answer_accuracy(model, [right, wrong, right]) == pytest.approx(2 / 3)
    # the prompt's labelled option checks are not taken for the answer: the model sees
    # the whole prompt, up to the completion
    prompt_len = len(right) - 2  # completion: "A", EOS
    assert (right.labels[:prompt_len] != ls.IGNORE_INDEX).sum() == 2  # the two checks
    assert model.seen == [prompt_len] * 3


def test_padding_side_does_not_change_the_loss():
    tok, proc, model = _micro()
    batch = _encoded(proc)[:6]
    with torch.no_grad():
        left = ls.completion_loss(model, ls.collate(batch, tok.pad_token_id, "left"))
        right = ls.completion_loss(model, ls.collate(batch, tok.pad_token_id, "right"))
    assert torch.allclose(left, right, atol=1e-5)


def test_a_few_steps_reduce_the_loss():
    tok, proc, model = _micro()
    stage = ls.StageConfig("instruct", ls.PARTS, steps=40, batch_size=8, lr=3e-3, log_every=10)
    stats = ls.train_stage(model, _encoded(proc), stage, pad_id=tok.pad_token_id, log=None)
    assert stats.steps == 40 and stats.examples == 320
    assert stats.final_loss < 0.7 * stats.first_loss


def test_stage1_freeze_set_trains_only_the_projector():
    tok, proc, model = _micro()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    stage = ls.StageConfig("align", ls.LLAVA_STAGE1_TRAINABLE, steps=3, batch_size=8, lr=1e-2)
    stats = ls.train_stage(model, _encoded(proc, "align"), stage, pad_id=tok.pad_token_id, log=None)
    assert stats.trainable_params == sum(
        p.numel() for p in model.model.multi_modal_projector.parameters()
    )
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    assert changed and all("multi_modal_projector" in k for k in changed)
    assert all(p.requires_grad for p in model.parameters())  # unfrozen again afterwards


def test_tied_embeddings_train_as_one_parameter_and_reload_tied(tmp_path):
    tok = tm.build_tokenizer(MicroWorld.vocabulary_texts())
    spec = replace(MICRO, tie_word_embeddings=True)
    proc, model = tm.build_processor(tok, spec), tm.build_model(tok, spec, seed=0)
    embed = model.model.language_model.embed_tokens.weight
    assert model.lm_head.weight is embed
    untied = tm.build_model(tok, MICRO, seed=0)
    n_untied = sum(p.numel() for p in untied.parameters())
    assert sum(p.numel() for p in model.parameters()) == n_untied - embed.numel()
    before = embed.detach().clone()
    stage = ls.StageConfig("instruct", ls.PARTS, steps=2, batch_size=8, lr=1e-2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch warns on a parameter listed twice
        stats = ls.train_stage(model, _encoded(proc), stage, pad_id=tok.pad_token_id, log=None)
    assert stats.trainable_params == n_untied - embed.numel()
    assert model.lm_head.weight is embed and not torch.equal(embed, before)
    model.save_pretrained(tmp_path)
    again = LlavaForConditionalGeneration.from_pretrained(tmp_path, dtype=torch.float32)
    assert again.lm_head.weight is again.model.language_model.embed_tokens.weight
    assert torch.equal(again.lm_head.weight, embed)


def test_training_is_deterministic():
    results = []
    for _ in range(2):
        tok, proc, model = _micro()
        stage = ls.StageConfig("instruct", ls.PARTS, steps=4, batch_size=8, lr=3e-3)
        ls.train_stage(model, _encoded(proc), stage, pad_id=tok.pad_token_id, seed=3, log=None)
        results.append(model.state_dict())
    assert all(torch.equal(results[0][k], results[1][k]) for k in results[0])


def test_cached_encoding_trains_bit_for_bit_like_encoding_on_demand():
    samples = MicroWorld.training_samples("instruct", 24, seed=1, frames=2)
    results = []
    for cache in (False, True):
        tok, proc, model = _micro()
        data = ls.EncodedSamples(proc, get_template("llava_hf"), samples, cache=cache)
        if cache:
            assert data[3] is data[3]  # encoded once, then kept
        stage = ls.StageConfig("instruct", ls.PARTS, steps=6, batch_size=8, lr=3e-3)
        ls.train_stage(model, data, stage, pad_id=tok.pad_token_id, seed=3, log=None)
        results.append(model.state_dict())
    assert all(torch.equal(results[0][k], results[1][k]) for k in results[0])


def test_vision_features_are_what_llava_projects():
    tok, proc, model = _micro()
    pixels = torch.rand(3, 3, 16, 16)
    with torch.no_grad():
        features = ls.vision_features(model, pixels)
        llava = model.model.get_image_features(
            pixels,
            vision_feature_layer=model.config.vision_feature_layer,
            vision_feature_select_strategy="default",
        ).pooler_output
        assert features.shape == (3, 4, MICRO.vision_hidden)  # CLS dropped
        assert torch.equal(model.model.multi_modal_projector(features), torch.stack(llava))
        # one image at a time gives the same floats as a batch (features are cached per image):
        # bit for bit on the AVX-512 CPUs the trainer was measured on, where oneDNN/MKL pick
        # batch-invariant kernels for these shapes; within float rounding on other CPUs
        one = torch.cat([ls.vision_features(model, pixels[i : i + 1]) for i in range(3)])
    torch.testing.assert_close(one, features, rtol=1e-5, atol=1e-6)
    if torch.backends.cpu.get_cpu_capability() in ("AVX512", "AVX512_BF16", "AMX"):
        assert torch.equal(one, features)


def tower_is_batch_invariant(model) -> bool:
    """Whether this CPU's kernels give the tower the same floats for one image as in a batch:
    the condition under which cached features train bit for bit like pixels."""
    pixels = torch.rand(8, 3, 16, 16, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        batch = ls.vision_features(model, pixels)
        single = torch.cat([ls.vision_features(model, pixels[i : i + 1]) for i in range(8)])
    return torch.equal(batch, single)


@pytest.mark.parametrize("trainable", [ls.LLAVA_STAGE2_TRAINABLE, ls.LLAVA_STAGE1_TRAINABLE])
def test_cached_image_features_train_bit_for_bit_like_pixels(trainable):
    samples = MicroWorld.training_samples("instruct", 24, seed=1, frames=2)
    results, losses = [], []
    for cached in (False, True):
        tok, proc, model = _micro()
        features = partial(ls.vision_features, model) if cached else None
        data = ls.EncodedSamples(
            proc, get_template("llava_hf"), samples, cache=True, image_features=features
        )
        # frames = 2 images of 4 tokens each, kept as features instead of pixels
        assert (data[0].image_features is not None) == cached
        assert (data[0].pixel_values.numel() == 0) == cached
        stage = ls.StageConfig("instruct", trainable, steps=6, batch_size=8, lr=3e-3)
        stats = ls.train_stage(model, data, stage, pad_id=tok.pad_token_id, seed=3, log=None)
        results.append(model.state_dict())
        losses.append(stats.losses)
        accuracy = ls.answer_accuracy(model, [data[i] for i in range(8)])
        results[-1]["accuracy"] = torch.tensor(accuracy)
    if tower_is_batch_invariant(_micro()[2]):  # e.g. the AVX-512 CPU that trained toy-llava
        assert losses[0] == losses[1]
        assert all(torch.equal(results[0][k], results[1][k]) for k in results[0])
    else:  # other kernels round a batch differently: the same training up to float rounding
        assert losses[0] == pytest.approx(losses[1], rel=1e-5)
        for k in results[0]:
            torch.testing.assert_close(results[0][k], results[1][k], rtol=1e-4, atol=1e-5)


def test_cached_image_features_refuse_a_stage_that_trains_the_tower():
    tok, proc, model = _micro()
    samples = MicroWorld.training_samples("instruct", 8, seed=1)
    data = ls.EncodedSamples(
        proc,
        get_template("llava_hf"),
        samples,
        image_features=partial(ls.vision_features, model),
    )
    stage = ls.StageConfig("instruct", ls.PARTS, steps=1, batch_size=4, lr=1e-3)
    with pytest.raises(ValueError, match="trains the vision tower"):
        ls.train_stage(model, data, stage, pad_id=tok.pad_token_id, log=None)
    batch = ls.collate([data[0]], tok.pad_token_id)
    batch["image_features"] = batch["image_features"][:, :2]  # fewer than the image tokens
    with pytest.raises(ValueError, match="image tokens in the batch"):
        ls.model_inputs(model, batch)


def test_wsd_schedule_holds_the_rate_then_cools_down_linearly():
    stage = ls.StageConfig(
        "s",
        ("language",),
        100,
        4,
        1e-3,
        warmup_steps=10,
        schedule="wsd",
        cooldown_steps=20,
        min_lr_ratio=0.05,
    )
    factors = [ls.lr_factor(step, stage) for step in range(100)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == 1.0
    assert factors[10:80] == [1.0] * 70
    assert factors[80] == pytest.approx(0.05 + 0.95 * 19 / 20)
    assert factors[99] == pytest.approx(0.05)
    assert all(a > b for a, b in zip(factors[79:-1], factors[80:], strict=True))
    with pytest.raises(ValueError, match="cooldown_steps"):
        replace(stage, cooldown_steps=0)


# every stage of the toy-llava recipe, a few steps each, on the micro model
MICRO_RECIPE = replace(
    TOY_LLAVA,
    model=MICRO,
    align_samples=32,
    align_steps=3,
    align_batch=8,
    instruct_samples=32,
    instruct_steps=3,
    instruct_batch=8,
    mc_samples=16,
    mc_steps=2,
    mc_cooldown_steps=1,
    mc_batch=8,
    warmup_steps=1,
    vision_samples=32,
    vision=VisionPretrainConfig(steps=2, batch_size=8, warmup_steps=1, log_every=1),
)


def test_recipe_saves_a_standard_folder_that_reloads_with_identical_logits(tmp_path):
    recipe = MICRO_RECIPE
    out = tmp_path / "toy"
    stats = train_toy_llava(out, seed=0, log=None, recipe=recipe, data=MicroWorld)
    assert not (out / "stages").exists()  # the stage checkpoints go once the model is saved
    names = [s["name"] for s in stats["stages"]]
    assert names == ["vision_pretrain", "align", "instruct", "multiple_choice"]
    for name in ("config.json", "model.safetensors", "tokenizer.json", "processor_config.json"):
        assert (out / name).is_file(), name
    # what decides the floats besides the recipe: the libraries and the CPU
    recorded = json.loads((out / "training.json").read_text())["stats"]
    assert recorded["versions"]["torch"] == torch.__version__
    assert recorded["machine"]["torch_cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert (
        recorded["machine"]["threads"] == str(MICRO_RECIPE.threads) and recorded["machine"]["cpu"]
    )

    model = LlavaForConditionalGeneration.from_pretrained(out, dtype=torch.float32).eval()
    proc = AutoProcessor.from_pretrained(out)
    assert type(proc).__name__ == "LlavaProcessor"
    images = [Image.new("RGB", (16, 16), COLORS["blue"])]
    prompt = get_template("llava_hf").prompt("What color is the image?" + SHORT, ["<image>"])
    inputs = proc(text=[prompt], images=images, return_tensors="pt")
    # Rebuild the same training run in memory: the saved weights are exactly what it produced.
    tok2 = tm.build_tokenizer(MicroWorld.vocabulary_texts())
    assert tok2.get_vocab() == proc.tokenizer.get_vocab()
    with torch.no_grad():
        logits = model(**inputs).logits
        again = LlavaForConditionalGeneration.from_pretrained(out, dtype=torch.float32).eval()
        assert torch.equal(logits, again(**inputs).logits)
    # Saved and reloaded in memory: identical logits.
    resaved = tmp_path / "resaved"
    model.save_pretrained(resaved)
    proc.save_pretrained(resaved)
    reloaded = LlavaForConditionalGeneration.from_pretrained(resaved, dtype=torch.float32).eval()
    proc2 = AutoProcessor.from_pretrained(resaved)
    inputs2 = proc2(text=[prompt], images=images, return_tensors="pt")
    assert torch.equal(inputs["input_ids"], inputs2["input_ids"])
    with torch.no_grad():
        assert torch.equal(logits, reloaded(**inputs2).logits)


def test_every_recipe_field_belongs_to_one_stage_key():
    from dataclasses import fields

    listed = [f for group in recipes.STAGE_FIELDS.values() for f in group]
    assert sorted(listed) == sorted(f.name for f in fields(recipes.ToyLlavaRecipe))


def test_stage_keys_chain_a_change_to_its_stage_and_every_later_one(monkeypatch):
    vocab = {"a": 0, "b": 1}
    base = recipes.stage_keys(MICRO_RECIPE, 0, vocab)
    assert list(base) == ["vision_pretrain", "align", "instruct", "multiple_choice"]
    later = recipes.stage_keys(replace(MICRO_RECIPE, mc_lr=1e-4), 0, vocab)
    assert [base[k] == later[k] for k in base] == [True, True, True, False]
    earlier = recipes.stage_keys(replace(MICRO_RECIPE, align_lr=1e-4), 0, vocab)
    assert [base[k] == earlier[k] for k in base] == [True, False, False, False]
    for other in (
        recipes.stage_keys(MICRO_RECIPE, 1, vocab),
        recipes.stage_keys(MICRO_RECIPE, 0, {"a": 1, "b": 0}),
    ):
        assert all(base[k] != other[k] for k in base)
    # checkpoints written under another transformers are not resumed
    monkeypatch.setattr(recipes, "library_versions", lambda: {"transformers": "0.0"})
    assert all(base[k] != v for k, v in recipes.stage_keys(MICRO_RECIPE, 0, vocab).items())


def _train_micro(out, **kwargs):
    return train_toy_llava(out, seed=0, log=None, recipe=MICRO_RECIPE, data=MicroWorld, **kwargs)


def test_a_crashed_training_resumes_after_its_last_stage_with_identical_weights(
    tmp_path, monkeypatch
):
    reference = tmp_path / "reference"
    _train_micro(reference)

    out = tmp_path / "crashed"
    real_train_stage = recipes.train_stage
    ran = []

    crash = [True]

    def crash_in_stage3(model, data, stage, **kwargs):
        ran.append(stage.name)
        if stage.name == "multiple_choice" and crash[0]:
            raise RuntimeError("killed in stage 3")
        return real_train_stage(model, data, stage, **kwargs)

    monkeypatch.setattr(recipes, "train_stage", crash_in_stage3)
    with pytest.raises(RuntimeError, match="killed in stage 3"):
        _train_micro(out)
    kept = sorted(p.name for p in (out / "stages").iterdir())
    assert kept == ["0-vision_pretrain", "1-align", "2-instruct"]

    ran.clear()
    crash[0] = False
    messages = []
    monkeypatch.setattr(recipes, "pretrain_vision_tower", None)  # must not run again
    stats = train_toy_llava(out, seed=0, log=messages.append, recipe=MICRO_RECIPE, data=MicroWorld)
    assert ran == ["multiple_choice"] and stats["resumed_after"] == "instruct"
    assert any("resumed from" in m and "2-instruct" in m for m in messages)
    assert [s["name"] for s in stats["stages"]] == [
        "vision_pretrain",
        "align",
        "instruct",
        "multiple_choice",
    ]
    weights = "model.safetensors"
    assert (out / weights).read_bytes() == (reference / weights).read_bytes()
    assert not (out / "stages").exists()


def test_a_corrupt_stage_checkpoint_is_named_and_restart_gets_past_it(tmp_path):
    from harness.errors import HarnessError

    out = tmp_path / "toy"
    _train_micro(out, keep_stages=True)
    weights = out / "stages" / "3-multiple_choice" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])  # a disk that lost the file's end
    with pytest.raises(HarnessError, match="3-multiple_choice.*--restart"):
        _train_micro(out)
    _train_micro(out, resume=False)
    assert (out / "model.safetensors").is_file() and not (out / "stages").exists()


def test_checkpoints_of_another_recipe_are_not_resumed(tmp_path, monkeypatch):
    out = tmp_path / "toy"
    _train_micro(out, keep_stages=True)
    assert (out / "stages" / "3-multiple_choice" / "stage.json").is_file()
    ran = []
    real_train_stage = recipes.train_stage

    def recording(model, data, stage, **kwargs):
        ran.append(stage.name)
        return real_train_stage(model, data, stage, **kwargs)

    monkeypatch.setattr(recipes, "train_stage", recording)
    # another stage-3 rate: stages 0-2 come from their checkpoints, stage 3 is retrained
    changed = replace(MICRO_RECIPE, mc_lr=1e-4)
    train_toy_llava(out, seed=0, log=None, recipe=changed, data=MicroWorld, keep_stages=True)
    assert ran == ["multiple_choice"]
    ran.clear()
    # restart: nothing is resumed
    _train_micro(out, resume=False, keep_stages=True)
    assert ran == ["align", "instruct", "multiple_choice"]
    ran.clear()
    # another seed: no checkpoint matches, and the run says so
    messages = []
    train_toy_llava(out, seed=1, log=messages.append, recipe=MICRO_RECIPE, data=MicroWorld)
    assert ran == ["align", "instruct", "multiple_choice"]
    assert any("no checkpoint matches" in m for m in messages)


def test_recipe_routes_the_multiple_choice_losses_to_their_stages(tmp_path, monkeypatch):
    from harness.trainers import recipes

    seen = []

    class Recording(ls.EncodedSamples):
        def __init__(self, *args, **kwargs):
            seen.append(bool(kwargs.get("option_check_loss")))
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(recipes, "EncodedSamples", Recording)
    tiny = dict(align_samples=8, align_steps=1, align_batch=4, instruct_samples=8)
    tiny.update(instruct_steps=1, instruct_batch=4, warmup_steps=0, vision_samples=0)
    tiny.update(mc_samples=8, mc_steps=1, mc_batch=4, mc_cooldown_steps=1)
    for flag in (True, False):
        recipe = replace(TOY_LLAVA, model=MICRO, mc_option_check_loss=flag, **tiny)
        train_toy_llava(tmp_path / str(flag), log=None, recipe=recipe, data=MicroWorld)
    # the check loss of align, instruct, multiple choice: on (the default) in stage 3 only
    assert TOY_LLAVA.mc_option_check_loss
    assert seen == [False, False, True, False, False, False]
    seen.clear()
    recipe = replace(TOY_LLAVA, model=MICRO, **{**tiny, "mc_steps": 0})
    stats = train_toy_llava(tmp_path / "no-mc", log=None, recipe=recipe, data=MicroWorld)
    assert [s["name"] for s in stats["stages"]] == ["align", "instruct"] and len(seen) == 2


def test_stage3_draws_its_two_halves_from_their_own_mixes():
    from harness.trainers.recipes import stage_samples

    calls = []

    class Recording:
        @staticmethod
        def training_samples(stage, n, seed, frames=4, mix=None):
            calls.append((stage, n, None if mix is None else dict(mix)))
            return [Sample([], "q", "a", "color") for _ in range(n)]

    rest = (("pope", 0.6), ("vqav2", 0.4))
    for rest_mix, expected in (((), None), (rest, dict(rest))):
        calls.clear()
        recipe = replace(TOY_LLAVA, mc_samples=10, mc_share=0.3, mc_rest_mix=rest_mix)
        assert len(stage_samples(recipe, Recording, "multiple_choice", seed=2)) == 10
        assert calls == [
            ("instruct", 3, dict(TOY_LLAVA.mc_mix)),
            ("instruct", 7, expected),
        ]


# -- the shipped model ---------------------------------------------------------------------------
@pytest.mark.skipif(not (SHIPPED / "config.json").is_file(), reason="toy-llava not built")
def test_shipped_toy_llava_loads_offline():
    model = LlavaForConditionalGeneration.from_pretrained(SHIPPED, dtype=torch.float32).eval()
    proc = AutoProcessor.from_pretrained(SHIPPED)
    assert type(proc).__name__ == "LlavaProcessor"
    cfg = model.config
    assert (
        cfg.image_seq_length == (cfg.vision_config.image_size // cfg.vision_config.patch_size) ** 2
    )
    assert sum(p.numel() for p in model.parameters()) < 5_000_000


def test_harness_train_says_whether_it_re_created_the_shipped_weights(
    tmp_path, monkeypatch, capsys
):
    from harness.cli import main
    from harness.models import loading
    from harness.trainers.reproduction import ShippedModel, describe

    weights = tmp_path / "weights"
    _train_micro(weights / "toy-llava")
    monkeypatch.setattr(loading, "WEIGHTS_DIR", weights)
    micro = partial(train_toy_llava, recipe=MICRO_RECIPE, data=MicroWorld)
    monkeypatch.setitem(recipes.RECIPES, "toy-llava", micro)

    def train(*argv: str) -> dict:
        assert main(["train", "toy-llava", *argv]) == 0
        return json.loads(capsys.readouterr().out)["shipped_comparison"]

    same = train("--out", str(tmp_path / "again"))
    assert same == {"reference": str(weights / "toy-llava"), "identical": True}
    other = train("--out", str(tmp_path / "seed1"), "--seed", "1")
    assert other["identical"] is False
    assert other["differences"] == {"seed": [0, 1]}  # nothing else differs here
    assert "seed 0 (shipped) vs 1 (this run)" in describe(other, "toy-llava")
    # the shipped folder is read before training, so a run that writes over it still
    # compares with what was shipped
    over = train("--out", str(weights / "toy-llava"), "--seed", "1")
    assert over["identical"] is False and over["differences"] == {"seed": [0, 1]}

    # an older shipped training.json without the machine: shown as not recorded (None)
    record = weights / "toy-llava" / "training.json"
    old = json.loads(record.read_text())
    del old["stats"]["machine"]
    old["stats"]["seed"] = 0
    record.write_text(json.dumps(old))
    report = ShippedModel.read(weights / "toy-llava").compare(tmp_path / "again")
    assert report["identical"] is False  # the folder now holds the seed-1 weights
    machine = {k: v for k, v in report["differences"].items() if k.startswith("machine.")}
    assert set(machine) == {"machine.cpu", "machine.threads", "machine.torch_cpu_capability"}
    assert all(shipped is None and run for shipped, run in machine.values())
    assert ShippedModel.read(tmp_path / "missing") is None


def _train_in_subprocess(out: Path, env: dict[str, str]) -> bytes:
    """Train the micro recipe in a fresh Python whose libraries load under ``env``."""
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        "from test_trainer import MICRO_RECIPE, MicroWorld;"
        "from harness.trainers.recipes import train_toy_llava;"
        "train_toy_llava(sys.argv[2], log=None, recipe=MICRO_RECIPE, data=MicroWorld)"
    )
    clean = {k: v for k, v in os.environ.items() if k not in portable.ISA_VARIABLES}
    subprocess.run(
        [sys.executable, "-c", code, str(Path(__file__).parent), str(out)],
        env={**clean, **env},
        cwd=out.parent,  # not the repository root (see conftest)
        check=True,
        capture_output=True,
    )
    return (out / "model.safetensors").read_bytes()


def test_portable_training_gives_the_same_floats_without_avx512(tmp_path):
    capability = torch.backends.cpu.get_cpu_capability()
    if capability not in ("AVX2", "AVX512"):
        pytest.skip(f"needs an AVX2 CPU (torch reports {capability})")
    # an AVX2-only CPU, emulated: every library on its AVX2 code path, MKL by plain dispatch
    avx2_cpu = {
        "MKL_ENABLE_INSTRUCTIONS": "AVX2",
        "ATEN_CPU_CAPABILITY": "avx2",
        "ONEDNN_MAX_CPU_ISA": "AVX2",
    }
    here_portable = _train_in_subprocess(tmp_path / "here", portable.PORTABLE_ENV)
    avx2_portable = _train_in_subprocess(tmp_path / "avx2", {**avx2_cpu, **portable.PORTABLE_ENV})
    assert here_portable == avx2_portable
    recorded = json.loads((tmp_path / "here" / "training.json").read_text())["stats"]["machine"]
    assert recorded["isa_pins"] == portable.isa_pins(portable.PORTABLE_ENV)
    assert recorded["torch_cpu_capability"] == "AVX2"
    if capability == "AVX512":  # the control: without the pins, the CPU's own paths differ
        assert _train_in_subprocess(tmp_path / "default", {}) != avx2_portable


def test_harness_train_portable_reexecutes_under_the_pins(tmp_path, monkeypatch, capsys):
    from harness.cli import main

    for name in portable.ISA_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    calls = []

    def fake_reexec(argv):
        calls.append(argv)
        raise SystemExit(0)

    monkeypatch.setattr(portable, "reexec_portable", fake_reexec)
    out = str(tmp_path / "m")
    with pytest.raises(SystemExit):
        main(["train", "toy-llava", "--out", out, "--portable", "--keep-stages"])
    assert calls == [
        ["train", "toy-llava", "--out", out, "--seed", "0", "--portable", "--keep-stages"]
    ]
    # under the pins (as after the re-exec) it trains, and the stage keys change with them
    micro = partial(train_toy_llava, recipe=MICRO_RECIPE, data=MicroWorld)
    monkeypatch.setitem(recipes.RECIPES, "toy-llava", micro)
    default_keys = recipes.stage_keys(MICRO_RECIPE, 0, {"a": 0})
    for name, value in portable.PORTABLE_ENV.items():
        monkeypatch.setenv(name, value)
    assert recipes.stage_keys(MICRO_RECIPE, 0, {"a": 0}) != default_keys
    assert main(["train", "toy-llava", "--out", out, "--portable"]) == 0
    assert len(calls) == 1


def test_the_portable_rerun_starts_cleanly_in_the_repository_root(tmp_path):
    """The re-run's command works where users type ``harness train`` (a checkout's root,
    whose kernels/ folder must not shadow the ``kernels`` package transformers imports)."""
    root = Path(__file__).resolve().parents[1]
    command = portable.harness_command(["train", "no-such-recipe", "--out", str(tmp_path)])
    done = subprocess.run(command, cwd=root, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "no-such-recipe: unknown recipe" in done.stderr

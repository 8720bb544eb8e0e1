"""Golden prompts: what each family's official evaluation code builds, pinned per benchmark.

The wrappers below are the renderings of each official ``conversation.py``
(``conv.get_prompt()`` after one user turn and the empty assistant turn), copied
from running that code, not from this package; the question texts are the
official question files' wording (LLaVA-1.5's suffixes) for the first
document of each benchmark's toy-world copy (same format as the real files).
A prompt that drifts from the official one by a single character fails here.
"""

from __future__ import annotations

import json

import pytest

from harness.api.profile import Aspect, EvalProfile
from harness.api.requests import Request, gen_kwargs_hash
from harness.cli import main
from harness.evaluator import EvalConfig, prepare, request_gen_kwargs
from harness.models.chat import TEMPLATES
from harness.models.fidelity import fidelity_markdown
from harness.models.profiles import PROFILES
from harness.models.prompting import render_prompt
from harness.models.registry import ENTRIES, REGISTRY
from harness.task import get_task

# haotian-liu/LLaVA llava/conversation.py, rendered (conv_vicuna_v1, conv_llava_v1, conv_llava_v0)
VICUNA_V1 = (
    "A chat between a curious user and an artificial intelligence assistant. The assistant "
    "gives helpful, detailed, and polite answers to the user's questions. USER: {m}{q} ASSISTANT:"
)
LLAVA_V1 = (
    "A chat between a curious human and an artificial intelligence assistant. The assistant "
    "gives helpful, detailed, and polite answers to the human's questions. USER: {m}{q} ASSISTANT:"
)
LLAVA_V0 = (
    "A chat between a curious human and an artificial intelligence assistant. The assistant "
    "gives helpful, detailed, and polite answers to the human's questions.###Human: {m}{q}"
    "###Assistant:"
)
# NVlabs/VILA@6b941da llava/conversation.py (llama_3_chat as Llama-3-VILA1.5-8b was trained
# with it, hermes_2)
LLAMA_3 = (
    "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are a helpful language "
    "and vision assistant. You are able to understand the visual content that the user provides, "
    "and assist the user with a variety of tasks using natural language.<|end_of_text|>"
    "<|start_header_id|>user<|end_header_id|>\n\n{m}{q}<|end_of_text|>"
    "<|start_header_id|>system<|end_header_id|>\n\n"
)
HERMES_2 = (
    "<|im_start|>system\nAnswer the questions.<|im_end|><|im_start|>user\n{m}{q}<|im_end|>"
    "<|im_start|>assistant\n"
)
# Qwen2-VL / Qwen2.5-VL README "Excepted output" of the chat template
QWEN = (
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n{m}{q}"
    "<|im_end|>\n<|im_start|>assistant\n"
)
# llava-hf model card prompt format (toy-llava is trained with it)
LLAVA_HF = "USER: {m}{q} ASSISTANT:"

IMAGE = "<image>\n"
QWEN_IMAGE = "<|vision_start|><|image_pad|><|vision_end|>"
QWEN_VIDEO = "<|vision_start|><|video_pad|><|vision_end|>"

# model -> (wrapper, image media, video media)
FAMILIES = {
    "toy-llava": (LLAVA_HF, IMAGE, IMAGE * 4),
    "llava-1.5-7b": (VICUNA_V1, IMAGE, IMAGE * 8),
    "llava-v1.5-7b-original": (VICUNA_V1, IMAGE, IMAGE * 8),
    "quilt-llava-7b": (VICUNA_V1, IMAGE, IMAGE * 8),
    "dynamic-llava-7b": (VICUNA_V1, IMAGE, IMAGE * 8),
    "vila-7b": (VICUNA_V1, IMAGE, IMAGE * 8),
    "vila1.5-3b": (VICUNA_V1, IMAGE, IMAGE * 8),
    "llama-3-vila1.5-8b": (LLAMA_3, IMAGE, IMAGE * 8),
    "vila1.5-40b": (HERMES_2, IMAGE, IMAGE * 8),
    "qwen2-vl-7b": (QWEN, QWEN_IMAGE, QWEN_VIDEO),
    "qwen2.5-vl-7b": (QWEN, QWEN_IMAGE, QWEN_VIDEO),
    # the llava-hf conversion's "<video>" stands for the official 8 "<image>" tokens
    # (checked in test_video_llava_placeholder_is_the_official_frames)
    "video-llava-7b": (LLAVA_V1, IMAGE, "<video>\n"),
    # one <image> for the whole video: the pooled temporal + spatial tokens replace it
    "vlm-rlaif-7b": (LLAVA_V0, IMAGE, IMAGE),
}

SHORT = "\nAnswer the question using a single word or phrase."
LETTER = "\nAnswer with the option's letter from the given choices directly."
# task -> (the first toy document's user text as the official question file words it, video?)
QUESTIONS = {
    "pope_random-toy": ("Is there a yellow star in the image?" + SHORT, False),
    "gqa-toy": ("Is the star red or blue?" + SHORT, False),
    "textvqa-toy": (
        "What word is written on the sign?\nReference OCR token: bread, bus, book" + SHORT,
        False,
    ),
    "scienceqa-toy": (
        "Which shape is yellow?\nA. square\nB. circle\nC. star\nD. triangle" + LETTER,
        False,
    ),
    "mmbench-toy": (
        "What color is the triangle?\nA. green\nB. blue\nC. red\nD. yellow" + LETTER,
        False,
    ),
    "vcg_generic-toy": ("Can you describe the video?", True),
}


def first_request(model: str, task: str) -> Request:
    entry = REGISTRY[model]
    prepared = prepare([task], EvalConfig(limit=1), entry.family, entry.eval_profile)
    return prepared.tasks[0].requests[0]


@pytest.mark.parametrize("task", sorted(QUESTIONS))
@pytest.mark.parametrize("model", sorted(FAMILIES))
def test_golden_prompt(model, task):
    wrapper, image, video = FAMILIES[model]
    question, is_video = QUESTIONS[task]
    expected = wrapper.replace("{m}", video if is_video else image).replace("{q}", question)
    request = first_request(model, task)
    entry = REGISTRY[model]
    got = render_prompt(entry.eval_profile, request, entry.options.get("num_frames"))
    assert got == expected


def test_every_registered_model_has_golden_coverage_of_its_template():
    covered = {str(REGISTRY[m].eval_profile.template.settings["template"]) for m in FAMILIES}
    used = {str(e.eval_profile.template.settings["template"]) for e in ENTRIES}
    assert used <= covered, used - covered


def test_quilt_review_uses_llava_v1_as_the_readme_command_does():
    """quilt_gpt_eval's answers come from model_vqa.py run without --conv-mode (llava_v1)."""
    request = first_request("quilt-llava-7b", "quilt-toy")
    got = render_prompt(REGISTRY["quilt-llava-7b"].eval_profile, request)
    assert got == LLAVA_V1.replace("{m}", IMAGE).replace("{q}", request.prompt)


def test_video_llava_placeholder_is_the_official_frames():
    """Official: 8 '<image>' tokens (one per frame) and then '\\n' before the question."""
    request = first_request("video-llava-7b", "vcg_generic-toy")
    ours = render_prompt(REGISTRY["video-llava-7b"].eval_profile, request)
    official = LLAVA_V1.replace("{m}", "<image>" * 8 + "\n").replace("{q}", request.prompt)
    assert ours.replace("<video>", "<image>" * 8) == official


def test_system_texts_are_the_official_ones():
    user = TEMPLATES["vicuna_v1"].system
    human = TEMPLATES["llava_v1"].system
    assert "curious user" in user and "the user's questions" in user
    assert "curious human" in human and "the human's questions" in human
    assert user.replace("user", "human") == human
    assert TEMPLATES["llava_v0"].system == human


# -- generation settings from the profiles ------------------------------------------------------
def test_rlaif_samples_as_its_scripts_and_greedy_is_another_protocol():
    request = first_request("vlm-rlaif-7b", "vcg_generic-toy")
    assert request.gen_kwargs == {
        "max_new_tokens": 512,
        "temperature": 0.2,
        "num_beams": 1,
        "do_sample": True,
        "stop": ["###"],
        "seed": 0,
    }
    entry = REGISTRY["vlm-rlaif-7b"]
    greedy = (
        prepare(
            ["vcg_generic-toy"],
            EvalConfig(limit=1, gen_overrides={"temperature": 0.0}),
            entry.family,
            entry.eval_profile,
        )
        .tasks[0]
        .requests[0]
    )
    assert greedy.gen_kwargs["do_sample"] is False and greedy.gen_kwargs["temperature"] == 0.0
    assert gen_kwargs_hash(greedy.gen_kwargs) != gen_kwargs_hash(request.gen_kwargs)


def test_quilt_review_samples_at_0_2_and_other_tasks_stay_greedy():
    review = first_request("quilt-llava-7b", "quilt-toy").gen_kwargs
    assert review["temperature"] == 0.2 and review["do_sample"] is True
    assert review["max_new_tokens"] == 1024 and review["seed"] == 0
    pope = first_request("quilt-llava-7b", "pope_random-toy").gen_kwargs
    assert pope == {"max_new_tokens": 128, "temperature": 0.0, "num_beams": 1, "do_sample": False}


def test_llava_generation_is_the_tasks_own():
    """LLaVA-1.5's scripts pass only --temperature 0: max_new_tokens 128 (loader) / 1024."""
    assert first_request("llava-1.5-7b", "gqa-toy").gen_kwargs["max_new_tokens"] == 128
    assert first_request("llava-1.5-7b", "scienceqa-toy").gen_kwargs["max_new_tokens"] == 1024
    assert first_request("llava-1.5-7b", "mmbench-toy").gen_kwargs["max_new_tokens"] == 1024


def test_user_seed_is_kept():
    profile = REGISTRY["vlm-rlaif-7b"].eval_profile
    kwargs = request_gen_kwargs(get_task("vcg_generic-toy"), profile, {"seed": 7})
    assert kwargs["seed"] == 7


def test_profile_matching_by_prefix_tag_and_name():
    profile = EvalProfile(
        name="t",
        template=Aspect({"template": "vicuna_v1"}, "s"),
        image=Aspect({"aspect": "pad"}, "s"),
        generation=Aspect({"max_new_tokens": 1}, "s"),
        postprocess=Aspect({}, "s"),
        task_generation={
            "sci": Aspect({"max_new_tokens": 2}, "s"),
            "tagged": Aspect({"max_new_tokens": 3}, "s"),
            "sci_x": Aspect({"max_new_tokens": 4}, "s"),
        },
        task_image={"sci": Aspect({"aspect": "processor"}, "s")},
    )
    assert profile.generation_for("other")["max_new_tokens"] == 1
    assert profile.generation_for("sci_y")["max_new_tokens"] == 2
    assert profile.generation_for("sci-toy")["max_new_tokens"] == 2
    assert profile.generation_for("sci_y", ["tagged"])["max_new_tokens"] == 3
    assert profile.generation_for("sci_x", ["tagged"])["max_new_tokens"] == 4
    assert profile.generation_for("science")["max_new_tokens"] == 1  # not a prefix match
    assert profile.image_for("sci_img")["aspect"] == "processor"
    assert profile.image_for("pope")["aspect"] == "pad"
    with pytest.raises(ValueError, match="needs a note"):
        Aspect({}, "s", "differs")


def test_profiles_are_in_the_fingerprint_settings():
    a, b = PROFILES["llava-1.5"], PROFILES["quilt-llava"]
    assert a.settings() != b.settings()
    json.dumps(a.settings())  # JSON-able, as the fingerprint needs


# -- protocol texts -----------------------------------------------------------------------------
def test_quilt_rule_prompt_is_the_official_text():
    from harness.tasks.quilt import quilt

    rule = quilt.RULE
    # aldraus/quilt-llava@a7a9a4c llava/eval/quilt_gpt_eval.py ``pt`` (evaluated string)
    assert rule.startswith(
        "We would like to request your feedback on the performance of two AI assistants in "
        "response to the user question\ndisplayed above."
    )
    assert "the visual content in \nthe image is represented" in rule
    assert "bottom right y.\n\nPlease rate the helpfulness" in rule
    assert rule.endswith("responses were presented does not affect your judgment.")
    assert rule == QUILT_RULE
    assert quilt.JUDGE_TEMPERATURE == 0.2 and quilt.JUDGE_MAX_TOKENS == 1024


QUILT_RULE = (
    "We would like to request your feedback on the performance of two AI assistants in "
    "response to the user question\ndisplayed above. The user asks the question on "
    "observing an image. For your reference, the visual content in \nthe image is "
    "represented with caption, describing the same image, which is embedded with bounding "
    "box coordinates\nof each object in the scene, represented as (x1, y1, x2, y2) with "
    "floating numbers ranging from 0 to 1.\nThese values correspond to the top left x, top "
    "left y, bottom right x, and bottom right y.\n\nPlease rate the helpfulness, relevance, "
    "accuracy, level of details of their responses.\nEach assistant receives an overall "
    "score on a scale of 1 to 10, where a higher score indicates better overall\n"
    "performance.\nPlease first output a single line containing only two values indicating "
    "the scores for Assistant 1\nand 2, respectively. The two scores are separated by a "
    "space.\nIn the subsequent line, please provide a\ncomprehensive explanation of your "
    "evaluation, avoiding any potential bias and ensuring that the order in which the\n"
    "responses were presented does not affect your judgment."
)


# -- harness prompts / models ------------------------------------------------------------------
@pytest.mark.parametrize("model", [e.name for e in ENTRIES])
def test_prompts_command_works_for_every_model_without_weights(model, capsys):
    code = main(
        [
            "prompts",
            "--model",
            model,
            "--tasks",
            "pope_random-toy,vcg_generic-toy",
            "--limit",
            "2",
            "--json",
        ]
    )
    assert code == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 4
    for row in rows:
        assert {"task", "doc_id", "prompt", "media", "generation"} <= set(row)
        assert row["media"] and row["media"][0]["preprocessing"]
    assert rows[0]["prompt"] == render_prompt(
        REGISTRY[model].eval_profile, first_request(model, "pope_random-toy")
    )


def test_prompts_text_output(capsys):
    assert (
        main(
            [
                "prompts",
                "--model",
                "vlm-rlaif-7b",
                "--tasks",
                "vcg_generic-toy",
                "--limit",
                "1",
                "--gen",
                "temperature=0",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "###Human: <image>\nCan you describe the video?###Assistant:" in out
    assert "temperature=0.0" in out and "do_sample=False" in out
    assert "num_frames=50" in out


def test_prompts_errors_are_one_line(capsys):
    assert main(["prompts", "--model", "nope", "--tasks", "gqa-toy"]) == 2
    assert main(["prompts", "--model", "toy-llava", "--tasks", "gqa-toy", "--gen", "x=1"]) == 2


def test_models_command_shows_profiles(capsys):
    assert main(["models", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    rlaif = next(r for r in rows if r["name"] == "vlm-rlaif-7b")
    assert rlaif["profile"]["generation"]["settings"]["temperature"] == 0.2
    assert "infer_general.py" in rlaif["profile"]["generation"]["source"]
    assert main(["models", "quilt-llava-7b"]) == 0
    assert "quilt_gpt_eval.py" in capsys.readouterr().out


def test_fidelity_doc_is_current():
    from pathlib import Path

    doc = Path(__file__).resolve().parents[1] / "docs" / "fidelity.md"
    assert doc.read_text().rstrip("\n") == fidelity_markdown().rstrip("\n"), (
        "docs/fidelity.md is stale: harness models --fidelity > docs/fidelity.md"
    )


def test_every_aspect_names_a_source_and_status():
    for profile in PROFILES.values():
        for key, aspect in profile.aspects().items():
            assert aspect.source.strip(), (profile.name, key)
            assert aspect.status in {"matched", "differs", "unverified"}


def test_log_samples_store_the_prompt_harness_prompts_shows(tmp_path, capsys):
    """What `harness prompts` shows is what the model got: the run's sample log agrees."""
    tasks = ["--tasks", "pope_random-toy", "--limit", "2"]
    assert main(["prompts", "--model", "toy-llava", *tasks, "--json"]) == 0
    shown = {r["doc_id"]: r["prompt"] for r in json.loads(capsys.readouterr().out)}
    logs = tmp_path / "logs"
    code = main(
        [
            "run",
            "--model",
            "toy-llava",
            *tasks,
            "--no-db",
            "--bootstrap",
            "0",
            "--log-samples",
            str(logs),
            "--device",
            "cpu",
        ]
    )
    assert code == 0
    lines = (logs / "pope_random-toy.jsonl").read_text().splitlines()
    logged = {json.loads(x)["doc_id"]: json.loads(x)["prompt"] for x in lines}
    assert logged == shown

"""benchmarks/stage3_seeds.py's ``--set FIELD=VALUE`` parser (also train_recipe.py's)."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from harness.trainers.recipes import TOY_LLAVA  # noqa: E402


@pytest.fixture(scope="module")
def stage3_seeds(benchmark_script):
    with benchmark_script("stage3_seeds") as module:
        yield module


def test_settings_reach_recipe_model_and_vision_fields(stage3_seeds):
    recipe = stage3_seeds.parse_settings(
        [
            "align_steps=700",
            'mc_rest_mix=[["pope", 0.5], ["gqa", 0.5]]',
            "model.patch_size=32",
            "vision.steps=700",
        ]
    )
    assert recipe.align_steps == 700
    assert recipe.mc_rest_mix == (("pope", 0.5), ("gqa", 0.5))  # lists become the recipe's tuples
    assert recipe.model.patch_size == 32 and recipe.model.image_seq_length == 4
    assert recipe.vision.steps == 700 and recipe.vision.batch_size == TOY_LLAVA.vision.batch_size
    # nothing else moved
    assert recipe.instruct_steps == TOY_LLAVA.instruct_steps
    assert recipe.model.text_hidden == TOY_LLAVA.model.text_hidden
    assert stage3_seeds.parse_settings([]) == TOY_LLAVA


@pytest.mark.parametrize(
    ("pair", "message"),
    [
        ("nope=1", "'nope' is not a ToyLlavaRecipe field"),
        ("align_steps.x=1", "'align_steps.x' is not a ToyLlavaRecipe field"),
        ("align_steps=", "expected FIELD=VALUE"),
        ("vision.nope=1", "'nope' is not a field of vision"),
        ("model.patch_size=", "expected FIELD=VALUE"),
    ],
)
def test_unknown_or_empty_settings_name_the_flag(stage3_seeds, pair, message):
    with pytest.raises(SystemExit, match=message):
        stage3_seeds.parse_settings([pair])

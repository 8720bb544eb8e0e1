"""Training recipes. ``toy-llava``: the project's default model, trained on the synthetic world.

Recreate the shipped weights (about 21-24 minutes on 2 CPU cores, seeded)::

    harness train toy-llava --out models/weights/toy-llava

Stage 0 pretrains the vision tower CLIP-style on captions
(:mod:`harness.trainers.vision_pretrain`), because LLaVA starts from a
pretrained CLIP tower and this model has none; training a random tower
jointly with a random LM was tried and collapses (the tower's output becomes
a near-constant vector and the LM answers from language priors, POPE all
"yes"). Then LLaVA's two stages: stage 1 alignment on captions, stage 2
instruction tuning on the toy tasks' question formats. Stage 3 continues
instruction tuning with half of it multiple choice (ScienceQA / MMBench
formats) and the other half weighted towards the yes/no and short-answer
formats (``mc_rest_mix``). On the multiple-choice half each option is also
trained to say whether it is the right one
(:func:`harness.trainers.llava_stages.option_check_labels`). The tower stays
frozen throughout, as in LLaVA. Unlike LLaVA-1.5 (stage 1 projector only),
stage 1 also trains the language model, which is random here. LLaVA's own freeze sets are
:data:`harness.trainers.llava_stages.LLAVA_STAGE1_TRAINABLE` /
``LLAVA_STAGE2_TRAINABLE``; any set can be given in :class:`ToyLlavaRecipe`.
"""

from __future__ import annotations

import hashlib
import json
import platform
import random
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import torch

from harness.models.chat import get_template
from harness.trainers.llava_stages import (
    EncodedSamples,
    StageConfig,
    train_stage,
    vision_features,
)
from harness.trainers.portable import isa_pins
from harness.trainers.stage_checkpoints import (
    STAGES_DIR,
    chain_key,
    find_checkpoint,
    remove_checkpoints,
    save_checkpoint,
)
from harness.trainers.toy_model import (
    TinyLlavaSpec,
    build_model,
    build_processor,
    build_tokenizer,
)
from harness.trainers.vision_pretrain import VisionPretrainConfig, pretrain_vision_tower


class TrainingData(Protocol):
    """What ``harness.tasks.toy.training`` provides."""

    def training_samples(
        self,
        stage: str,
        n: int,
        seed: int,
        frames: int = 4,
        mix: Mapping[str, float] | None = None,
    ) -> list[Any]: ...

    def vocabulary_texts(self) -> Iterator[str]: ...


@dataclass(frozen=True)
class ToyLlavaRecipe:
    """Every hyperparameter of the toy-llava model and its training, in one place."""

    model: TinyLlavaSpec = field(default_factory=TinyLlavaSpec)
    template: str = "llava_hf"  # the registry entry's chat template
    frames: int = 4  # video samples = this many frames (registry option num_frames)
    threads: int = 2
    # stage 0: contrastive pretraining of the vision tower on captions (what CLIP gives LLaVA)
    vision_samples: int = 12000
    vision: VisionPretrainConfig = field(default_factory=VisionPretrainConfig)
    # stage 1: feature alignment on captions
    align_samples: int = 6000
    align_trainable: tuple[str, ...] = ("projector", "language")
    # 1000, not 300: the captions name each object's cell, and the longer alignment took
    # GQA-toy's position questions from about 60% to 83-92% (docs/research/toy-llava-position.md)
    align_steps: int = 1000
    align_batch: int = 32
    align_lr: float = 2e-3
    # stage 2: instruction tuning on the toy tasks' question formats
    instruct_samples: int = 16000
    # The pretrained tower stays frozen, as in LLaVA. Unfreezing it at lr x0.3 was reported
    # to give no net gain and at x0.5 (lr 2e-3) to collapse; those runs' numbers were not
    # recorded anywhere.
    instruct_trainable: tuple[str, ...] = ("projector", "language")
    instruct_lr_scale: tuple[tuple[str, float], ...] = ()
    instruct_steps: int = 6000
    instruct_batch: int = 32
    instruct_lr: float = 1e-3
    # stage 3: multiple-choice tuning. Instruction tuning continues on a mix with mc_share
    # of ScienceQA/MMBench-style questions (mc_mix), whose options also get the right/wrong
    # check targets (llava_stages.option_check_labels); without them the answer-only loss
    # left multiple choice at chance (docs/research/toy-llava-multiple-choice.md).
    mc_samples: int = 16000
    mc_share: float = 0.5
    mc_mix: tuple[tuple[str, float], ...] = (("scienceqa", 0.5), ("mmbench", 0.5))
    # the other (1 - mc_share) of stage 3: kind -> share; () = the instruct stage's mix.
    # More POPE / VQAv2 / GQA / TextVQA than in stage 2: after the longer alignment, stage 2's
    # mix left yes/no questions at 85% (VQAv2-toy) and MMBench-toy at 50 (docs/research/toy-llava-training.md)
    mc_rest_mix: tuple[tuple[str, float], ...] = (
        ("caption", 0.04),
        ("pope", 0.22),
        ("gqa", 0.20),
        ("vqav2", 0.22),
        ("textvqa", 0.16),
        ("mme", 0.08),
        ("video", 0.05),
        ("quilt", 0.03),
    )
    # 6000, not 4000: over three seeds, MMBench-toy 60 against 50 (lowest 58 against 46) and
    # ScienceQA-toy 83 against 76, GQA / POPE unchanged (docs/research/toy-llava-training.md)
    mc_steps: int = 6000
    mc_batch: int = 32
    mc_lr: float = 5e-4
    # wsd: constant, then a linear cool-down over the last mc_cooldown_steps. Cosine decay
    # from 1e-3 over 3000 steps left the check half learned; constant without the
    # cool-down ended worse on every task but ScienceQA (docs/research/toy-llava-training.md)
    mc_schedule: str = "wsd"
    mc_cooldown_steps: int = 1200
    mc_option_check_loss: bool = True
    warmup_steps: int = 30
    schedule: str = "cosine"
    min_lr_ratio: float = 0.05
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    save_dtype: str = "float32"

    def stages(self) -> tuple[StageConfig, ...]:
        """align, instruct, and the multiple-choice stage when ``mc_steps`` > 0."""
        common = {
            "warmup_steps": self.warmup_steps,
            "schedule": self.schedule,
            "min_lr_ratio": self.min_lr_ratio,
            "weight_decay": self.weight_decay,
            "max_grad_norm": self.max_grad_norm,
        }
        align = StageConfig(
            "align",
            tuple(self.align_trainable),
            self.align_steps,
            self.align_batch,
            self.align_lr,
            **common,
        )
        instruct = StageConfig(
            "instruct",
            tuple(self.instruct_trainable),
            self.instruct_steps,
            self.instruct_batch,
            self.instruct_lr,
            lr_scale=tuple(self.instruct_lr_scale),
            **common,
        )
        if not self.mc_steps:
            return align, instruct
        mc = StageConfig(
            "multiple_choice",
            tuple(self.instruct_trainable),
            self.mc_steps,
            self.mc_batch,
            self.mc_lr,
            lr_scale=tuple(self.instruct_lr_scale),
            cooldown_steps=self.mc_cooldown_steps,
            **{**common, "schedule": self.mc_schedule},
        )
        return align, instruct, mc


TOY_LLAVA = ToyLlavaRecipe()


def _default_data() -> TrainingData:
    from harness.tasks.toy import training

    return training


def _check_round_trip(tokenizer: Any, answers: Iterable[str]) -> None:
    """Every answer must decode back exactly (else the model could never emit it)."""
    bad = sorted(
        {
            a
            for a in answers
            if tokenizer.decode(tokenizer(a, add_special_tokens=False)["input_ids"]).strip() != a
        }
    )
    if bad:
        raise ValueError(f"answers that do not survive tokenizer encode/decode: {bad[:10]}")


def stage_samples(recipe: ToyLlavaRecipe, data: TrainingData, stage: str, seed: int) -> list[Any]:
    """The training samples of one stage (``seed``: the stage's own)."""
    frames = recipe.frames
    if stage == "align":
        return data.training_samples("align", recipe.align_samples, seed=seed, frames=frames)
    if stage == "instruct":
        return data.training_samples("instruct", recipe.instruct_samples, seed=seed, frames=frames)
    if stage != "multiple_choice":
        raise ValueError(f"unknown stage {stage!r}")
    n_mc = round(recipe.mc_samples * recipe.mc_share)
    mc = data.training_samples("instruct", n_mc, seed=seed, frames=frames, mix=dict(recipe.mc_mix))
    rest = data.training_samples(
        "instruct",
        recipe.mc_samples - n_mc,
        seed=seed + 500,
        frames=frames,
        mix=dict(recipe.mc_rest_mix) or None,
    )
    samples = mc + rest
    random.Random(seed).shuffle(samples)
    return samples


def encoded_stage(
    recipe: ToyLlavaRecipe,
    data: TrainingData,
    processor: Any,
    tokenizer: Any,
    stage: StageConfig,
    seed: int,
    model: torch.nn.Module | None = None,
) -> EncodedSamples:
    """One LLaVA stage's samples (drawn with the stage's own ``seed``), checked and encoded
    with the losses the recipe gives that stage.

    With ``model``, and a stage that keeps the vision tower frozen, each example keeps its
    images' tower features instead of pixels (:func:`vision_features`; same floats,
    the tower runs once per image).
    """
    samples = stage_samples(recipe, data, stage.name, seed)
    _check_round_trip(tokenizer, {s.answer for s in samples})
    features = None
    if model is not None and "vision" not in stage.trainable:
        features = partial(vision_features, model)
    return EncodedSamples(
        processor,
        get_template(recipe.template),
        samples,
        option_check_loss=stage.name == "multiple_choice" and recipe.mc_option_check_loss,
        cache=True,
        image_features=features,
    )


# The recipe fields each stage's result depends on (a stage also depends on every earlier
# stage's); they make the stage checkpoints' keys (stage_checkpoints.chain_key). Every field
# of ToyLlavaRecipe is listed exactly once (tests/test_trainer.py checks it).
STAGE_FIELDS: dict[str, tuple[str, ...]] = {
    "common": (
        "model",
        "template",
        "frames",
        "threads",
        "warmup_steps",
        "schedule",
        "min_lr_ratio",
        "weight_decay",
        "max_grad_norm",
    ),
    "vision_pretrain": ("vision_samples", "vision"),
    "align": ("align_samples", "align_trainable", "align_steps", "align_batch", "align_lr"),
    "instruct": (
        "instruct_samples",
        "instruct_trainable",
        "instruct_lr_scale",
        "instruct_steps",
        "instruct_batch",
        "instruct_lr",
    ),
    "multiple_choice": (
        "mc_samples",
        "mc_share",
        "mc_mix",
        "mc_rest_mix",
        "mc_steps",
        "mc_batch",
        "mc_lr",
        "mc_schedule",
        "mc_cooldown_steps",
        "mc_option_check_loss",
    ),
    "save": ("save_dtype",),
}


def library_versions() -> dict[str, str]:
    """The library versions that decide the trained floats (recorded in training.json)."""
    import transformers

    return {"torch": torch.__version__, "transformers": transformers.__version__}


def machine_description() -> dict[str, str]:
    """The CPU the floats were computed on (recorded in training.json, not in the stage keys).

    The same code and library versions train other floats on another CPU: the previous
    shipped weights' first 100 vision steps logged loss 2.54775 on the machine that trained
    them and 2.5620 on a later one (Xeon model 207), under both transformers 5.23 and 5.25
    (docs/research/bit-for-bit.md).
    """
    fields: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
    except OSError:  # not Linux
        pass
    name = fields.get("model name") or platform.processor() or platform.machine()
    model = (
        f"{name} (family {fields['cpu family']}, model {fields['model']})"
        if "model" in fields and "cpu family" in fields
        else name
    )
    return {
        "cpu": model,
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": str(torch.get_num_threads()),
        "isa_pins": isa_pins(),  # harness train --portable (trainers/portable.py)
    }


def stage_keys(recipe: ToyLlavaRecipe, seed: int, vocabulary: Mapping[str, int]) -> dict[str, str]:
    """Checkpoint key of every stage the recipe runs, in order (chained: a change to a stage's
    fields changes its key and every later one)."""
    fields = asdict(recipe)
    names = (["vision_pretrain"] if recipe.vision_samples else []) + [
        s.name for s in recipe.stages()
    ]
    vocab = hashlib.sha256(json.dumps(sorted(vocabulary.items())).encode()).hexdigest()
    common = {f: fields[f] for f in STAGE_FIELDS["common"]}
    # another torch or transformers may compute other floats, so the key has their versions,
    # and so do other ISA pins (--portable)
    common["versions"] = library_versions()
    common["isa_pins"] = isa_pins()
    key = chain_key("", "common", {"seed": seed, "vocabulary": vocab, **common})
    keys = {}
    for name in names:
        key = keys[name] = chain_key(key, name, {f: fields[f] for f in STAGE_FIELDS[name]})
    return keys


def train_toy_llava(
    out_dir: Path,
    seed: int = 0,
    log: Callable[[str], None] | None = print,
    *,
    recipe: ToyLlavaRecipe = TOY_LLAVA,
    data: TrainingData | None = None,
    resume: bool = True,
    keep_stages: bool = False,
) -> dict[str, Any]:
    """Build, train (vision, align, instruct, multiple choice) and save toy-llava to ``out_dir``.

    After each stage the weights are checkpointed under ``out_dir/stages/``; with ``resume``
    a rerun into the same folder starts after the last stage whose checkpoint matches the
    recipe, seed and vocabulary (:mod:`harness.trainers.stage_checkpoints`), and ends with
    the same weights as an uninterrupted run. The checkpoints are removed once the model is
    saved, unless ``keep_stages`` (e.g. to retrain only stage 3 with other settings).
    """
    data = data or _default_data()
    out_dir = Path(out_dir)
    torch.set_num_threads(recipe.threads)
    random.seed(seed)
    torch.manual_seed(seed)
    say = log or (lambda _msg: None)
    started = time.perf_counter()

    tokenizer = build_tokenizer(data.vocabulary_texts())
    processor = build_processor(tokenizer, recipe.model)
    model = build_model(tokenizer, recipe.model, seed=seed)
    get_template(recipe.template)  # an unknown template fails here, not after stage 0
    n_params = sum(p.numel() for p in model.parameters())
    say(f"toy-llava: {n_params} parameters, vocabulary {len(tokenizer)}")

    keys = stage_keys(recipe, seed, tokenizer.get_vocab())
    names = list(keys)
    # resume after the last stage with a matching checkpoint (its key chains every earlier one)
    found = [find_checkpoint(out_dir, i, n, keys[n]) for i, n in enumerate(names)] if resume else []
    last = max((i for i, ckpt in enumerate(found) if ckpt), default=-1)
    if last >= 0:
        found[last].load_into(model)
        say(f"[{names[last]}] resumed from {found[last].path}")
    elif resume and (out_dir / STAGES_DIR).is_dir():
        say(f"{out_dir / STAGES_DIR}: no checkpoint matches this recipe and seed")

    stats: dict[str, Any] = {
        "seed": seed,
        "parameters": n_params,
        "vocab": len(tokenizer),
        "versions": library_versions(),
        "machine": machine_description(),
    }
    if last >= 0:
        stats["resumed_after"] = names[last]
    llava_stages = {stage.name: (i, stage) for i, stage in enumerate(recipe.stages())}
    stage_stats = []
    for index, name in enumerate(names):
        if index <= last:
            stage_stats.append(found[index].stats if found[index] else {"name": name})
            continue
        t0 = time.perf_counter()
        if name == "vision_pretrain":
            captions = data.training_samples("align", recipe.vision_samples, seed=seed * 1000 + 7)
            say(f"[vision] {len(captions)} captions prepared in {time.perf_counter() - t0:.1f}s")
            result = pretrain_vision_tower(
                model, processor, captions, recipe.vision, seed=seed * 1000 + 7, log=log
            )
        else:
            i, stage = llava_stages[name]
            encoded = encoded_stage(
                recipe, data, processor, tokenizer, stage, seed * 1000 + i, model=model
            )
            say(f"[{name}] {len(encoded)} examples prepared in {time.perf_counter() - t0:.1f}s")
            result = train_stage(
                model,
                encoded,
                stage,
                pad_id=tokenizer.pad_token_id,
                seed=seed * 1000 + i,
                log=log,
            )
        stage_stats.append(result.as_dict())
        save_checkpoint(out_dir, index, name, keys[name], model, stage_stats[-1])
    stats["stages"] = stage_stats
    stats["train_seconds"] = round(time.perf_counter() - started, 1)

    out_dir.mkdir(parents=True, exist_ok=True)
    save_model = model.to(getattr(torch, recipe.save_dtype))
    save_model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    model.float()
    recipe_dict = asdict(replace(recipe))
    (out_dir / "training.json").write_text(
        json.dumps(
            {"recipe": "toy-llava", "hyperparameters": recipe_dict, "stats": stats}, indent=1
        )
        + "\n"
    )
    if not keep_stages:
        remove_checkpoints(out_dir)
    stats["seconds"] = round(time.perf_counter() - started, 1)
    say(f"toy-llava saved to {out_dir} ({stats['seconds']}s)")
    return stats


# `harness train NAME --out DIR [--seed N]`
RECIPES: dict[str, Callable[..., dict[str, Any]]] = {"toy-llava": train_toy_llava}

"""LLaVA's two-stage training loop for any ``LlavaForConditionalGeneration``.

Stage 1 (feature alignment) trains on image-caption pairs, stage 2 (visual
instruction tuning) on question/answer pairs; each stage has its own set of
trainable parts, optimiser and schedule (:class:`StageConfig`).

Data path, identical to inference so train and eval prompts match exactly:

* the user text is wrapped by the model's chat template
  (:meth:`harness.models.chat.ChatTemplate.training_pair`), one ``<image>``
  placeholder per image (a video is its frames, one placeholder each);
* the processor turns the prompt + images into ``input_ids`` (placeholders
  expanded into the image tokens) and ``pixel_values``;
* the completion ``" {answer}{eos}"`` is tokenised on its own and appended;
  the loss is taken on the completion tokens only (prompt and padding are
  labelled -100), except, when asked, on multiple-choice prompts: a right/wrong
  check at the end of each option (``option_check_loss``, :func:`option_check_labels`).

Batches are padded on either side with position ids computed from the
attention mask exactly as ``generate`` computes them, so the padding side does
not change what the model sees.

While the vision tower is frozen (every LLaVA stage), an example can keep its
images' tower features instead of their pixels (``EncodedSamples(image_features=...)``,
:func:`vision_features`): the tower then runs once per image instead of once
per epoch, and the step feeds the projected features in as input embeddings,
which is what transformers' LLaVA does with pixels, so the loss and gradients
are the same bit for bit.
"""

from __future__ import annotations

import math
import random
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from harness.models.chat import ChatTemplate

IGNORE_INDEX = -100
PARTS = ("vision", "projector", "language")
# LLaVA-1.5's freeze sets: stage 1 trains the projector only, stage 2 the projector and
# the LLM (the vision tower stays frozen in both).
LLAVA_STAGE1_TRAINABLE = ("projector",)
LLAVA_STAGE2_TRAINABLE = ("projector", "language")


@dataclass(frozen=True)
class StageConfig:
    """One training stage: which parts learn, and how."""

    name: str
    trainable: tuple[str, ...]
    steps: int
    batch_size: int
    lr: float
    warmup_steps: int = 0
    schedule: Literal["cosine", "linear", "constant", "wsd"] = "cosine"
    min_lr_ratio: float = 0.0
    # "wsd" (warmup-stable-decay): constant, then linear decay over the last cooldown_steps
    cooldown_steps: int = 0
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.98)
    max_grad_norm: float = 1.0
    padding_side: Literal["left", "right"] = "right"
    log_every: int = 50
    # (part, factor) pairs: that part learns at lr * factor (e.g. a pretrained tower slower)
    lr_scale: tuple[tuple[str, float], ...] = ()

    def __post_init__(self) -> None:
        bad = set(self.trainable) - set(PARTS)
        if bad or not self.trainable:
            raise ValueError(
                f"stage {self.name}: trainable parts must be a non-empty subset of {PARTS}"
            )
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError(f"stage {self.name}: steps and batch_size must be >= 1")
        if self.schedule == "wsd" and not 0 < self.cooldown_steps <= self.steps:
            raise ValueError(
                f"stage {self.name}: schedule 'wsd' needs 0 < cooldown_steps <= steps "
                f"({self.steps}), got {self.cooldown_steps}"
            )


@dataclass
class Encoded:
    """One tokenised training example."""

    input_ids: torch.Tensor  # (L,) prompt + completion
    labels: torch.Tensor  # (L,) -100 on the prompt
    pixel_values: torch.Tensor  # (n_images, 3, H, W); empty when image_features is kept
    # (n_images, tokens, vision width): the frozen tower's output (vision_features)
    image_features: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])


@dataclass
class StageStats:
    name: str
    steps: int
    examples: int
    seconds: float
    losses: list[float] = field(default_factory=list)  # mean loss per logging window
    first_loss: float = float("nan")
    final_loss: float = float("nan")
    trainable_params: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "steps": self.steps,
            "examples": self.examples,
            "seconds": round(self.seconds, 2),
            "first_loss": self.first_loss,
            "final_loss": self.final_loss,
            "losses": self.losses,
            "trainable_params": self.trainable_params,
        }


# -- data ------------------------------------------------------------------------------------
OPTION_LETTERS = "ABCDEFGH"


def option_letter_positions(tokenizer: Any, ids: torch.Tensor) -> torch.Tensor:
    """Mask of the tokens in ``ids`` that are an option letter followed by ``.`` (where
    :func:`option_check_labels` finds the options; ``experimental/option_letters.py`` also
    trains on them)."""
    ids_of = tokenizer.convert_tokens_to_ids(list(OPTION_LETTERS))
    # letters missing from the vocabulary map to <unk>, which must not count as a letter
    letters = torch.tensor([i for i in ids_of if i != tokenizer.unk_token_id])
    dot = tokenizer.convert_tokens_to_ids(".")
    mask = torch.zeros_like(ids, dtype=torch.bool)
    if ids.numel() > 1:
        mask[:-1] = torch.isin(ids[:-1], letters) & (ids[1:] == dot)
    return mask


OPTION_LINE = re.compile(r"^([A-H])\. (.+)$", re.MULTILINE)


def option_check_labels(
    tokenizer: Any, prompt_ids: torch.Tensor, text: str, answer: str, reject: str = "no"
) -> dict[int, int]:
    """Extra targets that make each option of a multiple-choice prompt say whether it is right.

    ``text`` is the user text with one ``X. option`` line per option and ``answer`` the right
    letter. The model state at the last token of each option is trained to predict the
    option's own letter when it is the right one and ``reject`` ("no") otherwise; returned as
    ``{label index: token id}`` (index = the token after the option, as labels are shifted).

    LLaVA's answer-only loss rewards an option letter only once three things work together:
    the answer worked out from the image, matched against each option's text, and the
    matching option's letter read out. Until then it gives no gradient towards any of them,
    and toy-llava stayed at chance. These targets reward the check at every option on its
    own; the answer position then only has to find the option that says its letter
    (``experimental/mc_finetune_probe.py --option-check-loss``). Returns ``{}`` for prompts
    whose options cannot be located exactly.
    """
    options = OPTION_LINE.findall(text)
    if answer not in {letter for letter, _ in options}:
        return {}
    reject_id = tokenizer.convert_tokens_to_ids(reject)
    if reject_id is None or reject_id == tokenizer.unk_token_id:
        raise ValueError(f"option check: {reject!r} is not in the vocabulary")
    starts = option_letter_positions(tokenizer, prompt_ids).nonzero().flatten().tolist()
    if len(starts) != len(options):
        return {}
    out: dict[int, int] = {}
    for start, (letter, option) in zip(starts, options, strict=True):
        ids = tokenizer(option, add_special_tokens=False)["input_ids"]
        first = start + 2  # after "X" and "."
        after = first + len(ids)
        if after >= len(prompt_ids) or prompt_ids[first:after].tolist() != ids:
            return {}
        out[after] = tokenizer.convert_tokens_to_ids(letter) if letter == answer else reject_id
    return out


def encode_example(
    processor: Any,
    template: ChatTemplate,
    text: str,
    answer: str,
    images: Sequence[Any],
    *,
    image_token: str = "<image>",
    option_check_loss: bool = False,
) -> Encoded:
    """Prompt (through the processor, as at inference) + completion with masked labels;
    ``option_check_loss`` adds the targets of :func:`option_check_labels`."""
    tokenizer = processor.tokenizer
    prompt, completion = template.training_pair(
        text, answer, tokenizer.eos_token, [image_token] * len(images)
    )
    inputs = processor(text=[prompt], images=list(images) or None, return_tensors="pt")
    prompt_ids = inputs["input_ids"][0]
    answer_ids = torch.tensor(
        tokenizer(completion, add_special_tokens=False)["input_ids"], dtype=torch.long
    )
    if answer_ids.numel() == 0 or int(answer_ids[-1]) != tokenizer.eos_token_id:
        raise ValueError(f"completion {completion!r} does not end in the EOS token")
    input_ids = torch.cat([prompt_ids, answer_ids])
    prompt_labels = torch.full_like(prompt_ids, IGNORE_INDEX)
    if option_check_loss:
        for index, target in option_check_labels(tokenizer, prompt_ids, text, answer).items():
            prompt_labels[index] = target
    labels = torch.cat([prompt_labels, answer_ids])
    pixel_values = inputs.get("pixel_values")
    if pixel_values is None:
        pixel_values = torch.zeros(0)
    return Encoded(input_ids, labels, pixel_values)


def encode_all(
    processor: Any,
    template: ChatTemplate,
    samples: Iterable[Any],
) -> list[Encoded]:
    """Encode objects with ``images``, ``prompt`` and ``answer`` attributes."""
    return [encode_example(processor, template, s.prompt, s.answer, s.images) for s in samples]


class EncodedSamples(Sequence[Encoded]):
    """Samples (``images``, ``prompt``, ``answer``) encoded when a batch asks for them.

    Keeps the PIL images instead of float pixel tensors (a 64 px image is 12 KB as
    bytes, 48 KB as pixel values), so tens of thousands of samples fit in memory.
    ``cache=True`` keeps each example once encoded: a stage that sees every sample many
    times then runs the processor once per sample (a quarter of toy-llava's step time),
    for about 50 KB per 64 px image of memory. ``image_features`` (a function of pixel
    values, e.g. ``partial(vision_features, model)``) keeps each image's features
    from the frozen vision tower instead of its pixels (6 KB per 64 px image of toy-llava);
    use it only while the tower does not train. ``lengths`` is a sort key for batching
    (images first, then text length).
    """

    def __init__(
        self,
        processor: Any,
        template: ChatTemplate,
        samples: Sequence[Any],
        *,
        option_check_loss: bool = False,
        cache: bool = False,
        image_features: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        self.processor = processor
        self.image_features = image_features
        self.template = template
        self.option_check_loss = option_check_loss
        self.samples = list(samples)
        self._cache: dict[int, Encoded] | None = {} if cache else None
        self.lengths = [
            len(s.images) * 100_000 + len(s.prompt) + len(s.answer) for s in self.samples
        ]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> Encoded:  # type: ignore[override]
        return self.take([index])[0]

    def take(self, indices: Sequence[int]) -> list[Encoded]:
        """The examples at ``indices`` (a batch). The image features of those not encoded
        yet come from one tower call; a frozen tower gives each image the same floats
        whatever else is in the call (tests/test_trainer.py checks it)."""
        found: dict[int, Encoded] = {}
        todo = []
        for index in dict.fromkeys(indices):
            hit = self._cache.get(index) if self._cache is not None else None
            if hit is None:
                todo.append(index)
            else:
                found[index] = hit
        encoded = [self._encode(index) for index in todo]
        if self.image_features is not None:
            encoded = self._features_for_pixels(encoded)
        for index, example in zip(todo, encoded, strict=True):
            found[index] = example
            if self._cache is not None:
                self._cache[index] = example
        return [found[index] for index in indices]

    def _encode(self, index: int) -> Encoded:
        s = self.samples[index]
        return encode_example(
            self.processor,
            self.template,
            s.prompt,
            s.answer,
            s.images,
            option_check_loss=self.option_check_loss,
        )

    def _features_for_pixels(self, encoded: list[Encoded]) -> list[Encoded]:
        assert self.image_features is not None
        with_images = [e for e in encoded if e.pixel_values.numel()]
        if not with_images:
            return encoded
        with torch.no_grad():
            features = self.image_features(torch.cat([e.pixel_values for e in with_images]))
        parts = iter(features.split([len(e.pixel_values) for e in with_images]))
        return [
            Encoded(e.input_ids, e.labels, torch.zeros(0), next(parts))
            if e.pixel_values.numel()
            else e
            for e in encoded
        ]


def collate(
    batch: Sequence[Encoded], pad_id: int, padding_side: Literal["left", "right"] = "right"
) -> dict[str, torch.Tensor]:
    """Pad to the longest example; position ids follow the attention mask (as in generate)."""
    width = max(len(e) for e in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, e in enumerate(batch):
        n = len(e)
        span = slice(width - n, width) if padding_side == "left" else slice(0, n)
        ids[row, span] = e.input_ids
        labels[row, span] = e.labels
        mask[row, span] = 1
    position_ids = (mask.cumsum(-1) - 1).clamp_min(0)
    out = {"input_ids": ids, "attention_mask": mask, "position_ids": position_ids, "labels": labels}
    pixels = [e.pixel_values for e in batch if e.pixel_values.numel()]
    features = [e.image_features for e in batch if e.image_features is not None]
    if pixels and features:
        raise ValueError("a batch mixes pixel values and cached image features")
    if pixels:
        out["pixel_values"] = torch.cat(pixels)
    if features:
        out["image_features"] = torch.cat(features)
    return out


def batch_order(
    lengths: Sequence[int], batch_size: int, steps: int, rng: random.Random, pool: int = 32
) -> list[list[int]]:
    """``steps`` batches of indices: epochs of shuffled data, batched among similar lengths.

    Each epoch is shuffled, cut into pools of ``pool`` batches, sorted by length inside a
    pool (so a 4-frame video does not pad a batch of single images), then the batches are
    shuffled again.
    """
    out: list[list[int]] = []
    n = len(lengths)
    if n == 0:
        raise ValueError("no training examples")
    while len(out) < steps:
        order = list(range(n))
        rng.shuffle(order)
        epoch: list[list[int]] = []
        size = batch_size * pool
        for start in range(0, n, size):
            chunk = sorted(order[start : start + size], key=lambda i: lengths[i])
            epoch += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
        rng.shuffle(epoch)
        out += epoch
    return out[:steps]


# -- model parts -------------------------------------------------------------------------------
def model_parts(model: nn.Module) -> dict[str, list[nn.Module]]:
    """transformers 5 LLaVA layout: model.{vision_tower, multi_modal_projector, language_model}, lm_head."""
    inner = model.model
    return {
        "vision": [inner.vision_tower],
        "projector": [inner.multi_modal_projector],
        "language": [inner.language_model, model.lm_head],
    }


def set_trainable(model: nn.Module, trainable: Iterable[str]) -> list[nn.Parameter]:
    """Freeze everything except the named parts; returns the trainable parameters."""
    wanted = set(trainable)
    for p in model.parameters():
        p.requires_grad_(False)
    params: list[nn.Parameter] = []
    seen: set[int] = set()
    for name, modules in model_parts(model).items():
        if name not in wanted:
            continue
        for module in modules:
            for p in module.parameters():
                if id(p) not in seen:
                    seen.add(id(p))
                    p.requires_grad_(True)
                    params.append(p)
    return params


def vision_features(model: nn.Module, pixel_values: torch.Tensor) -> torch.Tensor:
    """The vision tower's features that LLaVA feeds its projector.

    ``vision_feature_layer`` (one layer, or several concatenated) with the CLS token
    dropped under the "default" select strategy, as transformers'
    ``LlavaModel.get_image_features`` selects them; shape (images, tokens, width).
    """
    config = model.config
    layers = config.vision_feature_layer
    hidden = model.model.vision_tower(
        pixel_values.to(model.dtype), output_hidden_states=True, return_dict=True
    ).hidden_states
    chosen = [hidden[layers]] if isinstance(layers, int) else [hidden[i] for i in layers]
    if config.vision_feature_select_strategy == "default":
        chosen = [h[:, 1:] for h in chosen]
    return torch.cat(chosen, dim=-1)


def model_inputs(model: nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The inputs of ``model.model`` for a batch (labels left out).

    Cached ``image_features`` go through the projector and replace the image tokens'
    embeddings, as LlavaModel does with the features of ``pixel_values``.
    """
    inputs = {k: v for k, v in batch.items() if k not in ("labels", "image_features")}
    features = batch.get("image_features")
    if features is None:
        return inputs
    ids = inputs.pop("input_ids")
    embeds = model.get_input_embeddings()(ids)
    projected = model.model.multi_modal_projector(features)
    projected = projected.reshape(-1, embeds.shape[-1]).to(embeds.dtype)
    image_tokens = ids == model.config.image_token_id
    if int(image_tokens.sum()) != projected.shape[0]:
        raise ValueError(
            f"{int(image_tokens.sum())} image tokens in the batch but features for "
            f"{projected.shape[0]}"
        )
    inputs["inputs_embeds"] = embeds.masked_scatter(image_tokens.unsqueeze(-1), projected)
    return inputs


def lr_factor(step: int, stage: StageConfig) -> float:
    """Linear warm-up, then cosine / linear decay to ``min_lr_ratio``, constant, or constant
    followed by a linear decay over the last ``cooldown_steps`` ("wsd")."""
    if stage.warmup_steps and step < stage.warmup_steps:
        return (step + 1) / stage.warmup_steps
    if stage.schedule == "constant":
        return 1.0
    if stage.schedule == "wsd":
        into = step - (stage.steps - stage.cooldown_steps)
        if into < 0:
            return 1.0
        decay = 1.0 - min(1.0, (into + 1) / stage.cooldown_steps)
    else:
        span = max(1, stage.steps - stage.warmup_steps)
        progress = min(1.0, (step - stage.warmup_steps) / span)
        if stage.schedule == "cosine":
            decay = 0.5 * (1.0 + math.cos(math.pi * progress))
        else:
            decay = 1.0 - progress
    return stage.min_lr_ratio + (1.0 - stage.min_lr_ratio) * decay


def completion_loss(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean next-token cross entropy over the labelled (completion) tokens."""
    labels = batch["labels"]
    hidden = model.model(**model_inputs(model, batch)).last_hidden_state
    # Only positions that predict a labelled token go through the LM head.
    target = labels[:, 1:]
    keep = target != IGNORE_INDEX
    logits = model.lm_head(hidden[:, :-1][keep])
    return nn.functional.cross_entropy(logits.float(), target[keep])


@torch.no_grad()
def answer_accuracy(model: nn.Module, data: Sequence[Encoded]) -> float:
    """Share of examples whose first completion token is the model's greedy next token.

    The completion is the run of labelled tokens that ends the example (prompt tokens
    labelled as option checks do not count); for one-token answers such as an option
    letter this is the exact-match accuracy of greedy decoding.
    """
    was_training = model.training
    model.eval()
    right = 0
    for example in data:
        # the completion is the labelled run that ends the sequence
        start = int((example.labels == IGNORE_INDEX).nonzero()[-1]) + 1
        batch = {"input_ids": example.input_ids[None, :start]}
        if example.pixel_values.numel():
            batch["pixel_values"] = example.pixel_values
        if example.image_features is not None:
            batch["image_features"] = example.image_features
        logits = model(**model_inputs(model, batch)).logits[0, -1]
        right += int(logits.argmax()) == int(example.input_ids[start])
    model.train(was_training)
    return right / max(1, len(data))


# -- training ----------------------------------------------------------------------------------
def train_stage(
    model: nn.Module,
    data: Sequence[Encoded],
    stage: StageConfig,
    *,
    pad_id: int,
    seed: int = 0,
    log: Callable[[str], None] | None = print,
) -> StageStats:
    """Run one stage in place on ``model`` (AdamW, warm-up + decay, gradient clipping)."""
    if "vision" in stage.trainable and getattr(data, "image_features", None) is not None:
        raise ValueError(
            f"stage {stage.name} trains the vision tower, so its examples cannot keep "
            "cached image features (EncodedSamples(image_features=None))"
        )
    torch.manual_seed(seed)
    rng = random.Random(seed)
    params = set_trainable(model, stage.trainable)
    scale = dict(stage.lr_scale)
    groups = []
    for part, modules in model_parts(model).items():
        if part not in stage.trainable:
            continue
        # unique: a tied lm_head is the embedding matrix, one parameter
        part_params = list({id(p): p for m in modules for p in m.parameters()}.values())
        for decayed in (True, False):
            chosen = [p for p in part_params if (p.ndim >= 2) == decayed]
            if chosen:
                groups.append(
                    {
                        "params": chosen,
                        "weight_decay": stage.weight_decay if decayed else 0.0,
                        "lr": stage.lr * scale.get(part, 1.0),
                    }
                )
    optimizer = torch.optim.AdamW(groups, lr=stage.lr, betas=stage.betas)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, stage))
    lengths = getattr(data, "lengths", None) or [len(e) for e in data]
    order = batch_order(lengths, stage.batch_size, stage.steps, rng)
    stats = StageStats(
        stage.name, stage.steps, 0, 0.0, trainable_params=sum(p.numel() for p in params)
    )
    model.train()
    start = time.perf_counter()
    window: list[float] = []
    take = getattr(data, "take", None)  # EncodedSamples: one tower call per batch
    for step, indices in enumerate(order):
        examples = take(indices) if take else [data[i] for i in indices]
        batch = collate(examples, pad_id, stage.padding_side)
        loss = completion_loss(model, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if stage.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(params, stage.max_grad_norm)
        optimizer.step()
        scheduler.step()
        value = float(loss.detach())
        if step == 0:
            stats.first_loss = value
        window.append(value)
        stats.examples += len(indices)
        if (step + 1) % stage.log_every == 0 or step + 1 == len(order):
            mean = sum(window) / len(window)
            stats.losses.append(round(mean, 5))
            window = []
            if log is not None:
                log(
                    f"[{stage.name}] step {step + 1}/{len(order)} loss {mean:.4f} "
                    f"lr {max(scheduler.get_last_lr()):.2e} {time.perf_counter() - start:.0f}s"
                )
    stats.final_loss = stats.losses[-1] if stats.losses else float("nan")
    stats.seconds = time.perf_counter() - start
    model.eval()
    for p in model.parameters():
        p.requires_grad_(True)
    return stats

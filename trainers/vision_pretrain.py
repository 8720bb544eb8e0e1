"""Stage 0 for a LLaVA built from scratch: CLIP-style contrastive pretraining of its vision tower.

LLaVA starts from a pretrained CLIP tower and keeps it frozen. A toy model has
no such tower, and training a random one jointly with a random LM collapses:
the LM learns language priors first and the tower drifts to a near-constant
output. So, as CLIP does, the tower is first trained to tell images apart by
their captions: image embedding = the patch features LLaVA consumes
(``vision_feature_layer``, CLS dropped), mean-pooled, normed and projected;
caption embedding = a small GRU over the caption's tokens; symmetric InfoNCE
with a learned temperature over the batch. Only the tower is kept afterwards.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from harness.trainers.llava_stages import vision_features


@dataclass(frozen=True)
class VisionPretrainConfig:
    steps: int = 1000
    batch_size: int = 128
    lr: float = 1e-3
    embed_dim: int = 128
    warmup_steps: int = 50
    weight_decay: float = 0.01
    log_every: int = 100


@dataclass
class VisionPretrainStats:
    steps: int
    seconds: float = 0.0
    losses: list[float] = field(default_factory=list)
    retrieval_accuracy: float = float("nan")  # image -> caption top-1 within a batch, last window

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": "vision_pretrain",
            "steps": self.steps,
            "seconds": round(self.seconds, 2),
            "losses": self.losses,
            "retrieval_accuracy": round(self.retrieval_accuracy, 4),
        }


class CaptionEncoder(nn.Module):
    def __init__(self, vocab: int, dim: int, pad_id: int) -> None:
        super().__init__()
        self.pad_id = pad_id
        self.embed = nn.Embedding(vocab, dim, padding_idx=pad_id)
        self.rnn = nn.GRU(dim, dim, batch_first=True, bidirectional=True)
        self.out = nn.Linear(2 * dim, dim)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        mask = (ids != self.pad_id).unsqueeze(-1).float()
        hidden, _ = self.rnn(self.embed(ids))
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
        return self.out(pooled)


class ImageHead(nn.Module):
    def __init__(self, width: int, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.attn = nn.Linear(width, 1)  # attention pooling keeps where things are
        self.out = nn.Linear(width, dim)

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        x = self.norm(patches)
        weights = torch.softmax(self.attn(x), dim=1)
        return self.out((weights * x).sum(1) + x.mean(1))


def pretrain_vision_tower(
    model: nn.Module,
    processor: Any,
    samples: Sequence[Any],
    config: VisionPretrainConfig = VisionPretrainConfig(),
    *,
    seed: int = 0,
    log: Callable[[str], None] | None = print,
) -> VisionPretrainStats:
    """Train ``model``'s vision tower in place on (first image, caption) pairs."""
    torch.manual_seed(seed)
    rng = random.Random(seed)
    tokenizer = processor.tokenizer
    pairs = [(s.images[0], s.answer) for s in samples if s.images]
    pixels = processor.image_processor(images=[p[0] for p in pairs], return_tensors="pt")[
        "pixel_values"
    ]
    encoded = [tokenizer(p[1], add_special_tokens=False)["input_ids"] for p in pairs]
    width = max(len(e) for e in encoded)
    pad = tokenizer.pad_token_id
    ids = torch.full((len(encoded), width), pad, dtype=torch.long)
    for i, e in enumerate(encoded):
        ids[i, : len(e)] = torch.tensor(e)

    tower = model.model.vision_tower
    text = CaptionEncoder(len(tokenizer), config.embed_dim, pad)
    head = ImageHead(tower.config.hidden_size, config.embed_dim)
    log_scale = nn.Parameter(torch.tensor(math.log(10.0)))
    for p in model.parameters():
        p.requires_grad_(False)
    for p in tower.parameters():
        p.requires_grad_(True)
    params = [*tower.parameters(), *text.parameters(), *head.parameters(), log_scale]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)

    def factor(step: int) -> float:
        if step < config.warmup_steps:
            return (step + 1) / config.warmup_steps
        progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
        return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    stats = VisionPretrainStats(config.steps)
    tower.train()
    start = time.perf_counter()
    window: list[float] = []
    hits: list[float] = []
    n = len(pairs)
    for step in range(config.steps):
        batch = rng.sample(range(n), min(config.batch_size, n))
        img = nn.functional.normalize(head(vision_features(model, pixels[batch])), dim=-1)
        cap = nn.functional.normalize(text(ids[batch]), dim=-1)
        logits = log_scale.exp().clamp(max=100) * img @ cap.t()
        # Identical captions in one batch are all correct matches.
        same = ids[batch].unsqueeze(1).eq(ids[batch].unsqueeze(0)).all(-1).float()
        target = same / same.sum(1, keepdim=True)
        loss = 0.5 * (
            -(target * logits.log_softmax(1)).sum(1).mean()
            - (target * logits.log_softmax(0)).sum(0).mean()
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        scheduler.step()
        window.append(float(loss.detach()))
        hits.append(float(same.gather(1, logits.argmax(1, keepdim=True)).mean()))
        if (step + 1) % config.log_every == 0 or step + 1 == config.steps:
            stats.losses.append(round(sum(window) / len(window), 5))
            stats.retrieval_accuracy = sum(hits) / len(hits)
            window, hits = [], []
            if log is not None:
                log(
                    f"[vision] step {step + 1}/{config.steps} loss {stats.losses[-1]:.4f} "
                    f"retrieval {100 * stats.retrieval_accuracy:.1f}% "
                    f"{time.perf_counter() - start:.0f}s"
                )
    stats.seconds = time.perf_counter() - start
    tower.eval()
    for p in model.parameters():
        p.requires_grad_(True)
    return stats

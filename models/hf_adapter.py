"""Batched generation on transformers models: the part every family shares.

A family adapter only says how a batch of requests becomes model inputs
(:meth:`HFAdapter.encode`: load visuals, apply the chat template, run the
processor with left padding). This base class sorts, batches, moves tensors,
calls ``generate`` with the KV cache, cuts the prompt off and decodes, and
turns a request whose visuals cannot be read into an empty output plus a
per-sample error instead of a failed run.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from harness.errors import DataFileError, HarnessError
from harness.requests import Request

log = logging.getLogger(__name__)

DTYPES = {
    "fp16": torch.float16,
    "float16": torch.float16,
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
    "fp32": torch.float32,
    "float32": torch.float32,
}
# Weight files are fingerprinted by size + the first and last HASH_SPAN bytes:
# fast on 26 GB checkpoints, and any re-save changes headers (safetensors) or tails.
HASH_SPAN = 1 << 20


def resolve_device(device: str | None) -> str:
    """``auto`` / None -> cuda (``auto`` device map on several GPUs) or cpu; else passed through."""
    if device in (None, "", "auto"):
        if not torch.cuda.is_available():
            return "cpu"
        # Several GPUs: let accelerate spread the layers (device_map="auto").
        return "auto" if torch.cuda.device_count() > 1 else "cuda"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise HarnessError(f"--device {device}: CUDA is not available on this machine")
    return device


def resolve_dtype(dtype: str | None, device: str) -> torch.dtype:
    """``auto`` / None -> fp16 on GPU, fp32 on CPU."""
    if dtype in (None, "", "auto"):
        return torch.float32 if device == "cpu" else torch.float16
    try:
        return DTYPES[dtype]
    except KeyError:
        raise HarnessError(
            f"--dtype {dtype}: expected one of auto, {', '.join(sorted(DTYPES))}"
        ) from None


def fingerprint_files(folder: Path) -> str:
    """A hash of a model folder's configs and weight files (size + head + tail of each)."""
    digest = hashlib.sha256()
    files = sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and (p.suffix in {".safetensors", ".bin", ".pt", ".json", ".model"})
    )
    if not files:
        raise HarnessError(f"{folder}: no weight or config files to fingerprint")
    for path in files:
        size = path.stat().st_size
        digest.update(f"{path.relative_to(folder)}:{size}\n".encode())
        with path.open("rb") as fh:
            digest.update(fh.read(HASH_SPAN))
            if size > 2 * HASH_SPAN:
                fh.seek(size - HASH_SPAN)
                digest.update(fh.read(HASH_SPAN))
    return digest.hexdigest()[:16]


def fingerprint_module(module: torch.nn.Module) -> str:
    """A hash of every parameter and buffer (for models built in memory)."""
    digest = hashlib.sha256()
    for key, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().to("cpu").contiguous()
        digest.update(f"{key}:{tuple(t.shape)}:{t.dtype}\n".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()[:16]


def generation_args(gen_kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """Task generation kwargs -> ``model.generate`` kwargs (temperature 0 means greedy)."""
    temperature = float(gen_kwargs.get("temperature") or 0.0)
    do_sample = bool(gen_kwargs.get("do_sample", temperature > 0)) and temperature > 0
    args: dict[str, Any] = {
        "max_new_tokens": int(gen_kwargs.get("max_new_tokens", 128)),
        "num_beams": int(gen_kwargs.get("num_beams", 1) or 1),
        "do_sample": do_sample,
        "use_cache": True,
    }
    if do_sample:
        args["temperature"] = temperature
        if gen_kwargs.get("top_p") is not None:
            args["top_p"] = float(gen_kwargs["top_p"])
    return args


class HFAdapter:
    """Base class: subclasses set ``family`` and implement :meth:`encode`."""

    family = "hf"

    def __init__(
        self,
        name: str,
        model: torch.nn.Module,
        processor: Any,
        *,
        fingerprint: str | None = None,
        device: str | None = None,
        info: Mapping[str, Any] | None = None,
    ) -> None:
        self.name = name
        self.model = model.eval()
        self.processor = processor
        self.device = torch.device(device) if device else next(model.parameters()).device
        self._fingerprint = fingerprint
        # What changes scores besides the weights (template, preprocessing, frames ...).
        self.info: dict[str, Any] = dict(info or {})
        # doc_id -> message for requests whose visuals could not be read.
        self.visual_errors: dict[str, str] = {}
        # Generation appends to the right, so prompts must be padded on the left.
        if hasattr(self.tokenizer, "padding_side"):
            self.tokenizer.padding_side = "left"

    # -- identity ----------------------------------------------------------------
    def fingerprint(self) -> str:
        if self._fingerprint is None:
            self._fingerprint = fingerprint_module(self.model)
        settings = json.dumps(self.info, sort_keys=True, default=str)
        return hashlib.sha256(f"{self._fingerprint}|{settings}".encode()).hexdigest()[:16]

    @property
    def tokenizer(self) -> Any:
        return getattr(self.processor, "tokenizer", self.processor)

    # -- family hooks ------------------------------------------------------------
    def load_visuals(self, request: Request) -> Any:
        """Read the request's visuals (raise DataFileError when unreadable)."""
        raise NotImplementedError

    def encode(self, requests: Sequence[Request], visuals: Sequence[Any]) -> Mapping[str, Any]:
        """Processor outputs (left padded) for a batch whose visuals have been loaded."""
        raise NotImplementedError

    def sort_key(self, request: Request) -> tuple[int, int]:
        """Longest first (the evaluator batches in this order), so padding stays small."""
        return (-len(request.visuals), -len(request.prompt))

    # -- generation --------------------------------------------------------------
    def generate(self, requests: Sequence[Request]) -> list[str]:
        outputs: list[str | None] = [None] * len(requests)
        ready: list[tuple[int, Request, Any]] = []
        for i, request in enumerate(requests):
            try:
                ready.append((i, request, self.load_visuals(request)))
            except DataFileError as exc:
                self.visual_errors[request.doc_id] = str(exc)
                log.warning("%s %s: %s", request.task, request.doc_id, exc)
                outputs[i] = ""
        groups: dict[str, list[tuple[int, Request, Any]]] = {}
        for item in ready:
            key = json.dumps(item[1].gen_kwargs, sort_keys=True, default=str)
            groups.setdefault(key, []).append(item)
        for items in groups.values():
            texts = self._generate_batch([r for _, r, _ in items], [v for _, _, v in items])
            for (i, _, _), text in zip(items, texts, strict=True):
                outputs[i] = text
        return [o if o is not None else "" for o in outputs]

    def model_inputs(self, requests: Sequence[Request], visuals: Sequence[Any]) -> dict[str, Any]:
        """:meth:`encode` on the model's device, floating tensors in the model's dtype."""
        inputs = dict(self.encode(requests, visuals))
        for key, value in inputs.items():
            if isinstance(value, torch.Tensor):
                value = value.to(self.device)
                inputs[key] = value.to(self.model.dtype) if value.is_floating_point() else value
        return inputs

    @torch.inference_mode()
    def _generate_batch(self, requests: Sequence[Request], visuals: Sequence[Any]) -> list[str]:
        inputs = self.model_inputs(requests, visuals)
        tok = self.tokenizer
        pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        out = self.model.generate(
            **inputs, **generation_args(requests[0].gen_kwargs), pad_token_id=pad_id
        )
        new_tokens = out[:, inputs["input_ids"].shape[1] :]
        texts = tok.batch_decode(new_tokens, skip_special_tokens=True)
        return [t.strip() for t in texts]


def image_token_check(prompt_ids: torch.Tensor, token_id: int, expected: int, where: str) -> None:
    """Fail loudly when the processor did not expand image placeholders as the model needs."""
    found = int((prompt_ids == token_id).sum())
    if found != expected:
        raise HarnessError(
            f"{where}: expected {expected} image tokens in the prompt, found {found}"
        )

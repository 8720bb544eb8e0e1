"""Batched generation on transformers models: the part every family shares.

A family adapter only says how a batch of requests becomes model inputs
(:meth:`HFAdapter.encode`: load visuals, apply the chat template, run the
processor with left padding). This base class sorts, batches, moves tensors,
calls ``generate`` with the KV cache, cuts the prompt off and decodes, and
answers a request whose visuals cannot be read with a
:class:`~harness.api.requests.Failure` (stored as a failure and retried on the
next run, never scored) instead of failing the run.

The adapter's fingerprint, the key of its cached outputs, hashes every byte
of the weight and config files (:mod:`harness.digests`) together with
:meth:`HFAdapter.settings`: everything besides the weights that can change an
output (template and preprocessing, dtype, device kind, attention
implementation, library versions, CPU threads, quantization and its kernels).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from harness.api.model import VisionLanguageModel
from harness.api.requests import (
    Failure,
    Loglikelihood,
    LoglikelihoodOutput,
    LoglikelihoodRequest,
    Output,
    Request,
)
from harness.errors import DataFileError, HarnessError

log = logging.getLogger("harness.models")

DTYPES = {
    "fp16": torch.float16,
    "float16": torch.float16,
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
    "fp32": torch.float32,
    "float32": torch.float32,
}
# Files of a model folder that can change what the model outputs: weights, configs,
# tokenizer files, chat templates, remote code. Everything else (README, images) is not
# read by the loaders and is left out of the fingerprint.
FINGERPRINT_SUFFIXES = {
    ".safetensors",
    ".bin",
    ".pt",
    ".pth",
    ".json",
    ".model",
    ".txt",
    ".jinja",
    ".tiktoken",
    ".py",
}
SKIPPED_NAMES = {"training.json", "README.md"}  # records of how weights were made, not inputs


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
    """A hash of the full sha256 digests of a model folder's weight, config and tokenizer files."""
    from harness.digests import file_digest, known_digest

    digest = hashlib.sha256()
    files = sorted(
        p
        for p in Path(folder).rglob("*")
        if p.is_file()
        and p.suffix in FINGERPRINT_SUFFIXES
        and p.name not in SKIPPED_NAMES
        and ".git" not in p.relative_to(folder).parts
    )
    if not files:
        raise HarnessError(f"{folder}: no weight or config files to fingerprint")
    new = [p for p in files if known_digest(p) is None]
    size = sum(p.stat().st_size for p in new)
    if size > 64 << 20:
        log.info(
            f"hashing {len(new)} files of {folder} ({size / 1e9:.2f} GB, sha256 of every byte) "
            "for the results cache key; once per file version"
        )
    for path in files:
        digest.update(f"{path.relative_to(folder).as_posix()}:{file_digest(path)}\n".encode())
    return digest.hexdigest()[:16]


def fingerprint_module(module: torch.nn.Module) -> str:
    """A hash of every parameter and buffer (for models built in memory)."""
    digest = hashlib.sha256()
    for key, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().to("cpu").contiguous()
        digest.update(f"{key}:{tuple(t.shape)}:{t.dtype}\n".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()[:16]


def device_kind(model: torch.nn.Module) -> str:
    """``cpu``, or the accelerator model(s) the weights sit on (outputs can differ between GPUs)."""
    devices = sorted({p.device for p in model.parameters()}, key=str)
    kinds = []
    for dev in devices:
        if dev.type == "cuda":
            kinds.append(f"cuda:{torch.cuda.get_device_name(dev)}")
        elif str(dev) not in kinds:
            kinds.append(dev.type)
    return " + ".join(dict.fromkeys(kinds)) or "cpu"


def runtime_settings(model: torch.nn.Module) -> dict[str, Any]:
    """How this process runs the model: dtype, device kind, attention, libraries, threads,
    and the kernels of quantized layers. Any of them can change generated text."""
    import transformers

    config = getattr(model, "config", None)
    attention = {}
    for name in ("", "text_config", "vision_config"):
        sub = getattr(config, name, None) if name else config
        impl = getattr(sub, "_attn_implementation", None)
        if impl is not None:
            attention[name or "model"] = impl
    kind = device_kind(model)
    kernels: dict[str, int] = {}
    for module in model.modules():
        backend = getattr(module, "kernel_backend", None)
        if isinstance(backend, str):
            kernels[backend] = kernels.get(backend, 0) + 1
    settings: dict[str, Any] = {
        "dtype": str(getattr(model, "dtype", "")).removeprefix("torch."),
        "device": kind,
        "attention": attention,
        "backend": f"transformers {transformers.__version__}, torch {torch.__version__}",
    }
    if "cpu" in kind:  # CPU matmuls split work (and sums) by thread count
        settings["cpu_threads"] = torch.get_num_threads()
    if kernels:
        settings["quant_kernels"] = kernels
    return settings


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
    if gen_kwargs.get("min_new_tokens"):
        args["min_new_tokens"] = int(gen_kwargs["min_new_tokens"])
    if do_sample:
        args["temperature"] = temperature
        if gen_kwargs.get("top_p") is not None:
            args["top_p"] = float(gen_kwargs["top_p"])
    return args


def stop_strings(gen_kwargs: Mapping[str, Any]) -> list[str]:
    stop = gen_kwargs.get("stop") or []
    return [stop] if isinstance(stop, str) else list(stop)


def cut_at_stop(text: str, stops: Sequence[str]) -> str:
    """The text before the first stop string, stripped (LLaVA's eval scripts strip the output,
    drop a trailing ``stop_str`` and strip again; generation stops at its first
    occurrence, so cutting there is the same text)."""
    cut = len(text)
    for stop in stops:
        at = text.find(stop)
        if at != -1:
            cut = min(cut, at)
    return text[:cut].strip()


class StopOnStrings:
    """A ``StoppingCriteria``: a row is done once its new text contains a stop string (the
    LLaVA code bases' ``KeywordsStoppingCriteria``, per row). The first call comes after the
    first new token, so the prompt is everything before it (also when ``generate`` runs on
    ``inputs_embeds`` and its ids hold only the new tokens)."""

    def __init__(self, tokenizer: Any, stops: Sequence[str]) -> None:
        self.tokenizer = tokenizer
        self.stops = list(stops)
        self.prompt_length: int | None = None

    def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
        if self.prompt_length is None:
            self.prompt_length = input_ids.shape[1] - 1
        texts = self.tokenizer.batch_decode(
            input_ids[:, self.prompt_length :], skip_special_tokens=True
        )
        done = [any(s in t for s in self.stops) for t in texts]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


class HFAdapter(VisionLanguageModel):
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
        # Generation appends to the right, so prompts must be padded on the left.
        if hasattr(self.tokenizer, "padding_side"):
            self.tokenizer.padding_side = "left"

    # -- identity ----------------------------------------------------------------
    def weights_fingerprint(self) -> str:
        """The hash of the weights alone (files as loaded, or the in-memory parameters)."""
        if self._fingerprint is None:
            self._fingerprint = fingerprint_module(self.model)
        return self._fingerprint

    def settings(self) -> dict[str, Any]:
        """Everything besides the weights that can change an output; part of the fingerprint."""
        out = {**self.info, "runtime": runtime_settings(self.model)}
        profile = getattr(self, "profile", None)
        if profile is not None:
            out["profile"] = profile.settings()
        return out

    def fingerprint(self) -> str:
        settings = json.dumps(self.settings(), sort_keys=True, default=str)
        return hashlib.sha256(f"{self.weights_fingerprint()}|{settings}".encode()).hexdigest()[:16]

    @property
    def tokenizer(self) -> Any:
        return getattr(self.processor, "tokenizer", self.processor)

    # -- family hooks ------------------------------------------------------------
    def load_visuals(self, request: Request) -> Any:
        """Read the request's visuals (raise DataFileError when unreadable)."""
        raise NotImplementedError

    def encode(
        self,
        requests: Sequence[Request | LoglikelihoodRequest],
        visuals: Sequence[Any],
        continuations: Sequence[str] | None = None,
    ) -> Mapping[str, Any]:
        """Processor outputs (left padded) for a batch whose visuals have been loaded; with
        ``continuations``, each prompt (chat template and generation prompt applied) is
        followed by its continuation text, as likelihood scoring needs."""
        raise NotImplementedError

    def sort_key(self, request: Request | LoglikelihoodRequest) -> tuple[int, int]:
        """Longest first (the evaluator batches in this order), so padding stays small."""
        return (-len(request.visuals), -len(request.prompt))

    def _with_visuals(
        self, requests: Sequence[Any], outputs: list[Any]
    ) -> list[tuple[int, Any, Any]]:
        """``(index, request, visuals)`` of the requests whose visuals could be read; each
        other request's slot in ``outputs`` gets a Failure naming the unreadable file."""
        ready = []
        for i, request in enumerate(requests):
            try:
                ready.append((i, request, self.load_visuals(request)))
            except DataFileError as exc:
                outputs[i] = Failure(str(exc))
        return ready

    # -- generation --------------------------------------------------------------
    def generate(self, requests: Sequence[Request]) -> list[Output]:
        outputs: list[Output | None] = [None] * len(requests)
        ready = self._with_visuals(requests, outputs)
        groups: dict[str, list[tuple[int, Request, Any]]] = {}
        for item in ready:
            key = json.dumps(item[1].gen_kwargs, sort_keys=True, default=str)
            groups.setdefault(key, []).append(item)
        for items in groups.values():
            texts = self._generate_batch([r for _, r, _ in items], [v for _, _, v in items])
            for (i, _, _), text in zip(items, texts, strict=True):
                outputs[i] = text
        assert all(o is not None for o in outputs)
        return outputs  # type: ignore[return-value]

    # -- likelihood ---------------------------------------------------------------
    # Whether forward() needs left-padding-aware position ids from us (Llama-style decoders
    # count positions from 0 at the pad; Qwen2-VL and VILA's wrapper compute their own).
    pass_position_ids = True

    @torch.inference_mode()
    def loglikelihood(self, requests: Sequence[LoglikelihoodRequest]) -> list[LoglikelihoodOutput]:
        """Summed log-probability of each continuation after its prompt, in one forward pass
        per batch (left padded, positions counted from each row's first token, so a row's
        numbers do not depend on the batch).

        The continuation's tokens are the last ``len(prompt + continuation) - len(prompt)``
        tokens of the whole text tokenized together, as lm-evaluation-harness splits them.
        """
        outputs: list[LoglikelihoodOutput | None] = [None] * len(requests)
        ready = self._with_visuals(requests, outputs)
        if ready:
            batch = [r for _, r, _ in ready]
            visuals = [v for _, _, v in ready]
            context = self.model_inputs(batch, visuals)
            whole = self.model_inputs(batch, visuals, [r.continuation for r in batch])
            added = whole["attention_mask"].sum(1) - context["attention_mask"].sum(1)
            logits = self.forward_logits(whole)
            width = whole["input_ids"].shape[1]
            for row, (i, request, _) in enumerate(ready):
                n = int(added[row])
                if n < 1:
                    raise HarnessError(
                        f"model {self.name}: continuation {request.continuation!r} of "
                        f"{request.task} {request.doc_id!r} adds no token to the prompt"
                    )
                targets = whole["input_ids"][row, width - n :]
                logprobs = torch.log_softmax(logits[row, width - n - 1 : width - 1].float(), -1)
                picked = logprobs.gather(-1, targets[:, None]).sum()
                greedy = bool((logprobs.argmax(-1) == targets).all())
                outputs[i] = Loglikelihood(float(picked), greedy)
        assert all(o is not None for o in outputs)
        return outputs  # type: ignore[return-value]

    @torch.inference_mode()
    def next_token_logprobs(self, requests: Sequence[Request]) -> torch.Tensor:
        """``[len(requests), vocab]`` fp32 log-probabilities of the first answer token: the
        distribution greedy generation picks its first token from (same template,
        preprocessing and left-padded positions). Unreadable visuals raise DataFileError."""
        visuals = [self.load_visuals(r) for r in requests]
        logits = self.forward_logits(self.model_inputs(requests, visuals))
        return torch.log_softmax(logits[:, -1].float(), -1)

    def forward_logits(self, inputs: Mapping[str, Any]) -> torch.Tensor:
        """Next-token logits ``[batch, length, vocab]`` for model inputs (left padded)."""
        kwargs = dict(inputs)
        if self.pass_position_ids:
            kwargs["position_ids"] = positions_from_mask(kwargs["attention_mask"])
        return self.model(**kwargs).logits

    def model_inputs(
        self,
        requests: Sequence[Request | LoglikelihoodRequest],
        visuals: Sequence[Any],
        continuations: Sequence[str] | None = None,
    ) -> dict[str, Any]:
        """:meth:`encode` on the model's device, floating tensors in the model's dtype."""
        inputs = dict(
            self.encode(requests, visuals, continuations)
            if continuations is not None
            else self.encode(requests, visuals)
        )
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
        gen_kwargs = requests[0].gen_kwargs
        args = generation_args(gen_kwargs)
        stops = stop_strings(gen_kwargs)
        width = inputs["input_ids"].shape[1]
        if stops:
            from transformers import StoppingCriteriaList

            args["stopping_criteria"] = StoppingCriteriaList([StopOnStrings(tok, stops)])
        if args["do_sample"]:
            # seeded before every batch: the same batches give the same samples
            torch.manual_seed(int(gen_kwargs.get("seed", 0)))
        out = self.model.generate(**inputs, **args, pad_token_id=pad_id)
        texts = tok.batch_decode(out[:, width:], skip_special_tokens=True)
        return [cut_at_stop(t, stops) for t in texts]


def positions_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Left-padding-aware position ids: each sequence starts at 0 at its first real token."""
    positions = attention_mask.long().cumsum(-1) - 1
    return positions.clamp(min=0)


def image_token_check(prompt_ids: torch.Tensor, token_id: int, expected: int, where: str) -> None:
    """Fail loudly when the processor did not expand image placeholders as the model needs."""
    found = int((prompt_ids == token_id).sum())
    if found != expected:
        raise HarnessError(
            f"{where}: expected {expected} image tokens in the prompt, found {found}"
        )

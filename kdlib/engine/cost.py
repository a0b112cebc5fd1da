"""What a distillation will cost before it starts: a FLOP count and the time it means on this device.

FLOPs of one encoder forward over `tokens` tokens in sequences of `seq_len` (multiply-add = 2 FLOPs):

    per token and layer: 2 * (4 H^2 + 2 H I)   Q, K, V, output projections and the feed-forward
                       + 4 * seq_len * H       attention scores (Q K^T) and their weighted sum (A V)
    vocabulary head, at the `head_tokens` positions it is computed on: 2 * (H^2 + H V)

A training step is about 3 forwards (forward + backward), a frozen teacher 1. Embedding look-ups,
softmax, norms and the losses are ignored (a few percent). The expected time divides the FLOPs by
the device's peak (a table of GPU peaks for the autocast precision; on CPU a short matmul measurement)
times `UTILISATION`, the share of peak such loops reach in practice (0.3 is typical for BERT-base
training with mixed precision on one GPU; tiny models on CPU reach less).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

UTILISATION = 0.3
# dense fp16/bf16 tensor-core peak (FLOP/s) by a substring of torch.cuda.get_device_name(); fp32 is far lower
GPU_PEAK_HALF = {
    "T4": 65e12,
    "L4": 121e12,
    "A10G": 125e12,
    "A10": 125e12,
    "V100": 125e12,
    "A100": 312e12,
    "L40": 181e12,
    "H100": 989e12,
    "H200": 989e12,
    "RTX 4090": 165e12,
    "RTX 3090": 71e12,
}


@dataclass(frozen=True)
class EncoderShape:
    """The sizes of a BERT-like encoder that set its cost."""

    layers: int
    hidden: int
    intermediate: int
    vocab: int

    @classmethod
    def of(cls, model: torch.nn.Module) -> "EncoderShape":
        """From a transformers config (BERT names, or DistilBERT's n_layers / dim / hidden_dim)."""
        c = model.config
        get = lambda *names: next(getattr(c, n) for n in names if hasattr(c, n))  # noqa: E731
        return cls(
            get("num_hidden_layers", "n_layers"),
            get("hidden_size", "dim"),
            get("intermediate_size", "hidden_dim"),
            get("vocab_size"),
        )


def forward_flops(shape: EncoderShape, tokens: float, seq_len: float, head_tokens: float) -> float:
    """FLOPs of one forward over `tokens` tokens (sequences of `seq_len`), the head on `head_tokens` of them."""
    h, i = shape.hidden, shape.intermediate
    per_token_layer = 2 * (4 * h * h + 2 * h * i) + 4 * seq_len * h
    return tokens * shape.layers * per_token_layer + head_tokens * 2 * (h * h + h * shape.vocab)


def distill_step_flops(
    teachers: list[EncoderShape], students: list[EncoderShape], *, texts: int, seq_len: float, head_share: float
) -> float:
    """FLOPs of one optimizer step: each teacher one forward, each student forward + backward (x3), over
    `texts` sequences of `seq_len` tokens, vocabulary heads on `head_share` of the tokens."""
    tokens = texts * seq_len
    head = tokens * head_share
    return sum(forward_flops(t, tokens, seq_len, head) for t in teachers) + 3 * sum(
        forward_flops(s, tokens, seq_len, head) for s in students
    )


def peak_flops(device: torch.device, half: bool) -> float | None:
    """Peak FLOP/s of `device`: GPU table for half precision (None for an unknown GPU or fp32), a measured
    matmul rate on CPU."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        return next((v for k, v in GPU_PEAK_HALF.items() if k in name), None) if half else None
    if device.type != "cpu":
        return None
    a = torch.full((256, 256), 0.5)  # not randn: the estimate must not move the global RNG
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < 0.05:
        a @ a
        n += 1
    return n * 2 * 256**3 / (time.perf_counter() - t0)


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else device.type


def expected_seconds(flops: float, device: torch.device, half: bool) -> float | None:
    """`flops` / (peak x UTILISATION), or None when the device's peak is unknown."""
    peak = peak_flops(device, half)
    return None if not peak else flops / (peak * UTILISATION)


def describe(flops: float, seconds: float | None, device: torch.device) -> str:
    """One line: the FLOP count, the device name and the expected time."""
    eta = "unknown peak, no time estimate" if seconds is None else f"about {_hours(seconds)}"
    return f"{flops:.2e} FLOP on {device_name(device)}: {eta} at {UTILISATION:.0%} of peak"


def _hours(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"

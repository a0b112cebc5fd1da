"""The one optimiser set-up of every training loop (distillation, teacher pretraining, fine-tuning).

AdamW with decoupled weight decay on the weight matrices only: a parameter with fewer than two
dimensions (every bias, every LayerNorm weight and bias) gets no decay. The rule is by dimension, not
by name, so it holds for any architecture (BERT's ``LayerNorm.weight``, DistilBERT's
``sa_layer_norm.weight``, a task head's bias) without a list of names to keep up to date; for BERT and
DistilBERT it selects exactly the parameters the usual name rule ("bias", "LayerNorm.weight") selects.
The learning rate warms up linearly, then decays linearly to 0 (transformers'
``get_linear_schedule_with_warmup``).
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import get_linear_schedule_with_warmup


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two AdamW groups: matrices (ndim >= 2) with `weight_decay`, everything else without."""
    params = list(model.parameters())
    return [
        {"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
    ]


def make_adamw(
    model: nn.Module,
    *,
    lr: float,
    weight_decay: float,
    warmup_steps: int,
    total_steps: int,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
):
    """(AdamW over `param_groups`, linear warmup/decay schedule over `total_steps` optimizer steps)."""
    optimizer = torch.optim.AdamW(param_groups(model, weight_decay), lr=lr, betas=betas, eps=eps)
    return optimizer, get_linear_schedule_with_warmup(optimizer, warmup_steps, total_steps)

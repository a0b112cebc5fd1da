"""Distillation loss terms and MLM masking, as pure functions on tensors (each hand-checkable).

The DistilBERT recipe (Sanh et al. 2019; HF `research_projects/distillation/distiller.py`):
``L = alpha_ce * T^2 * KL(teacher_T || student_T) + alpha_mlm * MLM + alpha_cos * (1 - cos)``.
Every loss takes already-selected rows (positions) and, by default, averages over them; `normalizer`
replaces the row count (the training loop passes the count over the *global* batch so that DDP and
one process give the same gradients).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

# action codes for masked units (tokens or words)
KEEP_UNMASKED, MASK, RANDOM, KEEP = 0, 1, 2, 3


def _norm(n_rows: int, normalizer: float | None) -> float:
    return float(max(n_rows, 1) if normalizer is None else normalizer)


def kd_kl_loss(
    student_logits: torch.Tensor,
    teacher_probs: torch.Tensor,
    temperature: float,
    normalizer: float | None = None,
    row_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """T^2 * KL(teacher_T || student_T), summed over rows and divided by the row count (batchmean).

    `student_logits` (N, V) raw logits; `teacher_probs` (N, V) teacher distributions already softened
    at `temperature` (softmax(t / T), or an average/projection of several). Equals HF's
    ``KLDivLoss(reduction='batchmean')(log_softmax(s/T), softmax(t/T)) * T**2`` on the selected rows.
    `row_weights` (N,) weight each row's KL (e.g. a projected row's mapped mass); None = 1.
    """
    if student_logits.shape != teacher_probs.shape:
        raise ValueError(f"kd_kl_loss: student {tuple(student_logits.shape)} vs teacher {tuple(teacher_probs.shape)}")
    log_q = F.log_softmax(student_logits.float() / temperature, dim=-1)
    if row_weights is None:
        kl = F.kl_div(log_q, teacher_probs.float(), reduction="sum")
    else:
        kl = (F.kl_div(log_q, teacher_probs.float(), reduction="none").sum(-1) * row_weights.float()).sum()
    return kl * temperature**2 / _norm(student_logits.shape[0], normalizer)


def soft_probs(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """softmax(logits / T) in fp32: the teacher's softened distribution."""
    return F.softmax(logits.float() / temperature, dim=-1)


def mlm_loss(logits: torch.Tensor, labels: torch.Tensor, normalizer: float | None = None) -> torch.Tensor:
    """Cross-entropy on positions whose label is not -100, averaged over them (or / normalizer)."""
    logits = logits.reshape(-1, logits.shape[-1]).float()
    labels = labels.reshape(-1)
    ce = F.cross_entropy(logits, labels, ignore_index=-100, reduction="sum")
    return ce / _norm(int((labels != -100).sum()), normalizer)


def cosine_loss(
    student_hidden: torch.Tensor, teacher_hidden: torch.Tensor, normalizer: float | None = None
) -> torch.Tensor:
    """Mean of (1 - cos(s_i, t_i)) over rows: CosineEmbeddingLoss with target 1 (HF's L_cos)."""
    if student_hidden.shape != teacher_hidden.shape:
        raise ValueError(
            f"cosine_loss: student {tuple(student_hidden.shape)} vs teacher {tuple(teacher_hidden.shape)}; "
            "hidden sizes must match for the cosine term (set alpha_cos=0 otherwise)"
        )
    cos = F.cosine_similarity(student_hidden.float(), teacher_hidden.float(), dim=-1)
    return (1.0 - cos).sum() / _norm(student_hidden.shape[0], normalizer)


# --------------------------------------------------------------------------------------------- masking
def smoothing_weights(counts: torch.Tensor, smoothing: float = 0.7) -> torch.Tensor:
    """XLM/DistilBERT masking weights: count^-smoothing (rare units are masked more often)."""
    return counts.clamp(min=1).float() ** (-smoothing)


def sample_mask_actions(
    weights: torch.Tensor, prob: float, generator: torch.Generator, split: tuple[float, float, float] = (0.8, 0.1, 0.1)
) -> torch.Tensor:
    """Pick ceil(prob * #candidates) units and an action for each: MASK / RANDOM / KEEP (80/10/10).

    `weights` (n,) >= 0; zero-weight units are never picked (pad, special tokens). Sampling is without
    replacement, proportional to the weights (uniform weights = plain 15% masking), as HF's distiller does.
    Returns (n,) int64 codes: 0 untouched, 1 [MASK], 2 random token, 3 kept but predicted.
    """
    weights = weights.float()
    n_cand = int((weights > 0).sum())
    actions = torch.zeros(weights.shape[0], dtype=torch.long)
    if n_cand == 0:
        return actions
    n_tgt = min(n_cand, max(1, math.ceil(prob * n_cand)))
    picked = torch.multinomial(weights / weights.sum(), n_tgt, replacement=False, generator=generator)
    u = torch.rand(n_tgt, generator=generator)
    kind = torch.full((n_tgt,), KEEP, dtype=torch.long)
    kind[u < split[0] + split[1]] = RANDOM
    kind[u < split[0]] = MASK
    actions[picked] = kind
    return actions


def apply_mask_actions(
    input_ids: torch.Tensor,
    unit_index: torch.Tensor,
    actions: torch.Tensor,
    mask_token_id: int,
    vocab_size: int,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply per-unit actions to every token of each unit; return (masked input_ids, MLM labels).

    `unit_index` has the shape of `input_ids` and gives each token's unit (word or token) number in
    `actions`, or -1 for tokens that are never masked (special tokens, padding).
    """
    act = torch.where(unit_index >= 0, actions[unit_index.clamp(min=0)], torch.zeros_like(unit_index))
    labels = torch.where(act != KEEP_UNMASKED, input_ids, torch.full_like(input_ids, -100))
    out = input_ids.clone()
    out[act == MASK] = mask_token_id
    rand_pos = act == RANDOM
    out[rand_pos] = torch.randint(vocab_size, (int(rand_pos.sum()),), generator=generator)
    return out, labels


def mask_tokens(
    input_ids: torch.Tensor,
    special_mask: torch.Tensor,
    *,
    mask_token_id: int,
    vocab_size: int,
    generator: torch.Generator,
    prob: float = 0.15,
    token_weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token-level 15% masking with 80/10/10 (the single-tokenizer DistilBERT recipe).

    `special_mask` is True at special tokens and padding (never masked). `token_weights` (V,) gives
    per-vocabulary masking weights (e.g. `smoothing_weights(counts)`); None = uniform.
    Returns (masked input_ids, labels with -100 at unmasked positions).
    """
    flat = input_ids.reshape(-1)
    w = torch.ones(flat.shape[0]) if token_weights is None else token_weights[flat].float()
    w = w * (~special_mask.reshape(-1)).float()
    actions = sample_mask_actions(w, prob, generator)
    units = torch.arange(flat.shape[0]).reshape(input_ids.shape)
    return apply_mask_actions(input_ids, units, actions, mask_token_id, vocab_size, generator)

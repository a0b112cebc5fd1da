"""Distillation loss terms, as pure functions on tensors (each hand-checkable); masking is in kdlib.engine.mlm.

The DistilBERT recipe (Sanh et al. 2019; HF `research_projects/distillation/distiller.py`):
``L = alpha_ce * T^2 * KL(teacher_T || student_T) + alpha_mlm * MLM + alpha_cos * (1 - cos)``.
Every loss takes already-selected rows (positions) and, by default, averages over them; `normalizer`
replaces the row count (the training loop passes the count over the *global* batch so that DDP and
one process give the same gradients).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


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

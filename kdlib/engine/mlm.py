"""Masked-LM mechanics: which tokens are masked (the one masking implementation of the engine), and
vocabulary logits at selected positions only.

Masking (`sample_mask_actions`, `apply_mask_actions`) works on units, tokens or whole words: pick
ceil(prob * #candidates) units without replacement, in proportion to their weights (HF's distiller;
`smoothing_weights` masks rare units more often), then 80% [MASK], 10% random token, 10% kept.
`kdlib.engine.batching.make_batch` masks words with it (the same words in every tokenizer's view);
`mask_tokens` masks single tokens.

With small models and a vocabulary of 8k+ tokens the output head (hidden x vocab) costs more than
the encoder, yet masked-LM training and distillation only need logits at a few positions (the ~15%
masked ones). `logits_at` therefore runs the encoder on the whole batch and the head on the chosen
(row, position) pairs only; the values are those of the full model at those positions.

Known architectures are split into encoder + head (BERT, DistilBERT, RoBERTa/XLM-R/CamemBERT-style
``roberta`` + ``lm_head``); any other masked LM falls back to the full forward, then picks the rows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

# action codes for masked units (tokens or words)
KEEP_UNMASKED, MASK, RANDOM, KEEP = 0, 1, 2, 3
Encoder = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Head = Callable[[torch.Tensor], torch.Tensor]


def split_masked_lm(model: nn.Module) -> tuple[Encoder, Head] | None:
    """(encoder(input_ids, attention_mask) -> last hidden state (B, L, H), head(hidden (N, H)) -> logits (N, V)),
    or None for an architecture not known here (callers then run the full model)."""
    from transformers import BertForMaskedLM, DistilBertForMaskedLM

    if isinstance(model, BertForMaskedLM):
        return (lambda ids, am: model.bert(input_ids=ids, attention_mask=am)[0]), model.cls
    if isinstance(model, DistilBertForMaskedLM):

        def distilbert_head(hidden: torch.Tensor) -> torch.Tensor:  # DistilBertForMaskedLM.forward's head
            x = model.activation(model.vocab_transform(hidden))
            return model.vocab_projector(model.vocab_layer_norm(x))

        return (lambda ids, am: model.distilbert(input_ids=ids, attention_mask=am)[0]), distilbert_head
    if (
        type(model).__name__.endswith("ForMaskedLM")
        and isinstance(getattr(model, "roberta", None), nn.Module)
        and isinstance(getattr(model, "lm_head", None), nn.Module)
    ):  # RoBERTa, XLM-R, CamemBERT
        return (lambda ids, am: model.roberta(input_ids=ids, attention_mask=am)[0]), model.lm_head
    return None


def logits_at(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    rows_b: torch.Tensor,
    rows_p: torch.Tensor,
    output_hidden: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Vocabulary logits (N, V) at positions (rows_b[i], rows_p[i]), and the last hidden state (B, L, H)
    when `output_hidden` (else None). The head runs on those N positions only where the model is known."""
    parts = split_masked_lm(model)
    if parts is None:
        out = model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=output_hidden)
        return out.logits[rows_b, rows_p], (out.hidden_states[-1] if output_hidden else None)
    encoder, head = parts
    hidden = encoder(input_ids, attention_mask)
    return head(hidden[rows_b, rows_p]), (hidden if output_hidden else None)


class SelectedMLM(nn.Module):
    """A masked LM whose forward returns logits at chosen positions only (`logits_at`).

    Wrap this (not the bare model) in DistributedDataParallel so that DDP's hooks see the forward;
    every parameter of the model, head included, still takes part in it.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        rows_b: torch.Tensor,
        rows_p: torch.Tensor,
        output_hidden: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        return logits_at(self.model, input_ids, attention_mask, rows_b, rows_p, output_hidden)


@dataclass
class RowLogits:
    """Logits computed at some positions of a (B, L) batch: `logits` (N, V) and `index` (B, L), the row of
    `logits` for each position or -1 where none was computed. `at` looks positions up."""

    logits: torch.Tensor
    index: torch.Tensor  # on the CPU, like the plans' position tensors: lookups need no device sync

    @classmethod
    def of(
        cls, logits: torch.Tensor, rows_b: torch.Tensor, rows_p: torch.Tensor, shape: tuple[int, int]
    ) -> "RowLogits":
        index = torch.full(shape, -1, dtype=torch.long)
        index[rows_b.cpu(), rows_p.cpu()] = torch.arange(rows_b.shape[0])
        return cls(logits, index)

    def at(self, rows_b: torch.Tensor, rows_p: torch.Tensor) -> torch.Tensor:
        """Logits (n, V) at positions (rows_b[i], rows_p[i]); raises if one of them was not computed."""
        rows = self.index[rows_b.cpu(), rows_p.cpu()]
        if bool((rows < 0).any()):
            missing = int((rows < 0).sum())
            raise ValueError(
                f"RowLogits.at: {missing} of {rows.shape[0]} requested positions have no logits "
                f"(computed at {self.logits.shape[0]} positions)"
            )
        return self.logits[rows.to(self.logits.device)]


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

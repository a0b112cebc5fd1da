"""Masked-LM vocabulary logits at selected positions only.

With small models and a vocabulary of 8k+ tokens the output head (hidden x vocab) costs more than
the encoder, yet masked-LM training and distillation only need logits at a few positions (the ~15%
masked ones). `logits_at` therefore runs the encoder on the whole batch and the head on the chosen
(row, position) pairs only; the values are those of the full model at those positions.

Known architectures are split into encoder + head (BERT, DistilBERT, RoBERTa/XLM-R/CamemBERT-style
``roberta`` + ``lm_head``); any other masked LM falls back to the full forward, then picks the rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

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

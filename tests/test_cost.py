"""kdlib.engine.cost: the FLOP count of an encoder forward matches torch's own count on a real (tiny) BERT."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode
from transformers import BertConfig, BertForMaskedLM

from kdlib.engine.cost import EncoderShape, distill_step_flops, forward_flops
from kdlib.engine.mlm import logits_at


@pytest.mark.parametrize("seq_len, n_rows", [(16, 5), (40, 30)])
def test_forward_flops_match_torch_flop_counter(seq_len, n_rows):
    cfg = BertConfig(
        vocab_size=300,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        attn_implementation="eager",
    )
    model = BertForMaskedLM(cfg).eval()
    ids = torch.randint(5, 300, (3, seq_len))
    rows_b, rows_p = torch.arange(n_rows) % 3, torch.arange(n_rows) % seq_len
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        logits_at(model, ids, torch.ones_like(ids), rows_b, rows_p)
    counted = counter.get_total_flops()
    ours = forward_flops(EncoderShape.of(model), tokens=3 * seq_len, seq_len=seq_len, head_tokens=n_rows)
    assert ours == pytest.approx(counted, rel=0.01)


def test_step_flops_add_teachers_once_and_students_three_times():
    t = EncoderShape(layers=12, hidden=768, intermediate=3072, vocab=50000)
    s = EncoderShape(layers=6, hidden=768, intermediate=3072, vocab=50000)
    one = forward_flops(t, 1000, 40, 150)
    assert distill_step_flops([t], [s], texts=25, seq_len=40, head_share=0.15) == pytest.approx(
        one + 3 * forward_flops(s, 1000, 40, 150)
    )
    # BERT-base: ~2 x 85M non-embedding parameters per token, plus attention
    assert forward_flops(t, 1, 40, 0) == pytest.approx(2 * 12 * (12 * 768**2) + 4 * 40 * 768 * 12)

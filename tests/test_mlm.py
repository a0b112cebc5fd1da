"""kdlib.engine.mlm: the masking rules (15%, 80/10/10, weights), and vocabulary logits at selected positions
equal the full model's logits there."""

from __future__ import annotations

import math

import pytest
import torch

from kdlib.engine.mlm import (
    KEEP,
    KEEP_UNMASKED,
    MASK,
    RANDOM,
    RowLogits,
    SelectedMLM,
    apply_mask_actions,
    logits_at,
    mask_tokens,
    sample_mask_actions,
    smoothing_weights,
    split_masked_lm,
)

V, H = 300, 32


def bert():
    from transformers import BertConfig, BertForMaskedLM

    return BertForMaskedLM(
        BertConfig(
            vocab_size=V,
            hidden_size=H,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=64,
        )
    )


def distilbert():
    from transformers import DistilBertConfig, DistilBertForMaskedLM

    return DistilBertForMaskedLM(
        DistilBertConfig(vocab_size=V, dim=H, n_layers=2, n_heads=2, hidden_dim=64, max_position_embeddings=64)
    )


def roberta():
    from transformers import RobertaConfig, RobertaForMaskedLM

    return RobertaForMaskedLM(
        RobertaConfig(
            vocab_size=V,
            hidden_size=H,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=70,
        )
    )


class Opaque(torch.nn.Module):
    """A masked LM kdlib.engine.mlm does not know: only the full forward works (the generic fallback)."""

    def __init__(self):
        super().__init__()
        self.inner = bert()

    def forward(self, **kw):
        return self.inner(**kw)


def batch(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, V, (4, 12), generator=g)
    am = torch.ones_like(ids)
    am[1, 7:] = 0
    am[3, 3:] = 0
    ids[am == 0] = 0
    b, p = torch.nonzero((torch.rand(ids.shape, generator=g) < 0.3) & am.bool(), as_tuple=True)
    return ids, am, b, p


@pytest.mark.parametrize("make", [bert, distilbert, roberta, Opaque])
def test_selected_logits_equal_full_model_logits(make):
    torch.manual_seed(0)
    model = make().eval()
    assert (split_masked_lm(model) is None) == (make is Opaque)
    ids, am, b, p = batch()
    with torch.no_grad():
        full = model(input_ids=ids, attention_mask=am, output_hidden_states=True)
        logits, hidden = logits_at(model, ids, am, b, p, output_hidden=True)
        only, none = SelectedMLM(model)(ids, am, b, p)
    assert logits.shape == (b.shape[0], V) and none is None
    torch.testing.assert_close(logits, full.logits[b, p], atol=1e-5, rtol=0)
    torch.testing.assert_close(only, full.logits[b, p], atol=1e-5, rtol=0)
    torch.testing.assert_close(hidden, full.hidden_states[-1], atol=1e-5, rtol=0)


@pytest.mark.parametrize("make", [bert, distilbert])
def test_every_parameter_gets_a_gradient(make):
    """DDP needs every parameter in the forward: the head runs (on the selected rows), so all are used."""
    model = make().train()
    ids, am, b, p = batch(1)
    logits, hidden = SelectedMLM(model)(ids, am, b, p, output_hidden=True)
    (logits.float().logsumexp(-1).sum() + hidden.sum()).backward()
    missing = [n for n, q in model.named_parameters() if q.requires_grad and q.grad is None]
    assert not missing


def test_row_logits_lookup_and_missing_rows():
    ids, am, b, p = batch(2)
    logits = torch.randn(b.shape[0], 7)
    rl = RowLogits.of(logits, b, p, tuple(ids.shape))
    perm = torch.randperm(b.shape[0])
    torch.testing.assert_close(rl.at(b[perm], p[perm]), logits[perm])
    absent = torch.nonzero(rl.index < 0, as_tuple=True)
    with pytest.raises(ValueError, match="no logits"):
        rl.at(absent[0][:1], absent[1][:1])


# ----------------------------------------------------------------------------------------- masking
def test_sample_mask_actions_count_split_and_zero_weights():
    g = torch.Generator().manual_seed(0)
    w = torch.ones(10_000)
    w[:1000] = 0  # never-maskable units
    act = sample_mask_actions(w, 0.15, g)
    picked = act != KEEP_UNMASKED
    assert int(picked.sum()) == math.ceil(0.15 * 9000)
    assert not picked[:1000].any()
    n = picked.sum().item()
    frac = {k: (act == k).sum().item() / n for k in (MASK, RANDOM, KEEP)}
    assert abs(frac[MASK] - 0.8) < 0.04 and abs(frac[RANDOM] - 0.1) < 0.03 and abs(frac[KEEP] - 0.1) < 0.03
    again = sample_mask_actions(w, 0.15, torch.Generator().manual_seed(0))
    assert torch.equal(act, again)


def test_mask_tokens_labels_and_special_tokens():
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, 100, (4, 50))
    special = torch.zeros_like(ids, dtype=torch.bool)
    special[:, 0] = special[:, -1] = True
    masked, labels = mask_tokens(ids, special, mask_token_id=4, vocab_size=100, generator=g, prob=0.15)
    sel = labels != -100
    assert int(sel.sum()) == math.ceil(0.15 * 4 * 48)
    assert not sel[special].any()
    assert torch.equal(labels[sel], ids[sel])  # labels are the original tokens
    assert torch.equal(masked[~sel], ids[~sel])  # untouched elsewhere
    assert (masked[sel] == 4).float().mean() > 0.6  # ~80% [MASK]


def test_smoothing_masks_rare_tokens_more_often():
    counts = torch.tensor([1000.0, 1.0])
    w = smoothing_weights(counts, 0.7)
    assert abs(w[1].item() / w[0].item() - 1000**0.7) < 1e-2
    ids = torch.tensor([[0] * 50 + [1] * 50])
    hits = torch.zeros(2)
    for seed in range(20):
        _, labels = mask_tokens(
            ids,
            torch.zeros_like(ids, dtype=torch.bool),
            mask_token_id=4,
            vocab_size=10,
            generator=torch.Generator().manual_seed(seed),
            prob=0.15,
            token_weights=w,
        )
        sel = labels[0] != -100
        hits += torch.tensor([sel[:50].sum().item(), sel[50:].sum().item()])
    assert hits[1] > 5 * hits[0]


def test_apply_mask_actions_acts_on_whole_units():
    """Every token of a picked unit (word) gets its action; tokens outside any unit (-1) are never touched."""
    ids = torch.tensor([[10, 11, 12, 13, 0]])
    units = torch.tensor([[-1, 0, 0, 1, -1]])  # [CLS], a two-piece word, a one-piece word, pad
    out, labels = apply_mask_actions(ids, units, torch.tensor([MASK, KEEP]), 4, 50, torch.Generator())
    assert out.tolist() == [[10, 4, 4, 13, 0]] and labels.tolist() == [[-100, 11, 12, 13, -100]]

"""kdlib.engine.mlm: vocabulary logits at selected positions equal the full model's logits there."""

from __future__ import annotations

import pytest
import torch

from kdlib.engine.mlm import RowLogits, SelectedMLM, logits_at, split_masked_lm

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

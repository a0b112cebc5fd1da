"""Loss terms against hand computations on small tensors, and the masking rules (15%, 80/10/10)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from kdlib.engine.losses import (
    KEEP,
    KEEP_UNMASKED,
    MASK,
    RANDOM,
    cosine_loss,
    kd_kl_loss,
    mask_tokens,
    mlm_loss,
    sample_mask_actions,
    smoothing_weights,
    soft_probs,
)


def test_kd_kl_equals_hand_computation():
    s = torch.tensor([[1.0, 0.0, -1.0], [0.5, 0.5, 2.0]])
    t = torch.tensor([[2.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    T = 2.0
    hand = 0.0
    for i in range(2):
        p = [math.exp(x / T) for x in t[i].tolist()]
        p = [x / sum(p) for x in p]
        q = [math.exp(x / T) for x in s[i].tolist()]
        q = [x / sum(q) for x in q]
        hand += sum(pi * (math.log(pi) - math.log(qi)) for pi, qi in zip(p, q))
    hand = hand / 2 * T * T
    got = kd_kl_loss(s, soft_probs(t, T), T)
    assert abs(got.item() - hand) < 1e-6
    # the HF distiller's formula on the selected rows
    hf = torch.nn.KLDivLoss(reduction="batchmean")(F.log_softmax(s / T, -1), F.softmax(t / T, -1)) * T**2
    assert torch.allclose(got, hf)
    # a global normaliser replaces the row count
    assert abs(kd_kl_loss(s, soft_probs(t, T), T, normalizer=4).item() - hand / 2) < 1e-6
    # identical distributions: zero
    assert kd_kl_loss(t, soft_probs(t, T), T).abs().item() < 1e-6


def test_mlm_loss_only_on_labelled_positions():
    logits = torch.tensor([[[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]], [[0.0, 0.0, 3.0], [1.0, 1.0, 1.0]]])
    labels = torch.tensor([[0, -100], [1, -100]])
    lse0 = math.log(math.exp(2) + 2)
    lse2 = math.log(math.exp(3) + 2)
    hand = ((lse0 - 2.0) + (lse2 - 0.0)) / 2
    assert abs(mlm_loss(logits, labels).item() - hand) < 1e-6


def test_cosine_loss_equals_hand_and_torch():
    a = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 2.0]])
    b = torch.tensor([[0.0, 1.0], [2.0, 2.0], [0.0, -1.0]])
    hand = ((1 - 0.0) + (1 - 1.0) + (1 - (-1.0))) / 3
    assert abs(cosine_loss(a, b).item() - hand) < 1e-6
    ref = torch.nn.CosineEmbeddingLoss()(a, b, torch.ones(3))
    assert torch.allclose(cosine_loss(a, b), ref)


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

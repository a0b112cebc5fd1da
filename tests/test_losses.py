"""Loss terms against hand computations on small tensors."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from kdlib.engine.losses import cosine_loss, kd_kl_loss, mlm_loss, soft_probs


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

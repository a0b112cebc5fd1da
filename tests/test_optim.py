"""kdlib.engine.optim: the one no-decay rule (by dimension) and the schedule every loop uses."""

from __future__ import annotations

import pytest
import torch
from transformers import BertConfig, BertForMaskedLM, DistilBertConfig, DistilBertForMaskedLM

from kdlib.engine.optim import make_adamw, param_groups
from kdlib.eval.finetune import TaskModel

# the name rules the loops used before (teachers: BERT names; fine-tuning: also DistilBERT's layer norms)
NAME_RULE = ("bias", "LayerNorm.weight", "layer_norm.weight", "norm.weight")


def _models():
    bert = BertForMaskedLM(
        BertConfig(
            vocab_size=50,
            hidden_size=16,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=32,
            max_position_embeddings=32,
        )
    )
    distil = DistilBertForMaskedLM(
        DistilBertConfig(vocab_size=50, dim=16, n_layers=2, n_heads=2, hidden_dim=32, max_position_embeddings=32)
    )
    task = TaskModel(distil.distilbert, "classification", 3, 0.1)
    return {"bert": bert, "distilbert": distil, "task head on distilbert": task}


@pytest.mark.parametrize("name", list(_models()))
def test_dimension_rule_selects_biases_and_norm_weights(name):
    model = _models()[name]
    decay, no_decay = param_groups(model, 0.01)
    by_name = {id(p) for n, p in model.named_parameters() if n.endswith(NAME_RULE)}
    assert {id(p) for p in no_decay["params"]} == by_name
    assert decay["weight_decay"] == 0.01 and no_decay["weight_decay"] == 0.0
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))
    assert all(p.ndim >= 2 for p in decay["params"]) and decay["params"]


def test_make_adamw_warms_up_then_decays_to_zero():
    model = torch.nn.Linear(4, 2)
    opt, sched = make_adamw(model, lr=1e-3, weight_decay=0.1, warmup_steps=2, total_steps=6, betas=(0.9, 0.98))
    lrs = []
    for _ in range(6):
        lrs.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    assert lrs[:3] == pytest.approx([0.0, 5e-4, 1e-3])
    assert lrs[3:] == pytest.approx([7.5e-4, 5e-4, 2.5e-4])
    assert sched.get_last_lr()[0] == 0.0
    assert opt.param_groups[0]["betas"] == (0.9, 0.98)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.1, 0.0]

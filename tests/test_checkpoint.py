"""kdlib.engine.checkpoint: atomic checkpoints keep the newest ones, restore weights, optimizer state and RNG."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from kdlib.engine import checkpoint as ckpt
from kdlib.engine.optim import make_adamw


def _parts(seed: int) -> dict:
    """A tiny model with AdamW, schedule and (disabled) GradScaler, one step taken."""
    torch.manual_seed(seed)
    model = torch.nn.Linear(4, 3)
    opt, sched = make_adamw(model, lr=1e-2, weight_decay=0.0, warmup_steps=1, total_steps=10)
    model(torch.randn(2, 4)).sum().backward()
    opt.step()
    sched.step()
    return {"model": model, "optimizer": opt, "scheduler": sched, "scaler": torch.amp.GradScaler("cpu", enabled=False)}


def test_rng_states_round_trip():
    """restore_rng(capture_rng()) makes python, numpy and torch draw the same numbers again."""
    state = ckpt.capture_rng()
    first = (random.random(), np.random.rand(), torch.rand(1).item())
    ckpt.restore_rng(state)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == first


def test_save_keeps_newest_and_load_restores_student(tmp_path):
    src, dst = _parts(0), _parts(1)
    for step in (1, 2, 3):
        ckpt.save_checkpoint(tmp_path, step, {"s": src}, {"epoch": 0, "batch_idx": step}, [{"r": 0}], keep=2)
    assert sorted(p.name for p in ckpt.checkpoint_root(tmp_path).glob("step-*")) == ["step-00000002", "step-00000003"]
    path = ckpt.latest_checkpoint(tmp_path)
    assert path.name == "step-00000003"
    state, rng = ckpt.load_checkpoint(path)
    assert state == {"step": 3, "epoch": 0, "batch_idx": 3} and rng == [{"r": 0}]
    ckpt.load_student(path, "s", dst)
    assert torch.equal(dst["model"].weight, src["model"].weight)
    assert dst["scheduler"].get_last_lr() == src["scheduler"].get_last_lr()
    ms, md = src["optimizer"].state_dict()["state"], dst["optimizer"].state_dict()["state"]
    assert torch.equal(ms[0]["exp_avg"], md[0]["exp_avg"])
    with pytest.raises(FileNotFoundError, match="no student 'other'"):
        ckpt.load_student(path, "other", dst)
    ckpt.clear_checkpoints(tmp_path)
    assert ckpt.latest_checkpoint(tmp_path) is None


def test_latest_pointing_at_an_incomplete_checkpoint_is_an_error(tmp_path):
    root = ckpt.checkpoint_root(tmp_path)
    root.mkdir(parents=True)
    (root / "latest").write_text("step-00000005")
    with pytest.raises(FileNotFoundError, match="not a complete checkpoint"):
        ckpt.latest_checkpoint(tmp_path)

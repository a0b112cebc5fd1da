"""kdlib.analysis.curves: a distill log read as a loss curve, and two curves compared at the same step / wall time."""

from __future__ import annotations

import json

import numpy as np
import pytest

from kdlib.analysis.curves import late_loss_difference, loss_curve


def write_log(path, losses, seconds_per_step, tokens=100, name="s"):
    """A log.jsonl in kdlib.engine.distill's record format (one record per step)."""
    with open(path, "w", encoding="utf-8") as fh:
        for i, loss in enumerate(losses, start=1):
            rec = {
                "step": i,
                "lr": 1e-3,
                "tokens": tokens,
                "tokens_per_s": tokens / seconds_per_step,
                "elapsed": i * seconds_per_step,
                "epoch": 0,
                "students": {name: {"total": float(loss), "kl": 0.0, "mlm": float(loss), "cos": 0.0}},
            }
            fh.write(json.dumps(rec) + "\n")
    return path


def test_loss_curve_reads_steps_time_and_tokens(tmp_path):
    log = write_log(tmp_path / "log.jsonl", [5.0, 4.0, 3.0, 2.0], 0.5, tokens=30)
    curve = loss_curve(log, window=2)
    assert list(curve["step"]) == [1, 2, 3, 4] and list(curve["elapsed"]) == [0.5, 1.0, 1.5, 2.0]
    assert list(curve["tokens_seen"]) == [30, 60, 90, 120]
    assert list(curve["smoothed"]) == [5.0, 4.5, 3.5, 2.5]
    with pytest.raises(ValueError, match="no loss column 'nope'"):
        loss_curve(log, loss="nope")
    with pytest.raises(ValueError, match=r"name one of the students \['s'\]"):
        loss_curve(log, "other")


def test_same_loss_per_step_but_twice_as_fast_wins_on_wall_time(tmp_path):
    rng = np.random.default_rng(0)
    losses = 6.0 * np.exp(-np.arange(200) / 60) + rng.normal(0, 0.05, 200)
    fast = loss_curve(write_log(tmp_path / "fast.jsonl", losses, 0.5))
    slow = loss_curve(write_log(tmp_path / "slow.jsonl", losses, 1.0))
    by_step = late_loss_difference(fast, slow, by="step", n_resamples=300)
    assert by_step.estimate == pytest.approx(0.0) and by_step.low <= 0.0 <= by_step.high
    by_time = late_loss_difference(fast, slow, by="elapsed", n_resamples=300)
    # at the slow run's last 20 s the fast one is at steps 160-200, the slow one at 80-100: its loss is higher
    expected = losses[80:100].mean() - losses[160:200].mean()
    assert by_time.estimate == pytest.approx(expected) and 0 < by_time.low <= by_time.estimate <= by_time.high
    with pytest.raises(ValueError, match="by='wall'"):
        late_loss_difference(fast, slow, by="wall")
    with pytest.raises(ValueError, match="1 logged step"):
        late_loss_difference(fast.iloc[:5], slow, share=0.2)

"""kdlib.analysis.curves: a distill log read as a loss curve, two curves compared at equal steps or tokens with a
block bootstrap; a sparse log gives a reason, not an exception; wall time never enters a comparison."""

from __future__ import annotations

import json

import numpy as np
import pytest

from kdlib.analysis.curves import MIN_POINTS, block_means, late_loss_difference, loss_curve


def write_log(path, losses, seconds, tokens=100, name="s", steps=None):
    """A log.jsonl in kdlib.engine.distill's record format; ``seconds``: per step, or the elapsed of each record."""
    steps = list(steps or range(1, len(losses) + 1))
    elapsed = np.cumsum(np.full(len(losses), seconds)) if np.isscalar(seconds) else np.asarray(seconds)
    with open(path, "w", encoding="utf-8") as fh:
        for step, loss, t in zip(steps, losses, elapsed):
            rec = {
                "step": step,
                "lr": 1e-3,
                "tokens": tokens,
                "tokens_per_s": 1.0,
                "elapsed": float(t),
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
    sparse = loss_curve(write_log(tmp_path / "every2.jsonl", [5.0, 4.0], 0.5, tokens=30, steps=[2, 4]))
    assert list(sparse["tokens_seen"]) == [60, 120]  # a record every 2 steps counts its batch twice
    with pytest.raises(ValueError, match="no loss column 'nope'"):
        loss_curve(log, loss="nope")
    with pytest.raises(ValueError, match=r"name one of the students \['s'\]"):
        loss_curve(log, "other")


def test_constant_curves_differ_by_hand_computed_amounts(tmp_path):
    a = loss_curve(write_log(tmp_path / "a.jsonl", [2.0] * 50, 0.5, tokens=100))
    b = loss_curve(write_log(tmp_path / "b.jsonl", [3.0] * 40 + [2.5] * 10, 0.5, tokens=200))
    by_step = late_loss_difference(a, b, by="step", n_resamples=200)
    # common horizon 50 steps, last fifth = steps 41-50: b's loss 2.5 there, a's 2.0
    assert by_step.points == (10, 10) and by_step.interval.estimate == pytest.approx(0.5)
    assert by_step.interval.low == pytest.approx(0.5) and by_step.interval.high == pytest.approx(0.5)
    by_tokens = late_loss_difference(a, b, by="tokens_seen", n_resamples=200)
    # horizon 5,000 tokens (a's 50 steps, b's 25): last fifth = a's steps 41-50, b's steps 21-25 (loss 3.0)
    assert by_tokens.horizon == 5000 and by_tokens.points == (10, 5)
    assert by_tokens.interval.estimate == pytest.approx(1.0)


def test_same_loss_per_step_is_a_tie_however_fast_each_ran(tmp_path):
    rng = np.random.default_rng(0)
    losses = 6.0 * np.exp(-np.arange(200) / 60) + rng.normal(0, 0.05, 200)
    fast = loss_curve(write_log(tmp_path / "fast.jsonl", losses, 0.5))
    slow = loss_curve(write_log(tmp_path / "slow.jsonl", losses, 1.0))
    gap = late_loss_difference(fast, slow, by="step", n_resamples=300)
    assert gap.interval.estimate == pytest.approx(0.0) and gap.interval.low <= 0.0 <= gap.interval.high
    assert gap.steps_needed is None  # on the threshold: no budget settles it
    with pytest.raises(ValueError, match="wall time never decides"):
        late_loss_difference(fast, slow, by="elapsed")


def test_elapsed_times_change_nothing(tmp_path):
    rng = np.random.default_rng(1)
    la, lb = 3 + rng.normal(0, 0.1, 60), 3.05 + rng.normal(0, 0.1, 60)
    a = loss_curve(write_log(tmp_path / "a.jsonl", la, 0.5))
    b = loss_curve(write_log(tmp_path / "b.jsonl", lb, 0.5))
    stalled = np.cumsum(rng.exponential(5.0, 60)) * 40  # a busy machine: stalls, 200x slower on average
    b_busy = loss_curve(write_log(tmp_path / "b2.jsonl", lb, stalled))
    for by in ("step", "tokens_seen"):
        assert late_loss_difference(a, b, by=by) == late_loss_difference(a, b_busy, by=by)


def test_sparse_or_uneven_log_is_not_testable_not_an_error(tmp_path):
    a = loss_curve(write_log(tmp_path / "a.jsonl", np.linspace(5, 2, 30), 0.5))
    b = loss_curve(write_log(tmp_path / "b.jsonl", [5.0, 4.0, 3.0], 0.5, steps=[1, 15, 30]))  # one late record
    gap = late_loss_difference(a, b)
    assert gap.interval is None and gap.points == (6, 1)
    assert f"at least {MIN_POINTS} each" in gap.reason and gap.as_dict()["estimate"] is None
    empty = late_loss_difference(a, a.iloc[:0])
    assert empty.interval is None and empty.points == (0, 0)


def test_block_bootstrap_keeps_neighbouring_steps_together():
    rng = np.random.default_rng(0)
    x = np.arange(8, dtype=float)  # blocks of round(8 ** (1/3)) = 2 consecutive steps
    means = block_means(x, 500, rng)
    assert means.shape == (500,) and np.all((means >= 0.5) & (means <= 6.5))
    assert np.all(block_means(np.full(5, 2.0), 50, rng) == 2.0)
    # a trending (autocorrelated) series: blocks give a wider spread than resampling single steps would
    trend = np.cumsum(np.random.default_rng(2).normal(0, 1, 64))
    single = trend[np.random.default_rng(3).integers(0, 64, (2000, 64))].mean(1)
    assert block_means(trend, 2000, np.random.default_rng(3)).std() > single.std()

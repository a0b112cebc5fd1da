"""Distillation loss curves compared at equal counted work: does one variant "train faster"?

A :mod:`kdlib.engine.distill` log (``log.jsonl``, read with :func:`kdlib.analysis.reporting.log_frame`) has one
record per logged step with ``elapsed`` (seconds since the run started), ``tokens`` (non-pad tokens of the
global batch) and, per student, the loss components (``total``, ``kl``, ``mlm``, ``cos``).

:func:`loss_curve` turns one student's records into a frame with the tokens read so far (each record's batch
counted once per step since the previous record: exact when every step is logged) and a rolling mean of the
loss. :func:`late_loss_difference` compares two runs at the same counted work, on the ``step`` or
``tokens_seen`` axis only: both curves are cut at the common horizon H (the smaller of the two runs' final
value), the logged losses in the last ``share`` of [0, H] are averaged per run, and the difference b - a
(positive: a's loss is lower at the same work) gets a percentile interval from a moving-block bootstrap
(consecutive logged steps are correlated, so contiguous blocks of about n^(1/3) steps are resampled, each run
on its own). Wall time (``elapsed``) depends on what else the machine runs: it is drawn, never compared.
When a window holds fewer than :data:`MIN_POINTS` logged steps the result says so (``interval`` None and a
``reason``) instead of raising. Each run's loss is measured on its own training batches, so two runs on
different corpora compare how well each fits its own text, not a common held-out set.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from kdlib.analysis.reporting import log_frame
from kdlib.analysis.stats import Interval, Replicates, required_n

__all__ = ["AXES", "MIN_POINTS", "CurveGap", "block_means", "late_loss_difference", "loss_curve"]

AXES = ("step", "tokens_seen")  # counted work; "elapsed" is for figures only
MIN_POINTS = 4


@dataclass(frozen=True)
class CurveGap:
    """Late loss of b minus a at equal counted work: the interval, or the reason there is none."""

    by: str
    horizon: float
    points: tuple[int, int]
    interval: Interval | None
    reason: str = ""
    steps_needed: int | None = None  # logged steps per late window that would settle "> 0" (80% power)

    def as_dict(self) -> dict:
        """A JSON-ready record (a claim's detail)."""
        iv = self.interval.as_dict() if self.interval else {"estimate": None, "low": None, "high": None}
        return {"by": self.by, "horizon": float(self.horizon), "points": list(self.points), **iv, "reason": self.reason}


def loss_curve(
    log_path: str | Path, student: str | None = None, *, loss: str = "total", window: int = 10
) -> pd.DataFrame:
    """One student's curve: step, elapsed (s), tokens_seen (cumulative), ``loss``, and its rolling mean."""
    df = log_frame(log_path)
    if "student" in df.columns:
        names = sorted(df["student"].unique())
        student = student or (names[0] if len(names) == 1 else None)
        if student not in names:
            raise ValueError(f"{log_path}: name one of the students {names} (got {student!r})")
        df = df[df["student"] == student]
    if loss not in df.columns:
        raise ValueError(f"{log_path}: no loss column {loss!r}; columns are {list(df.columns)}")
    curve = df[["step", "elapsed", "tokens", loss]].sort_values("step").reset_index(drop=True)
    steps_between = curve["step"].diff().fillna(curve["step"]).clip(lower=1)
    curve["tokens_seen"] = (curve.pop("tokens") * steps_between).cumsum()
    curve["smoothed"] = curve[loss].rolling(window, min_periods=1).mean()
    return curve


def block_means(values: np.ndarray, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """Means of ``n_resamples`` moving-block resamples of a series (blocks of round(n^(1/3)) steps)."""
    n = len(values)
    block = max(1, round(n ** (1 / 3)))
    k = math.ceil(n / block)
    starts = rng.integers(0, n - block + 1, size=(n_resamples, k))
    idx = (starts[..., None] + np.arange(block)).reshape(n_resamples, -1)[:, :n]
    return values[idx].mean(axis=1)


def _late(curve: pd.DataFrame, by: str, horizon: float, share: float, loss: str) -> np.ndarray:
    inside = (curve[by] <= horizon) & (curve[by] > (1 - share) * horizon)
    return curve.loc[inside].sort_values("step")[loss].to_numpy(float)


def _steps_needed(estimate: float, samples: np.ndarray, n: int) -> int | None:
    """Logged steps per window that would put the interval clear of 0 (kdlib.analysis.stats.required_n)."""
    rep = Replicates(estimate, samples, 0.0, float(np.var(samples, ddof=1)), 1, n)
    return required_n(rep, 0.0)["test_units"]


def late_loss_difference(
    curve_a: pd.DataFrame,
    curve_b: pd.DataFrame,
    *,
    by: str = "step",
    share: float = 0.2,
    loss: str = "total",
    n_resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> CurveGap:
    """Mean loss of b minus mean loss of a over the last ``share`` of the common horizon on axis ``by``."""
    if by not in AXES:
        raise ValueError(f"late_loss_difference: by={by!r}; expected one of {AXES} (wall time never decides)")
    if not 0 < share <= 1:
        raise ValueError(f"late_loss_difference: share={share!r}; expected a fraction in (0, 1]")
    horizon = float(min(curve_a[by].max(), curve_b[by].max())) if len(curve_a) and len(curve_b) else 0.0
    late_a, late_b = (_late(c, by, horizon, share, loss) for c in (curve_a, curve_b))
    points = (len(late_a), len(late_b))
    if min(points) < MIN_POINTS:
        why = (
            f"the last {share:.0%} of the common {by} horizon {horizon:.4g} holds {points[0]} and {points[1]} "
            f"logged steps; at least {MIN_POINTS} each are needed (log more often or run longer)"
        )
        return CurveGap(by, horizon, points, None, why)
    rng = np.random.default_rng(seed)
    samples = block_means(late_b, n_resamples, rng) - block_means(late_a, n_resamples, rng)
    lo, hi = np.quantile(samples, [(1 - level) / 2, (1 + level) / 2])
    estimate = float(late_b.mean() - late_a.mean())
    need = _steps_needed(estimate, samples, min(points)) if lo <= 0 <= hi else None
    return CurveGap(by, horizon, points, Interval(estimate, float(lo), float(hi)), "", need)

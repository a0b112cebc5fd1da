"""Distillation loss curves compared by step and by wall time: does one variant "train faster"?

A :mod:`kdlib.engine.distill` log (``log.jsonl``, read with :func:`kdlib.analysis.reporting.log_frame`) has one
record per logged step with ``elapsed`` (seconds since the run started, cumulative over resumes), ``tokens`` (non-pad
tokens of the global batch) and, per student, the loss components (``total``, ``kl``, ``mlm``, ``cos``).

:func:`loss_curve` turns one student's records into a frame with the cumulative tokens and a rolling mean of
the loss. :func:`late_loss_difference` compares two runs at the same budget: both curves are cut at the
common horizon H (the smaller of the two runs' final step, wall time or tokens), the logged losses of the
last ``share`` of [0, H] are averaged per run, and the difference b - a (positive: a's loss is lower at the
same budget) gets a percentile bootstrap interval (``scipy.stats.bootstrap``, the two sets of logged steps
resampled independently). Each run's loss is measured on its own training batches, so two runs on different
corpora compare how well each fits its own text, not a common held-out set.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats as sps

from kdlib.analysis.reporting import log_frame
from kdlib.analysis.stats import Interval

__all__ = ["AXES", "late_loss_difference", "loss_curve"]

AXES = ("step", "elapsed", "tokens_seen")


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
    curve["tokens_seen"] = curve.pop("tokens").cumsum()
    curve["smoothed"] = curve[loss].rolling(window, min_periods=1).mean()
    return curve


def late_loss_difference(
    curve_a: pd.DataFrame,
    curve_b: pd.DataFrame,
    *,
    by: str = "elapsed",
    share: float = 0.2,
    loss: str = "total",
    n_resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> Interval:
    """Mean loss of b minus mean loss of a over the last ``share`` of the common horizon on axis ``by``."""
    if by not in AXES:
        raise ValueError(f"late_loss_difference: by={by!r}; expected one of {AXES}")
    if not 0 < share <= 1:
        raise ValueError(f"late_loss_difference: share={share!r}; expected a fraction in (0, 1]")
    horizon = min(curve_a[by].max(), curve_b[by].max())
    parts = []
    for name, curve in (("a", curve_a), ("b", curve_b)):
        late = curve.loc[(curve[by] <= horizon) & (curve[by] > (1 - share) * horizon), loss].to_numpy(float)
        if len(late) < 2:
            raise ValueError(
                f"late_loss_difference: curve {name} has {len(late)} logged step(s) in the last "
                f"{share:.0%} of the common {by} horizon {horizon:.4g}; log more often or raise share"
            )
        parts.append(late)
    late_a, late_b = parts
    res = sps.bootstrap(
        (late_b, late_a),
        lambda b, a: np.mean(b) - np.mean(a),
        n_resamples=n_resamples,
        confidence_level=level,
        method="percentile",
        random_state=np.random.default_rng(seed),
        vectorized=False,
    )
    ci = res.confidence_interval
    return Interval(float(late_b.mean() - late_a.mean()), float(ci.low), float(ci.high))

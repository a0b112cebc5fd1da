"""Uncertainty of every score and comparison: test examples by paired bootstrap, seeds by their spread, t quantiles.

A model's score on a task is measured on one test set with a few fine-tuning seeds, so it varies with
both the test examples drawn and the seed. The standard error of a statistic has two parts:

1. **test examples** (``var_examples``): the variance of the statistic (seeds averaged) over ``n_resamples``
   (>= 1,000, seeded ``numpy.random.default_rng``) bootstrap resamples of the test set, ONE draw shared by
   every model in the comparison (paired: the same resampled test set scores teacher, student and control).
   For tagging the unit is the *sentence* (prediction ids ``'<sentence>:<word>'``), so the words of a
   sentence move together; otherwise an example.
2. **fine-tuning seeds** (``var_seeds``): for each group of seeds (one model's seeds; two models compared
   with the same number of seeds form one group, paired by position: the k-th seed of both was fine-tuned
   with the same seed), the unbiased sample variance over its k seeds of the statistic's per-seed value on
   the measured test set (the other sides averaged), divided by k. Its degrees of freedom are k - 1.

The interval is ``estimate +- t x SE`` with SE^2 = var_examples + var_seeds and a Student t quantile on the
Welch-Satterthwaite degrees of freedom of the two parts (the example part counts n_units - 1). Why not
resample the seeds too (the former method): with 2 seeds the resampled mean takes three values and its
variance is half the seed variance of the mean, and the normal quantile ignores that 2 seeds measure the
seed spread with one degree of freedom; in simulation its nominal 95% interval covered 83%, 69% and 60% at
seed SDs of 4.5, 9.2 and 16.8 points (``tests/test_stats.py`` measures both methods). With ONE seed per model
the seed variance cannot be estimated: ``var_seeds`` is 0 and ``seeds_measured`` False, and the interval covers
test-example variation only (callers must say so).

The statistic is a score, a difference of scores, a loyalty (teacher seeds x student seeds; the mean over all
pairs) or a difference of loyalties (the teacher's seeds shared by both students). The estimate is the
statistic on the data as measured (every seed, every example: the mean over seeds that the tables print).
The metrics are computed from per-sentence sufficient statistics (macro-F1: true positives, gold and
predicted counts per class; accuracy; Pearson moments), identical to :func:`kdlib.eval.metrics.compute_metrics`
on the resampled set, and other metrics (Spearman, seqeval entity-F1) by calling ``compute_metrics`` on each
resample. Identical predictions give exactly [0, 0].

:class:`TaskBootstrap` holds one task's resampled test sets and caches each run's metric (and each
teacher-student pair's loyalty) on them, so that the many comparisons of a run on one task are paired and
cheap; the module-level functions (:func:`score_interval`, :func:`difference_interval`, ...) build one for a
single comparison. The mean over tasks resamples each task's test set independently (different data),
averages the replicates and adds the tasks' seed variances (/ tasks^2, Welch-Satterthwaite degrees of freedom).
:func:`required_n` turns the two parts into the seeds or test examples an inconclusive comparison would need
(normal approximation, ``scipy.stats.norm``). Scores and loyalties are x100, like the book's tables.
"""

from __future__ import annotations

import json
import math
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from scipy import stats as sps
from scipy.spatial.distance import jensenshannon

from kdlib.analysis.reporting import model_zoo
from kdlib.eval.loyalty import PREDICTIONS_FILE, Predictions, load_predictions
from kdlib.eval.metrics import compute_metrics, task_kind_and_metric
from kdlib.run.registry import slug

MIN_RESAMPLES = 1000
SCALE = 100.0
VECTOR_METRICS = ("macro_f1", "accuracy", "pearson")
LOYALTY_MEASURES = ("label_loyalty", "probability_loyalty", "regression_loyalty")


@dataclass(frozen=True)
class Interval:
    """A point estimate and its confidence interval (same units: x100 for scores and loyalties)."""

    estimate: float
    low: float
    high: float

    def as_dict(self) -> dict[str, float]:
        return {"estimate": self.estimate, "low": self.low, "high": self.high}


def welch_df(parts: Sequence[tuple[float, float]]) -> float:
    """Welch-Satterthwaite degrees of freedom of a sum of variance components (variance, df); inf if none."""
    total = sum(v for v, _ in parts)
    denom = sum(v * v / df for v, df in parts if v > 0 and math.isfinite(df))
    return math.inf if total <= 0 or denom == 0 else total * total / denom


@dataclass(frozen=True)
class Replicates:
    """One statistic's estimate with its variance split into a test-example and a seed part.

    ``samples``: (n_resamples,) example-bootstrap replicates (seeds averaged; their variance is
    ``var_examples``); ``var_seeds``: the seed part of the estimate's variance (sample variance over seeds / k),
    ``seed_df`` its degrees of freedom; ``n_seeds``: the fewest seeds of any model involved; ``n_units``: test
    units (sentences for tagging), summed over tasks; ``seeds_measured``: False when a model's seed spread could
    not be estimated (one seed and no pooled estimate), so the interval covers test-example variation only.
    """

    estimate: float
    samples: np.ndarray
    var_seeds: float
    var_examples: float
    n_seeds: int
    n_units: int
    seed_df: float = math.inf
    seeds_measured: bool = True

    @property
    def se(self) -> float:
        """Standard error: test examples and seeds together."""
        return math.sqrt(self.var_examples + self.var_seeds)

    def half_width(self, level: float = 0.95) -> float:
        """Each part at its own t quantile, added in quadrature: keeps the coverage when few seeds measure spread."""
        if not 0 < level < 1:
            raise ValueError(f"level must be in (0, 1), got {level!r}")
        q = (1 + level) / 2
        t_examples = sps.t.ppf(q, max(self.n_units - 1, 1))
        t_seeds = sps.t.ppf(q, self.seed_df) if self.var_seeds > 0 else 0.0
        return float(math.sqrt(t_examples**2 * self.var_examples + t_seeds**2 * self.var_seeds))

    def interval(self, level: float = 0.95) -> Interval:
        """estimate +- the half width at ``level`` (see :meth:`half_width`)."""
        half = self.half_width(level)
        return Interval(float(self.estimate), float(self.estimate - half), float(self.estimate + half))

    @staticmethod
    def mean(parts: Sequence[Replicates]) -> Replicates:
        """The mean of several tasks' statistics (independent test sets, same number of replicates)."""
        if not parts:
            raise ValueError("mean of no replicates")
        k = len(parts)
        return Replicates(
            float(np.mean([p.estimate for p in parts])),
            np.mean([p.samples for p in parts], axis=0),
            sum(p.var_seeds for p in parts) / k**2,
            sum(p.var_examples for p in parts) / k**2,
            min(p.n_seeds for p in parts),
            sum(p.n_units for p in parts),
            welch_df([(p.var_seeds / k**2, p.seed_df) for p in parts]),
            all(p.seeds_measured for p in parts),
        )


# ------------------------------------------------------------------------------------------- units
def _units(pred: Predictions) -> np.ndarray:
    """Resampling unit of every example, numbered in file order: its sentence for tagging, itself otherwise."""
    keys = [i.rsplit(":", 1)[0] for i in pred.ids] if pred.kind == "tagging" else list(pred.ids)
    _, first, codes = np.unique(np.asarray(keys), return_index=True, return_inverse=True)
    rank = np.empty(len(first), dtype=np.int64)
    rank[np.argsort(first)] = np.arange(len(first))
    return rank[codes.reshape(-1)]


def _check_runs(groups: Sequence[Sequence[Predictions]]) -> Predictions:
    """All runs of all models predict the same examples of the same task; returns the first run."""
    ref = None
    for runs in groups:
        if not runs:
            raise ValueError("a model has no runs (no fine-tuning seed's predictions)")
        for r in runs:
            if ref is None:
                ref = r
            elif (r.task, r.kind) != (ref.task, ref.kind) or r.ids != ref.ids:
                raise ValueError(
                    f"runs differ in task or test examples: {r.model} {r.task} ({len(r.ids)} examples) "
                    f"vs {ref.model} {ref.task} ({len(ref.ids)} examples)"
                )
    return ref


def _draws(units: np.ndarray, n_resamples: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(W, idx): per replicate the count of each unit (row 0 = the data as measured) and the drawn units."""
    n = int(units.max()) + 1
    idx = rng.integers(0, n, size=(n_resamples, n))
    w = np.zeros((n_resamples + 1, n))
    w[0] = 1.0
    np.add.at(w, (np.repeat(np.arange(1, n_resamples + 1), n), idx.ravel()), 1.0)
    return w, idx


# ------------------------------------------------------------------------ per-replicate statistics
def _unit_sums(values: np.ndarray, units: np.ndarray, n_units: int) -> np.ndarray:
    """(n_units, K) sums of the per-example rows of ``values`` (N, K) within each unit."""
    return np.stack([np.bincount(units, weights=col, minlength=n_units) for col in values.T], axis=1)


def _class_counts(
    labels: np.ndarray, units: np.ndarray, n_units: int, n_classes: int, weights: np.ndarray | None = None
) -> np.ndarray:
    flat = units * n_classes + labels.astype(np.int64)
    return np.bincount(flat, weights=weights, minlength=n_units * n_classes).reshape(n_units, n_classes)


def _pearson(s: np.ndarray) -> np.ndarray:
    """Pearson r from summed moments (n, x, y, xx, yy, xy); 0 where a side is constant (as kdlib.eval.metrics)."""
    n, x, y, xx, yy, xy = s.T
    vx, vy = n * xx - x * x, n * yy - y * y
    ok = (vx > 1e-12 * np.maximum(n * xx, 1)) & (vy > 1e-12 * np.maximum(n * yy, 1))
    return np.where(ok, (n * xy - x * y) / np.sqrt(np.where(ok, vx * vy, 1.0)), 0.0)


def _moments(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    return np.stack([np.ones_like(x), x, y, x * x, y * y, x * y], axis=1)


def _ratio(s: np.ndarray) -> np.ndarray:
    return s[:, 0] / s[:, 1]


def _vector_stat(
    metric: str, gold: np.ndarray, pred: np.ndarray, n_classes: int, units: np.ndarray, n_units: int
) -> tuple[np.ndarray, Callable[[np.ndarray], np.ndarray]]:
    """Per-unit sufficient statistics and the function turning their resampled sums into the metric."""
    if metric == "pearson":
        return _unit_sums(_moments(gold, pred), units, n_units), _pearson
    if metric == "accuracy":
        per_ex = np.stack([(gold == pred).astype(float), np.ones(len(gold))], 1)
        return _unit_sums(per_ex, units, n_units), _ratio
    tp = _class_counts(gold, units, n_units, n_classes, (gold == pred).astype(float))
    g, p = _class_counts(gold, units, n_units, n_classes), _class_counts(pred, units, n_units, n_classes)

    def macro_f1(s: np.ndarray) -> np.ndarray:  # sklearn macro-F1 over the labels present, zero_division=0
        tp, denom = s[:, :n_classes], s[:, n_classes : 2 * n_classes] + s[:, 2 * n_classes :]
        present = denom > 0
        f1 = np.where(present, 2 * tp / np.where(present, denom, 1), 0.0)
        return f1.sum(1) / np.maximum(present.sum(1), 1)

    return np.concatenate([tp, g, p], axis=1), macro_f1


def _metric_rows(run: Predictions, metric: str, units: np.ndarray, w: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """The metric (x100) of one run on the measured set (row 0) and on every resampled test set."""
    if metric in VECTOR_METRICS:
        gold = np.asarray(run.gold)
        pred = np.asarray(run.outputs if run.kind == "regression" else run.pred)
        n_classes = len(run.label_names) if run.label_names else int(max(gold.max(), pred.max())) + 1
        sums, final = _vector_stat(metric, gold, pred, n_classes, units, w.shape[1])
        return SCALE * final(w @ sums)
    members = [np.flatnonzero(units == u) for u in range(w.shape[1])]

    def score(sel: np.ndarray) -> float:
        if run.kind == "tagging":
            g = [run.gold[members[u]].tolist() for u in sel]
            p = [run.pred[members[u]].tolist() for u in sel]
        else:
            ex = np.concatenate([members[u] for u in sel])
            g, p = run.gold[ex].tolist(), (run.outputs if run.kind == "regression" else run.pred)[ex].tolist()
        m = compute_metrics(run.kind, g, p, label_names=run.label_names)
        if metric not in m:
            raise ValueError(f"metric {metric!r} is not computed for {run.task} (has {sorted(m)})")
        return m[metric]

    return SCALE * np.array([score(np.arange(w.shape[1]))] + [score(row) for row in idx])


def _loyalty_rows(
    teacher: Predictions, student: Predictions, measure: str, units: np.ndarray, w: np.ndarray
) -> np.ndarray:
    """A loyalty measure (x100) of student to teacher on the measured set (row 0) and every resample."""
    if measure == "regression_loyalty":
        per_ex, final = _moments(teacher.outputs, student.outputs), _pearson
    else:
        if teacher.probs is None or student.probs is None:
            raise ValueError(f"{measure} needs class probabilities ({student.task} is {student.kind})")
        t, s = np.asarray(teacher.probs, np.float64), np.asarray(student.probs, np.float64)
        if measure == "label_loyalty":
            v = (t.argmax(1) == s.argmax(1)).astype(float)
        elif measure == "probability_loyalty":
            v = 1.0 - np.clip(jensenshannon(t, s, base=2, axis=1), 0.0, 1.0)
        else:
            raise ValueError(f"measure must be one of {LOYALTY_MEASURES}, got {measure!r}")
        per_ex, final = np.stack([v, np.ones(len(v))], 1), _ratio
    return SCALE * final(w @ _unit_sums(per_ex, units, w.shape[1]))


# ---------------------------------------------------------------------------------- the bootstrap
@dataclass(frozen=True)
class _Term:
    """``coef`` x (mean over the seeds of ``values``); ``values`` axes: one per side in ``sides`` (that
    model's seeds), then the replicate row (0 = measured)."""

    coef: float
    sides: tuple[int, ...]
    values: np.ndarray


def _marginal(term: _Term, side: int) -> np.ndarray:
    """coef x the term's measured value per seed of ``side``, the term's other sides averaged."""
    measured = term.values[..., 0]
    axis = term.sides.index(side)
    other = tuple(a for a in range(measured.ndim) if a != axis)
    return term.coef * (measured.mean(axis=other) if other else measured)


def _seed_part(terms: Sequence[_Term], side_seeds: Sequence[int], paired: Sequence[int]) -> tuple[float, float, bool]:
    """(variance, df, measured) of the estimate due to the seeds: per seed group, var over its seeds / k (df k - 1).

    Sides in ``paired`` form one group (paired by position); a group of one seed cannot be measured (adds 0).
    """
    groups = [list(paired)] if paired else []
    groups += [[i] for i in range(len(side_seeds)) if i not in paired]
    parts = []
    for group in groups:
        k = side_seeds[group[0]]
        per_seed = sum((_marginal(t, i) for t in terms for i in group if i in t.sides), np.zeros(k))
        if k > 1:
            parts.append((float(np.var(per_seed, ddof=1)) / k, float(k - 1)))
    return sum(v for v, _ in parts), welch_df(parts), len(parts) == len(groups)


def _combine(terms: Sequence[_Term], side_seeds: Sequence[int], n_units: int, paired: Sequence[int] = ()) -> Replicates:
    """Estimate, example-bootstrap replicates (seeds averaged) and the seed part of sum(coef x term).

    Sides listed in ``paired`` (same number of seeds) are paired by position.
    """
    est, examples = 0.0, 0.0
    for t in terms:
        axes = tuple(range(len(t.sides)))
        est += t.coef * float(t.values[..., 0].mean(axis=axes))
        examples = examples + t.coef * t.values[..., 1:].mean(axis=axes)
    var_seeds, seed_df, measured = _seed_part(terms, side_seeds, paired)
    return Replicates(
        est,
        np.asarray(examples),
        var_seeds,
        float(np.var(examples, ddof=1)),
        min(side_seeds),
        n_units,
        seed_df,
        measured,
    )


def _paired(runs_a: Sequence[Predictions], runs_b: Sequence[Predictions], first: int) -> tuple[int, ...]:
    """Sides (first, first + 1) are paired by seed position when both models have the same number of seeds."""
    return (first, first + 1) if len(runs_a) == len(runs_b) else ()


class TaskBootstrap:
    """The resampled test sets of one task, shared by every comparison on it, with per-run caches.

    ``reference``: any run of the task (its ids define the test examples and the resampling units). The
    example draws depend only on (``seed``, task, ``n_resamples``), so every comparison on a task sees the
    same resampled test sets (paired across models); each run's metric and each teacher-student pair's
    loyalty on them is computed once, so a result does not depend on the order of calls.
    """

    def __init__(self, reference: Predictions, *, n_resamples: int = 1000, seed: int = 0) -> None:
        if not isinstance(n_resamples, int) or n_resamples < MIN_RESAMPLES:
            raise ValueError(f"n_resamples must be an integer >= {MIN_RESAMPLES}, got {n_resamples!r}")
        self.reference, self.n_resamples = reference, n_resamples
        self._seed = [seed, zlib.crc32(reference.task.encode())]
        self.units = _units(reference)
        self.w, self.idx = _draws(self.units, n_resamples, np.random.default_rng(self._seed))
        self._cache: dict[tuple, tuple[tuple[Predictions, ...], np.ndarray]] = {}
        self._pool: dict[str, tuple[float, int]] = {}

    @property
    def n_units(self) -> int:
        return self.w.shape[1]

    def _cached(self, key: tuple, runs: tuple[Predictions, ...], compute: Callable[[], np.ndarray]) -> np.ndarray:
        full = key + tuple(id(r) for r in runs)
        hit = self._cache.get(full)
        if hit is None or any(a is not b for a, b in zip(hit[0], runs)):  # keep the runs: ids stay unique
            hit = self._cache[full] = (runs, compute())
        return hit[1]

    def _metric_table(self, runs: Sequence[Predictions], metric: str | None) -> np.ndarray:
        _check_runs([[self.reference], runs])
        m = metric or task_kind_and_metric(self.reference.task)[1]
        return np.stack(
            [
                self._cached(("metric", m), (r,), lambda r=r: _metric_rows(r, m, self.units, self.w, self.idx))
                for r in runs
            ]
        )

    def _loyalty_table(
        self, teachers: Sequence[Predictions], students: Sequence[Predictions], measure: str
    ) -> np.ndarray:
        _check_runs([[self.reference], teachers, students])
        return np.stack(
            [
                np.stack(
                    [
                        self._cached(
                            ("loyalty", measure),
                            (t, s),
                            lambda t=t, s=s: _loyalty_rows(t, s, measure, self.units, self.w),
                        )
                        for s in students
                    ]
                )
                for t in teachers
            ]
        )

    def _combine(self, terms: Sequence[_Term], side_seeds: Sequence[int], paired: Sequence[int] = ()) -> Replicates:
        return _combine(terms, side_seeds, self.n_units, paired)

    def _metric(self, metric: str | None) -> str:
        return metric or task_kind_and_metric(self.reference.task)[1]

    def pool_seeds(self, groups: Sequence[Sequence[Predictions]], metric: str | None = None) -> tuple[float, int]:
        """Pool the seed variance of the score over models (``groups``: each model's runs); returns (variance, df).

        One seed SD for the task, estimated from every model's seeds (sum of squared deviations from each
        model's mean over sum(k - 1) degrees of freedom): scores and score differences on this task then use it,
        which keeps a t quantile usable with 2 seeds per model. Models with one seed add nothing to it.
        """
        rows = [self._metric_table(runs, metric)[:, 0] for runs in groups if len(runs) > 1]
        dof = sum(len(r) - 1 for r in rows)
        if dof:
            self._pool[self._metric(metric)] = (sum(float(np.sum((r - r.mean()) ** 2)) for r in rows) / dof, dof)
        return self._pool.get(self._metric(metric), (0.0, 0))

    def _pooled(self, rep: Replicates, metric: str | None, inverse_seeds: float) -> Replicates:
        """``rep`` with its seed part from the pool: pooled variance x sum(1/k) of the models, pooled df."""
        pool = self._pool.get(self._metric(metric))
        if pool is None:
            return rep
        return replace(rep, var_seeds=pool[0] * inverse_seeds, seed_df=float(pool[1]), seeds_measured=True)

    def score(self, runs: Sequence[Predictions], metric: str | None = None) -> Replicates:
        """One model's score x100; ``runs``: one Predictions per fine-tuning seed."""
        rep = self._combine([_Term(1.0, (0,), self._metric_table(runs, metric))], [len(runs)])
        return self._pooled(rep, metric, 1 / len(runs))

    def difference(
        self, runs_a: Sequence[Predictions], runs_b: Sequence[Predictions], metric: str | None = None
    ) -> Replicates:
        """score(a) - score(b) x100, on the same resampled test sets."""
        terms = [
            _Term(1.0, (0,), self._metric_table(runs_a, metric)),
            _Term(-1.0, (1,), self._metric_table(runs_b, metric)),
        ]
        rep = self._combine(terms, [len(runs_a), len(runs_b)], _paired(runs_a, runs_b, 0))
        same = len(runs_a) == len(runs_b) and all(a is b for a, b in zip(runs_a, runs_b))
        return self._pooled(rep, metric, 0.0 if same else 1 / len(runs_a) + 1 / len(runs_b))

    def loyalty(
        self, teacher_runs: Sequence[Predictions], student_runs: Sequence[Predictions], measure: str
    ) -> Replicates:
        """A loyalty x100, averaged over every teacher seed x student seed pair."""
        values = self._loyalty_table(teacher_runs, student_runs, measure)
        return self._combine([_Term(1.0, (0, 1), values)], [len(teacher_runs), len(student_runs)])

    def loyalty_difference(
        self,
        teacher_runs: Sequence[Predictions],
        runs_a: Sequence[Predictions],
        runs_b: Sequence[Predictions],
        measure: str,
    ) -> Replicates:
        """loyalty(a -> teacher) - loyalty(b -> teacher) x100: examples and teacher seeds shared."""
        terms = [
            _Term(1.0, (0, 1), self._loyalty_table(teacher_runs, runs_a, measure)),
            _Term(-1.0, (0, 2), self._loyalty_table(teacher_runs, runs_b, measure)),
        ]
        return self._combine(terms, [len(teacher_runs), len(runs_a), len(runs_b)], _paired(runs_a, runs_b, 1))


def _first(*groups: Sequence[Predictions]) -> Predictions:
    return _check_runs(groups)


def score_replicates(
    runs: Sequence[Predictions], *, metric: str | None = None, n_resamples: int = 1000, seed: int = 0
) -> Replicates:
    """Bootstrap replicates of one model's score (x100): runs = one Predictions per fine-tuning seed."""
    return TaskBootstrap(_first(runs), n_resamples=n_resamples, seed=seed).score(runs, metric)


def difference_replicates(
    runs_a: Sequence[Predictions],
    runs_b: Sequence[Predictions],
    *,
    metric: str | None = None,
    n_resamples: int = 1000,
    seed: int = 0,
) -> Replicates:
    """Replicates of score(a) - score(b) (x100), the test examples drawn once for both (paired)."""
    return TaskBootstrap(_first(runs_a, runs_b), n_resamples=n_resamples, seed=seed).difference(runs_a, runs_b, metric)


def default_measures(kind: str) -> tuple[str, ...]:
    """The loyalty measures of a task kind: L-L and P-L with class probabilities, R-L for regression."""
    return ("regression_loyalty",) if kind == "regression" else ("label_loyalty", "probability_loyalty")


def loyalty_replicates(
    teacher_runs: Sequence[Predictions],
    student_runs: Sequence[Predictions],
    measure: str,
    *,
    n_resamples: int = 1000,
    seed: int = 0,
) -> Replicates:
    """Replicates of a loyalty (x100), averaged over every teacher seed x student seed pair."""
    boot = TaskBootstrap(_first(teacher_runs, student_runs), n_resamples=n_resamples, seed=seed)
    return boot.loyalty(teacher_runs, student_runs, measure)


def loyalty_difference_replicates(
    teacher_runs: Sequence[Predictions],
    runs_a: Sequence[Predictions],
    runs_b: Sequence[Predictions],
    measure: str,
    *,
    n_resamples: int = 1000,
    seed: int = 0,
) -> Replicates:
    """Replicates of loyalty(a -> teacher) - loyalty(b -> teacher): examples and teacher seeds shared."""
    boot = TaskBootstrap(_first(teacher_runs, runs_a, runs_b), n_resamples=n_resamples, seed=seed)
    return boot.loyalty_difference(teacher_runs, runs_a, runs_b, measure)


# ------------------------------------------------------------------------------------- intervals
def score_interval(
    runs: Sequence[Predictions],
    *,
    metric: str | None = None,
    n_resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> Interval:
    """95% (``level``) interval of one model's score x100 (seeds and test examples resampled)."""
    return score_replicates(runs, metric=metric, n_resamples=n_resamples, seed=seed).interval(level)


def difference_interval(
    runs_a: Sequence[Predictions],
    runs_b: Sequence[Predictions],
    *,
    metric: str | None = None,
    n_resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> Interval:
    """Interval of score(a) - score(b) x100, paired over test examples."""
    return difference_replicates(runs_a, runs_b, metric=metric, n_resamples=n_resamples, seed=seed).interval(level)


def loyalty_interval(
    teacher_runs: Sequence[Predictions],
    student_runs: Sequence[Predictions],
    measure: str,
    *,
    n_resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> Interval:
    """Interval of a loyalty measure x100 of the student to the teacher."""
    return loyalty_replicates(teacher_runs, student_runs, measure, n_resamples=n_resamples, seed=seed).interval(level)


def loyalty_difference_interval(
    teacher_runs: Sequence[Predictions],
    runs_a: Sequence[Predictions],
    runs_b: Sequence[Predictions],
    measure: str,
    *,
    n_resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> Interval:
    """Interval of loyalty(a) - loyalty(b) x100 to the same teacher (e.g. a student minus the control)."""
    rep = loyalty_difference_replicates(teacher_runs, runs_a, runs_b, measure, n_resamples=n_resamples, seed=seed)
    return rep.interval(level)


def mean_interval(parts: Sequence[Replicates], level: float = 0.95) -> Interval:
    """Interval of the mean over tasks of per-task replicates (each task's test set resampled on its own)."""
    return Replicates.mean(parts).interval(level)


# --------------------------------------------------------------------------------------- power
def required_n(
    rep: Replicates, threshold: float, *, level: float = 0.95, power: float = 0.8
) -> dict[str, float | None]:
    """Budget that would settle a comparison: its interval clear of ``threshold`` with probability ``power``.

    Normal approximation: the interval excludes the threshold when |estimate - threshold| >
    (z_{(1+level)/2} + z_power) x SE, and SE^2 = var_seeds x n_seeds/k + var_examples x n_units/m for k seeds
    and m test units, assuming the measured effect is the true one. Returns ``seeds`` (needed at today's
    test size; None if more seeds alone cannot do it), ``test_units`` (needed with today's seeds; None
    likewise, and possibly more than the task's test split has), ``scale_both`` (factor on both) and
    ``target_se``. With 2 seeds the seed variance is itself poorly measured: read the figures as an order
    of magnitude.
    """
    gap = abs(rep.estimate - threshold)
    z = sps.norm.ppf((1 + level) / 2) + sps.norm.ppf(power)
    if gap == 0:
        return {"target_se": 0.0, "seeds": None, "test_units": None, "scale_both": math.inf}
    target = (gap / z) ** 2
    vs, ve = rep.var_seeds, rep.var_examples
    seeds = math.ceil(rep.n_seeds * vs / (target - ve)) if target > ve else None
    units = math.ceil(rep.n_units * ve / (target - vs)) if target > vs else None
    return {
        "target_se": gap / z,
        "seeds": None if seeds is None else max(seeds, rep.n_seeds),
        "test_units": None if units is None else max(units, rep.n_units),
        "scale_both": (vs + ve) / target,
    }


# ------------------------------------------------------------------------------------------ loading
def _model_key(run: Path, model: str) -> str:
    if (run / "evaluate" / model).is_dir():
        return model
    try:
        zoo = model_zoo(run)
    except FileNotFoundError:
        zoo = {}
    return zoo[model]["key"] if model in zoo else slug(model)


def load_runs(run_dir: str | Path, model: str, task: str) -> list[Predictions]:
    """Test predictions of every fine-tuning seed of ``model`` (display name or folder key) on ``task``.

    Reads ``<run_dir>/evaluate/<key>/<task>/seed-<s>/predictions.npz`` (written by
    ``kdlib.eval.finetune.finetune_seeds``), in the order of the seeds of ``summary.json`` when present, else
    sorted by seed. Paths are taken relative to ``run_dir``, so a moved run folder still loads.
    """
    run = Path(run_dir)
    folder = run / "evaluate" / _model_key(run, model) / task
    summary = folder / "summary.json"
    if summary.is_file():
        seeds = json.loads(summary.read_text(encoding="utf-8"))["seeds"]
        paths = [folder / f"seed-{s}" / PREDICTIONS_FILE for s in seeds]
    else:
        paths = sorted(folder.glob(f"seed-*/{PREDICTIONS_FILE}"), key=lambda p: int(p.parent.name[5:]))
    if not paths:
        raise FileNotFoundError(
            f"no predictions for model {model!r} on task {task!r} under {folder} (run notebook 04-evaluate first)"
        )
    return [load_predictions(p) for p in paths]

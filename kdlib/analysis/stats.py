"""Uncertainty of every score and comparison: a two-level (seeds x test examples) paired bootstrap.

A model's score on a task is measured on one test set with a few fine-tuning seeds, so it varies with
both the test examples drawn and the seed. Each bootstrap replicate (``n_resamples`` >= 1,000, seeded
``numpy.random.default_rng``) resamples both levels:

1. **test examples** with replacement, ONE draw shared by every model in the comparison (paired: the same
   resampled test set scores teacher, student and control). For tagging the unit is the *sentence*
   (prediction ids ``'<sentence>:<word>'``), so the words of a sentence move together; otherwise an example.
2. **fine-tuning seeds** with replacement; the replicate's score is the mean over the drawn seeds of the
   metric of each drawn seed's predictions on the resampled test set. Two models compared with the same
   number of seeds share the draw, paired by position (the k-th seed of both was fine-tuned with the same
   seed: same data order and head initialisation), so identical predictions give exactly [0, 0];
   otherwise each model's seeds are drawn independently. A teacher and a student in a loyalty are always
   drawn independently (every teacher seed against every student seed).

The statistic of a replicate is then the score, a difference of scores, a loyalty (teacher seeds and
student seeds both drawn; the mean over all drawn teacher x student seed pairs) or a difference of
loyalties (the teacher's draw shared by both students). The estimate is the same statistic on the data
as measured (every seed, every example: the mean over seeds that the tables print); the interval is the
percentile interval of the replicates (``numpy.quantile``). ``scipy.stats.bootstrap`` cannot draw this
hierarchical, multi-model paired resample, so the draw is done here with numpy; the metrics are computed
from per-sentence sufficient statistics (macro-F1: true positives, gold and predicted counts per class;
accuracy; Pearson moments), identical to :func:`kdlib.eval.metrics.compute_metrics` on the resampled set, and
other metrics (Spearman, seqeval entity-F1) by calling ``compute_metrics`` on each replicate.

:class:`TaskBootstrap` holds one task's resampled test sets and caches each run's metric (and each
teacher-student pair's loyalty) on them, so that the many comparisons of a run on one task are paired and
cheap; the module-level functions (:func:`score_interval`, :func:`difference_interval`, ...) build one for a
single comparison. The mean over tasks resamples each task's test set independently (different data) and averages the
replicates. Two more bootstrap runs isolate the variance due to seeds (examples fixed) and to examples
(seeds averaged); :func:`required_n` turns them into the seeds or test examples an inconclusive
comparison would need (normal approximation, ``scipy.stats.norm``).
Scores and loyalties are x100, like the book's tables.
"""

from __future__ import annotations

import json
import math
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Replicates:
    """Bootstrap replicates of one statistic, with the variance split into its seed and example parts.

    ``samples``: (n_resamples,) replicates resampling seeds and examples; ``var_seeds``: variance when only
    seeds are resampled; ``var_examples``: when only examples are (seeds averaged); ``n_seeds``: the fewest
    seeds of any model involved; ``n_units``: test units (sentences for tagging), summed over tasks.
    """

    estimate: float
    samples: np.ndarray
    var_seeds: float
    var_examples: float
    n_seeds: int
    n_units: int

    def interval(self, level: float = 0.95) -> Interval:
        lo, hi = np.quantile(self.samples, [(1 - level) / 2, (1 + level) / 2])
        return Interval(float(self.estimate), float(lo), float(hi))

    @property
    def se(self) -> float:
        return float(np.std(self.samples, ddof=1))

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
    """``coef`` x (mean over the drawn seeds of ``values``); ``values`` axes: one per side in ``sides``, then
    the replicate row (0 = measured)."""

    coef: float
    sides: tuple[int, ...]
    values: np.ndarray


def _contract(values: np.ndarray, weights: list[np.ndarray]) -> np.ndarray:
    letters = "abcdefgh"[: len(weights)]
    spec = f"{letters}r," + ",".join(f"r{c}" for c in letters) + "->r"
    return np.einsum(spec, values, *weights)


def _seed_weights(n_seeds: int, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """(n_resamples, n_seeds): the share of each seed among n_seeds seeds drawn with replacement."""
    draws = rng.integers(0, n_seeds, size=(n_resamples, n_seeds))
    return np.stack([np.bincount(row, minlength=n_seeds) for row in draws]) / n_seeds


def _combine(
    terms: Sequence[_Term],
    side_seeds: Sequence[int],
    n_units: int,
    n_resamples: int,
    rng: np.random.Generator,
    paired: Sequence[int] = (),
) -> Replicates:
    """Estimate, full replicates and the seed-only / example-only variances of sum(coef x term).

    Sides listed in ``paired`` (same number of seeds) share one seed draw.
    """
    draws = [_seed_weights(s, n_resamples, rng) for s in side_seeds]
    for i in paired[1:]:
        draws[i] = draws[paired[0]]
    uniform = [np.full((n_resamples, s), 1.0 / s) for s in side_seeds]
    est, full, seeds_only, examples_only = 0.0, 0.0, 0.0, 0.0
    for t in terms:
        measured = np.broadcast_to(t.values[..., :1], t.values.shape[:-1] + (n_resamples,))
        resampled = t.values[..., 1:]
        est += t.coef * float(_contract(t.values[..., :1], [u[:1] for u in (uniform[i] for i in t.sides)])[0])
        full = full + t.coef * _contract(resampled, [draws[i] for i in t.sides])
        seeds_only = seeds_only + t.coef * _contract(measured, [draws[i] for i in t.sides])
        examples_only = examples_only + t.coef * _contract(resampled, [uniform[i] for i in t.sides])
    return Replicates(
        est,
        np.asarray(full),
        float(np.var(seeds_only, ddof=1)),
        float(np.var(examples_only, ddof=1)),
        min(side_seeds),
        n_units,
    )


def _paired(runs_a: Sequence[Predictions], runs_b: Sequence[Predictions], first: int) -> tuple[int, ...]:
    """Sides (first, first + 1) share the seed draw when both models have the same number of seeds."""
    return (first, first + 1) if len(runs_a) == len(runs_b) else ()


class TaskBootstrap:
    """The resampled test sets of one task, shared by every comparison on it, with per-run caches.

    ``reference``: any run of the task (its ids define the test examples and the resampling units). The
    example draws depend only on (``seed``, task, ``n_resamples``), so every comparison on a task sees the
    same resampled test sets (paired across models); each run's metric and each teacher-student pair's
    loyalty on them is computed once. Seed draws are made afresh (from the same seed) in each call, so a
    result does not depend on the order of calls.
    """

    def __init__(self, reference: Predictions, *, n_resamples: int = 1000, seed: int = 0) -> None:
        if not isinstance(n_resamples, int) or n_resamples < MIN_RESAMPLES:
            raise ValueError(f"n_resamples must be an integer >= {MIN_RESAMPLES}, got {n_resamples!r}")
        self.reference, self.n_resamples = reference, n_resamples
        self._seed = [seed, zlib.crc32(reference.task.encode())]
        self.units = _units(reference)
        self.w, self.idx = _draws(self.units, n_resamples, np.random.default_rng(self._seed))
        self._cache: dict[tuple, tuple[tuple[Predictions, ...], np.ndarray]] = {}

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
        rng = np.random.default_rng(self._seed + [1])
        return _combine(terms, side_seeds, self.n_units, self.n_resamples, rng, paired)

    def score(self, runs: Sequence[Predictions], metric: str | None = None) -> Replicates:
        """One model's score x100; ``runs``: one Predictions per fine-tuning seed."""
        return self._combine([_Term(1.0, (0,), self._metric_table(runs, metric))], [len(runs)])

    def difference(
        self, runs_a: Sequence[Predictions], runs_b: Sequence[Predictions], metric: str | None = None
    ) -> Replicates:
        """score(a) - score(b) x100, on the same resampled test sets."""
        terms = [
            _Term(1.0, (0,), self._metric_table(runs_a, metric)),
            _Term(-1.0, (1,), self._metric_table(runs_b, metric)),
        ]
        return self._combine(terms, [len(runs_a), len(runs_b)], _paired(runs_a, runs_b, 0))

    def loyalty(
        self, teacher_runs: Sequence[Predictions], student_runs: Sequence[Predictions], measure: str
    ) -> Replicates:
        """A loyalty x100: teacher and student seeds both drawn, averaged over all drawn pairs."""
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
    """Replicates of a loyalty (x100): teacher and student seeds both drawn, averaged over all drawn pairs."""
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

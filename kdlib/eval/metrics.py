"""Task metrics as the paper reports them (macro-F1, accuracy, Pearson) plus the community's usual extras.

Headline metric per task (paper-spec §6): macro-F1 for UPOS, XPOS, NER, SAR, DI; accuracy for SAPN;
Pearson for STS. :func:`compute_metrics` returns it under ``"score"`` (a fraction, not ×100) beside:

* tagging: ``macro_f1`` (sklearn ``f1_score(average="macro")`` over every *word* label, i.e. the first
  sub-token of each word; the label set is the union of gold and predicted labels, ``O`` included for NER),
  ``accuracy``; for BIO tags (NER) also ``entity_f1`` / ``entity_precision`` / ``entity_recall``
  (seqeval, entity level, micro-averaged, default IOB2-lenient mode);
* classification: ``macro_f1``, ``accuracy``;
* regression: ``pearson``, ``spearman`` (scipy). A constant prediction has no defined correlation; it is
  scored 0.0 (no association), which is also what the mean predictor gets.

:data:`ALTERNATES` names, per task, the metrics readers usually quote beside the headline one (token
accuracy for UPOS/XPOS, seqeval entity-F1 for NER, Spearman for STS, ...). :func:`prediction_collapse`
flags a fine-tuning run that collapsed to (nearly) one class or a constant output: a predicted class
holding at least :data:`COLLAPSE_SHARE` of the examples while the gold labels are spread out (the most
frequent gold class below that share), or a regression output whose spread is under
:data:`COLLAPSE_SPREAD` of the gold values' spread. It also lists the *missing labels*: gold labels
holding at least :data:`MISSING_SHARE` of the examples that the run predicts for under a tenth of them
(a partial collapse, e.g. SAR predicted as only its two majority ratings).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import stats
from sklearn.metrics import accuracy_score, f1_score

from kdlib.data.tasks import get_task

KINDS = ("tagging", "classification", "regression")
METRICS = ("macro_f1", "accuracy", "pearson")
ALTERNATES = {
    "upos": ("accuracy",),
    "xpos": ("accuracy",),
    "ner": ("entity_f1", "accuracy"),
    "sapn": ("macro_f1",),
    "sar": ("accuracy",),
    "di": ("accuracy",),
    "sts": ("spearman",),
}
COLLAPSE_SHARE = 0.95
COLLAPSE_SPREAD = 0.05
MISSING_SHARE = 0.05
_DEFAULT_METRIC = {"tagging": "macro_f1", "classification": "macro_f1", "regression": "pearson"}


def task_kind_and_metric(task: str | Mapping[str, Any]) -> tuple[str, str]:
    """(kind, headline metric) of a task: a bare kind name, a task name resolved by kdlib.data.tasks (the
    declarations of the active profile, then the seven Romanian tasks) or a declaration mapping."""
    if isinstance(task, str) and task in KINDS:
        return task, _DEFAULT_METRIC[task]
    try:
        spec = get_task(task)
    except ValueError as exc:
        raise ValueError(f"{exc}; or a kind {KINDS}") from None
    return spec.kind, spec.metric


def _flatten(seqs: Sequence[Sequence[Any]], name: str) -> list[Any]:
    if any(isinstance(s, (str, bytes)) or not isinstance(s, Sequence | np.ndarray) for s in seqs):
        raise ValueError(f"tagging {name} must be a list of sentences, each a list of word labels")
    return [x for s in seqs for x in s]


def _is_bio(labels: Sequence[str]) -> bool:
    names = {str(x) for x in labels}
    return any(n.startswith(("B-", "I-")) for n in names) and names <= {"O"} | {
        n for n in names if n.startswith(("B-", "I-"))
    }


def correlation(gold: Sequence[float], pred: Sequence[float], kind: str = "pearson") -> float:
    """Pearson or Spearman correlation; 0.0 when either side is constant (correlation undefined)."""
    g, p = np.asarray(gold, dtype=np.float64), np.asarray(pred, dtype=np.float64)
    if g.size < 2 or np.ptp(g) == 0 or np.ptp(p) == 0:
        return 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", stats.ConstantInputWarning)
        r = stats.pearsonr(g, p)[0] if kind == "pearson" else stats.spearmanr(g, p)[0]
    return 0.0 if math.isnan(r) else float(r)


def compute_metrics(
    task: str,
    gold: Sequence[Any],
    pred: Sequence[Any],
    *,
    label_names: Sequence[str] | None = None,
) -> dict[str, float]:
    """All metrics of one prediction set; ``"score"`` is the paper's headline metric for ``task``.

    ``task`` is a task name of kdlib.data.load.TASKS (``"upos"``, ``"sapn"``, ...) or a kind
    (``"tagging"``, ``"classification"``, ``"regression"``; headline macro-F1/macro-F1/Pearson).
    Tagging gold/pred are lists of sentences of word labels (ints or strings); ints are mapped
    through ``label_names`` for the entity-level NER metrics. Classification labels are ints or
    strings; regression values are floats.
    """
    kind, metric = task_kind_and_metric(task)
    if len(gold) != len(pred):
        raise ValueError(f"gold has {len(gold)} examples but pred has {len(pred)}")
    if len(gold) == 0:
        raise ValueError("no examples to score")
    if kind == "regression":
        g = np.asarray(gold, dtype=np.float64)
        p = np.asarray(pred, dtype=np.float64)
        if not (np.isfinite(g).all() and np.isfinite(p).all()):
            raise ValueError("regression gold/pred contain NaN or inf")
        out = {"pearson": correlation(g, p, "pearson"), "spearman": correlation(g, p, "spearman")}
    else:
        seq_gold, seq_pred = gold, pred
        if kind == "tagging":
            _flatten(gold, "gold"), _flatten(pred, "pred")  # type check first
            for i, (a, b) in enumerate(zip(gold, pred)):
                if len(a) != len(b):
                    raise ValueError(f"sentence {i}: {len(a)} gold labels but {len(b)} predicted")
            gold, pred = _flatten(gold, "gold"), _flatten(pred, "pred")
        out = {
            "macro_f1": float(f1_score(gold, pred, average="macro", zero_division=0)),
            "accuracy": float(accuracy_score(gold, pred)),
        }
        if kind == "tagging":
            out.update(_entity_metrics(seq_gold, seq_pred, label_names))
    if metric not in out:
        raise ValueError(f"metric {metric!r} does not apply to a {kind} task")
    return {"score": out[metric], "metric": metric, **out}  # type: ignore[dict-item]


def _entity_metrics(gold, pred, label_names: Sequence[str] | None) -> dict[str, float]:
    """seqeval entity-level P/R/F1 when the labels are BIO tags; {} otherwise."""

    def names(seqs):
        if label_names is None:
            return [[str(x) for x in s] for s in seqs]
        return [[label_names[int(x)] if not isinstance(x, str) else x for x in s] for s in seqs]

    g, p = names(gold), names(pred)
    if not _is_bio([x for s in g for x in s]):
        return {}
    from seqeval.metrics import f1_score as ent_f1
    from seqeval.metrics import precision_score, recall_score

    return {
        "entity_f1": float(ent_f1(g, p, zero_division=0)),
        "entity_precision": float(precision_score(g, p, zero_division=0)),
        "entity_recall": float(recall_score(g, p, zero_division=0)),
    }


def majority_baseline(task: str, train_labels: Sequence[Any], test_gold: Sequence[Any]) -> dict[str, float]:
    """Metrics of the trivial predictor: the most frequent train label (mean train value for regression)."""
    kind, _ = task_kind_and_metric(task)
    if kind == "regression":
        mean = float(np.mean(np.asarray(train_labels, dtype=np.float64)))
        return compute_metrics(task, test_gold, [mean] * len(test_gold))
    flat = _flatten(train_labels, "train labels") if kind == "tagging" else list(train_labels)
    values, counts = np.unique(np.asarray(flat), return_counts=True)
    top = values[np.argmax(counts)].item()
    pred = [[top] * len(s) for s in test_gold] if kind == "tagging" else [top] * len(test_gold)
    return compute_metrics(task, test_gold, pred)


def prediction_collapse(kind: str, gold: Sequence[Any], pred: Sequence[Any]) -> dict[str, Any]:
    """Did one run collapse to the majority class / a constant? Flat per-example labels or values.

    Returns ``collapsed`` (bool) with the evidence: for labels ``top_label``, ``top_share`` (share of the
    most predicted label), ``gold_top_share`` and ``missing_labels``; for regression ``spread_ratio``
    (std(pred) / std(gold)).
    """
    if kind == "regression":
        g, p = np.asarray(gold, dtype=np.float64), np.asarray(pred, dtype=np.float64)
        ratio = float(np.std(p) / np.std(g)) if np.std(g) > 0 else 0.0
        return {"collapsed": bool(ratio < COLLAPSE_SPREAD), "spread_ratio": ratio}
    values, counts = np.unique(np.asarray(pred), return_counts=True)
    gold_values, gold_counts = np.unique(np.asarray(gold), return_counts=True)
    top = float(counts.max() / counts.sum())
    gold_top = float(gold_counts.max() / gold_counts.sum())
    predicted = dict(zip(values.tolist(), counts.tolist()))
    missing = [
        v
        for v, c in zip(gold_values.tolist(), gold_counts.tolist())
        if c >= MISSING_SHARE * gold_counts.sum() and predicted.get(v, 0) < 0.1 * c
    ]
    return {
        "collapsed": bool(top >= COLLAPSE_SHARE > gold_top),
        "top_label": values[np.argmax(counts)].item(),
        "top_share": top,
        "gold_top_share": gold_top,
        "missing_labels": missing,
    }

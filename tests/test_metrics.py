"""compute_metrics equals scikit-learn / scipy / seqeval; the paper's headline metric per task."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import pearsonr, spearmanr
from seqeval.metrics import f1_score as seqeval_f1
from sklearn.metrics import accuracy_score, f1_score

from kdlib.data.load import TASKS, load_task
from kdlib.eval.metrics import (
    ALTERNATES,
    compute_metrics,
    majority_baseline,
    prediction_collapse,
)


def test_headline_metric_follows_the_paper():
    assert {t: s.metric for t, s in TASKS.items()} == {
        "upos": "macro_f1",
        "xpos": "macro_f1",
        "ner": "macro_f1",
        "sapn": "accuracy",
        "sar": "macro_f1",
        "di": "macro_f1",
        "sts": "pearson",
    }
    rng = np.random.default_rng(0)
    g, p = rng.integers(0, 2, 200), rng.integers(0, 2, 200)
    assert compute_metrics("sapn", g, p)["score"] == accuracy_score(g, p)
    assert compute_metrics("di", g, p)["score"] == f1_score(g, p, average="macro")


def test_classification_and_tagging_equal_sklearn():
    rng = np.random.default_rng(1)
    g, p = rng.integers(0, 4, 300), rng.integers(0, 4, 300)
    m = compute_metrics("sar", g, p)
    assert m["macro_f1"] == f1_score(g, p, average="macro") and m["accuracy"] == accuracy_score(g, p)
    lens = rng.integers(1, 12, 40)
    gold = [rng.integers(0, 17, n).tolist() for n in lens]
    pred = [[t if rng.random() < 0.7 else int(rng.integers(0, 17)) for t in s] for s in gold]
    m = compute_metrics("upos", gold, pred)
    flat_g, flat_p = sum(gold, []), sum(pred, [])
    assert m["score"] == m["macro_f1"] == f1_score(flat_g, flat_p, average="macro")
    assert "entity_f1" not in m


def test_ner_entity_level():
    names = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    gold = [[1, 2, 0, 3], [0, 3, 4]]
    pred = [[1, 2, 0, 0], [0, 3, 4]]
    m = compute_metrics("ner", gold, pred, label_names=names)
    # 3 gold entities (PER, LOC, LOC), 2 predicted, both right: P = 1, R = 2/3, F1 = 0.8
    assert m["entity_precision"] == 1.0 and m["entity_recall"] == pytest.approx(2 / 3)
    assert m["entity_f1"] == pytest.approx(0.8)
    as_names = [[names[i] for i in s] for s in gold], [[names[i] for i in s] for s in pred]
    assert m["entity_f1"] == seqeval_f1(*as_names)
    assert m["score"] == f1_score(sum(gold, []), sum(pred, []), average="macro")


def test_regression_equals_scipy_and_constant_is_zero():
    rng = np.random.default_rng(2)
    g = rng.uniform(0, 5, 100)
    p = g + rng.normal(size=100)
    m = compute_metrics("sts", g, p)
    assert m["score"] == pytest.approx(pearsonr(g, p)[0], abs=1e-12)
    assert m["spearman"] == pytest.approx(spearmanr(g, p)[0], abs=1e-12)
    assert compute_metrics("sts", g, np.full(100, 2.5))["pearson"] == 0.0


def test_majority_baseline_on_real_upos(data_dir):
    ds = load_task("upos", data_dir)
    test = ds["test"]["tags"][:200]
    base = majority_baseline("upos", ds["train"]["tags"][:2000], test)
    flat = sum(test, [])
    noun = ds["test"].features["tags"].feature.str2int("NOUN")
    assert base["accuracy"] == pytest.approx(flat.count(noun) / len(flat))  # NOUN is the most frequent tag


def test_bad_inputs_refused():
    with pytest.raises(ValueError, match="unknown task 'pos'"):
        compute_metrics("pos", [1], [1])
    with pytest.raises(ValueError, match="3 examples but pred has 2"):
        compute_metrics("sar", [1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="sentence 1: 2 gold labels but 1 predicted"):
        compute_metrics("upos", [[1], [1, 2]], [[1], [1]])
    with pytest.raises(ValueError, match="list of sentences"):
        compute_metrics("upos", [1, 2], [1, 2])
    with pytest.raises(ValueError, match="NaN"):
        compute_metrics("sts", [1.0, 2.0], [np.nan, 1.0])
    with pytest.raises(ValueError, match="no examples"):
        compute_metrics("sts", [], [])


def test_collapse_detected_on_real_sar(data_dir):
    gold = np.asarray(load_task("sar", data_dir)["test"]["label"])
    top = int(np.bincount(gold).argmax())
    collapsed = prediction_collapse("classification", gold, np.full(len(gold), top))
    assert collapsed["collapsed"] and collapsed["top_label"] == top and collapsed["top_share"] == 1.0
    assert sorted(collapsed["missing_labels"]) == sorted(set(range(4)) - {top})
    healthy = prediction_collapse("classification", gold, gold)
    assert not healthy["collapsed"] and healthy["missing_labels"] == []
    # the partial collapse of a small model: only the two extreme ratings (1 and 5 stars) predicted
    two = np.where(gold <= 1, 0, 3)
    partial = prediction_collapse("classification", gold, two)
    assert not partial["collapsed"] and partial["missing_labels"] == [1, 2]


def test_collapse_of_regression_and_alternates(data_dir):
    gold = np.asarray(load_task("sts", data_dir)["test"]["label"], dtype=np.float64)
    rng = np.random.default_rng(0)
    assert prediction_collapse("regression", gold, np.full(len(gold), 2.6) + rng.normal(0, 0.01, len(gold)))[
        "collapsed"
    ]
    assert not prediction_collapse("regression", gold, gold + rng.normal(0, 1, len(gold)))["collapsed"]
    m = compute_metrics("sts", gold, gold + rng.normal(0, 1, len(gold)))
    assert set(ALTERNATES) == set(TASKS)
    assert all(a in m for a in ALTERNATES["sts"])

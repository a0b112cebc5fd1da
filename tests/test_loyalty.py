"""Loyalty metrics against scipy / scikit-learn and hand computations; prediction files; bad inputs refused."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy.spatial.distance import jensenshannon
from scipy.stats import pearsonr
from sklearn.metrics import accuracy_score

from kdlib.eval.loyalty import (
    Predictions,
    cli,
    label_loyalty,
    load_predictions,
    loyalty_report,
    probability_loyalty,
    regression_loyalty,
    save_predictions,
)


def _random_probs(rng: np.random.Generator, n: int, c: int) -> np.ndarray:
    logits = rng.normal(size=(n, c)) * 2
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_against_scipy_and_sklearn_on_random_inputs():
    rng = np.random.default_rng(0)
    t, s = _random_probs(rng, 500, 7), _random_probs(rng, 500, 7)
    assert label_loyalty(t, s) == accuracy_score(t.argmax(1), s.argmax(1))
    per_example = [1 - jensenshannon(a, b, base=2) for a, b in zip(t, s)]  # 1-D scipy calls, one by one
    assert probability_loyalty(t, s) == pytest.approx(np.mean(per_example), abs=1e-12)
    # the same from the definition: JS distance = sqrt(JSD), JSD = (KL(p|m) + KL(q|m)) / 2, log base 2
    m = (t + s) / 2
    jsd = 0.5 * (t * np.log2(t / m)).sum(1) + 0.5 * (s * np.log2(s / m)).sum(1)
    assert probability_loyalty(t, s) == pytest.approx(np.mean(1 - np.sqrt(jsd)), abs=1e-10)
    x, y = rng.normal(size=300), rng.normal(size=300)
    y = 0.6 * x + 0.4 * y
    assert regression_loyalty(x, y) == pytest.approx(pearsonr(x, y)[0], abs=1e-12)


def test_hand_computed_cases():
    p = np.array([[0.2, 0.3, 0.5], [1.0, 0.0, 0.0]])
    assert probability_loyalty(p, p) == pytest.approx(1.0)
    assert label_loyalty(p, p) == 1.0
    onehot_a, onehot_b = np.eye(3)[[0, 1, 2]], np.eye(3)[[1, 2, 0]]
    assert probability_loyalty(onehot_a, onehot_b) == pytest.approx(0.0, abs=1e-12)
    assert label_loyalty(onehot_a, onehot_b) == 0.0
    # p = [1, 0], q = [.5, .5]: m = [.75, .25]; KL(p|m) = log2(4/3); KL(q|m) = .5 log2(2/3) + .5 log2(2)
    jsd = 0.5 * math.log2(4 / 3) + 0.5 * (0.5 * math.log2(2 / 3) + 0.5)
    assert jsd == pytest.approx(0.3112781, abs=1e-7)
    assert probability_loyalty([[1, 0]], [[0.5, 0.5]]) == pytest.approx(1 - math.sqrt(jsd), abs=1e-12)
    assert probability_loyalty([[1, 0]], [[0.5, 0.5]]) == pytest.approx(0.442077, abs=1e-6)  # not 1 - jsd
    # two of four argmax labels agree
    t = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    s = np.array([[0.6, 0.4], [0.4, 0.6], [0.1, 0.9], [0.8, 0.2]])
    assert label_loyalty(t, s) == 0.5
    assert regression_loyalty([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    assert regression_loyalty([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)  # raw Pearson, not clipped


@pytest.mark.parametrize(
    "t, s, match",
    [
        (np.full((3, 2), 0.5), np.full((4, 2), 0.5), "3 examples but student has 4"),
        (np.full((3, 2), 0.5), np.full((3, 4), 0.25), "classes"),
        (np.array([[2.0, -1.0]]), np.array([[0.5, 0.5]]), "negative"),
        (np.array([[0.7, 0.7]]), np.array([[0.5, 0.5]]), "sum to 1.4"),
        (np.array([[np.nan, 0.5]]), np.array([[0.5, 0.5]]), "NaN"),
        (np.array([0.5, 0.5]), np.array([0.5, 0.5]), "2-D"),
        (np.zeros((2, 2, 2)), np.zeros((2, 2, 2)), "2-D"),
    ],
)
def test_bad_probabilities_refused(t, s, match):
    for fn in (label_loyalty, probability_loyalty):
        with pytest.raises(ValueError, match=match):
            fn(t, s)


def test_bad_regression_outputs_refused():
    with pytest.raises(ValueError, match="1-D"):
        regression_loyalty(np.zeros((3, 2)), np.zeros((3, 2)))
    with pytest.raises(ValueError, match="NaN"):
        regression_loyalty([1.0, np.nan, 2.0], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="3 examples but student has 2"):
        regression_loyalty([1.0, 2.0, 3.0], [1.0, 2.0])


def _pred(model, probs, ids=None, task="sar", kind="classification", names=("a", "b", "c")):
    probs = np.asarray(probs, dtype=np.float32)
    ids = ids or [f"x{i}" for i in range(len(probs))]
    gold = np.zeros(len(ids), dtype=np.int64)
    if kind == "regression":
        return Predictions(task, model, kind, "test", None, ids, gold.astype(np.float32), probs, outputs=probs)
    return Predictions(task, model, kind, "test", list(names), ids, gold, probs.argmax(1), probs=probs)


def test_files_report_and_ensemble(tmp_path):
    rng = np.random.default_rng(1)
    t1, t2, s = (_random_probs(rng, 50, 3) for _ in range(3))
    paths = [save_predictions(_pred(m, p), tmp_path / f"{m}.npz") for m, p in (("t1", t1), ("t2", t2), ("s", s))]
    back = load_predictions(paths[0])
    assert back.ids == [f"x{i}" for i in range(50)] and back.probs.shape == (50, 3)
    assert np.array_equal(back.pred, t1.astype(np.float32).argmax(1))
    report = loyalty_report(paths[:2], paths[2])
    assert [t["model"] for t in report["teachers"]] == ["t1", "t2"]
    s32 = s.astype(np.float32)
    assert report["teachers"][0]["probability_loyalty"] == pytest.approx(
        probability_loyalty(t1.astype(np.float32), s32), abs=1e-6
    )
    ens = (t1.astype(np.float32).astype(np.float64) + t2.astype(np.float32)) / 2
    assert report["ensemble"]["label_loyalty"] == label_loyalty(ens, s32)
    assert report["ensemble"]["probability_loyalty"] == pytest.approx(probability_loyalty(ens, s32), abs=1e-9)
    assert "ensemble" not in loyalty_report([paths[0]], paths[2])
    # CLI writes the same report
    out = tmp_path / "r" / "report.json"
    assert (
        cli(["--teacher", str(paths[0]), "--teacher", str(paths[1]), "--student", str(paths[2]), "--out", str(out)])
        == 0
    )
    written = json.loads(out.read_text())["ensemble"]
    assert written["models"] == ["t1", "t2"]
    assert written["probability_loyalty"] == pytest.approx(report["ensemble"]["probability_loyalty"])


def test_regression_report(tmp_path):
    rng = np.random.default_rng(2)
    t = rng.uniform(0, 5, 80)
    s = t + rng.normal(scale=0.5, size=80)
    pt = save_predictions(_pred("t", t, task="sts", kind="regression"), tmp_path / "t.npz")
    ps = save_predictions(_pred("s", s, task="sts", kind="regression"), tmp_path / "s.npz")
    r = loyalty_report([pt], ps)
    assert r["teachers"][0]["regression_loyalty"] == pytest.approx(
        pearsonr(t.astype(np.float32), s.astype(np.float32))[0], abs=1e-6
    )


def test_mismatched_files_refused(tmp_path, capsys):
    p = _random_probs(np.random.default_rng(3), 4, 3)
    a = save_predictions(_pred("a", p), tmp_path / "a.npz")
    b = save_predictions(_pred("b", p, ids=["x0", "x1", "y2", "x3"]), tmp_path / "b.npz")
    c = save_predictions(_pred("c", p[:3]), tmp_path / "c.npz")
    d = save_predictions(_pred("d", p, task="di"), tmp_path / "d.npz")
    e = save_predictions(_pred("e", p, names=("x", "y", "z")), tmp_path / "e.npz")
    with pytest.raises(ValueError, match="ids differ at position 2.*'x2'.*'y2'"):
        loyalty_report([a], b)
    with pytest.raises(ValueError, match="4 examples but .* has 3"):
        loyalty_report([a], c)
    with pytest.raises(ValueError, match="sar/classification/test but .* is di"):
        loyalty_report([a], d)
    with pytest.raises(ValueError, match="label names differ"):
        loyalty_report([a], e)
    with pytest.raises(FileNotFoundError, match="nope.npz"):
        load_predictions(tmp_path / "nope.npz")
    (tmp_path / "junk.npz").write_text("not a zip")
    with pytest.raises(ValueError, match="junk.npz: not a readable"):
        load_predictions(tmp_path / "junk.npz")
    with pytest.raises(ValueError, match="not unique"):
        _pred("f", p, ids=["x", "x", "y", "z"])
    assert cli(["--teacher", str(a), "--student", str(b)]) == 2
    assert "ids differ" in capsys.readouterr().err

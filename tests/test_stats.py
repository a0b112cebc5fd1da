"""kdlib.analysis.stats: the two-level paired bootstrap against cases with known answers, on real test sets."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from kdlib.analysis import stats
from kdlib.data.load import load_task
from kdlib.eval.finetune import to_predictions
from kdlib.eval.loyalty import Predictions, save_predictions
from kdlib.eval.metrics import compute_metrics


def _probs(labels: np.ndarray, n_classes: int, confidence: float = 0.9) -> np.ndarray:
    p = np.full((len(labels), n_classes), (1 - confidence) / (n_classes - 1))
    p[np.arange(len(labels)), labels] = confidence
    return p


def _classification(
    gold: np.ndarray, pred: np.ndarray, n_classes: int = 2, task: str = "sapn", model: str = "m"
) -> Predictions:
    ids = [f"ex{i}" for i in range(len(gold))]
    return Predictions(
        task,
        model,
        "classification",
        "test",
        [str(c) for c in range(n_classes)],
        ids,
        np.asarray(gold),
        np.asarray(pred),
        probs=_probs(np.asarray(pred), n_classes),
    )


@pytest.fixture(scope="module")
def sapn_gold(data_dir) -> np.ndarray:
    return np.asarray(load_task("sapn", data_dir)["test"]["label"][:600])


@pytest.fixture(scope="module")
def upos(data_dir):
    test = load_task("upos", data_dir)["test"].select(range(300))
    return test, len(test.features["tags"].feature.names)


def _tagging(test, n_classes: int, word_pred) -> Predictions:
    """Predictions on real UD sentences; word_pred(sentence index, gold tags) -> predicted tags."""
    outputs = [_probs(np.asarray(word_pred(s, tags)), n_classes) for s, tags in enumerate(test["tags"])]
    return to_predictions("upos", "m", "tagging", test, outputs, test.features["tags"].feature.names)


def _with_errors(gold: np.ndarray, wrong: np.ndarray, n_classes: int = 2) -> np.ndarray:
    pred = gold.copy()
    pred[wrong] = (gold[wrong] + 1) % n_classes
    return pred


def test_identical_predictions_give_a_zero_interval(sapn_gold, upos):
    rng = np.random.default_rng(0)
    a = [_classification(sapn_gold, _with_errors(sapn_gold, rng.random(len(sapn_gold)) < p)) for p in (0.2, 0.3)]
    assert stats.difference_interval(a, a).as_dict() == {"estimate": 0.0, "low": 0.0, "high": 0.0}
    test, n = upos
    tag = [_tagging(test, n, lambda s, tags: [t if (s + w) % 3 else 0 for w, t in enumerate(tags)])]
    assert stats.difference_interval(tag, tag) == stats.Interval(0.0, 0.0, 0.0)
    teacher = [_classification(sapn_gold, sapn_gold)]
    iv = stats.loyalty_difference_interval(teacher, a, a, "label_loyalty")
    assert (iv.low, iv.high) == (0.0, 0.0)


def test_known_shift_is_recovered_and_covered(sapn_gold):
    """B = A with 60 more wrong answers out of 600: accuracy difference exactly 10 points."""
    rng = np.random.default_rng(1)
    n = len(sapn_gold)
    wrong_a = rng.permutation(n)[:120]
    extra = np.setdiff1d(np.arange(n), wrong_a)[:60]
    a = [_classification(sapn_gold, _with_errors(sapn_gold, wrong_a))]
    b = [_classification(sapn_gold, _with_errors(sapn_gold, np.concatenate([wrong_a, extra])))]
    rep = stats.difference_replicates(a, b, metric="accuracy", n_resamples=2000, seed=3)
    iv = rep.interval()
    assert iv.estimate == pytest.approx(10.0)
    assert iv.low < 10.0 < iv.high and iv.low > 0
    # paired: the difference is a mean of 60 ones among 600 -> SE = sqrt(p(1-p)/n) of p = 0.1
    assert rep.se == pytest.approx(100 * math.sqrt(0.1 * 0.9 / n), rel=0.12)


def test_single_model_interval_matches_the_binomial(sapn_gold):
    rng = np.random.default_rng(2)
    n = len(sapn_gold)
    run = [_classification(sapn_gold, _with_errors(sapn_gold, rng.permutation(n)[:150]))]
    iv = stats.score_interval(run, metric="accuracy", n_resamples=4000)
    half = 100 * sps.norm.ppf(0.975) * math.sqrt(0.75 * 0.25 / n)
    assert iv.estimate == pytest.approx(75.0)
    assert (iv.high - iv.low) / 2 == pytest.approx(half, rel=0.1)


def test_seed_spread_is_part_of_the_interval(sapn_gold):
    """Two seeds scoring 70 and 80: seed variance of the mean = var(70, 80) / 2 = 25, on 1 degree of freedom."""
    n = len(sapn_gold)
    runs = [_classification(sapn_gold, _with_errors(sapn_gold, np.arange(k))) for k in (int(0.3 * n), int(0.2 * n))]
    rep = stats.score_replicates(runs, metric="accuracy", n_resamples=4000)
    assert rep.estimate == pytest.approx(75.0)
    assert (rep.var_seeds, rep.seed_df, rep.seeds_measured) == (pytest.approx(25.0), 1.0, True)
    half = math.sqrt(sps.t.ppf(0.975, n - 1) ** 2 * rep.var_examples + sps.t.ppf(0.975, 1) ** 2 * 25.0)
    iv = rep.interval()
    assert (iv.low, iv.high) == (pytest.approx(75.0 - half), pytest.approx(75.0 + half))
    one_seed = stats.score_replicates(runs[:1], metric="accuracy", n_resamples=4000)
    assert (one_seed.var_seeds, one_seed.seeds_measured) == (0.0, False)  # not measurable, not pretended
    assert rep.se > one_seed.se


def test_seed_variance_pooled_over_the_models_of_a_task(sapn_gold):
    """Seeds (70, 80) and (60, 64): pooled variance (50 + 8) / 2 = 29 on 2 df; a score gets 29/2, a difference 29."""
    n = len(sapn_gold)
    pct = {p: _classification(sapn_gold, _with_errors(sapn_gold, np.arange(int(p * n)))) for p in (0.3, 0.2, 0.4, 0.36)}
    a, b = [pct[0.3], pct[0.2]], [pct[0.4], pct[0.36]]
    boot = stats.TaskBootstrap(a[0])
    assert boot.pool_seeds([a, b, a[:1]], "accuracy") == (pytest.approx(29.0), 2)
    score, diff = boot.score(b, "accuracy"), boot.difference(a, b, "accuracy")
    assert (score.var_seeds, score.seed_df) == (pytest.approx(14.5), 2.0)
    assert (diff.estimate, diff.var_seeds) == (pytest.approx(13.0), pytest.approx(29.0))
    assert boot.score(a[:1], "accuracy").seeds_measured  # one seed, but the pool measures the spread
    assert boot.difference(a, a, "accuracy").interval() == stats.Interval(0.0, 0.0, 0.0)


def _simulated_coverage(k: int, seed_sd: float, n_sim: int, rng: np.random.Generator) -> tuple[float, float, float]:
    """Coverage of the true score (pooled over 6 models), of a true difference, and of the former bootstrap.

    A task of 150 test examples (each with a difficulty u ~ U(0, 1)); 6 models of true accuracy 60..80%, each
    fine-tuned with k seeds whose accuracy moves by N(0, seed_sd) points; a seed answers right when u < its
    accuracy. The former method resampled the k seeds with replacement (percentile interval).
    """
    n, m_models = 150, 6
    ids = [f"e{i}" for i in range(n)]
    p0 = np.linspace(0.6, 0.8, m_models)
    hits = np.zeros(3)
    for _ in range(n_sim):
        gold, u = rng.integers(0, 2, n), rng.random(n)
        p = np.clip(p0[:, None] + rng.normal(0, seed_sd / 100, (m_models, k)), 0.01, 0.99)
        preds = [[np.where(u < p[m, j], gold, 1 - gold) for j in range(k)] for m in range(m_models)]
        models = [
            [
                Predictions("sapn", "m", "classification", "test", ["0", "1"], ids, gold, q, probs=np.eye(2)[q])
                for q in qs
            ]
            for qs in preds
        ]
        boot = stats.TaskBootstrap(models[0][0], seed=int(rng.integers(1 << 30)))
        boot.pool_seeds(models, "accuracy")
        score, diff = boot.score(models[0], "accuracy").interval(), boot.difference(models[1], models[0], "accuracy")
        acc = 100 * (u[None, :] < p[0][:, None]).astype(float) @ boot.w[1:].T / n  # (k, replicates)
        former = acc[rng.integers(0, k, (boot.n_resamples, k)), np.arange(boot.n_resamples)[:, None]].mean(1)
        low, high = np.quantile(former, [0.025, 0.975])
        truth, gap = 100 * p0[0], 100 * (p0[1] - p0[0])
        iv = diff.interval()
        hits += [score.low <= truth <= score.high, iv.low <= gap <= iv.high, low <= truth <= high]
    return tuple(hits / n_sim)


@pytest.mark.parametrize(
    "k, seed_sd, want, n_sim", [(2, 4.5, 0.90, 300), (2, 16.8, 0.90, 300), (3, 16.8, 0.92, 300), (5, 9.2, 0.92, 200)]
)
def test_interval_keeps_its_coverage_with_few_seeds(k, seed_sd, want, n_sim):
    """Simulated experiments with a known seed SD: the nominal 95% interval covers at least ``want``."""
    rng = np.random.default_rng(k * 1000 + int(10 * seed_sd))
    score, diff, former = _simulated_coverage(k, seed_sd, n_sim, rng)
    assert score >= want and diff >= want, (score, diff)
    if seed_sd > 10:
        assert former < 0.9  # the former seed bootstrap fails the same check (halved seed variance, z quantile)


def test_tagging_resamples_sentences_not_words(upos):
    """Whole sentences right or wrong: the bootstrap SE is the cluster (sentence) SE, far above the word SE."""
    test, n = upos
    run = [_tagging(test, n, lambda s, tags: list(tags) if s % 2 else [(t + 1) % n for t in tags])]
    rep = stats.score_replicates(run, metric="accuracy", n_resamples=3000)
    lengths = np.array([len(t) for t in test["tags"]])
    correct = np.where(np.arange(len(lengths)) % 2 == 1, lengths, 0)
    p = correct.sum() / lengths.sum()
    cluster_se = math.sqrt(np.sum((correct - p * lengths) ** 2)) / lengths.sum()  # ratio estimator
    word_se = math.sqrt(p * (1 - p) / lengths.sum())
    assert rep.n_units == len(test)
    assert rep.se == pytest.approx(100 * cluster_se, rel=0.1)
    assert rep.se > 3 * 100 * word_se


def test_resampled_metrics_equal_compute_metrics(upos, data_dir):
    """The vectorised macro-F1 / accuracy / Pearson of a resample equal kdlib.eval.metrics on that resample."""
    test, n = upos
    rng = np.random.default_rng(4)
    run = _tagging(test, n, lambda s, tags: [t if rng.random() < 0.7 else int(rng.integers(n)) for t in tags])
    units = stats._units(run)
    w, idx = stats._draws(units, 1000, np.random.default_rng(5))
    sents_gold, sents_pred = run.sentences(run.gold.tolist()), run.sentences(run.pred.tolist())
    for metric in ("macro_f1", "accuracy"):
        rows = stats._metric_rows(run, metric, units, w, idx)
        for r in (0, 1, 7):
            sel = range(len(sents_gold)) if r == 0 else idx[r - 1]
            want = compute_metrics("upos", [sents_gold[u] for u in sel], [sents_pred[u] for u in sel])[metric]
            assert rows[r] == pytest.approx(100 * want, abs=1e-9)
    sts = load_task("sts", data_dir)["test"]
    gold = np.asarray(sts["label"][:300], dtype=np.float64)
    out = gold + np.random.default_rng(6).normal(0, 1.5, len(gold))
    reg = Predictions("sts", "m", "regression", "test", None, [str(i) for i in range(300)], gold, out, outputs=out)
    units = stats._units(reg)
    w, idx = stats._draws(units, 1000, np.random.default_rng(7))
    rows = stats._metric_rows(reg, "pearson", units, w, idx)
    assert rows[3] == pytest.approx(100 * compute_metrics("sts", gold[idx[2]], out[idx[2]])["pearson"])
    spearman = stats.score_interval([reg], metric="spearman")
    assert spearman.estimate == pytest.approx(100 * sps.spearmanr(gold, out)[0])


def test_loyalty_interval_brackets_the_measured_loyalty(sapn_gold):
    rng = np.random.default_rng(8)
    n = len(sapn_gold)
    teacher = [_classification(sapn_gold, _with_errors(sapn_gold, rng.permutation(n)[:100]))]
    student = [_classification(sapn_gold, _with_errors(teacher[0].pred, rng.permutation(n)[:90]))]
    iv = stats.loyalty_interval(teacher, student, "label_loyalty")
    assert iv.estimate == pytest.approx(85.0)
    assert iv.low < 85.0 < iv.high


def test_mean_over_tasks_and_required_n():
    a = stats.Replicates(2.0, np.array([1.0, 3.0]), 0.0, 1.0, 2, 100)
    b = stats.Replicates(4.0, np.array([3.0, 5.0]), 2.0, 1.0, 2, 300, seed_df=1.0)
    m = stats.Replicates.mean([a, b])
    assert (m.estimate, m.var_seeds, m.var_examples, m.n_units, m.seed_df) == (3.0, 0.5, 0.5, 400, 1.0)
    c = stats.Replicates(0.0, np.zeros(2), 2.0, 0.0, 3, 100, seed_df=2.0)
    assert stats.welch_df([(b.var_seeds, 1.0), (c.var_seeds, 2.0)]) == pytest.approx(16 / (4 / 1 + 4 / 2))
    z = sps.norm.ppf(0.975) + sps.norm.ppf(0.8)
    need = stats.required_n(a, 0.0)  # SE^2 = 1 at 100 examples; needs (2 / z)^2
    assert need["test_units"] == math.ceil(100 * 1.0 / (2.0 / z) ** 2)
    assert need["seeds"] is None  # seeds do not carry this variance
    assert stats.required_n(b, 4.0)["scale_both"] == math.inf


def test_bad_input_refused(sapn_gold):
    a = [_classification(sapn_gold, sapn_gold)]
    with pytest.raises(ValueError, match="n_resamples"):
        stats.score_interval(a, n_resamples=100)
    b = [_classification(sapn_gold[:10], sapn_gold[:10])]
    with pytest.raises(ValueError, match="test examples"):
        stats.difference_interval(a, b)


def test_load_runs_reads_every_seed(tmp_path, sapn_gold):
    folder = tmp_path / "evaluate" / "distil-bert-base-ro" / "sapn"
    for seed in (3, 1):
        save_predictions(
            _classification(sapn_gold, sapn_gold, model=f"s{seed}"), folder / f"seed-{seed}" / "predictions.npz"
        )
    (folder / "summary.json").write_text('{"seeds": [3, 1]}')
    runs = stats.load_runs(tmp_path, "Distil-BERT-base-ro", "sapn")
    assert [r.model for r in runs] == ["s3", "s1"]
    with pytest.raises(FileNotFoundError, match="no predictions for model 'x' on task 'sapn'"):
        stats.load_runs(tmp_path, "x", "sapn")

"""kdlib.studies.corpus_shape (chapter 08): the claims from a run's results, gated on what the students learned, with
loss curves compared at equal work only, and a sentence (not an exception) wherever a part cannot apply."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kdlib.analysis.claims import INCONCLUSIVE, NOT_TESTABLE, SUPPORTED, Claim
from kdlib.eval.loyalty import Predictions
from kdlib.studies import corpus_shape as cs
from kdlib.studies.task_distill import compare_runs, learned_gate

SEEDS = Path("/work/shared/seeds")
NAMES = ("ordered", "shuffled", "merged", "bort", "distilbert-random")


def classification_runs(correct: float, *, seed: int, n: int = 400, constant: bool = False) -> list[Predictions]:
    """One SAPN run on n balanced examples: a share ``correct`` right (or the constant label 0 everywhere)."""
    gold = np.arange(n) % 2
    rng = np.random.default_rng(seed)
    pred = np.zeros(n, dtype=np.int64) if constant else np.where(rng.random(n) < correct, gold, 1 - gold)
    probs = np.eye(2, dtype=np.float32)[pred]
    ids = [str(i) for i in range(n)]
    return [Predictions("sapn", "m", "classification", "test", ["neg", "pos"], ids, gold, pred, probs=probs)]


def curve(losses, seconds=0.5, tokens=100) -> pd.DataFrame:
    """A loss_curve frame: one record per step."""
    n = len(losses)
    steps = np.arange(1, n + 1)
    return pd.DataFrame(
        {"step": steps, "elapsed": steps * seconds, "tokens_seen": steps * tokens, "total": losses, "smoothed": losses}
    )


def fake(runs: dict[str, list], curves: dict[str, pd.DataFrame], *, majority=50.0, same_corpus=False):
    """A Plan / Results / LengthResult of one classification task ('sapn') without training anything."""
    p = cs.Plan(Path("run"), "T", cs.variants("shuffled"), {}, 100, 0.5, 0, ["sapn"], None, "No length task here.")
    ordered = {"text": ["a", "b"]}
    corpora = {"ordered": ordered, "shuffled": ordered if same_corpus else {"text": ["a", "c"]}, "merged": ordered}
    summaries = {n: {"steps": len(curves[n]), "final_losses": {"total": 1.0}, "wall_time_s": 1.0} for n in NAMES}
    r = cs.Results(corpora, summaries, curves, {(n, "sapn"): v for n, v in runs.items()}, {"sapn": majority})
    return p, r, cs.LengthResult(None, None, {}, p.length_note)


@pytest.fixture()
def learned():
    """Every student right on 90% of 400 balanced examples (baseline 50), the same predictions each."""
    return {n: classification_runs(0.9, seed=0) for n in NAMES}


def smooth_curves(scale=0.5):
    losses = np.linspace(5, 2, 50)
    return {n: curve(losses + (0.3 if n == "shuffled" else 0.0), scale) for n in NAMES}


def by_id(found: list[Claim]) -> dict[str, Claim]:
    return {c.id: c for c in found}


def test_four_claims_each_with_details_and_the_abstracts_words(learned):
    found = cs.claims(*fake(learned, smooth_curves()), n_resamples=1000)
    assert [c.id for c in found] == ["robbertje-1", "robbertje-2a", "robbertje-2b", "robbertje-3"]
    abstract = " ".join((SEEDS / "004_ae3a15c07622e286.txt").read_text(encoding="utf-8").split())
    for c in found:
        assert c.kind == "paper" and c.quote in abstract and c.details
        json.dumps(c.as_dict())  # a claims file holds plain JSON
    got = by_id(found)
    # identical predictions: shuffled - ordered is exactly [0, 0], inside +-1 point
    assert got["robbertje-1"].verdict == SUPPORTED and got["robbertje-1"].interval.estimate == 0.0
    # shuffled's loss is 0.3 above merged's at every step and every token: supported at equal work, yet no verdict,
    # since each loss is read on the student's own batches
    assert got["robbertje-2a"].verdict == NOT_TESTABLE
    assert [d["estimate"] for d in got["robbertje-2a"].details] == pytest.approx([0.3, 0.3])
    assert all("own batches" in d["reason"] and "reads supported" in d["reason"] for d in got["robbertje-2a"].details)
    assert got["robbertje-2b"].verdict == NOT_TESTABLE and "No length task here." in got["robbertje-2b"].reason
    assert got["robbertje-3"].verdict == INCONCLUSIVE  # an exact tie sits on the threshold
    assert "no budget settles it" in got["robbertje-3"].reason


def test_constant_predictors_are_never_evidence():
    constant = {n: classification_runs(0.5, seed=0, constant=True) for n in NAMES}
    got = by_id(cs.claims(*fake(constant, smooth_curves()), n_resamples=1000))
    for cid in ("robbertje-1", "robbertje-3"):
        assert got[cid].verdict == NOT_TESTABLE and got[cid].interval is None
        assert "constant predictors is no evidence" in got[cid].details[0]["reason"]


def test_models_at_the_baseline_are_not_testable_with_the_figures(learned):
    weak = {**learned, "bort": classification_runs(0.52, seed=1)}
    got = by_id(cs.claims(*fake(weak, smooth_curves()), n_resamples=1000))
    detail = got["robbertje-3"].details[0]
    assert detail["verdict"] == NOT_TESTABLE
    assert re.search(r"not learned: bort 5\d\.\d \[.*\] against the majority-class baseline's 50\.0", detail["reason"])


def test_a_sparse_log_is_not_testable_and_elapsed_times_change_no_verdict(learned):
    curves = smooth_curves()
    curves["merged"] = curves["merged"].iloc[[0, 20, 49]]  # a stalled student: 3 logged steps
    got = by_id(cs.claims(*fake(learned, curves), n_resamples=1000))
    assert got["robbertje-2a"].verdict == NOT_TESTABLE
    assert any("logged steps" in d["reason"] and "own batches" not in d["reason"] for d in got["robbertje-2a"].details)
    base = cs.claims(*fake(learned, smooth_curves(0.5)), n_resamples=1000)
    busy = smooth_curves(0.5)
    busy["merged"]["elapsed"] = np.cumsum(np.random.default_rng(0).exponential(40.0, 50))  # stalls under load
    busy["shuffled"]["elapsed"] *= 0.01
    assert [c.as_dict() for c in cs.claims(*fake(learned, busy), n_resamples=1000)] == [c.as_dict() for c in base]


def test_same_lines_make_the_order_claim_untestable(learned):
    got = by_id(cs.claims(*fake(learned, smooth_curves(), same_corpus=True), n_resamples=1000))
    assert got["robbertje-1"].verdict == NOT_TESTABLE and "same lines" in got["robbertje-1"].reason


def test_an_inconclusive_comparison_says_what_would_settle_it():
    a = classification_runs(0.8, seed=3)
    pred = a[0].pred.copy()
    right, wrong = np.flatnonzero(pred == a[0].gold), np.flatnonzero(pred != a[0].gold)
    pred[right[:3]], pred[wrong[:1]] = 1 - pred[right[:3]], 1 - pred[wrong[:1]]  # b: 2 examples fewer right
    b = [Predictions("sapn", "b", "classification", "test", ["neg", "pos"], a[0].ids, a[0].gold, pred,
                     probs=np.eye(2, dtype=np.float32)[pred])]  # fmt: skip
    d = compare_runs("a - b", "sapn", a, b, gate={"a": a, "b": b}, majority=50.0, n_resamples=1000)
    assert d["verdict"] == INCONCLUSIVE and d["estimate"] == pytest.approx(0.5) and d["low"] < 0 < d["high"]
    need = int(re.search(r"about ([\d,]+) test examples \(now 400\)", d["reason"]).group(1).replace(",", ""))
    assert need > 400
    assert learned_gate({"a": a}, 50.0) == "" and "not learned" in learned_gate({"a": a}, 80.0)


def test_length_and_claims_sentences_read_the_results(learned):
    p, r, lr = fake(learned, smooth_curves())
    found = cs.claims(p, r, lr, n_resamples=1000)
    text = cs.claims_sentence(found)
    assert text.startswith("Of the 4 claims read from the abstract:") and "3 of their 5 comparisons" in text
    assert cs.length_sentence(r, lr, found[2].details[0]) == "No length task here."
    with pytest.raises(ValueError, match="same_margin"):
        cs.claims(p, r, lr, same_margin=0)


def test_plan_picks_a_length_task_of_any_kind():
    assert cs.pick_length_task(["sts", "upos"], None) == ("upos", "")
    assert cs.pick_length_task(["upos", "sapn"], None) == ("sapn", "")
    task, note = cs.pick_length_task(["sts"], None)
    assert task is None and note.startswith("No classification or tagging task among sts")
    with pytest.raises(ValueError, match="length_task='sts'"):
        cs.pick_length_task(["sts", "sapn"], "sts")

"""kdlib.analysis.claims: verdicts, the claims file, and the main claims computed from a run folder built here.

The run folder is synthetic but made of real test sets (LaRoSeDa SAPN, RO-STS) with predictions whose
differences are known by construction, so each claim's verdict is known in advance.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from kdlib.analysis import claims
from kdlib.analysis.stats import Interval, Replicates
from kdlib.data.load import load_task
from kdlib.eval.loyalty import Predictions, save_predictions
from kdlib.eval.metrics import compute_metrics, majority_baseline

ROOT = Path(__file__).resolve().parents[1]
N = 600
TEACHERS = ("BERT-base-ro", "RoBERT-base")


def test_verdict_and_combine():
    assert claims.verdict(Interval(1, 0.5, 2), 0.0) == claims.SUPPORTED
    assert claims.verdict(Interval(-1, -2, -0.5), 0.0) == claims.CONTRADICTED
    assert claims.verdict(Interval(0.1, -1, 1), 0.0) == claims.INCONCLUSIVE
    assert claims.verdict(Interval(0, 0, 0), 0.0) == claims.INCONCLUSIVE  # on the threshold: not above it
    assert claims.verdict(Interval(-1, -2, -0.5), 0.0, above=False) == claims.SUPPORTED
    assert claims.combine([claims.SUPPORTED, claims.SUPPORTED]) == claims.SUPPORTED
    assert claims.combine([claims.SUPPORTED, claims.INCONCLUSIVE]) == claims.INCONCLUSIVE
    assert claims.combine([claims.INCONCLUSIVE, claims.CONTRADICTED]) == claims.CONTRADICTED
    assert claims.combine([]) == claims.NOT_TESTABLE
    with pytest.raises(ValueError, match="verdict 'maybe'"):
        claims.Claim("x", "c", "s", "f", None, "t", "maybe")


def test_multiplicity_margin_and_fragility():
    assert claims.adjusted_level(1) == pytest.approx(0.95)
    assert claims.adjusted_level(12) == pytest.approx(1 - 0.05 / 12)  # Bonferroni (= Holm's first step)
    iv = Interval(1.0, 0.25, 1.75)
    assert claims.margin(iv, 0.0, claims.SUPPORTED) == 0.25  # low edge 0.25 above 0
    assert claims.margin(iv, 2.0, claims.CONTRADICTED) == 0.25  # high edge 0.25 below 2
    assert claims.margin(iv, 0.5, claims.INCONCLUSIVE) == -0.25  # nearer edge overlaps 0.5 by 0.25
    assert claims.margin(iv, 2.0, claims.SUPPORTED, above=False) == 0.25
    rep = Replicates(1.0, np.zeros(2), var_seeds=0.09, var_examples=0.0, n_seeds=2, n_units=100, seed_df=1.0)
    assert claims.fragile(rep, 0.25) is True and claims.fragile(rep, 0.35) is False  # seed SE 0.3
    one_seed = Replicates(1.0, np.zeros(2), 0.0, 0.01, 1, 100, seeds_measured=False)
    assert claims.fragile(one_seed, 0.01) is None  # the seed spread is not measured: cannot say


def test_contradiction_needs_the_adjusted_interval():
    """A comparison at -1 with SE 0.45: its 95% interval [-1.88, -0.12] is below 0, but over 12 comparisons
    the 99.58% interval [-2.29, 0.29] is not, so the claim is inconclusive, shown with that interval."""
    bad = Replicates(-1.0, np.zeros(2), 0.0, 0.45**2, 2, 10**6)
    good = Replicates(5.0, np.zeros(2), 0.0, 0.45**2, 2, 10**6)
    rows = [claims._judge("x", "t", r, 0.0, True, 12) for r in [bad] + [good] * 11]
    assert rows[0]["high"] == pytest.approx(-1.0 + 1.96 * 0.45, abs=1e-3) and rows[0]["verdict"] == claims.INCONCLUSIVE
    final, row, shown, level = claims._decide(rows, 0.0, True)
    assert (final, row["estimate"], level) == (claims.INCONCLUSIVE, -1.0, pytest.approx(1 - 0.05 / 12))
    assert shown.high == pytest.approx(-1.0 + 2.865 * 0.45, abs=2e-3)  # z_{1 - 0.05/24} = 2.865
    rows = [claims._judge("x", "t", r, 0.0, True, 1) for r in [bad]]
    assert claims._decide(rows, 0.0, True)[0] == claims.CONTRADICTED  # one comparison: 95% decides


def test_claims_file_round_trip(tmp_path):
    cs = [
        claims.Claim("a", "claim", "paper", "2.0x", Interval(2.0, 1.9, 2.1), "above 1.8", claims.SUPPORTED),
        claims.Claim("b", "claim b", "paper", "", None, "t", claims.NOT_TESTABLE, "no bench"),
    ]
    path = claims.write_claims(tmp_path / "claims" / "main.json", cs)
    data = json.loads(path.read_text())
    assert data[0]["interval"] == {"estimate": 2.0, "low": 1.9, "high": 2.1} and data[1]["interval"] is None
    assert claims.read_claims(path) == cs
    assert [p.name for p in path.parent.iterdir()] == ["main.json"]  # no temporary file left
    cs[0].margin, cs[0].fragile = 0.1, True
    frame = claims.claims_frame(cs)
    assert list(frame.columns) == ["claim", "this run", "interval", "threshold", "edge to threshold", "verdict"]
    assert frame.loc["a", "interval"] == "[1.90, 2.10] (95%)" and frame.loc["a", "verdict"] == "supported (fragile)"
    assert frame.loc["a", "edge to threshold"] == "+0.10" and frame.loc["b", "edge to threshold"] == ""
    assert "fragile" in claims.explain(cs[0]) and "0.10 clear of the threshold" in claims.explain(cs[0])


# ------------------------------------------------------------------------------ a synthetic run
def _flip(gold: np.ndarray, wrong: np.ndarray) -> np.ndarray:
    pred = gold.copy()
    pred[wrong] = 1 - gold[wrong]
    return pred


def _sapn(gold: np.ndarray, pred: np.ndarray) -> Predictions:
    probs = np.where(np.eye(2)[pred] > 0, 0.8, 0.2)
    return Predictions(
        "sapn",
        "m",
        "classification",
        "test",
        ["negative", "positive"],
        [f"r{i}" for i in range(len(gold))],
        gold,
        pred,
        probs=probs,
    )


def _sts(gold: np.ndarray, out: np.ndarray) -> Predictions:
    return Predictions(
        "sts",
        "m",
        "regression",
        "test",
        None,
        [f"p{i}" for i in range(len(gold))],
        gold,
        out.astype(np.float32),
        outputs=out.astype(np.float32),
    )


def _write_model(run: Path, key: str, task: str, runs: list[Predictions]) -> None:
    folder = run / "evaluate" / key / task
    test: dict[str, dict] = {}
    for seed, p in enumerate(runs):
        save_predictions(p, folder / f"seed-{seed}" / "predictions.npz")
        gold, pred = p.gold, p.outputs if p.kind == "regression" else p.pred
        for k, v in compute_metrics(task, gold.tolist(), pred.tolist()).items():
            if isinstance(v, float):
                test.setdefault(k, {"values": []})["values"].append(v)
    for v in test.values():
        v["mean"] = float(np.mean(v["values"]))
    (folder / "summary.json").write_text(json.dumps({"seeds": list(range(len(runs))), "test": test}))


def _registry(run: Path, name: str, key: str, kind: str, teachers: list[str], init: str = "teacher") -> dict:
    (run / "students" / key).mkdir(parents=True)
    (run / "students" / key / "config.json").write_text(json.dumps({"kdlib_init": init}))
    return {name: {"path": str(run / "students" / key), "teachers": teachers, "kind": kind, "key": key}}


def _bench(speedup: float, reduction: float, repeats: int = 5) -> dict:
    def lat(median):
        timing = {"median_s": median, "min_s": median * 0.98, "max_s": median * 1.02, "repeats": repeats}
        return {"encoder": {"b32_l128": timing}}

    return {
        "device": {"type": "cpu"},
        "inference": {
            "models": {"teacher-50000": {"latency": lat(1.0)}, "student-50000": {"latency": lat(1 / speedup)}},
            "pairs": [{"teacher": "teacher-50000", "student": "student-50000", "size_reduction": reduction}],
        },
    }


@pytest.fixture(scope="module")
def real_gold(data_dir):
    sapn = np.asarray(load_task("sapn", data_dir)["test"]["label"][:N])
    sts = np.asarray(load_task("sts", data_dir)["test"]["label"][:N], dtype=np.float64)
    return sapn, sts


def build_run(
    root: Path,
    real_gold,
    *,
    student_gap: int = 6,
    control: str = "worse",
    collapse_control: bool = False,
    random_pair: bool = True,
    sts_learned: bool = True,
    constant: tuple[str, ...] = (),
    sapn_learned: bool = True,
) -> Path:
    """Teachers wrong on 60 of 600 SAPN reviews, each student on `student_gap` more. The control is "worse"
    (120 more wrong, STS noise 2.5: far worse and far less loyal) or "same" (the student's SAPN errors with 6
    of them fixed and 5 new ones, the student's STS outputs: a difference of +1 review, within the noise).
    STS outputs = gold + noise of growing size (with `sts_learned=False`: noise around the mean, unrelated to
    the gold scores, for every model, teachers included). Models (folder keys) in `constant` predict one class
    and a constant score on every seed; with `sapn_learned=False` every model predicts chance-level SAPN labels."""
    sapn, sts = real_gold
    rng = np.random.default_rng(0)
    order = rng.permutation(N)
    base_wrong, extra = order[:60], order[60:]
    noise = rng.normal(0, 1, (4, N))
    run = root / "run"
    (run / "teachers").mkdir(parents=True)
    (run / "teachers" / "teachers.json").write_text(json.dumps({t: {"path": str(run / t)} for t in TEACHERS}))
    single = {
        **_registry(run, "Distil-BERT-base-ro", "distil-bert-base-ro", "single-teacher", ["BERT-base-ro"]),
        **_registry(run, "Distil-RoBERT-base", "distil-robert-base", "single-teacher", ["RoBERT-base"]),
    }
    ensemble = {
        **_registry(
            run,
            "DistilMulti-BERT-base-ro (average)",
            "distilmulti-bert-base-ro-average",
            "ensemble (average)",
            list(TEACHERS),
        ),
        **_registry(run, "Control (MLM only)", "control-mlm-only", "control", ["BERT-base-ro"]),
    }
    if random_pair:
        ensemble.update(
            _registry(
                run,
                "Random-init Distil-BERT-base-ro",
                "random-init-distil-bert-base-ro",
                "single-teacher",
                ["BERT-base-ro"],
                init="random",
            )
        )
        ensemble.update(
            _registry(
                run,
                "Random-init control (MLM only)",
                "random-init-control-mlm-only",
                "control",
                ["BERT-base-ro"],
                init="random",
            )
        )
    (run / "distill").mkdir()
    (run / "distill" / "single.json").write_text(json.dumps(single))
    (run / "distill" / "ensemble.json").write_text(json.dumps(ensemble))

    def wrong(more: int, seed: int) -> np.ndarray:
        return np.concatenate([base_wrong, extra[seed : seed + more]])

    student = (lambda seed: wrong(student_gap, seed), 0.55)
    same = (lambda seed: np.concatenate([base_wrong, extra[seed + 6 : seed + student_gap + 5]]), 0.55)
    models = {
        "bert-base-ro": (lambda seed: base_wrong, 0.5),
        "robert-base": (lambda seed: base_wrong, 0.5),
        "distil-bert-base-ro": student,
        "distil-robert-base": student,
        "distilmulti-bert-base-ro-average": student,
        "control-mlm-only": same if control == "same" else (lambda seed: wrong(120, seed), 2.5),
    }
    if random_pair:
        models["random-init-distil-bert-base-ro"] = (lambda seed: wrong(30, seed), 1.0)
        models["random-init-control-mlm-only"] = (lambda seed: wrong(120, seed), 2.5)
    for key, (wrong_of, sd) in models.items():
        runs_sapn, runs_sts = [], []
        for seed in range(2):
            pred = _flip(sapn, wrong_of(seed)) if sapn_learned else rng.integers(0, 2, N)
            if (collapse_control and key == "control-mlm-only" and seed == 1) or key in constant:
                pred = np.ones_like(sapn)
            runs_sapn.append(_sapn(sapn, pred))
            out = sts + noise[seed] * 0.5 + noise[2 + seed] * np.sqrt(max(sd**2 - 0.25, 0))
            out = out if sts_learned else sts.mean() + noise[seed]
            runs_sts.append(_sts(sts, np.full(N, 2.5) if key in constant else out))
        _write_model(run, key, "sapn", runs_sapn)
        _write_model(run, key, "sts", runs_sts)
    (run / "bench").mkdir()
    (run / "bench" / "bench.json").write_text(json.dumps(_bench(2.1, 0.35)))
    return run


def _by_id(cs: list[claims.Claim]) -> dict[str, claims.Claim]:
    return {c.id: c for c in cs}


def test_main_claims_follow_the_data(tmp_path, real_gold):
    run = build_run(tmp_path, real_gold)
    got = _by_id(claims.main_claims(run))
    assert got["a"].verdict == claims.SUPPORTED
    assert got["b"].verdict == claims.SUPPORTED, got["b"].reason  # 1 point behind on SAPN, < 3 on STS
    assert got["c"].verdict == claims.SUPPORTED  # the two-teacher student equals the single ones
    assert got["d"].verdict == claims.SUPPORTED  # the control is far less loyal
    assert got["e"].verdict == claims.SUPPORTED  # and far worse
    assert got["e-random"].verdict == claims.SUPPORTED
    b = got["b"]  # supported: the comparison whose lower edge is nearest -3 decides, at 95%
    assert (b.interval.low, b.level) == (min(d["low"] for d in b.details), 0.95)
    assert b.margin == pytest.approx(b.interval.low + 3.0) and b.margin > 0
    assert b.fragile is (b.margin < b.details[0]["seed_se"] if len(b.details) == 1 else b.fragile)
    assert all(d["verdict"] == claims.SUPPORTED for d in b.details)
    assert [c.kind for c in got.values()] == ["paper", "paper", "paper", "project", "project", "project", "project"]
    assert got["b-released"].verdict == claims.NOT_TESTABLE and "no released student" in got["b-released"].reason
    assert got["b"].quote.startswith("Our experimental results argue") and "~35% smaller" in got["a"].quote
    assert all(not c.quote for c in got.values() if c.kind == "project")


def test_quotes_are_the_abstracts_own_words():
    seeds = Path("/work/shared/seeds")
    abstract = " ".join(p.read_text(errors="replace") for p in seeds.glob("*.txt")) if seeds.is_dir() else ""
    if "Distilling the Knowledge of Romanian BERTs" not in abstract:
        pytest.skip("the paper's abstract is not on this machine")
    for quote in (claims.ABSTRACT_COMPARABLE, claims.ABSTRACT_FAST_SMALL, claims.ABSTRACT_LOYALTY):
        assert quote in abstract


def test_every_student_meets_its_own_control(tmp_path, real_gold):
    """The control starts from BERT-base-ro: Distil-RoBERT-base (from RoBERT-base) has none to meet."""
    run = build_run(tmp_path, real_gold, random_pair=False)
    r = claims.RunResults(run)
    assert (
        r.control_of("Distil-BERT-base-ro")
        == "Control (MLM only)"
        == r.control_of("DistilMulti-BERT-base-ro (average)")
    )
    assert r.control_of("Distil-RoBERT-base") is None
    e = _by_id(claims.main_claims(run, results=r))["e"]
    untested = [d for d in e.details if d["verdict"] == claims.NOT_TESTABLE]
    assert [d["comparison"] for d in untested] == ["Distil-RoBERT-base - its control"]
    assert "tokenizer of RoBERT-base" in untested[0]["why"] and "1 not testable" in e.reason
    assert "Distil-RoBERT-base" not in set(claims.comparisons(results=r).query("b == 'Control (MLM only)'")["a"])


def test_claims_turn_when_the_data_do(tmp_path, real_gold):
    run = build_run(tmp_path, real_gold, student_gap=90, control="same", random_pair=False)
    got = _by_id(claims.main_claims(run))
    b = got["b"]
    assert b.verdict == claims.CONTRADICTED  # 15 points behind on SAPN
    assert "sapn" in b.figure and b.level == pytest.approx(1 - 0.05 / 8)  # 4 student-teacher pairs x 2 tasks
    assert b.interval.high < -3.0 and b.margin == pytest.approx(-3.0 - b.interval.high)
    assert "Bonferroni over 8" in b.reason
    assert got["e"].verdict == claims.INCONCLUSIVE  # student and control one review apart
    assert got["e"].margin < 0 and ("To settle" in got["e"].reason or "within noise" in got["e"].reason)
    assert got["e-random"].verdict == claims.NOT_TESTABLE and "random-initialisation pair" in got["e-random"].reason
    (run / "bench" / "bench.json").write_text(json.dumps(_bench(1.2, 0.5)))
    assert claims.claim_speed_size(run).verdict == claims.CONTRADICTED
    (run / "bench" / "bench.json").write_text(json.dumps(_bench(2.1, 0.35, repeats=1)))
    a = claims.claim_speed_size(run)  # one timing: no spread, no speed verdict
    assert a.verdict == claims.NOT_TESTABLE and "timed 1 and 1 times" in a.reason and "35.0% smaller" in a.figure
    (run / "bench" / "bench.json").unlink()
    assert claims.claim_speed_size(run).verdict == claims.NOT_TESTABLE


def test_tasks_at_the_floor_are_left_out_of_the_claims(tmp_path, real_gold):
    run = build_run(tmp_path, real_gold, sts_learned=False, random_pair=False)
    r = claims.RunResults(run)
    assert r.tasks == ["sapn", "sts"] and r.learned == ["sapn"]
    got = _by_id(claims.main_claims(run, results=r))
    assert {d["task"] for d in got["b"].details} == {"sapn"}
    assert "STS: teachers" in got["b"].reason and "left out as not learned" in got["b"].reason
    assert "tasks claim (b) names" in got["e"].reason
    mean = r.diff("Distil-BERT-base-ro", "BERT-base-ro")
    assert mean["mean"].interval().estimate == pytest.approx(mean["sapn"].interval().estimate)
    full = claims.RunResults(build_run(tmp_path / "full", real_gold, random_pair=False))
    assert full.learned == ["sapn", "sts"] and full.scope().startswith("All 2 tasks")


def test_no_learned_task_means_not_testable(tmp_path, real_gold):
    """No fallback: with no task learned the claims that read learned tasks are not testable, with the figures."""
    run = build_run(tmp_path, real_gold, sts_learned=False, sapn_learned=False, random_pair=False)
    r = claims.RunResults(run)
    assert r.learned == []
    got = _by_id(claims.main_claims(run, results=r))
    for cid in ("b", "c", "d", "e", "e-random"):
        assert got[cid].verdict == claims.NOT_TESTABLE and got[cid].reason.startswith("No task is learned")
    assert got["b"].figure == "0 of 2 tasks learned" and "SAPN: teachers" in got["b"].reason
    assert not r.scope().startswith("All")


def test_two_collapsed_models_are_no_evidence(tmp_path, real_gold):
    """Student and control both constant: their difference (exactly 0) is not testable, not supported."""
    keys = ("distil-bert-base-ro", "distilmulti-bert-base-ro-average", "control-mlm-only")
    run = build_run(tmp_path, real_gold, random_pair=False, constant=keys)
    r = claims.RunResults(run)
    assert r.collapsed("Control (MLM only)", "sapn") and not r.collapsed("BERT-base-ro", "sapn")
    assert r.evidence_tasks("Distil-BERT-base-ro", "Control (MLM only)") == []
    assert "mean" not in r.diff("Distil-BERT-base-ro", "Control (MLM only)")
    e = _by_id(claims.main_claims(run, results=r))["e"]
    assert e.verdict == claims.NOT_TESTABLE and "both collapsed to constant predictions" in e.reason
    assert r.evidence_tasks("Distil-BERT-base-ro", "BERT-base-ro") == ["sapn", "sts"]  # one constant model: evidence


def test_tables_baseline_and_collapse(tmp_path, real_gold, data_dir):
    run = build_run(tmp_path, real_gold, collapse_control=True, random_pair=False)
    results = claims.RunResults(run)
    table = claims.task_table(results=results, data_dir=data_dir)
    base = table[(table["model"] == "majority-class baseline") & (table["task"] == "sapn")].iloc[0]
    want = majority_baseline("sapn", load_task("sapn", data_dir)["train"]["label"], real_gold[0].tolist())
    assert base["estimate"] == pytest.approx(100 * want["score"])
    teacher = table[(table["model"] == "BERT-base-ro") & (table["task"] == "sts")].iloc[0]
    assert teacher["low"] < teacher["estimate"] < teacher["high"] and not np.isnan(teacher["spearman"])
    wide = claims.wide_task_table(table)
    assert "spearman" in wide.loc["BERT-base-ro", "sts"] and "[" in wide.loc["BERT-base-ro", "sapn"]
    collapsed = claims.collapsed_runs(results=results)
    assert collapsed[["model", "task", "seed"]].values.tolist() == [["Control (MLM only)", "sapn", 1]]
    comps = claims.comparisons(results=results)
    assert {"student - teacher", "student - control", "two-teacher - single-teacher"} <= set(comps["comparison"])
    assert set(comps[comps["comparison"].str.startswith("loyalty")]["measure"]) == {"L-L", "P-L", "R-L"}


def test_notebook_writes_the_claims(tmp_path, real_gold, data_dir):
    papermill = pytest.importorskip("papermill")
    run = build_run(tmp_path, real_gold)
    out = tmp_path / "09-claims.ipynb"
    papermill.execute_notebook(
        str(ROOT / "notebooks" / "09-claims.ipynb"),
        str(out),
        kernel_name="python3",
        parameters={"run_dir": str(run), "data_dir": str(data_dir)},
        progress_bar=False,
    )
    written = claims.read_claims(run / "claims" / "main.json")
    assert [c.id for c in written] == ["a", "b", "b-released", "c", "d", "e", "e-random"]
    assert all(c.verdict in claims.VERDICTS for c in written)
    executed = json.loads(out.read_text())
    outputs = json.dumps([c.get("outputs", []) for c in executed["cells"]])
    assert str(tmp_path) not in outputs  # no absolute paths on the page
    assert '"name": "stderr"' not in outputs and '"output_type": "error"' not in outputs
    assert "supported" in outputs and "majority-class baseline" in outputs


def test_source_notebook_is_clean():
    nb = json.loads((ROOT / "notebooks" / "09-claims.ipynb").read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert all(not c["outputs"] and c["execution_count"] is None for c in code)
    assert sum("parameters" in c["metadata"].get("tags", []) for c in code) == 1


def test_speed_interval_is_the_range_of_interleaved_round_ratios(tmp_path):
    """Five interleaved rounds: teacher/student ratios 2.0, 2.2, 1.9, 2.1, 2.4 -> median 2.1, interval [1.9, 2.4]."""
    from kdlib.analysis.claims import claim_speed_size
    from kdlib.io import write_json

    teacher, student = [1.0, 1.1, 0.95, 1.05, 1.2], [0.5] * 5
    ratios = [t / s for t, s in zip(teacher, student)]
    timing = {
        n: {
            "latency": {
                "encoder": {"b32_l128": {"median_s": sorted(x)[2], "min_s": min(x), "max_s": max(x), "repeats": 5}}
            }
        }
        for n, x in (("teacher-50000", teacher), ("student-50000", student))
    }
    pair = {"teacher": "teacher-50000", "student": "student-50000", "size_reduction": 0.35}
    pair["interleaved"] = {
        "ratios": ratios,
        "ratio_median": sorted(ratios)[2],
        "ratio_min": min(ratios),
        "ratio_max": max(ratios),
    }
    write_json(
        tmp_path / "bench" / "bench.json", {"inference": {"models": timing, "pairs": [pair], "interleaved": True}}
    )
    claim = claim_speed_size(tmp_path)
    speed = next(d for d in claim.details if d["comparison"].startswith("speed"))
    assert (speed["estimate"], speed["low"], speed["high"]) == pytest.approx((2.1, 1.9, 2.4))
    assert claim.verdict == "supported"

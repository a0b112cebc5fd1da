"""The paper's claims, each checked against this run: figure, 95% interval and a computed verdict.

A claim's verdict comes from :func:`verdict`: ``supported`` when the whole interval lies on the claimed side
of the claim's threshold, ``contradicted`` when it lies wholly on the other side, ``inconclusive`` when it
spans the threshold; ``not testable here`` (with the reason) when the run lacks what the claim needs. A
claim over several comparisons ("every task", "each student") is supported only if every comparison is,
contradicted if any is, inconclusive otherwise (:func:`combine`). The thresholds live in :data:`THRESHOLDS`
(number and wording, shown on the claims page) and nowhere else.

:func:`main_claims` computes the paper's five main claims (a)-(e) (plus the random-initialisation pair
when the run has one) from a run folder: ``bench/bench.json`` (kdlib.bench.speed), the test predictions of
notebook 04 (kdlib.analysis.stats.load_runs) and the registries of notebooks 01-03. Intervals are
kdlib.analysis.stats bootstrap intervals (seeds x test examples, paired). For an inconclusive comparison the
reason says what budget would settle it (kdlib.analysis.stats.required_n). Claims (b)-(e) read only the tasks the
teachers have *learned* at the run's scale (``THRESHOLDS["learned"]``: every teacher's interval clear of the
majority-class baseline by a margin); the others are named, not averaged in. :func:`comparisons` is the long table
of every comparison behind the claims; :func:`task_table` the per-task score intervals beside the
usual alternate metrics and the majority-class baseline; :func:`collapsed_runs` the fine-tuning seeds
that collapsed to one class.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from kdlib.analysis.reporting import model_zoo, task_columns
from kdlib.analysis.stats import (
    Interval,
    Replicates,
    TaskBootstrap,
    default_measures,
    load_runs,
    required_n,
)
from kdlib.data.load import load_task
from kdlib.eval.loyalty import Predictions
from kdlib.eval.metrics import (
    ALTERNATES,
    majority_baseline,
    prediction_collapse,
    task_kind_and_metric,
)
from kdlib.io import read_json

SUPPORTED, CONTRADICTED, INCONCLUSIVE, NOT_TESTABLE = "supported", "contradicted", "inconclusive", "not testable here"
VERDICTS = (SUPPORTED, CONTRADICTED, INCONCLUSIVE, NOT_TESTABLE)
KINDS = ("paper", "project")

# The one place for the main claims' thresholds: the number and how the page words it.
THRESHOLDS: dict[str, dict[str, Any]] = {
    "speedup": {
        "value": 1.8,
        "above": True,
        "text": 'student/teacher speed-up (encoder, batch 32 x 128 tokens) above 1.8x ("about twice as fast")',
    },
    "size_reduction_min": {"value": 30.0, "above": True, "text": "size reduction above 30%"},
    "size_reduction_max": {"value": 40.0, "above": False, "text": 'and below 40% ("about 35% smaller")'},
    "teacher_gap": {
        "value": -3.0,
        "above": True,
        "text": 'student - teacher above -3 points on every task ("within a few points")',
    },
    "multi_vs_single": {
        "value": -1.0,
        "above": True,
        "text": "two-teacher - single-teacher above -1 point on the mean over tasks "
        '("as good as or better", a 1-point non-inferiority margin)',
    },
    "loyalty_over_control": {
        "value": 0.0,
        "above": True,
        "text": "student - control loyalty to the same teacher above 0 (L-L and P-L: mean over "
        "tagging and classification tasks; R-L: STS)",
    },
    "over_control": {
        "value": 0.0,
        "above": True,
        "text": "distilled student - MLM-only control above 0 points on the mean over tasks",
    },
    "learned": {  # which tasks the claims (b)-(e) read: the others sit at the floor at this run's scale
        "value": 5.0,
        "above": True,
        "text": "a task counts when every teacher's score interval lies more than 5 points above the "
        "majority-class baseline",
    },
}
LEVEL = 0.95
POWER = 0.8
PRACTICAL_SCALE = 100  # a budget more than this many times today's is reported as "within noise of the threshold"
LOYALTY_NAMES = {"label_loyalty": "L-L", "probability_loyalty": "P-L", "regression_loyalty": "R-L"}


def verdict(interval: Interval, threshold: float, *, above: bool = True) -> str:
    """supported / contradicted / inconclusive: where the interval lies relative to ``threshold``.

    ``above``: the claim is that the value exceeds the threshold (else that it is below it).
    """
    if above:
        return SUPPORTED if interval.low > threshold else CONTRADICTED if interval.high < threshold else INCONCLUSIVE
    return SUPPORTED if interval.high < threshold else CONTRADICTED if interval.low > threshold else INCONCLUSIVE


def combine(verdicts: Sequence[str]) -> str:
    """Verdict of a claim over several comparisons: all supported, any contradicted, else inconclusive."""
    if not verdicts:
        return NOT_TESTABLE
    if all(v == SUPPORTED for v in verdicts):
        return SUPPORTED
    return CONTRADICTED if CONTRADICTED in verdicts else INCONCLUSIVE


def verdict_counts(verdicts: Sequence[str]) -> str:
    """'3 supported, 1 inconclusive': how many times each verdict occurs, most frequent first."""
    return ", ".join(f"{n} {v}" for v, n in Counter(verdicts).most_common())


@dataclass
class Claim:
    """One claim of the paper checked on this run (``details``: the comparisons behind it)."""

    id: str
    claim: str
    source: str
    figure: str
    interval: Interval | None
    threshold: str
    verdict: str
    reason: str = ""
    details: list[dict[str, Any]] = field(default_factory=list)
    kind: str = "paper"  # "paper": a sentence of the paper (quoted in `quote`); "project": this book's own question
    quote: str = ""  # the source's own words that the claim tests (abstract sentences for the seed papers)

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"claim {self.id}: verdict {self.verdict!r}, expected one of {VERDICTS}")
        if self.kind not in KINDS:
            raise ValueError(f"claim {self.id}: kind {self.kind!r}, expected one of {KINDS}")

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["interval"] = self.interval.as_dict() if self.interval else None
        return d


def write_claims(path: str | os.PathLike, claims: list[Claim]) -> Path:
    """Write the claims as a JSON list of dicts, atomically (temporary file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps([c.as_dict() for c in claims], indent=2, ensure_ascii=False, default=_plain) + "\n"
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_claims(path: str | os.PathLike) -> list[Claim]:
    """Claims written by :func:`write_claims`."""
    rows = read_json(path)
    return [Claim(**{**r, "interval": Interval(**r["interval"]) if r.get("interval") else None}) for r in rows]


def _plain(x: Any) -> Any:
    if isinstance(x, np.generic):
        return x.item()
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")


def _fmt(iv: Interval | None, unit: str = "") -> str:
    return "" if iv is None else f"[{iv.low:.2f}{unit}, {iv.high:.2f}{unit}]"


def claims_frame(claims: list[Claim]) -> pd.DataFrame:
    """The claims table a page shows: claim, this run's figure, its 95% interval, threshold, verdict."""
    return pd.DataFrame(
        [
            {
                "": c.id,
                "claim": c.claim,
                "this run": c.figure,
                "95% interval": _fmt(c.interval),
                "threshold": c.threshold,
                "verdict": c.verdict,
            }
            for c in claims
        ]
    ).set_index("")


def explain(claim: Claim) -> str:
    """One Markdown paragraph per claim: the verdict and why, generated from the claim's numbers."""
    iv = f" (95% interval {_fmt(claim.interval)})" if claim.interval else ""
    text = (
        f"**({claim.id}) {claim.claim}** — *{claim.verdict}*. This run: {claim.figure}{iv}; threshold: "
        f"{claim.threshold}."
    )
    return text + (f" {claim.reason}" if claim.reason else "")


# ------------------------------------------------------------------------------------ a run's models
class RunResults:
    """The models, tasks and test predictions of one run, with the bootstrap of every comparison (cached)."""

    def __init__(
        self,
        run_dir: str | os.PathLike,
        *,
        n_resamples: int = 1000,
        seed: int = 0,
        data_dir: str | os.PathLike | None = None,
    ) -> None:
        self.run = Path(run_dir)
        self.data_dir = data_dir
        self.zoo = model_zoo(self.run)
        self.n_resamples, self.seed = n_resamples, seed
        registry: dict[str, dict] = {}
        for part in ("single", "ensemble"):
            if (self.run / "distill" / f"{part}.json").is_file():
                registry.update(read_json(self.run / "distill" / f"{part}.json"))
        self.kind = {n: registry.get(n, {}).get("kind", "teacher") for n in self.zoo}
        self.init = {n: self._init_of(n) for n in self.zoo}
        have = [n for n in self.zoo if any((self.run / "evaluate" / self.zoo[n]["key"]).glob("*/summary.json"))]
        self.models = have
        found = [
            p.parent.name for n in have for p in (self.run / "evaluate" / self.zoo[n]["key"]).glob("*/summary.json")
        ]
        self.tasks = [
            t
            for t in task_columns(sorted(found))
            if have and all((self.run / "evaluate" / self.zoo[n]["key"] / t / "summary.json").is_file() for n in have)
        ]
        self._runs: dict[tuple[str, str], list[Predictions]] = {}
        self._reps: dict[tuple, Any] = {}
        self._boots: dict[str, TaskBootstrap] = {}

    def _init_of(self, model: str) -> str:
        """ "random" or "teacher": how the student was initialised (kdlib.engine.students records it in config.json)."""
        info = self.zoo[model]
        for folder in (Path(info["path"]), self.run / "students" / info["key"]):
            if (folder / "config.json").is_file():
                return read_json(folder / "config.json").get("kdlib_init", "teacher")
        return "teacher"

    def _pick(self, kinds: tuple[str, ...], *, random: bool) -> list[str]:
        return [n for n in self.models if self.kind[n].startswith(kinds) and (self.init[n] == "random") == random]

    @property
    def teachers(self) -> list[str]:
        return [n for n in self.models if self.zoo[n]["role"] == "teacher"]

    @property
    def single(self) -> list[str]:
        return self._pick(("single-teacher",), random=False)

    @property
    def multi(self) -> list[str]:
        return self._pick(("ensemble",), random=False)

    @property
    def students(self) -> list[str]:
        return self.single + self.multi

    @property
    def control(self) -> str | None:
        return next(iter(self._pick(("control",), random=False)), None)

    @property
    def random_pair(self) -> tuple[str, str] | None:
        """(distilled, MLM-only control), both initialised from random weights, when the run has them."""
        students = self._pick(("single-teacher",), random=True)
        controls = self._pick(("control",), random=True)
        return (students[0], controls[0]) if students and controls else None

    def teachers_of(self, model: str) -> list[str]:
        return [t for t in self.zoo[model]["teachers"] if t in self.teachers]

    def runs(self, model: str, task: str) -> list[Predictions]:
        if (model, task) not in self._runs:
            self._runs[model, task] = load_runs(self.run, self.zoo[model]["key"], task)
        return self._runs[model, task]

    def boot(self, task: str) -> TaskBootstrap:
        """The task's resampled test sets, shared by every comparison on it (kdlib.analysis.stats.TaskBootstrap)."""
        if task not in self._boots:
            self._boots[task] = TaskBootstrap(
                self.runs(self.models[0], task)[0], n_resamples=self.n_resamples, seed=self.seed
            )
        return self._boots[task]

    def score(self, model: str, task: str) -> Replicates:
        key = ("score", model, task)
        if key not in self._reps:
            self._reps[key] = self.boot(task).score(self.runs(model, task))
        return self._reps[key]

    def baseline(self, task: str) -> dict[str, float]:
        """The majority-class (or mean-value) predictor's metrics on the task's test examples (fractions)."""
        if ("baseline", task) not in self._reps:
            ref = self.runs(self.models[0], task)[0]
            kind = task_kind_and_metric(task)[0]
            gold = ref.sentences(ref.gold.tolist()) if kind == "tagging" else ref.gold.tolist()
            self._reps["baseline", task] = majority_baseline(task, _train_labels(task, self.data_dir), gold)
        return self._reps["baseline", task]

    @cached_property
    def learned(self) -> list[str]:
        """The tasks every teacher has learned at this scale (THRESHOLDS["learned"]); all tasks when none is."""
        margin = THRESHOLDS["learned"]["value"]
        out = [
            t
            for t in self.tasks
            if all(
                self.score(m, t).interval(LEVEL).low > 100.0 * self.baseline(t)["score"] + margin for m in self.teachers
            )
        ]
        return out or list(self.tasks)

    def scope(self) -> str:
        """One sentence: which tasks the claims read and which they leave out, with the figures why."""
        left = [t for t in self.tasks if t not in self.learned]
        if not left:
            return f"All {len(self.tasks)} tasks are learned well above their majority-class baseline and count."
        why = "; ".join(
            f"{t.upper()}: teachers "
            + ", ".join(f"{self.score(m, t).interval(LEVEL).estimate:.1f}" for m in self.teachers)
            + f" against the baseline's {100.0 * self.baseline(t)['score']:.1f}"
            for t in left
        )
        return (
            f"The claims read {', '.join(t.upper() for t in self.learned)}; left out as not learned at this "
            f"scale ({THRESHOLDS['learned']['text']}): {why}."
        )

    def diff(self, a: str, b: str) -> dict[str, Replicates]:
        """score(a) - score(b) per task and for the mean over the learned tasks (key "mean")."""
        key = ("diff", a, b)
        if key not in self._reps:
            per = {t: self.boot(t).difference(self.runs(a, t), self.runs(b, t)) for t in self.tasks}
            self._reps[key] = {**per, "mean": Replicates.mean([per[t] for t in self.learned])}
        return self._reps[key]

    def loyalty_diff(self, a: str, b: str, teacher: str, measure: str) -> dict[str, Replicates]:
        """loyalty(a -> teacher) - loyalty(b -> teacher) per learned task where ``measure`` applies, and their mean."""
        key = ("loyalty", a, b, teacher, measure)
        if key not in self._reps:
            tasks = [t for t in self.learned if measure in default_measures(task_kind_and_metric(t)[0])]
            per = {
                t: self.boot(t).loyalty_difference(self.runs(teacher, t), self.runs(a, t), self.runs(b, t), measure)
                for t in tasks
            }
            self._reps[key] = {**per, "mean": Replicates.mean(list(per.values()))} if per else {}
        return self._reps[key]

    def test_split_size(self, task: str) -> int | None:
        """Examples (sentences for tagging) in the task's whole test split; None for the mean or unreadable data."""
        if task == "mean":
            return None
        try:
            return len(load_task(task, self.data_dir)["test"])
        except (OSError, ValueError):
            return None

    def unit_name(self, task: str) -> str:
        if task == "mean":
            return "test units (sentences for tagging, examples otherwise, over the tasks of the mean)"
        return "test sentences" if task_kind_and_metric(task)[0] == "tagging" else "test examples"


# --------------------------------------------------------------------------------------- the claims
def _threshold(name: str) -> tuple[float, bool, str]:
    t = THRESHOLDS[name]
    return t["value"], t["above"], t["text"]


def _budget(results: RunResults, rep: Replicates, threshold: float, what: str, task: str) -> str:
    """Sentence saying what budget would settle an inconclusive comparison (kdlib.analysis.stats.required_n)."""
    need = required_n(rep, threshold, level=LEVEL, power=POWER)
    units = results.unit_name(task)
    if need["scale_both"] == float("inf"):
        return f"For {what} the estimate sits on the threshold: no budget settles it."
    if need["scale_both"] > PRACTICAL_SCALE:
        return (
            f"For {what} the estimate lies within noise of the threshold: settling it would take more than "
            f"{PRACTICAL_SCALE} times both the seeds and the {units} (80% power)."
        )
    parts = []
    if need["seeds"] is not None:
        parts.append(f"about {need['seeds']} fine-tuning seeds (now {rep.n_seeds}) at today's test size")
    if need["test_units"] is not None:
        size = results.test_split_size(task)
        over = f", more than the test split's {size:,}" if size is not None and need["test_units"] > size else ""
        parts.append(f"about {need['test_units']:,} {units} (now {rep.n_units:,}{over}) with today's seeds")
    if not parts:
        parts.append(f"about {need['scale_both']:.1f} times both the seeds and the {units}")
    caveat = (
        " With one fine-tuning seed the seed-to-seed spread is not measured, so this is a lower bound."
        if rep.n_seeds == 1
        else ""
    )
    return (
        f"To settle {what} (80% power, if the measured effect is the true one) would take "
        + " or ".join(parts)
        + "."
        + caveat
    )


def _items_claim(
    results: RunResults,
    cid: str,
    text: str,
    source: str,
    items: list[tuple[str, str, Replicates]],
    threshold_name: str,
    unit: str = " points",
) -> Claim:
    """A claim over several comparisons (label, task, replicates): combined verdict, the worst one shown."""
    thr, above, wording = _threshold(threshold_name)
    if not items:
        return Claim(cid, text, source, "", None, wording, NOT_TESTABLE, "The run has none of the models it compares.")
    rows = []
    for label, task, rep in items:
        iv = rep.interval(LEVEL)
        rows.append(
            {"comparison": label, "task": task, **iv.as_dict(), "verdict": verdict(iv, thr, above=above), "rep": rep}
        )
    worst = min(rows, key=lambda r: r["estimate"] if above else -r["estimate"])
    figure = f"{worst['estimate']:+.2f}{unit} ({worst['comparison']}, {worst['task']})"
    if len(rows) > 1:
        figure = f"worst of {len(rows)}: " + figure
    counts = {v: sum(r["verdict"] == v for r in rows) for v in (SUPPORTED, CONTRADICTED, INCONCLUSIVE)}
    final = combine([r["verdict"] for r in rows])
    reason = ", ".join(f"{n} {v}" for v, n in counts.items() if n) + f" (of {len(rows)} comparisons)."
    if final == INCONCLUSIVE:
        open_rows = [r for r in rows if r["verdict"] == INCONCLUSIVE]
        hardest = min(open_rows, key=lambda r: abs(r["estimate"] - thr))
        reason += " " + _budget(
            results, hardest["rep"], thr, f"{hardest['comparison']} on {hardest['task']}", hardest["task"]
        )
    details = [{k: v for k, v in r.items() if k != "rep"} for r in rows]
    return Claim(
        cid,
        text,
        source,
        figure,
        Interval(worst["estimate"], worst["low"], worst["high"]),
        wording,
        final,
        reason,
        details,
    )


def claim_speed_size(run_dir: str | os.PathLike) -> Claim:
    """(a) from bench/bench.json: encoder speed-up at batch 32 x 128 and the safetensors size reduction."""
    text, source = "The students are about twice as fast and about 35% smaller than their teachers", "paper §1, §7.3"
    path = Path(run_dir) / "bench" / "bench.json"
    wording = (
        THRESHOLDS["speedup"]["text"]
        + "; "
        + " ".join(THRESHOLDS[k]["text"] for k in ("size_reduction_min", "size_reduction_max"))
    )
    if not path.is_file():
        return Claim("a", text, source, "", None, wording, NOT_TESTABLE, "The run has no benchmark (06-bench).")
    bench = read_json(path)
    inf = bench.get("inference") or {}
    models, rows, figures = inf.get("models", {}), [], []
    for pair in inf.get("pairs", []):
        vocab = pair["teacher"].split("-", 1)[1]
        red = 100.0 * pair["size_reduction"]
        size_iv = Interval(red, red, red)
        size_verdicts = [
            verdict(size_iv, THRESHOLDS[k]["value"], above=THRESHOLDS[k]["above"])
            for k in ("size_reduction_min", "size_reduction_max")
        ]
        rows.append(
            {"comparison": f"size reduction, vocab {vocab}", **size_iv.as_dict(), "verdict": combine(size_verdicts)}
        )
        t = models.get(pair["teacher"], {}).get("latency", {}).get("encoder", {}).get("b32_l128")
        s = models.get(pair["student"], {}).get("latency", {}).get("encoder", {}).get("b32_l128")
        if t and s:
            iv = Interval(t["median_s"] / s["median_s"], t["min_s"] / s["max_s"], t["max_s"] / s["min_s"])
            rows.append(
                {
                    "comparison": f"speed-up, vocab {vocab}",
                    **iv.as_dict(),
                    "verdict": verdict(iv, THRESHOLDS["speedup"]["value"]),
                }
            )
            figures.append(f"{iv.estimate:.2f}x faster (vocab {vocab})")
        figures.append(f"{red:.1f}% smaller (vocab {vocab})")
    if not rows:
        return Claim("a", text, source, "", None, wording, NOT_TESTABLE, "bench.json has no inference part.")
    speed = [r for r in rows if r["comparison"].startswith("speed")]
    shown = min(speed, key=lambda r: r["estimate"]) if speed else rows[0]
    device = bench.get("device", {}).get("type", "?")
    reason = (
        f"Measured on {device} with the paper's shapes (random weights); the paper's speed figure is for a GPU. "
        "Speed-up interval: teacher's fastest / student's slowest to teacher's slowest / student's fastest "
        "repeat; sizes are exact (safetensors bytes)."
    )
    if not speed:
        reason += " No latency was measured, so only the size part is tested."
    return Claim(
        "a",
        text,
        source,
        "; ".join(figures),
        Interval(shown["estimate"], shown["low"], shown["high"]),
        wording,
        combine([r["verdict"] for r in rows]),
        reason,
        rows,
    )


def main_claims(
    run_dir: str | os.PathLike, *, n_resamples: int = 1000, seed: int = 0, results: RunResults | None = None
) -> list[Claim]:
    """The paper's main claims (a)-(e), and the random-initialisation pair, computed from the run's files."""
    r = results or RunResults(run_dir, n_resamples=n_resamples, seed=seed)
    claims = [claim_speed_size(run_dir)]
    gap = [(f"{s} - {t}", task, r.diff(s, t)[task]) for s in r.students for t in r.teachers_of(s) for task in r.learned]
    claims.append(
        _items_claim(
            r,
            "b",
            "Each student stays within a few points of its teacher on every task",
            "paper §7.1, Table 3",
            gap,
            "teacher_gap",
        )
    )
    multi = [(f"{m} - {s}", "mean", r.diff(m, s)["mean"]) for m in r.multi for s in r.single]
    claims.append(
        _items_claim(
            r,
            "c",
            "The two-teacher student is as good as or better than the single-teacher students",
            "paper §7.1",
            multi,
            "multi_vs_single",
        )
    )
    claims.append(_loyalty_claim(r))
    control = [(f"{s} - {r.control}", "mean", r.diff(s, r.control)["mean"]) for s in r.students] if r.control else []
    claims.append(
        _items_claim(
            r,
            "e",
            "Distillation adds something over training the same student without a teacher (the MLM-only control)",
            "paper §5 (the students' purpose)",
            control,
            "over_control",
        )
    )
    pair = r.random_pair
    text = "From random weights too, distillation beats MLM-only training of the same student"
    if pair:
        claims.append(
            _items_claim(
                r,
                "e-random",
                text,
                "issue #11 (not in the paper)",
                [(f"{pair[0]} - {pair[1]}", "mean", r.diff(*pair)["mean"])],
                "over_control",
            )
        )
    else:
        claims.append(
            Claim(
                "e-random",
                text,
                "issue #11 (not in the paper)",
                "",
                None,
                THRESHOLDS["over_control"]["text"],
                NOT_TESTABLE,
                "The run has no random-initialisation pair (notebook 03's random_pair parameter).",
            )
        )
    left_out = len(r.learned) < len(r.tasks)
    for claim in claims[1:]:
        if claim.verdict != NOT_TESTABLE and (claim.id == "b" or left_out):
            note = r.scope() if claim.id == "b" else "Its means are over the tasks claim (b) names."
            claim.reason = f"{claim.reason} {note}".strip()
    return claims


def _loyalty_claim(r: RunResults) -> Claim:
    """(d) each student more loyal to its teacher than the control is, for L-L, P-L and R-L."""
    text, source = "The students are loyal to their teachers (L-L, P-L, R-L)", "paper §7.2, Table 4"
    if r.control is None:
        return Claim(
            "d",
            text,
            source,
            "",
            None,
            THRESHOLDS["loyalty_over_control"]["text"],
            NOT_TESTABLE,
            "The run has no MLM-only control to define loyalty against.",
        )
    items = []
    for s in r.students:
        for t in r.teachers_of(s):
            for measure, short in LOYALTY_NAMES.items():
                reps = r.loyalty_diff(s, r.control, t, measure)
                if reps:
                    items.append((f"{short}: {s} - {r.control} (to {t})", "mean", reps["mean"]))
    claim = _items_claim(r, "d", text, source, items, "loyalty_over_control")
    claim.reason = (
        "Loyal means more loyal to the teacher than the same-shape student trained without the "
        "teacher's outputs (the control) is. " + claim.reason
    )
    return claim


# ------------------------------------------------------------------------------------------ tables
def _comparison_pairs(r: RunResults) -> list[tuple[str, str, str]]:
    """(what, a, b) of every score comparison the book reports."""
    pairs = [("student - teacher", s, t) for s in r.students for t in r.teachers_of(s)]
    if r.control:
        pairs += [("student - control", s, r.control) for s in r.students]
    pairs += [("two-teacher - single-teacher", m, s) for m in r.multi for s in r.single]
    pairs += [("strategy A - strategy B", a, b) for i, a in enumerate(r.multi) for b in r.multi[i + 1 :]]
    if r.random_pair:
        pairs.append(("random init: distilled - MLM only", *r.random_pair))
    return pairs


def comparisons(
    run_dir: str | os.PathLike | None = None,
    *,
    results: RunResults | None = None,
    n_resamples: int = 1000,
    seed: int = 0,
) -> pd.DataFrame:
    """Every comparison (scores, and loyalty to the same teacher against the control) with its interval.

    Columns: comparison, a, b, measure (the task's headline metric, or L-L / P-L / R-L), task ("mean" = the
    mean over tasks), estimate, low, high (x100 points, 95% interval).
    """
    r = results or RunResults(run_dir, n_resamples=n_resamples, seed=seed)
    rows = []
    for what, a, b in _comparison_pairs(r):
        for task, rep in r.diff(a, b).items():
            measure = "mean" if task == "mean" else task_kind_and_metric(task)[1]
            rows.append(
                {"comparison": what, "a": a, "b": b, "measure": measure, "task": task, **rep.interval(LEVEL).as_dict()}
            )
    if r.control:
        for s in r.students:
            for t in r.teachers_of(s):
                for measure, short in LOYALTY_NAMES.items():
                    for task, rep in r.loyalty_diff(s, r.control, t, measure).items():
                        rows.append(
                            {
                                "comparison": f"loyalty to {t}: student - control",
                                "a": s,
                                "b": r.control,
                                "measure": short,
                                "task": task,
                                **rep.interval(LEVEL).as_dict(),
                            }
                        )
    return pd.DataFrame(rows)


def _train_labels(task: str, data_dir: str | os.PathLike | None) -> list[Any]:
    train = load_task(task, data_dir)["train"]
    return train["tags"] if task_kind_and_metric(task)[0] == "tagging" else train["label"]


def task_table(
    run_dir: str | os.PathLike | None = None,
    *,
    results: RunResults | None = None,
    data_dir: str | os.PathLike | None = None,
    n_resamples: int = 1000,
    seed: int = 0,
) -> pd.DataFrame:
    """Per model and task: the headline score (x100) with its 95% interval, the usual alternate metrics
    (kdlib.eval.metrics.ALTERNATES, mean over seeds) and, as model "majority-class baseline", the trivial
    predictor (most frequent train label / mean train value, kdlib.eval.metrics.majority_baseline) on the same
    test examples. Long format: model, role, task, metric, estimate, low, high, then one column per alternate.
    """
    r = results or RunResults(run_dir, n_resamples=n_resamples, seed=seed, data_dir=data_dir)
    rows = []
    for task in r.tasks:
        metric = task_kind_and_metric(task)[1]
        alts = ALTERNATES.get(task, ())
        for model in r.models:
            summary = read_json(r.run / "evaluate" / r.zoo[model]["key"] / task / "summary.json")["test"]
            rows.append(
                {
                    "model": model,
                    "role": r.zoo[model]["role"],
                    "task": task,
                    "metric": metric,
                    **r.score(model, task).interval(LEVEL).as_dict(),
                    **{a: 100.0 * summary[a]["mean"] for a in alts if a in summary},
                }
            )
        base = r.baseline(task)
        rows.append(
            {
                "model": "majority-class baseline",
                "role": "baseline",
                "task": task,
                "metric": metric,
                "estimate": 100.0 * base["score"],
                "low": np.nan,
                "high": np.nan,
                **{a: 100.0 * base[a] for a in alts if a in base},
            }
        )
    return pd.DataFrame(rows)


def wide_task_table(table: pd.DataFrame) -> pd.DataFrame:
    """Models x tasks, each cell 'score [low, high]' with the alternates after it (for a page)."""
    alt_cols = [c for c in table.columns if c not in ("model", "role", "task", "metric", "estimate", "low", "high")]

    def cell(row: pd.Series) -> str:
        text = f"{row['estimate']:.1f}" + ("" if pd.isna(row["low"]) else f" [{row['low']:.1f}, {row['high']:.1f}]")
        alts = [f"{c.replace('_', '-')} {row[c]:.1f}" for c in alt_cols if not pd.isna(row.get(c))]
        return text + (f" ({'; '.join(alts)})" if alts else "")

    out = table.assign(cell=table.apply(cell, axis=1))
    wide = out.pivot(index="model", columns="task", values="cell")
    order = list(dict.fromkeys(table["model"]))
    return wide.reindex(index=order, columns=task_columns(wide.columns)).fillna("")


def collapsed_runs(run_dir: str | os.PathLike | None = None, *, results: RunResults | None = None) -> pd.DataFrame:
    """Fine-tuning runs (model, task, seed) whose test predictions collapsed to one class or a constant, or
    that never predict a frequent gold label (kdlib.eval.metrics.prediction_collapse); classification and
    regression tasks (tagging: collapse only, rare tags are always missed at small scale)."""
    r = results or RunResults(run_dir)
    rows = []
    for model in r.models:
        for task in r.tasks:
            kind = task_kind_and_metric(task)[0]
            for i, p in enumerate(r.runs(model, task)):
                c = prediction_collapse(kind, p.gold, p.outputs if kind == "regression" else p.pred)
                missing = c.get("missing_labels", []) if kind == "classification" else []
                if c["collapsed"] or missing:
                    names = p.label_names or []
                    rows.append(
                        {
                            "model": model,
                            "task": task,
                            "seed": _seed_of(r, model, task, i),
                            "collapsed": c["collapsed"],
                            "top label share": 100.0 * c.get("top_share", np.nan),
                            "never predicted": ", ".join(names[m] if m < len(names) else str(m) for m in missing),
                        }
                    )
    return pd.DataFrame(rows, columns=["model", "task", "seed", "collapsed", "top label share", "never predicted"])


def _seed_of(r: RunResults, model: str, task: str, i: int) -> int:
    return read_json(r.run / "evaluate" / r.zoo[model]["key"] / task / "summary.json")["seeds"][i]

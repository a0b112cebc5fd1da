"""The paper's claims and this project's own questions, each checked against this run: figure, interval, verdict.

Each claim has a ``kind``: ``"paper"`` (a sentence of the paper's abstract, quoted in ``quote``) or
``"project"`` (a question this book asks that the paper does not: against an MLM-only control, or about
the two-teacher student). Pages count the two kinds apart, and count claims, not their comparisons.

**Verdicts.** A comparison is *supported* when its 95% interval lies wholly on the claimed side of the
claim's threshold (:func:`verdict`). A claim over several comparisons ("every task", "each student") is
supported only if every testable comparison is (an intersection-union test: no multiplicity adjustment is
needed for "all"). It is *contradicted* when some comparison's interval lies wholly on the other side at the
Bonferroni-adjusted level 1 - 0.05/m over the claim's m comparisons (which is also Holm's first step, all that
"any is contradicted" needs), so that a false contradiction has at most a 5% chance however many
comparisons the claim has; *inconclusive* otherwise; *not testable here* (with the reason and the figures
that show why) when the run lacks what the claim needs. The interval shown beside a verdict is the one that
decides it, labelled with its level: the supported comparison whose edge is nearest the threshold, the
contradicting comparison's adjusted interval, or the open comparison of the worst estimate.

**Margin and fragility.** Each verdict states how far its deciding interval's edge lies from the threshold
(``margin``: the edge that decides it, clear of the threshold when positive; for an inconclusive verdict,
negative: how far the nearer edge overlaps it). A verdict is **fragile** when that distance is less than
one seed standard error of its comparison (sqrt(``var_seeds``), kdlib.analysis.stats): a rerun with other
fine-tuning seeds could then plausibly flip it. When the seed spread is not measured (one seed) fragility
is unknown (``None``) and the reason says so; timing and size verdicts have no seeds (``None`` / ``False``).

**What is evidence.** Claims (b)-(e) read only the tasks the teachers have *learned* at the run's scale
(``THRESHOLDS["learned"]``); when no task is learned they are not testable here (no fallback lets the
tasks back in). A comparison of two models that both collapsed to constant predictions on a task
(kdlib.eval.metrics.prediction_collapse on every seed) is not evidence: that comparison is not testable, and
the mean over tasks leaves that task out. Every student is compared with *its own* control: same
initialisation (teacher layers or random) and same tokenizer (the registry's ``tokenizer_from``); a student
with none has that comparison not testable. Timing claims need repeated measurements (at least
``MIN_REPEATS`` per model; the interval is the spread of the repeats) or are not testable here. The
thresholds live in :data:`THRESHOLDS` (number, practical margin and wording, shown on the claims page) and
nowhere else. For an inconclusive verdict the reason says what budget would settle it
(kdlib.analysis.stats.required_n).

:func:`main_claims` computes (a)-(e), the random-initialisation pair and (b-released), claim (b) for the students
the authors released (role "released" in the registry, notebook 04's ``released_students``; not testable here
without them), from a run folder:
``bench/bench.json`` (kdlib.bench.speed), the test predictions of notebook 04 (kdlib.analysis.stats.load_runs),
the registries of notebooks 01-04. :func:`comparisons` is the long table of every comparison behind the
claims; :func:`task_table` the per-task score intervals beside the usual alternate metrics and the
majority-class baseline; :func:`collapsed_runs` the fine-tuning seeds that collapsed to one class.
"""

from __future__ import annotations

import json
import os
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
from kdlib.io import atomic_path, read_json

SUPPORTED, CONTRADICTED, INCONCLUSIVE, NOT_TESTABLE = "supported", "contradicted", "inconclusive", "not testable here"
VERDICTS = (SUPPORTED, CONTRADICTED, INCONCLUSIVE, NOT_TESTABLE)
KINDS = ("paper", "project")

# The one place for the main claims' thresholds: the number and how the page words it.
THRESHOLDS: dict[str, dict[str, Any]] = {
    "speedup": {
        "value": 1.8,
        "above": True,
        "text": 'student/teacher speed-up (encoder, batch 32 x 128 tokens) above 1.8x: "about twice as fast" '
        "read with a 10% practical margin below 2x",
    },
    "size_reduction_min": {
        "value": 30.0,
        "above": True,
        "text": 'size reduction above 30% and below 40%: "~35% smaller" read with a 5-point practical margin',
    },
    "size_reduction_max": {"value": 40.0, "above": False, "text": "(the 40% side of that margin)"},
    "teacher_gap": {
        "value": -3.0,
        "above": True,
        "text": 'student - teacher above -3 points on every learned task: "comparable performance" read '
        "as a practical margin of 3 points",
    },
    "multi_vs_single": {
        "value": -1.0,
        "above": True,
        "text": "two-teacher - single-teacher above -1 point on the mean over learned tasks: "
        '"as good as or better" with a 1-point non-inferiority margin',
    },
    "loyalty_over_control": {
        "value": 0.0,
        "above": True,
        "text": "student - control loyalty to the same teacher above 0 (L-L and P-L: mean over learned "
        "tagging and classification tasks; R-L: STS); margin 0: any gain counts, as loyalty has no agreed "
        "practical margin",
    },
    "over_control": {
        "value": 0.0,
        "above": True,
        "text": "distilled student - its own MLM-only control above 0 points on the mean over learned tasks; "
        "margin 0: any gain counts, the question being whether distillation adds anything",
    },
    "learned": {  # which tasks the claims (b)-(e) read: the others sit at the floor at this run's scale
        "value": 5.0,
        "above": True,
        "text": "a task counts when every teacher's score interval lies more than 5 points (practical margin) "
        "above the majority-class baseline",
    },
}
LEVEL = 0.95
MIN_REPEATS = 5  # timed repeats per model that a speed verdict needs
SIZE_KEYS = ("size_reduction_min", "size_reduction_max")
POWER = 0.8
PRACTICAL_SCALE = 100  # a budget more than this many times today's is reported as "within noise of the threshold"
# The paper's abstract (Avram et al., LREC 2022; arXiv 2112.12650), in its own words.
ABSTRACT_COMPARABLE = (
    "Our experimental results argue that the three distilled models offer performance comparable to their teachers"
)
ABSTRACT_FAST_SMALL = "while being twice as fast on a GPU and ~35% smaller"
ABSTRACT_LOYALTY = (
    "we further test the similarity between the predictions of our students versus their teachers by measuring "
    "their label and probability loyalty, together with regression loyalty"
)
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


def adjusted_level(m: int, level: float = LEVEL) -> float:
    """Bonferroni level over m comparisons (Holm's first step): a false contradiction stays under 1 - level."""
    return 1 - (1 - level) / max(m, 1)


def margin(iv: Interval, threshold: float, verdict_: str, *, above: bool = True) -> float:
    """Signed distance of the deciding edge from the threshold: > 0 clear of it, < 0 overlapping it."""
    near, far = (iv.low, iv.high) if above else (-iv.high, -iv.low)
    thr = threshold if above else -threshold
    if verdict_ == SUPPORTED:
        return near - thr
    if verdict_ == CONTRADICTED:
        return thr - far
    return -min(thr - near, far - thr)


def fragile(rep: Replicates, gap: float | None) -> bool | None:
    """True when the deciding edge lies within one seed standard error of the threshold; None if unmeasured."""
    if gap is None or not rep.seeds_measured:
        return None
    return abs(gap) < rep.var_seeds**0.5


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
    level: float = LEVEL  # confidence level of `interval` (Bonferroni-adjusted when it decides a contradiction)
    margin: float | None = None  # deciding edge's distance from the threshold (> 0: clear of it)
    fragile: bool | None = None  # the margin is under one seed standard error (None: not assessable)

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
    text = json.dumps([c.as_dict() for c in claims], indent=2, ensure_ascii=False, default=_plain) + "\n"
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def read_claims(path: str | os.PathLike) -> list[Claim]:
    """Claims written by :func:`write_claims`."""
    rows = read_json(path)
    return [Claim(**{**r, "interval": Interval(**r["interval"]) if r.get("interval") else None}) for r in rows]


def _plain(x: Any) -> Any:
    if isinstance(x, np.generic):
        return x.item()
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")


def _fmt(iv: Interval | None, unit: str = "", level: float | None = None) -> str:
    if iv is None:
        return ""
    return f"[{iv.low:.2f}{unit}, {iv.high:.2f}{unit}]" + (f" ({_pct(level)})" if level else "")


def _pct(level: float) -> str:
    """'95%', '99.6%'; 'range' for a level of 1 (the spread of repeated timings, or an exact figure)."""
    return "range" if level >= 1 else f"{100 * level:.3g}%"


def shown_verdict(claim: Claim) -> str:
    """The verdict as a page prints it: marked "(fragile)" when a rerun with other seeds could flip it."""
    return claim.verdict + (" (fragile)" if claim.fragile else "")


def claims_frame(claims: list[Claim]) -> pd.DataFrame:
    """The claims table a page shows: claim, this run's figure, the deciding interval (its level), threshold,
    the deciding edge's distance from the threshold and the verdict (marked when fragile)."""
    return pd.DataFrame(
        [
            {
                "": c.id,
                "claim": c.claim,
                "this run": c.figure,
                "interval": _fmt(c.interval, level=c.level),
                "threshold": c.threshold,
                "edge to threshold": "" if c.margin is None else f"{c.margin:+.2f}",
                "verdict": shown_verdict(c),
            }
            for c in claims
        ]
    ).set_index("")


def explain(claim: Claim) -> str:
    """One Markdown paragraph per claim: the paper's words (if any), the verdict and why, from the claim's numbers."""
    iv = f" ({_pct(claim.level)}: {_fmt(claim.interval)})" if claim.interval else ""
    quote = f' The paper: "{claim.quote}".' if claim.quote else ""
    edge = ""
    if claim.margin is not None:
        side = "clear of" if claim.margin > 0 else "overlapping"
        edge = f" Its deciding edge lies {abs(claim.margin):.2f} {side} the threshold"
        edge += {True: ", under one seed standard error: fragile.", False: ", more than one seed standard error."}.get(
            claim.fragile, "."
        )
    text = (
        f"**({claim.id}) {claim.claim}** — *{shown_verdict(claim)}*.{quote} This run: {claim.figure}{iv}; "
        f"threshold: {claim.threshold}.{edge}"
    )
    return text + (f" {claim.reason}" if claim.reason else "")


def kind_counts(claims: Sequence[Claim]) -> str:
    """ "the paper's 2 claims: 1 supported, 1 not testable here; this project's 4 own questions: ...": apart."""
    parts = []
    for kind, name in (("paper", "the paper's {} claims"), ("project", "this project's {} own questions")):
        vs = [c.verdict for c in claims if c.kind == kind]
        if vs:
            parts.append(f"{name.format(len(vs))}: {verdict_counts(vs)}")
    return "; ".join(parts)


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
        self.source = {n: self._source_of(n, registry.get(n)) for n in self.zoo}
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

    def _source_of(self, model: str, entry: dict | None) -> str:
        """The teacher whose tokenizer (and, with teacher init, layers) the model starts from: itself for a teacher."""
        if not entry:
            return model
        log = entry.get("log")
        summary = self.run / "distill" / Path(log).parent.name / "summary.json" if log else None
        if summary is not None and summary.is_file():
            found = read_json(summary).get(model, {}).get("tokenizer_from")
            if found:
                return found
        return (entry.get("teachers") or [model])[0]

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
    def controls(self) -> list[str]:
        return [n for n in self.models if self.kind[n].startswith("control")]

    def control_of(self, model: str) -> str | None:
        """The MLM-only control with the model's initialisation and tokenizer (None: the run has no such control)."""
        same = [c for c in self.controls if (self.init[c], self.source[c]) == (self.init[model], self.source[model])]
        return same[0] if same else None

    def no_control_reason(self, model: str) -> str:
        """Why a student has no control to compare with: what it starts from against what the controls do."""
        have = "; ".join(f"{c} from {self.init[c]} init, tokenizer of {self.source[c]}" for c in self.controls)
        return (
            f"{model} starts from {self.init[model]} init with the tokenizer of {self.source[model]}, and no "
            f"MLM-only control does ({have or 'the run has no control'})"
        )

    @property
    def random_pair(self) -> tuple[str, str] | None:
        """(distilled, its MLM-only control), both initialised from random weights, when the run has them."""
        pairs = [(s, self.control_of(s)) for s in self._pick(("single-teacher",), random=True)]
        return next(((s, c) for s, c in pairs if c), None)

    def collapsed(self, model: str, task: str) -> bool:
        """Every seed of the model predicts one class or a constant on the task (kdlib.eval.metrics)."""
        kind = task_kind_and_metric(task)[0]
        return all(
            prediction_collapse(kind, p.gold, p.outputs if kind == "regression" else p.pred)["collapsed"]
            for p in self.runs(model, task)
        )

    def evidence_tasks(self, a: str, b: str) -> list[str]:
        """The learned tasks on which a and b are not both collapsed (two constant predictors are no evidence)."""
        return [t for t in self.learned if not (self.collapsed(a, t) and self.collapsed(b, t))]

    def teachers_of(self, model: str) -> list[str]:
        return [t for t in self.zoo[model]["teachers"] if t in self.teachers]

    def runs(self, model: str, task: str) -> list[Predictions]:
        if (model, task) not in self._runs:
            self._runs[model, task] = load_runs(self.run, self.zoo[model]["key"], task)
        return self._runs[model, task]

    def boot(self, task: str) -> TaskBootstrap:
        """The task's resampled test sets, shared by every comparison on it (kdlib.analysis.stats.TaskBootstrap),
        with the seed variance of its score pooled over the models that did not collapse."""
        if task not in self._boots:
            boot = TaskBootstrap(self.runs(self.models[0], task)[0], n_resamples=self.n_resamples, seed=self.seed)
            boot.pool_seeds([self.runs(m, task) for m in self.models if not self.collapsed(m, task)])
            self._boots[task] = boot
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
        """The tasks every teacher has learned at this scale (THRESHOLDS["learned"]); possibly none."""
        margin = THRESHOLDS["learned"]["value"]
        return [
            t
            for t in self.tasks
            if self.teachers
            and all(
                self.score(m, t).interval(LEVEL).low > 100.0 * self.baseline(t)["score"] + margin for m in self.teachers
            )
        ]

    def floor_figures(self, tasks: Sequence[str]) -> str:
        """'SAPN: teachers 55.0 [50.1, 59.9], ... against the baseline's 52.0; ...': why tasks are not learned."""
        return "; ".join(
            f"{t.upper()}: teachers "
            + ", ".join(
                f"{self.score(m, t).estimate:.1f} {_fmt(self.score(m, t).interval(LEVEL))}" for m in self.teachers
            )
            + f" against the baseline's {100.0 * self.baseline(t)['score']:.1f}"
            for t in tasks
        )

    def scope(self) -> str:
        """One sentence: which tasks the claims read and which they leave out, with the figures why."""
        left = [t for t in self.tasks if t not in self.learned]
        if not left:
            return f"All {len(self.tasks)} tasks are learned well above their majority-class baseline and count."
        if not self.learned:
            return f"No task is learned at this scale ({THRESHOLDS['learned']['text']}): {self.floor_figures(left)}."
        return (
            f"The claims read {', '.join(t.upper() for t in self.learned)}; left out as not learned at this "
            f"scale ({THRESHOLDS['learned']['text']}): {self.floor_figures(left)}."
        )

    def diff(self, a: str, b: str) -> dict[str, Replicates]:
        """score(a) - score(b) per task and, when a's and b's evidence tasks exist, their mean (key "mean")."""
        key = ("diff", a, b)
        if key not in self._reps:
            per = {t: self.boot(t).difference(self.runs(a, t), self.runs(b, t)) for t in self.tasks}
            used = self.evidence_tasks(a, b)
            self._reps[key] = {**per, **({"mean": Replicates.mean([per[t] for t in used])} if used else {})}
        return self._reps[key]

    def loyalty_diff(self, a: str, b: str, teacher: str, measure: str) -> dict[str, Replicates]:
        """loyalty(a -> teacher) - loyalty(b -> teacher) per evidence task where ``measure`` applies, and their mean."""
        key = ("loyalty", a, b, teacher, measure)
        if key not in self._reps:
            tasks = [t for t in self.evidence_tasks(a, b) if measure in default_measures(task_kind_and_metric(t)[0])]
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
        if not rep.seeds_measured
        else ""
    )
    return (
        f"To settle {what} (80% power, if the measured effect is the true one) would take "
        + " or ".join(parts)
        + "."
        + caveat
    )


# (text, source, kind, quote) of each main claim; (d)'s source quotes what the paper does measure
SPECS: dict[str, tuple[str, str, str, str]] = {
    "a": (
        "The students are about twice as fast and about 35% smaller than their teachers",
        "paper abstract; §7.3",
        "paper",
        ABSTRACT_FAST_SMALL,
    ),
    "b": (
        "Each student stays within a few points of its teacher on every task",
        "paper abstract; §7.1, Table 3",
        "paper",
        ABSTRACT_COMPARABLE,
    ),
    "b-released": (
        "The authors' released students stay within a few points of their teachers on every task",
        "paper abstract; §7.1, Table 3 (the students the authors released: racai/distilbert-*)",
        "paper",
        ABSTRACT_COMPARABLE,
    ),
    "c": (
        "The two-teacher student is as good as or better than the single-teacher students",
        "this project (the paper reports the scores, §7.1; its abstract ranks no student)",
        "project",
        "",
    ),
    "d": (
        "The students are more loyal to their teachers than their own MLM-only control is (L-L, P-L, R-L)",
        f'this project (the paper has no control; it only reports loyalties, §7.2, Table 4: "{ABSTRACT_LOYALTY}")',
        "project",
        "",
    ),
    "e": (
        "Distillation adds something over training the same student without a teacher (its own MLM-only control)",
        "this project (the paper has no control)",
        "project",
        "",
    ),
    "e-random": (
        "From random weights too, distillation beats MLM-only training of the same student",
        "this project (issue #11; not in the paper)",
        "project",
        "",
    ),
}
THRESHOLD_OF = {
    "b": "teacher_gap",
    "b-released": "teacher_gap",
    "c": "multi_vs_single",
    "d": "loyalty_over_control",
    "e": "over_control",
    "e-random": "over_control",
}
Item = tuple[str, str, "Replicates | None", str]  # (comparison, task, replicates or None, why not testable)


def _claim(cid: str, threshold: str, **fields: Any) -> Claim:
    """A main claim with its text, source, kind and quote from SPECS."""
    text, source, kind, quote = SPECS[cid]
    fields = {"figure": "", "interval": None, **fields}
    return Claim(cid, text, source, threshold=threshold, kind=kind, quote=quote, **fields)


def _judge(label: str, task: str, rep: Replicates, thr: float, above: bool, m: int) -> dict[str, Any]:
    """One comparison: supported on its 95% interval, contradicted on its Bonferroni-adjusted one."""
    iv, adj = rep.interval(LEVEL), rep.interval(adjusted_level(m))
    if verdict(iv, thr, above=above) == SUPPORTED:
        v = SUPPORTED
    else:
        v = CONTRADICTED if verdict(adj, thr, above=above) == CONTRADICTED else INCONCLUSIVE
    return {
        "comparison": label,
        "task": task,
        **iv.as_dict(),
        "adjusted_level": adjusted_level(m),
        "adjusted_low": adj.low,
        "adjusted_high": adj.high,
        "seed_se": rep.var_seeds**0.5 if rep.seeds_measured else None,
        "verdict": v,
        "rep": rep,
    }


def _decide(rows: list[dict[str, Any]], thr: float, above: bool) -> tuple[str, dict[str, Any], Interval, float]:
    """(verdict, deciding row, deciding interval, its level): see the module docstring."""
    sign = 1.0 if above else -1.0

    def adjusted(r: dict[str, Any]) -> Interval:
        return Interval(r["estimate"], r["adjusted_low"], r["adjusted_high"])

    def plain(r: dict[str, Any]) -> Interval:
        return Interval(r["estimate"], r["low"], r["high"])

    if all(r["verdict"] == SUPPORTED for r in rows):
        row = min(rows, key=lambda r: margin(plain(r), thr, SUPPORTED, above=above))
        return SUPPORTED, row, plain(row), LEVEL
    against = [r for r in rows if r["verdict"] == CONTRADICTED]
    if against:
        row = max(against, key=lambda r: margin(adjusted(r), thr, CONTRADICTED, above=above))
        return CONTRADICTED, row, adjusted(row), row["adjusted_level"]
    row = min((r for r in rows if r["verdict"] != SUPPORTED), key=lambda r: sign * r["estimate"])
    if verdict(plain(row), thr, above=above) == CONTRADICTED:  # only the adjusted interval keeps it open
        return INCONCLUSIVE, row, adjusted(row), row["adjusted_level"]
    return INCONCLUSIVE, row, plain(row), LEVEL


def _untested(items: list[Item]) -> str:
    """'1 not testable: A - B on SAPN (both collapsed ...).' for the comparisons without evidence."""
    out = [f"{label} on {task}: {why}" for label, task, rep, why in items if rep is None]
    return f" {len(out)} not testable: " + "; ".join(out) + "." if out else ""


def _items_claim(results: RunResults, cid: str, items: list[Item], unit: str = " points") -> Claim:
    """A claim over several comparisons: verdict with multiplicity control, the deciding comparison shown."""
    thr, above, wording = _threshold(THRESHOLD_OF[cid])
    testable = [i for i in items if i[2] is not None]
    if not testable:
        why = _untested(items).strip() or "The run has none of the models it compares."
        return _claim(cid, wording, verdict=NOT_TESTABLE, reason=why)
    m = len(testable)
    rows = [_judge(label, task, rep, thr, above, m) for label, task, rep, _ in testable]
    final, row, shown, level = _decide(rows, thr, above)
    gap = margin(shown, thr, final, above=above)
    figure = f"{row['estimate']:+.2f}{unit} ({row['comparison']}, {row['task']})"
    if m > 1:
        figure = f"deciding of {m}: " + figure
    counts = {v: sum(r["verdict"] == v for r in rows) for v in (SUPPORTED, CONTRADICTED, INCONCLUSIVE)}
    reason = ", ".join(f"{n} {v}" for v, n in counts.items() if n) + f" (of {m} testable comparisons"
    reason += f"; a contradiction is judged at the {_pct(adjusted_level(m))} level, Bonferroni over {m})."
    reason += _untested(items)
    rep = row["rep"]
    if not rep.seeds_measured:
        reason += (
            " With one fine-tuning seed the seed spread is not measured: the interval covers test-example "
            "variation only, and whether a rerun could flip the verdict cannot be judged."
        )
    if final == INCONCLUSIVE:
        reason += " " + _budget(results, rep, thr, f"{row['comparison']} on {row['task']}", row["task"])
    details = [{k: v for k, v in r.items() if k != "rep"} for r in rows]
    details += [
        {"comparison": lab, "task": t, "verdict": NOT_TESTABLE, "why": w} for lab, t, rp, w in items if rp is None
    ]
    return _claim(
        cid,
        wording,
        figure=figure,
        interval=shown,
        verdict=final,
        reason=reason,
        details=details,
        level=level,
        margin=gap,
        fragile=fragile(rep, gap),
    )


def _speed_row(vocab: str, t: dict | None, s: dict | None, rounds: dict | None = None) -> dict[str, Any]:
    """Speed-up of one pair: median ratio, the repeats' spread as interval; not testable under MIN_REPEATS.

    With interleaved rounds (``rounds``: teacher / student time of the same round, kdlib.bench.speed) the interval
    is the range of those paired ratios; otherwise the widest ratio of the unpaired extremes.
    """
    label = f"speed-up, vocab {vocab}"
    reps = (t or {}).get("repeats", 0), (s or {}).get("repeats", 0)
    if min(reps) < MIN_REPEATS:
        why = f"timed {reps[0]} and {reps[1]} times (teacher, student); a speed verdict needs {MIN_REPEATS} each"
        return {"comparison": label, "verdict": NOT_TESTABLE, "why": why}
    if rounds and len(rounds.get("ratios", [])) >= MIN_REPEATS:
        iv = Interval(rounds["ratio_median"], rounds["ratio_min"], rounds["ratio_max"])
    else:
        iv = Interval(t["median_s"] / s["median_s"], t["min_s"] / s["max_s"], t["max_s"] / s["min_s"])
    return {"comparison": label, **iv.as_dict(), "repeats": min(reps), "verdict": verdict(iv, _threshold("speedup")[0])}


def _size_row(vocab: str, reduction: float) -> dict[str, Any]:
    """Size reduction of one pair (exact: safetensors bytes), between the two size thresholds."""
    red = 100.0 * reduction
    iv = Interval(red, red, red)
    parts = [verdict(iv, THRESHOLDS[k]["value"], above=THRESHOLDS[k]["above"]) for k in SIZE_KEYS]
    return {"comparison": f"size reduction, vocab {vocab}", **iv.as_dict(), "verdict": combine(parts)}


def claim_speed_size(run_dir: str | os.PathLike) -> Claim:
    """(a) from bench/bench.json: encoder speed-up at batch 32 x 128 (repeated timings) and the size reduction."""
    path = Path(run_dir) / "bench" / "bench.json"
    wording = THRESHOLDS["speedup"]["text"] + "; " + THRESHOLDS["size_reduction_min"]["text"]
    if not path.is_file():
        return _claim("a", wording, verdict=NOT_TESTABLE, reason="The run has no benchmark (06-bench).")
    bench = read_json(path)
    inf = bench.get("inference") or {}
    models, rows = inf.get("models", {}), []
    for pair in inf.get("pairs", []):
        vocab = pair["teacher"].split("-", 1)[1]
        lat = [
            models.get(pair[k], {}).get("latency", {}).get("encoder", {}).get("b32_l128")
            for k in ("teacher", "student")
        ]
        rows += [_size_row(vocab, pair["size_reduction"]), _speed_row(vocab, *lat, pair.get("interleaved"))]
    if not rows:
        return _claim("a", wording, verdict=NOT_TESTABLE, reason="bench.json has no inference part.")
    return _speed_size_claim(bench, rows, wording)


def _speed_size_claim(bench: dict, rows: list[dict[str, Any]], wording: str) -> Claim:
    """(a)'s verdict: contradicted if a size or speed is; not testable while a speed-up lacks repeats."""
    measured = [r for r in rows if "estimate" in r]
    figures = [
        (f"{r['estimate']:.2f}x faster" if r["comparison"].startswith("speed") else f"{r['estimate']:.1f}% smaller")
        + f" (vocab {r['comparison'].rsplit(' ', 1)[1]})"
        for r in measured
    ]
    verdicts = [r["verdict"] for r in rows]
    final = (
        CONTRADICTED if CONTRADICTED in verdicts else NOT_TESTABLE if NOT_TESTABLE in verdicts else combine(verdicts)
    )
    speed = [r for r in rows if r["comparison"].startswith("speed") and "estimate" in r]
    row = min(speed or measured, key=lambda r: r["estimate"])
    shown = Interval(row["estimate"], row["low"], row["high"])
    thr = _threshold("speedup")[0] if speed else _threshold("size_reduction_min")[0]
    gap = margin(shown, thr, final) if final != NOT_TESTABLE else None
    interleaved = "interleaved" if bench.get("inference", {}).get("interleaved") else "one model after the other"
    device = bench.get("device", {}).get("type", "?")
    reason = (
        f"Measured on {device} with the paper's shapes (random weights); the paper's speed figure is for a GPU. "
        f"Speed-up: timed {interleaved}; with interleaved rounds the figure is the median of the per-round "
        "teacher/student ratios and the interval their range, otherwise the ratio of the medians with the interval "
        "from the teacher's fastest / the student's slowest to the teacher's slowest / the student's fastest repeat; "
        "sizes are exact (safetensors bytes)."
    )
    reason += "".join(f" {r['comparison']}: not testable, {r['why']}." for r in rows if "why" in r)
    if final == INCONCLUSIVE:
        reason += (
            " To settle it: the repeats' spread straddles the threshold, and more repeats do not narrow a spread;"
            " timings interleaved on an otherwise idle machine would."
        )
    return _claim(
        "a",
        wording,
        figure="; ".join(figures),
        interval=None if final == NOT_TESTABLE else shown,
        verdict=final,
        reason=reason,
        details=rows,
        level=1.0,
        margin=gap,
        fragile=None if speed else False,
    )


def _unlearned(r: RunResults, cid: str) -> Claim:
    """A claim that reads learned tasks, on a run where no task is learned: not testable, with the figures."""
    return _claim(
        cid,
        THRESHOLDS[THRESHOLD_OF[cid]]["text"],
        figure=f"0 of {len(r.tasks)} tasks learned",
        verdict=NOT_TESTABLE,
        reason=r.scope() + " A comparison of models that have learned nothing says nothing about distillation.",
    )


def _collapsed_pair(r: RunResults, a: str, b: str, task: str) -> str:
    return "both models collapsed to constant predictions (no evidence)" if task not in r.evidence_tasks(a, b) else ""


def _gap_items(r: RunResults, students: Sequence[str]) -> list[Item]:
    """(b) student - teacher on every learned task; a pair that both collapsed is not testable."""
    items: list[Item] = []
    for s in students:
        for t in r.teachers_of(s):
            for task in r.learned:
                why = _collapsed_pair(r, s, t, task)
                items.append((f"{s} - {t}", task, None if why else r.diff(s, t)[task], why))
    return items


def _mean_item(r: RunResults, a: str, b: str) -> Item:
    """a - b on the mean over their evidence tasks (not testable when both collapsed on every learned task)."""
    rep = r.diff(a, b).get("mean")
    return (f"{a} - {b}", "mean", rep, "" if rep else "both collapsed to constant predictions on every learned task")


def _control_items(r: RunResults, students: Sequence[str]) -> list[Item]:
    """(e) each student - its own control on the mean over tasks; no matching control: not testable."""
    items: list[Item] = []
    for s in students:
        c = r.control_of(s)
        items.append(_mean_item(r, s, c) if c else (f"{s} - its control", "mean", None, r.no_control_reason(s)))
    return items


def main_claims(
    run_dir: str | os.PathLike, *, n_resamples: int = 1000, seed: int = 0, results: RunResults | None = None
) -> list[Claim]:
    """The main claims (a)-(e) and the random-initialisation pair, computed from the run's files."""
    r = results or RunResults(run_dir, n_resamples=n_resamples, seed=seed)
    claims = [claim_speed_size(run_dir)]
    if not r.learned:
        rest = [_unlearned(r, cid) for cid in ("c", "d", "e", "e-random")]
        return claims + [_unlearned(r, "b"), claim_released(r), *rest]
    claims.append(_items_claim(r, "b", _gap_items(r, r.students)))
    claims.append(claim_released(r))
    claims.append(_items_claim(r, "c", [_mean_item(r, m, s) for m in r.multi for s in r.single]))
    claims.append(_loyalty_claim(r))
    claims.append(_items_claim(r, "e", _control_items(r, r.students)))
    randoms = r._pick(("single-teacher",), random=True)
    if randoms:
        claims.append(_items_claim(r, "e-random", _control_items(r, randoms)))
    else:
        why = "The run has no random-initialisation pair (notebook 03's random_pair parameter)."
        claims.append(_claim("e-random", THRESHOLDS["over_control"]["text"], verdict=NOT_TESTABLE, reason=why))
    left_out = len(r.learned) < len(r.tasks)
    for claim in claims[1:]:
        if claim.verdict != NOT_TESTABLE and (claim.id in ("b", "b-released") or left_out):
            note = r.scope() if claim.id in ("b", "b-released") else "Its means are over the tasks claim (b) names."
            claim.reason = f"{claim.reason} {note}".strip()
    return claims


def claim_released(r: RunResults) -> Claim:
    """(b-released) as (b), for the students registered with the role "released" (notebook 04's released_students)."""
    registered = [n for n, info in r.zoo.items() if info["role"] == "released"]
    evaluated = [n for n in registered if n in r.models]
    if not evaluated:
        why = (
            f"The released students {registered} are registered but were not evaluated (notebook 04's models)."
            if registered
            else "The run evaluated no released student (notebook 04's released_students; the colab and paper "
            "profiles list the authors' three)."
        )
        return _claim("b-released", THRESHOLDS["teacher_gap"]["text"], verdict=NOT_TESTABLE, reason=why)
    if not r.learned:
        return _unlearned(r, "b-released")
    return _items_claim(r, "b-released", _gap_items(r, evaluated))


def _loyalty_claim(r: RunResults) -> Claim:
    """(d) each student more loyal to its teacher than its own control is, for L-L, P-L and R-L."""
    items: list[Item] = []
    for s in r.students:
        c = r.control_of(s)
        if c is None:
            items.append((f"{s} - its control", "mean", None, r.no_control_reason(s)))
            continue
        for t in r.teachers_of(s):
            for measure, short in LOYALTY_NAMES.items():
                reps = r.loyalty_diff(s, c, t, measure)
                if reps:
                    items.append((f"{short}: {s} - {c} (to {t})", "mean", reps["mean"], ""))
    claim = _items_claim(r, "d", items)
    claim.reason = (
        "Loyal means more loyal to the teacher than the same-shape student with the same initialisation and "
        "tokenizer, trained without the teacher's outputs (its control), is. " + claim.reason
    )
    return claim


# ------------------------------------------------------------------------------------------ tables
def _comparison_pairs(r: RunResults) -> list[tuple[str, str, str]]:
    """(what, a, b) of every score comparison the book reports (each student against its own control)."""
    pairs = [("student - teacher", s, t) for s in r.students for t in r.teachers_of(s)]
    pairs += [("student - control", s, c) for s in r.students if (c := r.control_of(s))]
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
    for s in r.students:
        c = r.control_of(s)
        for t in r.teachers_of(s) if c else []:
            for measure, short in LOYALTY_NAMES.items():
                for task, rep in r.loyalty_diff(s, c, t, measure).items():
                    rows.append(
                        {
                            "comparison": f"loyalty to {t}: student - control",
                            "a": s,
                            "b": c,
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

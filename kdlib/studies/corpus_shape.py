"""Chapter 08's study: corpus order, merged sentences and student shape (RobBERTje, Delobelle et al. 2022).

:func:`plan` resolves the chapter's parameters against the run: five students of one teacher that differ in
one thing at a time (corpus order, merged lines, or the Bort shape against its DistilBERT-shaped twin from
the same random start), each planned with :func:`kdlib.run.registry.distill_run`, the tasks and the task whose
test examples are cut by length. :func:`run` builds the corpora, distils every student and fine-tunes each on
every task. The rest turns the result into the chapter's tables, figures and sentences and into the claims,
every number read from the run. Nothing reads a clock into a verdict: loss curves are compared at equal steps
and equal tokens read (:mod:`kdlib.analysis.curves`), sizes and costs are counted (parameters, FLOPs per
token); measured seconds appear only as asides. A comparison of task scores counts only where both models
learned the task (:func:`kdlib.studies.task_distill.learned_gate`); where a part cannot apply, it says why.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from kdlib.analysis.claims import NOT_TESTABLE, SUPPORTED, Claim, verdict, verdict_counts
from kdlib.analysis.curves import CurveGap, late_loss_difference, loss_curve
from kdlib.analysis.lengths import binning_problem, example_lengths, length_bins, split_by_bin
from kdlib.analysis.stats import score_interval
from kdlib.data.corpus import MODES, build_corpus, corpus_stats
from kdlib.data.load import load_task
from kdlib.data.tasks import get_task, task_names
from kdlib.eval.loyalty import Predictions, load_predictions
from kdlib.eval.metrics import majority_baseline
from kdlib.io import read_json
from kdlib.run.registry import DistillRun, distill_run, slug
from kdlib.studies.task_distill import compare_runs, gather_claim, learned_gate

SOURCE = "Delobelle et al. 2022 (RobBERTje), abstract"
ABSTRACT = {  # the seed abstract's own words that each claim reads
    "order": "the performance of the models using the shuffled versus non-shuffled datasets is similar for most tasks",
    "merge": "randomly merging subsequent sentences in a corpus creates models that train faster and perform "
    "better on tasks with long sequences",
    "shape": "the larger DistilBERT architecture worked significantly better than the Bort hyperparametrization",
}
OWN_BATCHES = (
    "each student's loss is measured on its own batches (a merged line carries more context per masked token than a "
    "single sentence), so the curves share no yardstick; a loss on one fixed held-out set, common to all variants, "
    "would test it"
)
PREFIX = "corpus-shape"  # display names "corpus-shape <variant>": students in <run>/students/corpus-shape-<variant>


def variants(bort_corpus: str) -> dict[str, dict[str, str]]:
    """The five students: corpus mode, shape and initialisation of each."""
    return {
        "ordered": {"corpus": "ordered", "shape": "distilbert", "init": "teacher"},
        "shuffled": {"corpus": "shuffled", "shape": "distilbert", "init": "teacher"},
        "merged": {"corpus": "merged", "shape": "distilbert", "init": "teacher"},
        "bort": {"corpus": bort_corpus, "shape": "bort", "init": "random"},
        "distilbert-random": {"corpus": bort_corpus, "shape": "distilbert", "init": "random"},
    }


@dataclass
class Plan:
    """What the chapter runs: the teacher, the students' distillation plans, the tasks and the length task."""

    run: Path
    teacher: str
    variants: dict[str, dict[str, str]]
    distill: dict[str, DistillRun]
    n_lines: int
    merge_p: float
    seed: int
    tasks: list[str]
    length_task: str | None
    length_note: str = ""

    def student_dir(self, name: str) -> Path:
        """The folder of a variant's distilled student."""
        return Path(self.distill[name].entries[0].path)


def pick_length_task(tasks: Sequence[str], length_task: str | None) -> tuple[str | None, str]:
    """The task cut by length (given, else the first classification task, else the first tagging one)."""
    usable = [t for t in tasks if get_task(t).kind in ("classification", "tagging")]
    if length_task is not None:
        if length_task not in usable:
            raise ValueError(f"length_task={length_task!r}: expected a classification or tagging task of {list(tasks)}")
        return length_task, ""
    ranked = sorted(usable, key=lambda t: get_task(t).kind != "classification")
    if ranked:
        return ranked[0], ""
    return None, f"No classification or tagging task among {', '.join(tasks)}: scores by input length are left out."


def plan(
    run_dir: str | os.PathLike,
    *,
    teacher: str,
    tasks: Sequence[str],
    distill_config: dict[str, Any],
    seed: int = 0,
    device: str = "cpu",
    merge_p: float = 0.5,
    corpus_max_sentences: int | None = None,
    bort_corpus: str = "shuffled",
    length_task: str | None = None,
) -> Plan:
    """Resolve the chapter's parameters against the run; a bad teacher, task or corpus fails in one line."""
    run = Path(run_dir)
    teachers = read_json(run / "teachers" / "teachers.json")
    if teacher not in teachers:
        raise ValueError(f"teacher={teacher!r}: notebook 01 made {list(teachers)}")
    unknown = [t for t in tasks if t not in task_names()]
    if unknown or not tasks:
        raise ValueError(f"tasks={list(tasks)}: expected tasks of {list(task_names())}")
    if bort_corpus not in MODES:
        raise ValueError(f"bort_corpus={bort_corpus!r}: expected one of {MODES}")
    shapes = variants(bort_corpus)
    distill = {
        name: distill_run(
            run,
            f"{PREFIX}/{name}",
            {f"{PREFIX} {name}": [teacher]},
            teachers=teachers,
            kind=PREFIX,
            settings={**distill_config, "corpus": v["corpus"]},
            seed=seed,
            device=device,
            init=v["init"],
            shape=v["shape"],
        )
        for name, v in shapes.items()
    }
    steps = distill_config["max_steps"] * distill_config["batch_size"] * distill_config.get("grad_accum", 1)
    picked, note = pick_length_task(tasks, length_task)
    return Plan(run, teacher, shapes, distill, corpus_max_sentences or steps, merge_p, seed, list(tasks), picked, note)


# ------------------------------------------------------------------------------------------- the run
@dataclass
class Results:
    """What :func:`run` made: corpora, distillation summaries and curves, fine-tuned predictions, baselines."""

    corpora: dict[str, Any]
    summaries: dict[str, dict]
    curves: dict[str, pd.DataFrame]
    runs: dict[tuple[str, str], list[Predictions]]
    majority: dict[str, float] = field(default_factory=dict)  # x100, per task


def build_corpora(p: Plan, data_dir=None) -> dict[str, Any]:
    """Every corpus mode cut to the plan's number of lines."""
    return {
        m: build_corpus(m, merge_p=p.merge_p, seed=p.seed, data_dir=data_dir, max_sentences=p.n_lines) for m in MODES
    }


def distill_students(p: Plan, corpora: dict[str, Any], *, fresh: bool = False) -> dict[str, dict]:
    """One kdlib.engine.distill run per student (one teacher, one student); its summary per variant."""
    from kdlib.engine.distill import DistillConfig, distill
    from kdlib.io import write_json

    out = {}
    for name, d in p.distill.items():
        write_json(d.config_path, d.config)
        mode = p.variants[name]["corpus"]
        summary = distill(
            DistillConfig.from_dict(d.config),
            corpora[mode],
            fresh=fresh,
            corpus_name=f"{mode} train-split corpus, {p.n_lines} lines",
        )
        out[name] = summary[d.entries[0].key]
    return out


def majority_score(task: str, runs: Sequence[Predictions], data_dir=None) -> float:
    """The majority-class (mean-value) predictor's score x100 on the test units of ``runs``."""
    ref = runs[0]
    train = load_task(task, data_dir)["train"]
    if ref.kind == "tagging":
        return 100.0 * majority_baseline(task, train["tags"], ref.sentences(ref.gold.tolist()))["score"]
    return 100.0 * majority_baseline(task, train["label"], ref.gold.tolist())["score"]


def finetune_students(
    p: Plan,
    *,
    finetune_config: dict,
    seeds: Sequence[int],
    max_train_examples,
    max_eval_examples,
    data_dir=None,
    overwrite: bool = False,
) -> dict[tuple[str, str], list[Predictions]]:
    """Every student fine-tuned on every task (kdlib.eval.finetune.finetune_seeds); predictions per (student, task)."""
    from kdlib.eval.finetune import FinetuneConfig, finetune_seeds

    device = p.distill["ordered"].config["device"]
    ft = FinetuneConfig(**{**finetune_config, "device": device, "max_eval_examples": max_eval_examples})
    runs = {}
    for name in p.variants:
        for task in p.tasks:
            out = p.run / PREFIX / "evaluate" / slug(name) / task
            s = finetune_seeds(
                str(p.student_dir(name)), task, out, seeds=seeds, config=ft, data_dir=data_dir,
                max_train_examples=max_train_examples, overwrite=overwrite,
            )  # fmt: skip
            runs[name, task] = [load_predictions(r) for r in s["runs"]]
    return runs


def run(
    p: Plan,
    *,
    finetune_config: dict,
    seeds: Sequence[int],
    max_train_examples: int | None,
    max_eval_examples: int | None,
    fresh: bool = False,
    data_dir=None,
) -> Results:
    """Build the corpora, distil the five students, fine-tune each on every task."""
    if not seeds:
        raise ValueError("seeds=[]: name at least one fine-tuning seed")
    corpora = build_corpora(p, data_dir)
    summaries = distill_students(p, corpora, fresh=fresh)
    curves = {name: loss_curve(d.entries[0].log) for name, d in p.distill.items()}
    runs = finetune_students(
        p, finetune_config=finetune_config, seeds=seeds, max_train_examples=max_train_examples,
        max_eval_examples=max_eval_examples, data_dir=data_dir, overwrite=fresh,
    )  # fmt: skip
    majority = {t: majority_score(t, runs["shuffled", t], data_dir) for t in p.tasks}
    return Results(corpora, summaries, curves, runs, majority)


# ------------------------------------------------------------------------------------------ the corpora
def corpus_table(p: Plan, r: Results, data_dir=None) -> tuple[pd.DataFrame, str]:
    """Lines, words and words per line of each corpus, and the share of the ordered one's lines per task."""
    source_of: dict[str, str] = {}
    for t in task_names():
        for text in build_corpus("ordered", tasks=[t], data_dir=data_dir)["text"]:
            source_of.setdefault(text, t)
    rows = {}
    for mode, ds in r.corpora.items():
        stats = corpus_stats(ds)
        row = {
            "lines": stats["sentences"],
            "words": stats["words"],
            "words per line": stats["words"] / stats["sentences"],
        }
        origin = pd.Series([source_of.get(t, "") for t in ds["text"]])
        if mode != "merged":  # merged lines are no single sentence
            row.update({f"% {t}": 100 * float((origin == t).mean()) for t in dict.fromkeys(source_of.values())})
        rows[mode] = row
    table = pd.DataFrame(rows).T
    return table, _corpus_sentence(table, set(r.corpora["ordered"]["text"]) == set(r.corpora["shuffled"]["text"]))


def _corpus_sentence(c: pd.DataFrame, same_lines: bool) -> str:
    shares = [col for col in c.columns if col.startswith("% ")]
    top = c.loc["ordered", shares].astype(float).idxmax()
    ratio = c.loc["merged", "words per line"] / c.loc["shuffled", "words per line"]
    text = (
        f"Every corpus has at most {int(c['lines'].max()):,} lines. The ordered one is the start of the train splits: "
        f"{c.loc['ordered', top]:.0f}% of its lines come from {top[2:].upper()}, against "
        f"{c.loc['shuffled', top]:.0f}% of the shuffled one's. Merged lines hold {ratio:.1f} times as many words "
        f"as shuffled ones ({c.loc['merged', 'words per line']:.1f} against {c.loc['shuffled', 'words per line']:.1f})."
    )
    if same_lines:
        text += (
            " The cut keeps the whole train-split corpus, so the ordered and shuffled corpora hold the same lines: "
            "claim 1 is not testable here; lower `corpus_max_sentences` to test it."
        )
    return text


# ------------------------------------------------------------------------------------------ distillation
def work_table(p: Plan, r: Results) -> pd.DataFrame:
    """Per student: corpus, steps, tokens read (counted work), final loss; measured seconds as an aside."""
    return pd.DataFrame.from_dict(
        {
            name: {
                "corpus": p.variants[name]["corpus"],
                "shape": p.variants[name]["shape"],
                "steps": s["steps"],
                "tokens read": int(r.curves[name]["tokens_seen"].iloc[-1]),
                "final loss": s["final_losses"]["total"],
                "seconds (aside)": s["wall_time_s"],
            }
            for name, s in r.summaries.items()
        },
        orient="index",
    )


def plot_curves(r: Results):
    """The students' smoothed losses against steps and tokens read (counted), and wall time (an aside)."""
    import matplotlib.pyplot as plt

    axes_of = (("step", "step"), ("tokens_seen", "tokens read"), ("elapsed", "wall time (s), an aside"))
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.5), sharey=True)
    for ax, (axis, label) in zip(axes, axes_of):
        for name, curve in r.curves.items():
            ax.plot(curve[axis], curve["smoothed"], label=name)
        ax.set_xlabel(label)
    axes[0].set_ylabel("distillation loss (rolling mean)")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def curve_gaps(r: Results, *, n_resamples: int = 1000, seed: int = 0) -> dict[str, CurveGap]:
    """Shuffled minus merged late loss at equal steps and at equal tokens read (block bootstrap)."""
    a, b = r.curves["merged"], r.curves["shuffled"]
    return {by: late_loss_difference(a, b, by=by, n_resamples=n_resamples, seed=seed) for by in ("step", "tokens_seen")}


def _gap_detail(gap: CurveGap) -> dict[str, Any]:
    """A curve comparison as a claim's detail: verdict "> 0", or not testable with the reason."""
    where = {"step": "equal steps", "tokens_seen": "equal tokens read"}[gap.by]
    row = {"comparison": f"loss(shuffled) - loss(merged) at {where}", "task": "distillation", "label": where}
    row.update(gap.as_dict())
    if gap.interval is None:
        return {**row, "verdict": NOT_TESTABLE}
    result = verdict(gap.interval, 0.0)
    need = f"about {gap.steps_needed:,} logged steps per window" if gap.steps_needed else "no practical budget"
    reason = "" if result != "inconclusive" else f"to settle it (80% power) would take {need} (now {min(gap.points)})."
    return {**row, "verdict": result, "reason": reason}


def curve_sentence(r: Results, gaps: dict[str, CurveGap]) -> str:
    """What the curves say at equal counted work, and how the batches differ in tokens."""
    parts = []
    for by, gap in gaps.items():
        where = {"step": "the same step", "tokens_seen": "the same number of tokens read"}[by]
        if gap.interval is None:
            parts.append(f"At {where} the curves cannot be compared: {gap.reason}.")
        else:
            iv = gap.interval
            parts.append(f"At {where}: {iv.estimate:+.3f} (95% interval {iv.low:+.3f} to {iv.high:+.3f}).")
    tok = {n: r.curves[n]["tokens_seen"].iloc[-1] / max(r.summaries[n]["steps"], 1) for n in ("merged", "shuffled")}
    return (
        "Shuffled minus merged distillation loss over the last fifth of the common horizon (positive: merged is "
        f"lower). {' '.join(parts)} A merged batch holds {tok['merged'] / tok['shuffled']:.2f} times the tokens of "
        "a shuffled one. Each loss is measured on the student's own batches, so the task scores below are the "
        "common yardstick; wall time is drawn as an aside and decides nothing."
    )


# -------------------------------------------------------------------------------------------- task scores
def score_table(p: Plan, r: Results, *, n_resamples: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Students x tasks: score x100 [95% interval], with the majority-class baseline as the last row."""
    cells = {
        t: {
            n: "{0.estimate:.2f} [{0.low:.2f}, {0.high:.2f}]".format(
                score_interval(r.runs[n, t], n_resamples=n_resamples, seed=seed)
            )
            for n in p.variants
        }
        for t in p.tasks
    }
    table = pd.DataFrame(cells)
    table.loc["majority-class baseline"] = [f"{r.majority[t]:.2f}" for t in p.tasks]
    return table


def score_sentence(p: Plan, r: Results, *, n_resamples: int = 1000, seed: int = 0) -> str:
    """Per task: the best student, and how many students' intervals clear the baseline by the learned margin."""
    out = []
    for t in p.tasks:
        ivs = {n: score_interval(r.runs[n, t], n_resamples=n_resamples, seed=seed) for n in p.variants}
        best = max(ivs, key=lambda n: ivs[n].estimate)
        learned = [n for n in p.variants if not learned_gate({n: r.runs[n, t]}, r.majority[t], n_resamples=n_resamples)]
        out.append(
            f"On {t.upper()} the best student is {best} ({ivs[best].estimate:.2f}); {len(learned)} of "
            f"{len(p.variants)} students learned the task (baseline {r.majority[t]:.2f})."
        )
    return " ".join(out)


# ----------------------------------------------------------------------------------------- input length
@dataclass
class LengthResult:
    """Scores by length bin of the length task, or the sentence saying why there are none."""

    task: str | None
    bins: pd.DataFrame | None
    parts: dict[str, dict[str, list[Predictions]]]  # bin -> student -> runs restricted to the bin
    note: str = ""


def length_analysis(p: Plan, r: Results, data_dir=None) -> LengthResult:
    """Cut the length task's tested examples into tertiles of sub-token length; split every student's runs."""
    from transformers import AutoTokenizer

    task = p.length_task
    if task is None:
        return LengthResult(None, None, {}, p.length_note)
    tokenizer = AutoTokenizer.from_pretrained(p.student_dir("shuffled"))
    lengths = example_lengths(task, tokenizer, data_dir=data_dir)
    tested = {
        u.rsplit(":", 1)[0] if r.runs["shuffled", task][0].kind == "tagging" else u
        for u in r.runs["shuffled", task][0].ids
    }
    lengths = {i: n for i, n in lengths.items() if i in tested}
    problem = binning_problem(lengths)
    if problem:
        return LengthResult(task, None, {}, f"{task.upper()} cannot be cut by length: {problem}.")
    bins = length_bins(lengths)
    per = {n: split_by_bin(r.runs[n, task], bins) for n in p.variants}
    parts = {b: {n: per[n][b] for n in p.variants} for b in bins["bin"].cat.categories}
    return LengthResult(task, bins, parts)


def length_table(r: Results, lr: LengthResult, *, n_resamples: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Students x length bins: score x100 [95% interval], with each bin's length range as the last row."""
    if lr.bins is None:
        return pd.DataFrame()
    cells: dict[str, dict[str, str]] = {}
    for b, by_student in lr.parts.items():
        if not by_student["shuffled"][0].ids:
            continue
        cells[b] = {
            n: "{0.estimate:.2f} [{0.low:.2f}, {0.high:.2f}]".format(
                score_interval(runs, n_resamples=n_resamples, seed=seed)
            )
            for n, runs in by_student.items()
        }
        part = lr.bins[lr.bins["bin"] == b]["length"]
        cells[b]["sub-tokens"] = f"{int(part.min())}-{int(part.max())} ({len(part)} examples)"
    return pd.DataFrame(cells)


def long_detail(r: Results, lr: LengthResult, *, n_resamples: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Merged minus shuffled on the longest bin, gated on both students having learned the length task."""
    label = "merged - shuffled, longest third"
    if lr.bins is None or not lr.parts.get("long") or not lr.parts["long"]["merged"][0].ids:
        row = {"comparison": label, "task": lr.task or "length", "estimate": None, "low": None, "high": None}
        return {**row, "verdict": NOT_TESTABLE, "reason": lr.note or "no example in the longest bin"}
    task = lr.task
    gate = {n: r.runs[n, task] for n in ("merged", "shuffled")}
    long_ = lr.parts["long"]
    return compare_runs(
        label, task, long_["merged"], long_["shuffled"], gate=gate, majority=r.majority[task],
        n_resamples=n_resamples, seed=seed,
    )  # fmt: skip


# ------------------------------------------------------------------------------------------- the shapes
def shape_rows(model, seq_len: int, *, device: str = "cpu", budget_s: float = 1.0) -> dict[str, Any]:
    """Counted size and work of an encoder (layers, widths, parameters, forward FLOPs per token at ``seq_len``)
    and, as an aside, its measured forward time on a batch of 32 x ``seq_len`` random ids."""
    import torch

    from kdlib.bench.speed import resolve_device, time_call
    from kdlib.engine.cost import EncoderShape, forward_flops
    from kdlib.engine.students import count_parameters, describe

    d, shape, n = describe(model), EncoderShape.of(model), count_parameters(model)
    dev = resolve_device(device)
    ids = torch.randint(5, d["vocab"], (32, seq_len), generator=torch.Generator().manual_seed(0)).to(dev)
    model = model.eval().to(dev)

    def forward() -> None:
        with torch.inference_mode():
            model(input_ids=ids, attention_mask=torch.ones_like(ids))

    timed = time_call(forward, dev, budget_s=budget_s, max_repeats=10)
    return {
        "layers": d["layers"], "heads": d["heads"], "hidden": d["hidden"], "ffn": d["ffn"],
        "encoder params": n["encoder"], "all params": n["total"],
        "MFLOPs per token": forward_flops(shape, 1, seq_len, 0) / 1e6,
        f"ms, batch 32 x {seq_len} (aside)": 1000 * timed["median_s"],
    }  # fmt: skip


def shape_table(p: Plan, seq_len: int, *, paper_scale: bool = False, device: str = "cpu") -> pd.DataFrame:
    """Both shapes as trained here and, with ``paper_scale``, at BERT-base size (random weights)."""
    from transformers import AutoModel

    rows = {}
    for name in ("distilbert-random", "bort"):
        enc = AutoModel.from_pretrained(p.student_dir(name))
        rows[f"{p.variants[name]['shape']} (this run)"] = shape_rows(enc, seq_len, device=device)
    if paper_scale:
        rows.update(_paper_scale_rows(seq_len, p.seed, device))
    return pd.DataFrame.from_dict(rows, orient="index")


def _paper_scale_rows(seq_len: int, seed: int, device: str) -> dict[str, dict[str, Any]]:
    """Both shapes at BERT-base size (12 x 768 teacher, 50,000 WordPiece), random weights."""
    from types import SimpleNamespace

    import torch
    from transformers import BertConfig, DistilBertModel

    from kdlib.engine.students import student_config

    big = SimpleNamespace(config=BertConfig(vocab_size=50000))
    rows = {}
    for shape in ("distilbert", "bort"):
        torch.manual_seed(seed)
        rows[f"{shape} (BERT-base size)"] = shape_rows(
            DistilBertModel(student_config(big, shape=shape)), seq_len, device=device
        )
    return rows


def shape_sentence(shapes: pd.DataFrame) -> str:
    """Bort against DistilBERT shape in counted parameters and FLOPs per token; time only as an aside."""
    scale = "BERT-base size" if "bort (BERT-base size)" in shapes.index else "this run"
    where = "At BERT-base size" if scale != "this run" else "In this run"
    a, b = shapes.loc[f"bort ({scale})"], shapes.loc[f"distilbert ({scale})"]
    aside = next(c for c in shapes.columns if c.endswith("(aside)"))
    return (
        f"{where}, the Bort shape has {a['encoder params'] / b['encoder params']:.2f} times the encoder "
        f"parameters of the DistilBERT shape ({a['all params'] / b['all params']:.2f} times counting the embeddings) "
        f"and its encoder needs {a['MFLOPs per token'] / b['MFLOPs per token']:.2f} times the FLOPs per token "
        f"(counted, kdlib.engine.cost). As an aside, the forward time measured on this machine, which depends on "
        f"its load, was {a[aside] / b[aside]:.2f} times the DistilBERT shape's; it decides nothing."
    )


# -------------------------------------------------------------------------------------------- the claims
def _task_details(p: Plan, r: Results, a: str, b: str, label: str, **kw) -> list[dict[str, Any]]:
    """score(a) - score(b) on every task, gated on both students having learned it."""
    return [
        compare_runs(
            f"{label}: {a} - {b}", t, r.runs[a, t], r.runs[b, t], gate={a: r.runs[a, t], b: r.runs[b, t]},
            majority=r.majority[t], **kw,
        )
        for t in p.tasks
    ]  # fmt: skip


def _own_batches(detail: dict[str, Any]) -> dict[str, Any]:
    """A loss-curve comparison keeps its figures but decides nothing: the losses share no yardstick."""
    if detail["verdict"] == NOT_TESTABLE:
        return detail
    return {**detail, "verdict": NOT_TESTABLE, "reason": f"{OWN_BATCHES} (at equal work it reads {detail['verdict']})"}


def claims(
    p: Plan, r: Results, lr: LengthResult, *, same_margin: float = 1.0, n_resamples: int = 1000, seed: int = 0
) -> list[Claim]:
    """The seed abstract's four readings, one Claim each with its comparisons in ``details``."""
    if same_margin <= 0:
        raise ValueError(f"same_margin={same_margin}: expected a positive margin in points")
    kw = {"n_resamples": n_resamples, "seed": seed}
    fig = "08-corpus-shape"
    order = _task_details(p, r, "shuffled", "ordered", "order", same_margin=same_margin, **kw)
    if set(r.corpora["ordered"]["text"]) == set(r.corpora["shuffled"]["text"]):
        why = "the ordered and shuffled corpora hold the same lines (the cut keeps the whole corpus)"
        order = [
            {**d, "estimate": None, "low": None, "high": None, "verdict": NOT_TESTABLE, "reason": why} for d in order
        ]
    faster = [_own_batches(_gap_detail(g)) for g in curve_gaps(r, **kw).values()]
    return [
        gather_claim(
            "robbertje-1", "Shuffled and non-shuffled corpora give students that perform about the same on most tasks",
            order, source=SOURCE, figure=f"{fig}: task scores", quote=ABSTRACT["order"], rule="most",
            threshold=f"|shuffled - ordered| < {same_margin:g} points on most tasks",
        ),
        gather_claim(
            "robbertje-2a", "Merging consecutive sentences makes students train faster (lower loss at equal work)",
            faster, source=SOURCE, figure=f"{fig}: loss at equal steps and tokens", quote=ABSTRACT["merge"],
            threshold="loss(shuffled) - loss(merged) > 0 over the last fifth, at equal steps and at equal tokens",
        ),
        gather_claim(
            "robbertje-2b", "Merging consecutive sentences makes students better on long inputs",
            [long_detail(r, lr, **kw)], source=SOURCE, figure=f"{fig}: scores by input length",
            quote=ABSTRACT["merge"], threshold="merged - shuffled > 0 points on the longest third of the test examples",
        ),
        gather_claim(
            "robbertje-3", "The DistilBERT shape works significantly better than the Bort shape",
            _task_details(p, r, "distilbert-random", "bort", "shape", **kw), source=SOURCE,
            figure=f"{fig}: task scores", quote=ABSTRACT["shape"], rule="most",
            threshold="distilbert - bort > 0 points (same corpus, random init) on most tasks",
        ),
    ]  # fmt: skip


def claims_sentence(found: list[Claim]) -> str:
    """The verdict of each claim in one sentence, and how many comparisons were not testable."""
    said = "; ".join(f"{c.id} {c.verdict}" for c in found)
    skipped = sum(d["verdict"] == NOT_TESTABLE for c in found for d in c.details)
    total = sum(len(c.details) for c in found)
    supported = sum(c.verdict == SUPPORTED for c in found)
    return (
        f"Of the {len(found)} claims read from the abstract: {verdict_counts([c.verdict for c in found])} "
        f"({said}); {supported} supported. {skipped} of their {total} comparisons are not testable here: a "
        "comparison of task scores counts only where both students score above the majority-class baseline by "
        "the learned margin; the loss curves are shown but decide nothing, since each student's loss is read on "
        "its own batches."
    )


def length_sentence(r: Results, lr: LengthResult, detail: dict[str, Any]) -> str:
    """Merged minus shuffled on the longest bin, or why there is no length analysis."""
    if lr.bins is None:
        return lr.note
    n_long = int((lr.bins["bin"] == "long").sum())
    rng = lr.bins[lr.bins["bin"] == "long"]["length"]
    head = (
        f"The longest third of {lr.task.upper()}'s tested examples ({n_long}) has "
        f"{int(rng.min())}-{int(rng.max())} sub-tokens. "
    )
    if detail["verdict"] == NOT_TESTABLE:
        return head + f"Merged against shuffled there is not testable here: {detail['reason']}."
    return head + (
        f"Merged minus shuffled on it: {detail['estimate']:+.2f} points (95% interval {detail['low']:+.2f} to "
        f"{detail['high']:+.2f}), {detail['verdict']}."
    )

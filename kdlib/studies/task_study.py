"""The task-specific chapter's study: one run's teacher distilled into every student on each task, then the
tables, the Pareto front and the sentences that explain them.

:func:`plan_study` resolves the models (the run's first teacher and its single-teacher student unless named)
and the student runs: the comparison (every student with fastText embeddings, the main loss and augmentation)
and the ablation (one student with every loss without augmentation, with random embeddings, and without
augmentation). :func:`run_study` fine-tunes (or reuses) each task's teacher and calls
:func:`kdlib.studies.task_distill.distill_task`; :func:`study_frame` adds the main chapters' task-agnostic students
(fine-tuned scores, costs measured the same way) and every model's 95% interval. The rest turns that frame
into what the chapter shows; every number in a sentence is read from it.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from kdlib.analysis import reporting
from kdlib.analysis.claims import NOT_TESTABLE, Claim, verdict_counts
from kdlib.analysis.stats import score_interval
from kdlib.data.tasks import get_task
from kdlib.eval.finetune import MODEL_DIR, FinetuneConfig
from kdlib.eval.loyalty import load_predictions
from kdlib.io import write_json
from kdlib.studies.task_distill import (
    AGNOSTIC_FAMILY,
    StudentSpec,
    TaskDistillConfig,
    distill_task,
    measure_agnostic,
    pareto_front,
    plot_tradeoff,
    prepare_teacher,
)

COLUMNS = {  # study frame column -> the chapter's table heading (2-thread figures stay in results.json)
    "parameters": "params (M)",
    "disk_bytes": "disk (MB)",
    "ram_mb": "peak RAM (MB)",
    "latency_ms_t1": "ms, batch 1",
    "throughput_t1": "ex/s, batch 32",
    "train_seconds": "train (s)",
}


@dataclasses.dataclass
class Study:
    """What the chapter runs: models of the run, tasks (regression ones set aside) and student runs."""

    run: Path
    teacher: str
    agnostic_student: str
    tasks: list[str]
    skipped: list[str]
    main: list[StudentSpec]
    specs: list[StudentSpec]  # main + ablation, each distinct run once
    zoo: dict[str, dict]

    @property
    def main_names(self) -> set[str]:
        """The models of the comparison tables: the main students, the teacher and the task-agnostic students."""
        agnostic = {n for n, m in self.zoo.items() if m["role"] == "student"}
        return {s.name for s in self.main} | {"teacher"} | agnostic


def plan_study(
    run_dir: str | os.PathLike,
    tasks: Sequence[str],
    *,
    students: Sequence[str],
    main_loss: str,
    ablation_student: str,
    losses: Sequence[str],
    teacher: str | None = None,
    agnostic_student: str | None = None,
) -> Study:
    """Resolve the chapter's parameters against the run; unknown models or no usable task fail in one line."""
    run = Path(run_dir)
    zoo = reporting.model_zoo(run)
    teacher = teacher or next((n for n, m in zoo.items() if m["role"] == "teacher"), None)
    if teacher not in zoo:
        raise ValueError(f"teacher={teacher!r}: not a model of {run} (its models: {list(zoo)})")
    agnostic_student = agnostic_student or next(
        (n for n, m in zoo.items() if m["kind"] == "single-teacher" and m["teachers"] == [teacher]), None
    )
    if agnostic_student not in zoo:
        raise ValueError(
            f"agnostic_student={agnostic_student!r}: not a model of {run}, and no single-teacher student of "
            f"{teacher!r} to default to (its models: {list(zoo)})"
        )
    skipped = [t for t in tasks if get_task(t).kind == "regression"]  # a student of a score is another chapter
    kept = [t for t in tasks if t not in skipped]
    if not kept:
        raise ValueError(f"tasks={list(tasks)}: no classification or tagging task (regression is left out)")
    main = [StudentSpec(s, "fasttext", main_loss, True) for s in students]
    ablation = [StudentSpec(ablation_student, "fasttext", loss, False) for loss in losses] + [
        StudentSpec(ablation_student, "random", main_loss, True),
        StudentSpec(ablation_student, "fasttext", main_loss, False),
    ]
    specs = list(dict.fromkeys(main + ablation))
    return Study(run, teacher, agnostic_student, kept, skipped, main, specs, zoo)


def run_study(
    study: Study, *, config: TaskDistillConfig, teacher_config: dict[str, Any], seed: int = 0, data_dir=None
) -> list[dict]:
    """Every task's teacher (the evaluation step's saved model, else fine-tuned here) distilled into every
    student run of the study; rows as :func:`kdlib.studies.task_distill.distill_task` returns them, also saved in
    <run>/task-distill/results.json."""
    import datasets

    out = study.run / "task-distill"
    corpus = datasets.load_from_disk(str(study.run / "corpus"))["text"]
    rows: list[dict] = []
    for task in study.tasks:
        saved = study.run / "evaluate" / study.zoo[study.teacher]["key"] / task / f"seed-{seed}" / MODEL_DIR
        teacher_dir = saved
        if not saved.is_dir():
            ft = FinetuneConfig(
                **{**teacher_config, "seed": seed, "device": "cpu", "max_eval_examples": config.max_eval_examples}
            )
            teacher_dir = prepare_teacher(
                study.zoo[study.teacher]["path"],
                task,
                out / "teachers" / task,
                data_dir=data_dir,
                config=ft,
                max_train_examples=config.max_train_examples,
            )
        rows += distill_task(
            task,
            teacher_dir,
            out / task,
            study.specs,
            config=config,
            corpus_texts=corpus,
            cache_dir=out / "fasttext",
            agnostic_dir=study.zoo[study.agnostic_student]["path"],
            data_dir=data_dir,
        )
    write_json(out / "results.json", rows)
    return rows


def data_table(study: Study, rows: list[dict]) -> tuple[pd.DataFrame, str]:
    """Per task: students trained, train and augmentation examples; and the sentence that reads it."""
    aug = {r["task"]: r["augment_examples"] for r in rows if r.get("augment")}
    train = {t: next(r["train_examples"] for r in rows if r["task"] == t) for t in study.tasks}
    table = pd.DataFrame(
        [
            {
                "task": t,
                "students trained": sum(r["task"] == t for r in rows) - 1,
                "train examples": train[t],
                "augmentation examples": aug.get(t, 0),
            }
            for t in study.tasks
        ]
    ).set_index("task")
    text = " ".join(
        f"On {t.upper()} the teacher labelled {aug.get(t, 0):,} unlabeled examples besides the "
        f"{train[t]:,} training examples."
        for t in study.tasks
    )
    if study.skipped:
        text += (
            f" {', '.join(t.upper() for t in study.skipped)}: a regression task, left out "
            "(this chapter's students classify and tag)."
        )
    return table, text


def study_frame(study: Study, rows: list[dict], *, config: TaskDistillConfig, data_dir=None) -> pd.DataFrame:
    """The study's rows plus the run's task-agnostic students (their fine-tuned scores over the evaluation
    seeds, costs measured here), each with the 95% interval of its test score (`low`, `high`)."""
    rows = [dict(r) for r in rows]
    agnostic = [n for n, m in study.zoo.items() if m["role"] == "student"]
    for task in study.tasks:
        for r in measure_agnostic(study.run, task, agnostic, config=config, data_dir=data_dir):
            key = study.zoo[r["name"]]["key"]
            seeds = sorted((study.run / "evaluate" / key / task).glob("seed-*/predictions.npz"))
            rows.append({**r, "predictions_runs": [str(p) for p in seeds]})
    for r in rows:
        iv = score_interval([load_predictions(p) for p in r.get("predictions_runs") or [r["predictions"]]])
        r["low"], r["high"] = iv.low, iv.high
    return pd.DataFrame(rows)


def _of_kind(df: pd.DataFrame, kind: str) -> pd.Series:
    return df["task"].map(lambda t: get_task(t).kind == kind)


def family_table(study: Study, df: pd.DataFrame, kind: str) -> pd.DataFrame:
    """The comparison's models on the tasks of one kind: score [95% interval], loyalty and the costs on one CPU
    thread (M parameters, MB), narrow enough for a page."""
    part = df[df["name"].isin(study.main_names) & _of_kind(df, kind)].copy()
    part["parameters"] /= 1e6
    part["disk_bytes"] /= 1e6
    out = pd.DataFrame(index=pd.MultiIndex.from_frame(part[["task", "name"]]))
    out["score [95% CI]"] = [f"{r.score:.1f} [{r.low:.1f}, {r.high:.1f}]" for r in part.itertuples()]
    out["loyalty"] = ["—" if pd.isna(v) else f"{v:.1f}" for v in part["loyalty"]]
    for col, heading in COLUMNS.items():
        out[heading] = part[col].round(2).to_numpy()
    return out


def best_sentence(study: Study, df: pd.DataFrame, kind: str) -> str:
    """Per task of `kind`: the best-scoring model besides the teacher, the smallest (counted parameters, with
    the measured latency as an aside), and the majority baseline."""
    out = []
    for task in [t for t in study.tasks if get_task(t).kind == kind]:
        part = df[(df["task"] == task) & df["name"].isin(study.main_names) & (df["family"] != "teacher")]
        top, small = part.loc[part["score"].idxmax()], part.loc[part["parameters"].idxmin()]
        tch = df[(df["task"] == task) & (df["name"] == "teacher")].iloc[0]
        out.append(
            f"On {task.upper()} the best-scoring model besides the teacher ({tch['score']:.1f}) is "
            f"**{top['name']}** ({top['score']:.1f} [{top['low']:.1f}, {top['high']:.1f}]); the smallest is "
            f"**{small['name']}** ({small['parameters'] / 1e6:.2f} M parameters, "
            f"{tch['parameters'] / small['parameters']:.1f}x fewer than the teacher, score {small['score']:.1f}; "
            f"measured on this machine, as an aside: {small['latency_ms_t1']:.2f} ms at batch 1 against the "
            f"teacher's {tch['latency_ms_t1']:.2f}); the majority baseline scores {tch['majority']:.1f}."
        )
    return " ".join(out)


def plot_fronts(study: Study, df: pd.DataFrame):
    """One score-against-parameters panel per task (`kdlib.studies.task_distill.plot_tradeoff`, counted cost,
    not timed); (figure, fronts)."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(study.tasks), 1, figsize=(7, 4.2 * len(study.tasks)), squeeze=False)
    fronts = {}
    for ax, task in zip(axes[:, 0], study.tasks):
        part = df[(df["task"] == task) & df["name"].isin(study.main_names)]
        plot_tradeoff(part.to_dict("records"), ax=ax, cost="parameters")
        fronts[task] = part[pareto_front(part["score"], part["parameters"])].sort_values("parameters")
    fig.tight_layout()
    return fig, fronts


def front_sentence(study: Study, df: pd.DataFrame, fronts: dict[str, pd.DataFrame]) -> str:
    """Per task: how many models are on the Pareto front, which, and how many of them are word students."""
    out = []
    for task, front in fronts.items():
        total = int(((df["task"] == task) & df["name"].isin(study.main_names)).sum())
        names = ", ".join(f"{n} ({fam})" for n, fam in zip(front["name"], front["family"]))
        out.append(
            f"On {task.upper()} the front holds {len(front)} of {total} models: {names}; "
            f"word students: {int((front['family'] == 'word').sum())}."
        )
    return " ".join(out)


def ablation_table(df: pd.DataFrame, student: str) -> pd.DataFrame:
    """The ablation student's settings (embeddings, loss, augmentation) by task: score [95% interval]."""
    abl = df[df["student"] == student].copy()
    abl["setting"] = abl.apply(
        lambda r: f"{r['embeddings']}, {r['loss']}, {'augmented' if r['augment'] else 'no augmentation'}", axis=1
    )
    abl["score [95% CI]"] = abl.apply(lambda r: f"{r['score']:.1f} [{r['low']:.1f}, {r['high']:.1f}]", axis=1)
    return abl.pivot(index="setting", columns="task", values="score [95% CI]")


def loss_spread_sentence(study: Study, df: pd.DataFrame, student: str) -> str:
    """Per task: the range of the ablation student's scores over the losses (fastText, no augmentation)."""
    out = []
    for task in study.tasks:
        part = df[
            (df["student"] == student)
            & (df["task"] == task)
            & (df["embeddings"] == "fasttext")
            & ~df["augment"].astype(bool)
        ]
        hi, lo = part.loc[part["score"].idxmax()], part.loc[part["score"].idxmin()]
        out.append(
            f"On {task.upper()} the losses span {lo['score']:.1f} ({lo['loss']}) to {hi['score']:.1f} ({hi['loss']})."
        )
    return " ".join(out)


def student_rows(df: pd.DataFrame) -> list[dict]:
    """The rows of the models trained in this chapter (the claims are about those, not the fine-tuned ones)."""
    return df[df["family"] != AGNOSTIC_FAMILY].to_dict("records")


def claims_sentence(study: Study, claims: list[Claim], config: TaskDistillConfig) -> str:
    """How many claims got which verdict, and why the untestable comparisons were left out."""
    n_details = sum(len(c.details) for c in claims)
    skipped = sum(d["verdict"] == NOT_TESTABLE for c in claims for d in c.details)
    text = (
        f"Of the {len(claims)} claims read from the abstract: {verdict_counts([c.verdict for c in claims])}. "
        f"They rest on {n_details} per-task comparisons ({len(study.tasks)} tasks), of which {skipped} are not "
        "testable here: a comparison counts only where the teacher and both models score above the "
        "majority-class baseline by the learned margin."
    )
    return text + (
        f" This run trains on {config.max_train_examples:,} examples per task for {config.epochs} epoch(s) with "
        "teachers far smaller than BERT-base; an inconclusive claim names the budget that would settle it."
    )

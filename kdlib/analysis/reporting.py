"""Result tables and figures of a run: what the notebooks and the book show, read from the run folder.

A run folder (see :mod:`kdlib.book.runner`) holds the JSON each step wrote: ``teachers/teachers.json`` (01),
``distill/single.json`` and ``distill/ensemble.json`` (02, 03: the students, their teachers and logs),
``evaluate/results.json`` (04: one row per model and task, scores x100) and ``bench/bench.json`` (06).
This module turns them into

* tables: :func:`collect_results`, :func:`paper_table` (the paper's layout, our score beside the
  poster's), :func:`relative_drop`, :func:`loyalty_rows` / :func:`loyalty_table`, :func:`log_frame`
  (a distillation log as a DataFrame, on top of :func:`kdlib.engine.distill.read_log`), :func:`render`
  (a compact HTML view: missing values as '—', short model names) and :func:`format_report` (the
  benchmark as text for the terminal) / :func:`bench_tables` (the same as DataFrames for a page);
* figures: :func:`plot_teacher_curves`, :func:`plot_distill_log`, :func:`plot_all_logs`,
  :func:`plot_score_vs_speed_size` (the headline) and :func:`plot_bench`. Every figure is 7 in wide
  (the book's column) with text of at least 9 pt, one idea per figure or panel, its legend outside the
  data, and one colour per model everywhere (:func:`color_for`); :func:`style` (once per notebook)
  makes inline figures SVG.
"""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib as mpl
import matplotlib.pyplot as plt
import matplotlib.ticker as mticker
import pandas as pd
from matplotlib.figure import Figure
from pandas.io.formats.style import Styler

from kdlib.data import tasks as tasks_mod
from kdlib.engine.distill import read_log
from kdlib.eval.loyalty import PREDICTIONS_FILE, loyalty_report
from kdlib.io import read_json
from kdlib.run import registry
from kdlib.run.registry import slug

TASK_ORDER = ("upos", "xpos", "ner", "sapn", "sar", "di", "sts")
PAPER_MODELS = ("BERT-base-ro", "RoBERT-base", "Distil-BERT-base-ro", "Distil-RoBERT-base", "DistilMulti-BERT-base-ro")
# The authors' LREC 2022 poster (paper-spec section 7.0), taken as the paper's final table; tasks in TASK_ORDER.
POSTER_TABLE = {
    name: dict(zip(TASK_ORDER, scores))
    for name, scores in {
        "BERT-base-ro": (98.00, 96.46, 85.88, 97.94, 79.61, 95.41, 79.94),
        "RoBERT-base": (98.02, 97.15, 85.14, 98.20, 79.40, 96.17, 81.18),
        "Distil-BERT-base-ro": (97.97, 97.08, 83.35, 98.12, 80.51, 96.31, 80.57),
        "Distil-RoBERT-base": (97.12, 95.79, 83.11, 97.61, 79.58, 96.11, 79.80),
        "DistilMulti-BERT-base-ro": (98.07, 96.93, 83.22, 97.74, 79.77, 96.18, 80.66),
    }.items()
}
POSTER_LOYALTY = {  # rows read as the three students (paper-spec section 7.0)
    "Distil-BERT-base-ro": {"L-L": 87.80, "P-L": 74.76, "R-L": 94.96},
    "Distil-RoBERT-base": {"L-L": 84.63, "P-L": 71.95, "R-L": 92.24},
    "DistilMulti-BERT-base-ro": {"L-L": 89.75, "P-L": 73.23, "R-L": 94.64},
}
MISSING = "—"


def task_columns(present) -> list[str]:
    """Tasks in table order: the paper's seven in its order, then any declared task in order of appearance."""
    present = list(dict.fromkeys(present))
    return [t for t in TASK_ORDER if t in present] + [t for t in present if t not in TASK_ORDER]


def base_model(name: str) -> str:
    """Paper model name without a variant suffix: 'DistilMulti-BERT-base-ro (sum)' -> 'DistilMulti-BERT-base-ro'."""
    return name.split(" (", 1)[0]


# --------------------------------------------------------------------------- what a run holds


def model_zoo(run_dir: str | os.PathLike) -> dict[str, dict]:
    """Every model of a run (teachers, students, control) as dicts: path, role, key, teachers, log, kind
    (the schema: :class:`kdlib.run.registry.ModelEntry`)."""
    return {
        name: {"path": e.path, "role": e.role, "key": e.key, "teachers": list(e.teachers), "log": e.log, "kind": e.kind}
        for name, e in registry.models(run_dir).items()
    }


def result_row(model: str, role: str, seeds_summary: dict) -> dict:
    """One results row (scores x100) from a kdlib.eval.finetune.finetune_seeds summary, with size and test timing."""
    test = seeds_summary["test"]["score"]
    runs = [read_json(Path(r) / "metrics.json") for r in seeds_summary["runs"]]
    return {
        "model": model,
        "role": role,
        "task": seeds_summary["task"],
        "metric": seeds_summary["metric"],
        "mean": 100.0 * test["mean"],
        "std": 100.0 * test["std"],
        "n_seeds": len(seeds_summary["seeds"]),
        "values": [100.0 * v for v in test["values"]],
        "parameters": runs[0].get("parameters"),
        "test_examples": runs[0]["examples"]["test"],
        "test_seconds": float(sum(r["timing"]["test_seconds"] for r in runs) / len(runs)),
        "dir": str(Path(seeds_summary["runs"][0]).parent),
    }


def collect_results(run_dir: str | os.PathLike) -> pd.DataFrame:
    """Long table of fine-tuning results written by notebook 04 (run_dir/evaluate/results.json).

    Columns: model, role, task, metric, mean, std, n_seeds (scores x100 as the paper prints them).
    """
    rows = read_json(Path(run_dir) / "evaluate" / "results.json")
    if not rows:
        raise ValueError(f"{run_dir}/evaluate/results.json holds no results")
    return pd.DataFrame(rows)


def teacher_map(run_dir: str | os.PathLike, results: pd.DataFrame) -> dict[str, list[str]]:
    """Student (or control) -> its teachers, for the students and teachers that have results."""
    have = set(results["model"])
    return {
        name: info["teachers"]
        for name, info in model_zoo(run_dir).items()
        if info["role"] != "teacher" and name in have and info["teachers"] and all(t in have for t in info["teachers"])
    }


def flat_summary(summary: dict, key: str | None = None) -> dict:
    """The numeric fields of one student's distill summary (or of the whole summary), flattened for a table."""
    part = summary.get(key, summary) if key and isinstance(summary, dict) else summary
    if isinstance(part, dict) and isinstance(part.get("students"), dict) and key in part["students"]:
        part = part["students"][key]
    out: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}{k}.", v)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[prefix.rstrip(".")] = value

    walk("", part)
    return out


def log_frame(path: str | os.PathLike) -> pd.DataFrame:
    """A distillation log.jsonl as a DataFrame: one row per logged step and student (column ``student``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: the distillation step did not write its log")
    rows = []
    for rec in read_log(path):
        per_student = rec.pop("students", None)
        if isinstance(
            per_student, dict
        ):  # kdlib.engine.distill: {"step", ..., "students": {name: {total, kl, mlm, cos}}}
            rows += [{**rec, "student": name, **comps} for name, comps in per_student.items()]
        else:
            rows.append(rec)
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- result tables


def _model_order(models) -> list[str]:
    """The paper's models first, in the paper's order, then the others alphabetically."""
    return sorted(
        models,
        key=lambda m: (PAPER_MODELS.index(base_model(m)) if base_model(m) in PAPER_MODELS else len(PAPER_MODELS), m),
    )


def poster_applies() -> bool:
    """True when the active language (kdlib.data.tasks.active) is the paper's: only then is the poster shown."""
    return tasks_mod.active()[0] == tasks_mod.DEFAULT_LANGUAGE


def paper_table(results: pd.DataFrame, *, with_poster: bool | None = None, layout: str = "columns") -> pd.DataFrame:
    """Wide table in the paper's layout: one row per model, one column per task (mean x100).

    With `with_poster` (None: :func:`poster_applies`, the run is in the paper's language), each model carries
    the poster's number beside ours: ``layout="columns"`` gives each task an ("ours", "paper") pair of columns;
    ``layout="rows"`` gives each model an "ours" and a "paper" row (index (model, source)), which keeps all
    seven tasks inside the book's text column. A model the poster does not have gets NaN there (:func:`render`
    shows it as '—'). Without the poster, "rows" keeps the (model, "ours") index.
    """
    if layout not in ("columns", "rows"):
        raise ValueError(f"paper_table: layout={layout!r}; expected 'columns' or 'rows'")
    tasks = task_columns(results["task"])
    ours = results.pivot_table(index="model", columns="task", values="mean", aggfunc="first")[tasks]
    order = _model_order(ours.index)
    ours = ours.loc[order]
    if not (poster_applies() if with_poster is None else with_poster):
        return pd.concat({"ours": ours}).swaplevel(0, 1).round(2) if layout == "rows" else ours.round(2)
    poster = pd.DataFrame(POSTER_TABLE).T
    paper = pd.DataFrame(
        [poster.loc[base_model(m)] if base_model(m) in poster.index else pd.Series(dtype=float) for m in order],
        index=order,
    ).reindex(columns=tasks)
    if layout == "rows":  # a "paper" row only for the models the poster has
        table = pd.concat({"ours": ours, "paper": paper.dropna(how="all")}).swaplevel(0, 1)
        keep = [(m, src) for m in order for src in ("ours", "paper") if (m, src) in table.index]
        return table.loc[keep].round(2)
    table = pd.concat({"ours": ours, "paper": paper}, axis=1).swaplevel(0, 1, axis=1)
    return table.reindex(columns=pd.MultiIndex.from_product([tasks, ["ours", "paper"]])).round(2)


def relative_drop(results: pd.DataFrame, teacher_of: dict[str, str | list[str]]) -> pd.DataFrame:
    """Relative drop (%) of each student vs its teacher per task: 100 * (teacher - student) / teacher.

    `teacher_of` maps a student to a teacher name, or to several (their mean score is used).
    """
    wide = results.pivot_table(index="model", columns="task", values="mean", aggfunc="first")
    rows = {}
    for student, teachers in teacher_of.items():
        teachers = [teachers] if isinstance(teachers, str) else list(teachers)
        missing = [m for m in [student, *teachers] if m not in wide.index]
        if missing:
            raise KeyError(f"relative_drop: no results for {missing}; have {list(wide.index)}")
        ref = wide.loc[teachers].mean(axis=0)
        rows[student] = 100.0 * (ref - wide.loc[student]) / ref.abs()
    cols = task_columns(wide.columns)
    return pd.DataFrame(rows).T[cols].round(2)


def loyalty_rows(run_dir: str | os.PathLike, tasks: list[str]) -> list[dict]:
    """Loyalty (x100) of every student and the control to each of its teachers (and their mean), per task.

    Uses the test predictions of the first seed of notebook 04 (run_dir/evaluate/<model>/<task>/seed-<s>).
    """
    run = Path(run_dir)
    zoo = model_zoo(run)

    def pred(name: str, task: str) -> Path:
        summary = read_json(run / "evaluate" / zoo[name]["key"] / task / "summary.json")
        return Path(summary["runs"][0]) / PREDICTIONS_FILE

    rows = []
    for name, info in zoo.items():
        if info["role"] == "teacher":
            continue
        for task in tasks:
            report = loyalty_report([pred(t, task) for t in info["teachers"]], pred(name, task))
            refs = [(t, r) for t, r in zip(info["teachers"], report["teachers"])]
            if "ensemble" in report:
                refs.append(("mean of teachers", report["ensemble"]))
            for ref, values in refs:
                rows.append(
                    {
                        "student": name,
                        "role": info["role"],
                        "task": task,
                        "reference": ref,
                        "examples": report["examples"],
                        **{k: 100.0 * v for k, v in values.items() if k.endswith("_loyalty")},
                    }
                )
    return rows


def loyalty_table(rows: pd.DataFrame, *, with_poster: bool | None = None) -> pd.DataFrame:
    """Mean loyalty over tasks per student and reference (L-L, P-L over tagging/classification, R-L on STS),
    beside the poster's numbers for the student (paper-spec section 7.0) when `with_poster` (None:
    :func:`poster_applies`)."""
    cols = {"label_loyalty": "L-L", "probability_loyalty": "P-L", "regression_loyalty": "R-L"}
    present = [c for c in cols if c in rows.columns]
    table = rows.groupby(["student", "reference"], sort=False)[present].mean().rename(columns=cols)
    if not (poster_applies() if with_poster is None else with_poster):
        return table.round(2)
    poster = pd.DataFrame(
        [
            {f"{k} (poster)": POSTER_LOYALTY.get(base_model(s), {}).get(k) for k in cols.values()}
            for s, _ in table.index
        ],
        index=table.index,
    )
    return pd.concat([table, poster.dropna(axis=1, how="all")], axis=1).round(2)


# Short names keep the wide tables inside the page (variant suffixes such as ' (sum)' are kept).
SHORT_NAMES = {
    "BERT-base-ro": "BERT-ro",
    "RoBERT-base": "RoBERT",
    "Distil-BERT-base-ro": "Distil-BERT-ro",
    "Distil-RoBERT-base": "Distil-RoBERT",
    "DistilMulti-BERT-base-ro": "DistilMulti",
    "Control (MLM only)": "Control",
}


def short_name(model: str) -> str:
    """'DistilMulti-BERT-base-ro (sum)' -> 'DistilMulti (sum)'; names without a short form are kept."""
    if model in SHORT_NAMES:
        return SHORT_NAMES[model]
    base = base_model(model)
    return SHORT_NAMES[base] + model[len(base) :] if base in SHORT_NAMES else model


def render(table: pd.DataFrame, *, digits: int = 2, short_names: bool = True) -> Styler:
    """A compact HTML view of a table for a page: missing values as '—', `digits` decimals, short model
    names (:func:`short_name`), narrow cells and the poster's rows in grey, so that the paper-layout table
    (``paper_table(..., layout="rows")``: 560 px for 7 tasks and 7 models) fits the book's column."""
    view = table.rename(index=short_name) if short_names else table
    styler = view.style.format(precision=digits, na_rep=MISSING)
    if isinstance(view.index, pd.MultiIndex) and "paper" in view.index.get_level_values(-1):
        styler = styler.apply(lambda row: ["color: #666" if row.name[-1] == "paper" else ""] * len(row), axis=1)
    return styler.set_table_styles(
        [
            {"selector": "", "props": "font-size: 0.8em; border-collapse: collapse;"},
            {"selector": "th, td", "props": "padding: 0.1em 0.35em; white-space: nowrap;"},
            {"selector": "th.col_heading", "props": "text-align: center;"},
            {"selector": "td", "props": "text-align: right;"},
        ]
    )


# --------------------------------------------------------------------------- the benchmark (kdlib.bench.speed)


def _device_lines(result: dict) -> list[str]:
    d, peak = result["device"], result["matmul_peak"]
    return [
        f"device: {d['type']} | {d.get('gpu') or d['cpu']} | {d['torch_threads']} threads | torch {d['torch']}"
        f" | load average at start {d.get('load_average_at_start')}, end {d.get('load_average_at_end')}",
        f"fp32 matmul peak ({peak['n']}^2): {peak['gflops']:.1f} GFLOP/s",
    ]


def _inference_lines(inf: dict) -> list[str]:
    lines = [
        "",
        "1. inference (random weights, float32, inference_mode; median of repeats)",
        f"{'model':<16}{'params enc':>13}{'params mlm':>13}{'formula':>13}{'paper M':>9}"
        f"{'safetensors':>22}  paper size",
    ]
    for name, m in inf["models"].items():
        size = m["size"]
        lines.append(
            f"{name:<16}{m['params']['encoder']:>13,}{m['params']['mlm']:>13,}{m['formula_params']:>13,}"
            f"{m['paper_params_M'] or float('nan'):>9.1f}{size['MB']:>10.1f} MB {size['MiB']:>6.1f} MiB"
            f"  {m['paper_size']}"
        )
    for p in inf["pairs"]:
        lines.append(
            f"{p['student']} vs {p['teacher']}: {100 * p['size_reduction']:.1f}% smaller on disk "
            f"(paper: {100 * p['paper_size_reduction']:.0f}% smaller)"
        )
    lines += [
        "",
        f"{'latency (ms)':<16}{'setting':>10}{'teacher':>11}{'student':>11}{'speed-up':>10}{'by CPU s':>10}{'runs':>8}",
    ]
    for row in _latency_rows(inf):
        lines.append(
            f"{row['vocab'] + ' ' + row['head']:<16}{row['setting']:>10}{row['teacher_ms']:>11.1f}"
            f"{row['student_ms']:>11.1f}{row['speedup']:>9.2f}x{row['speedup_cpu_time']:>9.2f}x"
            f"{row['runs']:>8}"
        )
    lines += [f"skipped: {s}" for s in inf["skipped"]]
    return lines


def _latency_rows(inf: dict) -> list[dict]:
    """One row per timed (vocabulary, head, batch x length): teacher and student latency and speed-ups."""
    rows = []
    for p in inf["pairs"]:
        t, s = inf["models"][p["teacher"]], inf["models"][p["student"]]
        for head in ("encoder", "mlm"):
            for key, tl in t.get("latency", {}).get(head, {}).items():
                sl = s["latency"][head][key]
                rows.append(
                    {
                        "vocab": p["teacher"].split("-", 1)[1],
                        "head": head,
                        "setting": key,
                        "teacher_ms": 1e3 * tl["median_s"],
                        "student_ms": 1e3 * sl["median_s"],
                        "speedup": p["speedup"][head][key],
                        "speedup_cpu_time": p["speedup_cpu_time"][head][key],
                        "runs": f"{tl['repeats']}/{sl['repeats']}",
                    }
                )
    return rows


def _throughput_lines(th: dict) -> list[str]:
    shapes = th["shapes"]
    lines = [
        "",
        f"2. distillation throughput ({shapes['name']}, {shapes['steps']} steps x batch "
        f"{shapes['batch_size']}, max_len {shapes['max_len']}; {th['corpus']})",
    ]
    for name in ("reference", "kdlib"):
        r = th[name]
        lines.append(
            f"{name:<10} loop {r['train_s']:>6.1f} s {r['train_tokens_per_s']:>8.0f} tokens/s "
            f"{th[name + '_gflops']:>6.1f} GFLOP/s = {100 * th[name + '_share_of_peak']:4.1f}% of peak"
            f" | end to end {r['total_s']:>6.1f} s {r['tokens_per_s']:>8.0f} tokens/s"
        )
    lines.append(
        f"  kdlib/reference: loop {th['ratio_tokens_per_s']:.2f}x, "
        f"end to end {th['ratio_end_to_end_tokens_per_s']:.2f}x (tokens/s)"
    )
    lines.append(f"  {th['flop_formula']}; {th['flops_per_token'] / 1e6:.1f} MFLOP/token")
    return lines


def _shared_lines(sh: dict) -> list[str]:
    separate = ", ".join(f"{k} {v['total_s']:.1f} s" for k, v in sh["separate"].items())
    return [
        "",
        f"3. shared teacher passes ({sh['shapes']['name']}, {sh['shapes']['steps']} steps)",
        f"one call, 3 students: {sh['shared_s']:.1f} s; three calls: {sh['separate_s']:.1f} s ({separate})",
    ]


def _pipeline_lines(pl: dict) -> list[str]:
    lines = ["", f"4. pipeline ({pl['runs_dir']})"]
    for prof, info in pl["profiles"].items():
        if info.get("total_wall_s") is not None:
            lines.append(
                f"{prof:<8} {info['status']}: {info['total_wall_s'] / 60:.1f} min, peak {info['peak_rss_mb']} MB"
            )
        else:
            lines.append(f"{prof:<8} {info['status']}")
    return lines


def format_report(result: dict) -> str:
    """The benchmark (kdlib.bench.speed) as text for the terminal: every figure, each target beside its value."""
    lines = _device_lines(result)
    parts = (
        ("inference", _inference_lines),
        ("throughput", _throughput_lines),
        ("shared", _shared_lines),
        ("pipeline", _pipeline_lines),
    )
    for key, lines_of in parts:
        if result.get(key):
            lines += lines_of(result[key])
    if result.get("targets"):
        lines += ["", "targets (printed, not asserted)"]
        lines += [
            f"{'MET ' if t['met'] else 'MISS'} {t['name']}: {t['value']:.2f}x (target >= {t['target']}x)"
            for t in result["targets"]
        ]
    lines.append(f"\nwall time {result.get('wall_s', 0):.1f} s; JSON: bench.json; figure: {result.get('figure')}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- figure style and colours

FIG_WIDTH = 7.0  # inches: the book's text column, so that a 9-pt label renders at about 9 pt
RC_PARAMS = {
    "figure.figsize": (FIG_WIDTH, 3.6),
    "figure.dpi": 100,
    "savefig.dpi": 200,
    "savefig.bbox": "tight",
    "font.size": 10,
    "axes.titlesize": 10.5,
    "axes.labelsize": 10,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "legend.fontsize": 9,
    "legend.frameon": False,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "lines.linewidth": 1.6,
    "svg.fonttype": "path",
}
# One colour per model across the whole book: a teacher and its students share a hue family.
MODEL_COLORS = {
    "BERT-base-ro": "#1f4e9c",
    "Distil-BERT-base-ro": "#4fa3e0",
    "RoBERT-base": "#b2182b",
    "Distil-RoBERT-base": "#f4a03c",
    "DistilMulti-BERT-base-ro": "#7b3294",
    "DistilMulti-BERT-base-ro (average)": "#7b3294",
    "DistilMulti-BERT-base-ro (sum)": "#c51b7d",
    "Control (MLM only)": "#7f7f7f",
}
# Models without a fixed colour get one of these, picked from a hash of the name (the same in every process);
# a chapter that adds a model the book shows often gives it a fixed colour above.
EXTRA_COLORS = ("#1b9e77", "#8c564b", "#bcbd22", "#17becf", "#393b79", "#637939", "#d95f02", "#e7298a")
ROLE_MARKERS = {"teacher": "s", "student": "o", "control": "X", "released": "P"}


def _styled(plot: Callable) -> Callable:
    """Draw `plot` under the book's rcParams, whether or not :func:`style` was called."""

    @functools.wraps(plot)
    def wrapper(*args, **kwargs):
        with mpl.rc_context(RC_PARAMS):
            return plot(*args, **kwargs)

    return wrapper


def style(*, svg: bool = True) -> None:
    """Set the book's figure style globally (the plot functions here use it anyway) and, inside IPython, SVG
    output of inline figures (``%config InlineBackend.figure_formats = ['svg']``; ``svg=False``: 2x PNG)."""
    mpl.rcParams.update(RC_PARAMS)
    try:
        from IPython import get_ipython
        from matplotlib_inline.backend_inline import set_matplotlib_formats
    except ImportError:  # plain Python without IPython: rcParams only
        return
    if get_ipython() is not None:
        set_matplotlib_formats("svg" if svg else "retina")


def color_for(model: str) -> str:
    """The colour of a model in every figure; display name or key ('Distil-BERT-base-ro' = 'distil-bert-base-ro')."""
    by_key = {slug(name): color for name, color in MODEL_COLORS.items()}
    key = slug(model)
    if key in by_key:
        return by_key[key]
    return EXTRA_COLORS[int(hashlib.sha1(key.encode()).hexdigest(), 16) % len(EXTRA_COLORS)]


def display_name(key: str) -> str:
    """The paper's display name of a model key (a log's student names are keys), else the key itself."""
    return next((name for name in MODEL_COLORS if slug(name) == slug(key)), key)


def save_figure(fig: Figure, path: str | os.PathLike) -> Path:
    """Save `fig` atomically (tmp file then os.replace; format from the suffix) and close it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    fig.savefig(tmp, format=path.suffix.lstrip(".") or "png", dpi=RC_PARAMS["savefig.dpi"], bbox_inches="tight")
    plt.close(fig)
    os.replace(tmp, path)
    return path


def _legend_below(fig: Figure, axes, ncol: int = 3) -> None:
    """One legend for the whole figure, under the panels (never over the data); needs layout="constrained"."""
    handles: dict[str, Any] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, handle)
    if handles:
        fig.legend(list(handles.values()), list(handles), loc="outside lower center", ncol=min(ncol, len(handles)))


# --------------------------------------------------------------------------- figures of a run

LOSS_TERMS = ("total", "kl", "mlm", "cos")


def _loss_curves(frames: list[tuple[str, pd.DataFrame]], title: str = "") -> Figure:
    """A 2 x 2 grid, one panel per loss term (total, KL, MLM, cosine), one line per student."""
    terms = [t for t in LOSS_TERMS if any(t in df.columns for _, df in frames)]
    if not terms:
        cols = sorted({c for _, df in frames for c in df.columns})
        raise ValueError(f"no loss columns ({', '.join(LOSS_TERMS)}) in the log; columns are {cols}")
    nrows = -(-len(terms) // 2)
    fig, axes = plt.subplots(
        nrows, 2, figsize=(FIG_WIDTH, 2.3 * nrows + 0.8), squeeze=False, sharex=True, layout="constrained"
    )
    for ax, term in zip(axes.flat, terms):
        for name, df in frames:
            sub = df[["step", term]].dropna() if term in df.columns else df.iloc[:0]
            if len(sub):
                ax.plot(sub["step"], sub[term], color=color_for(name), label=display_name(name))
        ax.set_title({"kl": "KL to the teacher(s)", "mlm": "masked-LM", "cos": "cosine", "total": "total"}[term])
        ax.set_ylabel("loss")
    for ax in axes[-1]:
        ax.set_xlabel("optimizer step")
    for ax in axes.flat[len(terms) :]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title)
    _legend_below(fig, axes.flat)
    return fig


@_styled
def plot_teacher_curves(teachers: dict[str, dict]) -> Figure | None:
    """MLM training loss per step of the teachers trained here (teachers.json of notebook 01, one line each);
    None when no teacher has a curve (teachers loaded from the hub)."""
    curves = {name: info.get("metrics", {}).get("train_loss_curve") for name, info in teachers.items()}
    curves = {name: curve for name, curve in curves.items() if curve}
    if not curves:
        return None
    fig, ax = plt.subplots(figsize=(FIG_WIDTH, 3.2), layout="constrained")
    for name, curve in curves.items():
        steps, losses = zip(*curve)
        ax.plot(steps, losses, color=color_for(name), label=name)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("MLM loss")
    _legend_below(fig, [ax])
    return fig


def _student_frames(path: str | os.PathLike) -> list[tuple[str, pd.DataFrame]]:
    df = log_frame(path)
    if "step" not in df.columns:
        df = df.reset_index().rename(columns={"index": "step"})
    if "student" not in df.columns:
        return [(Path(path).parent.name, df)]
    return [(str(name), part) for name, part in df.groupby("student", sort=False)]


@_styled
def plot_distill_log(path: str | os.PathLike, *, title: str = "") -> Figure:
    """Loss curves of one distillation log.jsonl: a panel per loss term, a line per student."""
    return _loss_curves(_student_frames(path), title)


@_styled
def plot_all_logs(run_dir: str | os.PathLike) -> Figure:
    """The loss curves of every student and the control of a run on shared panels (one per loss term)."""
    zoo = model_zoo(run_dir)
    frames = []
    for name, info in zoo.items():
        if info["role"] == "teacher" or not info.get("log"):
            continue
        frames += [(name, df) for key, df in _student_frames(info["log"]) if key == info["key"]]
    if not frames:
        raise ValueError(f"{run_dir}: no student has a distillation log (run notebooks 02 and 03 first)")
    return _loss_curves(frames)


def speed_size(results: pd.DataFrame) -> pd.DataFrame:
    """Per model: mean score over tasks, encoder parameters and test examples per second (fine-tuning's test pass)."""
    agg = results.groupby("model", sort=False).agg(
        role=("role", "first"),
        score=("mean", "mean"),
        parameters=("parameters", "first"),
        examples=("test_examples", "sum"),
        seconds=("test_seconds", "sum"),
    )
    agg["examples_per_s"] = agg["examples"] / agg["seconds"]
    return agg.loc[_model_order(agg.index)]


@_styled
def plot_score_vs_speed_size(results: pd.DataFrame, bench: dict | None = None) -> Figure:
    """The headline figure: mean score over tasks against size (parameters) and against speed, a marker per model.

    `bench` (a kdlib.bench.speed result) adds, above the panels, the student's speed-up and size reduction at the
    benchmark's shapes (the paper's), which the run's small models cannot show.
    """
    agg = speed_size(results)
    fig, axes = plt.subplots(1, 2, figsize=(FIG_WIDTH, 3.8), sharey=True, layout="constrained")
    for ax, col, label in (
        (axes[0], "parameters", "encoder parameters (millions)"),
        (axes[1], "examples_per_s", "test examples per second"),
    ):
        scale = 1e6 if col == "parameters" else 1.0
        for name, row in agg.iterrows():
            ax.scatter(
                row[col] / scale,
                row["score"],
                s=55,
                color=color_for(name),
                label=name,
                marker=ROLE_MARKERS.get(row["role"], "D"),
                edgecolor="white",
                linewidth=0.6,
                zorder=3,
            )
        ax.set_xlabel(label)
        ax.margins(x=0.15, y=0.15)
    axes[0].set_ylabel("mean score over tasks (x100)")
    axes[0].set_title("score against size")
    axes[1].set_title("score against speed")
    _legend_below(fig, axes, ncol=3)
    note = _bench_note(bench) if bench else ""
    if note:
        fig.suptitle(note, fontsize=9)
    return fig


def _bench_note(bench: dict) -> str:
    """The benchmark in one sentence: 'kdlib.bench.speed (cpu): the 6-layer student is 2.1x faster than the 12-layer
    teacher (batch 32 x 128), 34% smaller.' ('' without timed latencies)."""
    inf = bench.get("inference") or {}
    pair = next((p for p in inf.get("pairs", []) if "speedup" in p), None)
    if pair is None:
        return ""
    setting = "b32_l128" if "b32_l128" in pair["speedup"]["encoder"] else next(iter(pair["speedup"]["encoder"]))
    batch, length = setting[1:].split("_l")
    t, s = inf["models"][pair["teacher"]], inf["models"][pair["student"]]
    return (
        f"kdlib.bench.speed ({bench['device']['type']}): the {s['layers']}-layer student is "
        f"{pair['speedup']['encoder'][setting]:.1f}x faster than the {t['layers']}-layer teacher "
        f"(batch {batch} x {length}), {100 * pair['size_reduction']:.0f}% smaller."
    )


# --------------------------------------------------------------------------- figures and tables of the benchmark


def _draw_latency(ax, result: dict) -> None:
    inf = result["inference"]
    pair = next(p for p in inf["pairs"] if "speedup" in p)
    t, s = inf["models"][pair["teacher"]], inf["models"][pair["student"]]
    keys = list(t["latency"]["mlm"])
    bars = [
        ("teacher, encoder", t, "encoder", "#1f4e9c", None),
        ("student, encoder", s, "encoder", "#4fa3e0", None),
        ("teacher, MLM", t, "mlm", "#1f4e9c", "//"),
        ("student, MLM", s, "mlm", "#4fa3e0", "//"),
    ]
    for i, (label, model, head, color, hatch) in enumerate(bars):
        ax.bar(
            [j + (i - 1.5) * 0.2 for j in range(len(keys))],
            [1e3 * model["latency"][head][k]["median_s"] for k in keys],
            0.2,
            label=label,
            color=color,
            hatch=hatch,
            edgecolor="white",
        )
    ax.set_xticks(range(len(keys)), [k[1:].replace("_l", " x ") for k in keys])
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(mticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(mticker.NullFormatter())
    ax.set_xlabel("batch x length")
    ax.set_ylabel("median latency (ms)")
    ax.set_title(
        f"Latency, {t['layers']}-layer teacher and {s['layers']}-layer student, vocabulary {t['vocab']} "
        f"({result['device']['type']})"
    )
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0))


def _draw_speedup(ax, result: dict) -> None:
    for p in result["inference"]["pairs"]:
        if "speedup" not in p:
            continue
        for head, marker, what in (("encoder", "o", "encoder"), ("mlm", "s", "MLM model")):
            keys = list(p["speedup"][head])
            ax.plot(
                [k[1:].replace("_l", " x ") for k in keys],
                [p["speedup"][head][k] for k in keys],
                marker=marker,
                label=f"{what}, vocab {p['teacher'].split('-', 1)[1]}",
            )
    target, paper = result.get("target_values", {}), result.get("paper", {})
    if "speedup_b32_l128_cpu" in target:
        ax.axhline(
            target["speedup_b32_l128_cpu"], color="k", ls="--", lw=1, label=f"target {target['speedup_b32_l128_cpu']}x"
        )
    if "speedup" in paper:
        ax.axhline(paper["speedup"], color="#b2182b", ls=":", lw=1.2, label=f"paper ~{paper['speedup']:g}x (GPU)")
    ax.set_xlabel("batch x length")
    ax.set_ylabel("student / teacher speed-up")
    models = result["inference"]["models"]
    layers = {m["role"]: m["layers"] for m in models.values()}
    ax.set_title(f"Speed-up of the {layers['student']}-layer student over the {layers['teacher']}-layer teacher")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0))


def _draw_throughput(ax, result: dict) -> None:
    th = result["throughput"]
    names = {"reference": "reference loop\n(DistilBERT recipe)", "kdlib": "kdlib loop"}
    values = [th[k]["train_tokens_per_s"] for k in names]
    ax.barh(list(names.values())[::-1], values[::-1], color=["#1f4e9c", "#9e9e9e"])
    ax.set_xlabel("real (non-pad) tokens per second of the training loop")
    ax.set_title(f"Distillation throughput: kdlib {th['ratio_tokens_per_s']:.2f}x the reference loop")


def _draw_shared(ax, result: dict) -> None:
    sh = result["shared"]
    left = 0.0
    for i, (name, run) in enumerate(sh["separate"].items()):
        ax.barh("three separate runs", run["total_s"], left=left, color=EXTRA_COLORS[i], label=name)
        left += run["total_s"]
    ax.barh("one run, shared\nteacher passes", sh["shared_s"], color="#1f4e9c")
    ax.set_xlabel("wall time (s): load, tokenize, train, save")
    ax.set_title(f"Three students at once: {sh['speedup']:.2f}x faster than one by one")
    ax.legend(title="student", loc="upper left", bbox_to_anchor=(1.01, 1.0))


@_styled
def plot_bench(result: dict) -> Figure:
    """The benchmark's panels stacked, one idea each: latency, the student's speed-up, the distillation loop's
    throughput against the reference loop, three students in one run against three runs."""
    inf = result.get("inference")
    panels = []
    if inf and any("speedup" in p for p in inf["pairs"]):
        panels += [_draw_latency, _draw_speedup]
    if result.get("throughput"):
        panels.append(_draw_throughput)
    if result.get("shared"):
        panels.append(_draw_shared)
    if not panels:
        raise ValueError("no inference, throughput or shared results")
    fig, axes = plt.subplots(
        len(panels), 1, figsize=(FIG_WIDTH, 2.9 * len(panels)), squeeze=False, layout="constrained"
    )
    for ax, draw in zip(axes[:, 0], panels):
        draw(ax, result)
    return fig


def bench_tables(result: dict) -> dict[str, pd.DataFrame]:
    """The benchmark as DataFrames for a page: sizes, latency, throughput, targets (those that ran)."""
    tables: dict[str, pd.DataFrame] = {}
    inf = result.get("inference")
    if inf:
        tables["sizes"] = pd.DataFrame(
            {
                name: {
                    "parameters (M, encoder)": m["params"]["encoder"] / 1e6,
                    "paper (M)": m["paper_params_M"],
                    "safetensors (MB)": m["size"]["MB"],
                    "paper size": m["paper_size"],
                }
                for name, m in inf["models"].items()
            }
        ).T
        if any("speedup" in p for p in inf["pairs"]):
            tables["latency"] = pd.DataFrame(_latency_rows(inf)).set_index(["vocab", "head", "setting"])
    th = result.get("throughput")
    if th:
        tables["throughput"] = pd.DataFrame(
            {
                name: {
                    "loop tokens/s": th[name]["train_tokens_per_s"],
                    "GFLOP/s": th[f"{name}_gflops"],
                    "share of peak (%)": 100 * th[f"{name}_share_of_peak"],
                    "end-to-end s": th[name]["total_s"],
                }
                for name in ("reference", "kdlib")
            }
        ).T
    if result.get("targets"):
        tables["targets"] = pd.DataFrame(result["targets"]).set_index("name")
    return tables

"""The ensemble ablation (notebook 03): which multi-teacher settings the numbers pick, on one budget.

Every variant is one student distilled for the same steps, batch and corpus, then fine-tuned with the
same settings on a subset of tasks and seeds; the reference is the ensemble with `DistillConfig`'s
defaults, and each other variant changes one setting:

* the single-teacher students (each teacher alone, with its own tokenizer: DistilBERT-base-ro and
  Distil-RoBERT-base as in the paper);
* ``strategy``: "average" vs "sum";
* ``vocab_case``: the case-aware projection ("prior"; "count" = its corpus-count fallback) vs "split"
  and "exact_first";
* ``cross_cosine``: the cosine towards the other-tokenizer teacher through a learned linear map
  ("linear") vs on the raw hidden states ("raw") vs none ("off").

Per variant: the mean test score over tasks (x100), and the label loyalty (x100) of its fine-tuned
predictions to each teacher's (both fine-tuned alike). Per changed setting: the difference to the
reference on each task with its interval (`kdlib.analysis.stats.difference_interval`: paired over test examples
and combined over seeds). `pick` names, per setting, the value with the best mean score and whether
the intervals make that choice clear.
"""

from __future__ import annotations

import dataclasses
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from kdlib.engine.distill import DistillConfig, distill
from kdlib.eval.finetune import FinetuneConfig, finetune
from kdlib.eval.loyalty import label_loyalty, load_predictions

# the settings the ablation varies, each with the values it tries (the DistillConfig default is the reference)
SETTINGS = {
    "strategy": ("average", "sum"),
    "vocab_case": ("prior", "count", "split", "exact_first"),
    "cross_cosine": ("linear", "raw", "off"),
}


@dataclass
class Variant:
    """One ablation student: its teachers, whose tokenizer it takes, and the settings it changes."""

    name: str
    teachers: list[str]
    tokenizer_from: str
    overrides: dict[str, Any] = field(default_factory=dict)
    setting: str | None = None  # the SETTINGS key it varies (None: reference or single teacher)


def variants(teacher_names: list[str], settings: dict[str, tuple] | None = None) -> list[Variant]:
    """The reference ensemble, one single-teacher student per teacher, and one variant per non-default value."""
    settings = SETTINGS if settings is None else settings
    defaults = {f.name: f.default for f in dataclasses.fields(DistillConfig)}
    first = teacher_names[0]
    out = [Variant("ensemble (defaults)", list(teacher_names), first)]
    out += [Variant(f"single: {t}", [t], t) for t in teacher_names]
    for key, values in settings.items():
        if key not in defaults:
            raise ValueError(f"ablation setting {key!r} is not a DistillConfig key")
        out += [Variant(f"{key}={v}", list(teacher_names), first, {key: v}, key) for v in values if v != defaults[key]]
    return out


def _slug(name: str) -> str:
    from kdlib.run.registry import slug

    return slug(name)


def run_variants(
    root: Path, teachers: dict[str, str], corpus, base: dict[str, Any], items: list[Variant], *, fresh: bool = False
) -> dict:
    """Distil every variant into root/students/<slug>; {name: path}. A student finished with the same
    settings (root/distill/<slug>/ablation-config.json) is reused; `fresh` starts the others over
    (kdlib.engine.distill's fresh), and a student distilled again loses its old fine-tunes."""
    import json

    paths = {}
    for v in items:
        key = _slug(v.name)
        student, record = root / "students" / key, root / "distill" / key / "ablation-config.json"
        config = {
            **base,
            **v.overrides,
            "out_dir": str(root / "distill" / key),
            "teachers": [{"name": t, "path": teachers[t]} for t in v.teachers],
            "students": [
                {"name": key, "teachers": v.teachers, "tokenizer_from": v.tokenizer_from, "out_dir": str(student)}
            ],
        }
        done = record.is_file() and json.loads(record.read_text(encoding="utf-8")) == config
        if not (done and (student / "config.json").is_file()):
            shutil.rmtree(root / "eval" / key, ignore_errors=True)  # fine-tunes of the student this replaces
            distill(DistillConfig.from_dict(config), corpus, fresh=fresh)
            record.write_text(json.dumps(config), encoding="utf-8")
        paths[v.name] = str(student)
    return paths


def finetune_all(
    root: Path, models: dict[str, str], tasks: list[str], seeds: list[int], config: dict[str, Any], data_dir=None
) -> dict[str, dict[str, list[str]]]:
    """Fine-tune every model on every task and seed (reused when done); {model: {task: [prediction dirs]}}."""
    out: dict[str, dict[str, list[str]]] = {}
    for name, path in models.items():
        for task in tasks:
            dirs = []
            for seed in seeds:
                d = root / "eval" / _slug(name) / task / f"seed-{seed}"
                finetune(
                    path,
                    task,
                    d,
                    config=FinetuneConfig(**{**config, "seed": seed}),
                    data_dir=data_dir,
                )
                dirs.append(str(d))
            out.setdefault(name, {})[task] = dirs
    return out


def _runs(index: dict, model: str, task: str) -> list:
    return [load_predictions(d) for d in index[model][task]]


def _score(pred) -> float:
    from kdlib.eval.metrics import compute_metrics

    gold, guess = (
        (pred.sentences(pred.gold), pred.sentences(pred.pred)) if pred.kind == "tagging" else (pred.gold, pred.pred)
    )
    if pred.kind == "regression":
        guess = pred.outputs
    return 100 * float(compute_metrics(pred.task, list(gold), list(guess), label_names=pred.label_names)["score"])


def table(index: dict, teacher_names: list[str], tasks: list[str]) -> pd.DataFrame:
    """Per model: test score x100 per task (mean over seeds), their mean, and label loyalty x100 to each
    teacher (mean over the tagging/classification tasks and seeds, seed i against the teacher's seed i)."""
    rows = {}
    for model in index:
        row = {}
        for task in tasks:
            row[task] = float(np.mean([_score(p) for p in _runs(index, model, task)]))
        row["mean score"] = float(np.mean([row[t] for t in tasks]))
        for t in teacher_names:
            if model == t:
                continue
            loy = [
                100 * label_loyalty(tp.probs, sp.probs)
                for task in tasks
                for tp, sp in zip(_runs(index, t, task), _runs(index, model, task))
                if sp.probs is not None
            ]
            row[f"loyalty to {t}"] = float(np.mean(loy)) if loy else float("nan")
        rows[model] = row
    return pd.DataFrame(rows).T


def differences(index: dict, items: list[Variant], tasks: list[str], *, n_resamples: int = 1000) -> pd.DataFrame:
    """Score(variant) - score(reference) x100 per task, with its interval, for every non-reference student."""
    from kdlib.analysis.stats import difference_interval

    ref = items[0].name
    rows = []
    for v in items[1:]:
        for task in tasks:
            iv = difference_interval(_runs(index, v.name, task), _runs(index, ref, task), n_resamples=n_resamples)
            rows.append({"variant": v.name, "setting": v.setting, "task": task, **iv.as_dict()})
    return pd.DataFrame(rows)


def pick(diffs: pd.DataFrame, items: list[Variant]) -> dict[str, dict[str, Any]]:
    """Per setting: the value with the best mean difference to the reference over tasks (the reference's own
    value: 0), and "clear": the other values are worse on every task with intervals below 0 (when the
    default wins), or the winner is better on every task with intervals above 0 (when another value wins)."""
    defaults = {f.name: f.default for f in dataclasses.fields(DistillConfig)}
    out = {}
    for key in dict.fromkeys(v.setting for v in items if v.setting):
        part = diffs[diffs["setting"] == key]
        means = {defaults[key]: 0.0}
        means.update(
            {
                v.overrides[key]: float(part[part["variant"] == v.name]["estimate"].mean())
                for v in items
                if v.setting == key
            }
        )
        best = max(means, key=means.get)
        if best == defaults[key]:
            clear = bool((part["high"] < 0).all())
        else:
            clear = bool((part[part["variant"] == f"{key}={best}"]["low"] > 0).all())
        out[key] = {"default": defaults[key], "best": best, "mean_difference": means, "clear": clear}
    return out


def measured_cost(root: Path) -> dict[str, float]:
    """Seconds the ablation's steps took, read from what they wrote (so reused results still report their
    cost): distillation wall time of every student, fine-tuning time of every model, task and seed."""
    import json

    distill_s = sum(
        v["wall_time_s"]
        for f in Path(root, "distill").glob("*/summary.json")
        for v in json.loads(f.read_text(encoding="utf-8")).values()
    )
    tunes = [
        json.loads(f.read_text(encoding="utf-8"))["timing"]["total_seconds"]
        for f in Path(root, "eval").glob("*/*/*/metrics.json")
    ]
    return {
        "distill_s": distill_s,
        "finetune_s": sum(tunes),
        "finetunes": len(tunes),
        "total_s": distill_s + sum(tunes),
    }

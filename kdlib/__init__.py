"""kdlib: distil BERTs from one or several teachers, evaluate the students, and measure their loyalty.

The library behind the reproducibility book for Avram et al. (LREC 2022). The tree shows its layers, each
importing only those below it: ``data`` (tasks, readers, corpus), ``engine`` (the distillation loop, its
losses and models: the thin core), ``eval`` (fine-tuning, metrics, loyalty), ``run`` (a run folder's
models), ``analysis`` (intervals, verdicts, tables, figures), ``bench``, ``studies`` (one module per study
chapter) and ``book`` (profiles, the papermill runner, the build).

The names below are the public API, loaded on first use so that ``import kdlib`` stays cheap::

    import kdlib
    config = kdlib.DistillConfig(max_steps=100)
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_API: dict[str, str] = {
    # data
    "load_task": "kdlib.data.load",
    "get_task": "kdlib.data.tasks",
    "build_corpus": "kdlib.data.corpus",
    "load_text_corpus": "kdlib.data.corpus",
    # engine
    "TeacherConfig": "kdlib.engine.teachers",
    "pretrain_teacher": "kdlib.engine.teachers",
    "load_teacher": "kdlib.engine.teachers",
    "DistillConfig": "kdlib.engine.distill",
    "distill": "kdlib.engine.distill",
    # eval
    "FinetuneConfig": "kdlib.eval.finetune",
    "finetune": "kdlib.eval.finetune",
    "finetune_seeds": "kdlib.eval.finetune",
    "label_loyalty": "kdlib.eval.loyalty",
    "probability_loyalty": "kdlib.eval.loyalty",
    "regression_loyalty": "kdlib.eval.loyalty",
    "load_predictions": "kdlib.eval.loyalty",
    # analysis
    "score_interval": "kdlib.analysis.stats",
    "difference_interval": "kdlib.analysis.stats",
    "Claim": "kdlib.analysis.claims",
    # bench and book
    "run_bench": "kdlib.bench.speed",
    "load_profile": "kdlib.book.runner",
    "run_pipeline": "kdlib.book.runner",
}
__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    """Import a public name's module on first use (PEP 562)."""
    if name not in _API:
        raise AttributeError(f"module 'kdlib' has no attribute {name!r}")
    value = getattr(importlib.import_module(_API[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)

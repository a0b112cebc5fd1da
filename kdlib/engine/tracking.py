"""Experiment tracking in the field's conventions: logged scalars also go to TensorBoard and/or trackio.

``report_to`` (a DistillConfig / FinetuneConfig field, empty by default) names the backends, like
``transformers.TrainingArguments.report_to``: ``"tensorboard"`` (``torch.utils.tensorboard.SummaryWriter``;
needs the ``tensorboard`` package) and ``"trackio"`` (needs the ``trackio`` package). The JSONL logs are
written as before; a :class:`Tracker` is called where they are, and fans the same figures out. Nothing is
imported unless asked, and a missing package is a one-line error raised by :func:`check_report_to` before
training starts. Tracking only reads the logged numbers: what a run computes does not depend on it.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

BACKENDS = {"tensorboard": "tensorboard", "trackio": "trackio"}  # report_to name -> package it needs
TENSORBOARD_DIR = "tensorboard"  # the event files' folder inside a run's output folder


def check_report_to(report_to: Sequence[str]) -> list[str]:
    """The backends of `report_to`, checked: known names whose package is installed, else one-line ValueError."""
    if isinstance(report_to, str) or not isinstance(report_to, Sequence):
        raise ValueError(f"report_to must be a list of backend names, got {report_to!r}")
    names = list(dict.fromkeys(report_to))
    for name in names:
        if name not in BACKENDS:
            raise ValueError(f"report_to: unknown backend {name!r}; expected some of {sorted(BACKENDS)}")
        if importlib.util.find_spec(BACKENDS[name]) is None:
            package = BACKENDS[name]
            raise ValueError(f"report_to={name!r} needs the {package!r} package: pip install {package}")
    return names


def flatten(record: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """The numbers of a (nested) log record as {"a/b": value}; strings, lists and None are left out."""
    out: dict[str, float] = {}
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{name}/"))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[name] = float(value)
    return out


class Tracker:
    """Sends logged scalars to the `report_to` backends; with none it does nothing (and imports nothing)."""

    def __init__(
        self,
        report_to: Sequence[str],
        out_dir: str | Path,
        *,
        project: str,
        name: str,
        config: Mapping[str, Any] | None = None,
        start_step: int = 0,
    ) -> None:
        """Open each backend: TensorBoard writes to out_dir/tensorboard (events from start_step on are replaced)."""
        self.backends = check_report_to(report_to)
        self.writer = None
        self.trackio = None
        if "tensorboard" in self.backends:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(Path(out_dir) / TENSORBOARD_DIR), purge_step=start_step)
        if "trackio" in self.backends:
            self.trackio = importlib.import_module("trackio")
            self.trackio.init(project=project, name=name, config=dict(config or {}))

    def log(self, record: Mapping[str, Any], step: int) -> None:
        """Log the numbers of `record` (nested mappings become "a/b" names) at `step`."""
        if not self.backends:
            return
        scalars = flatten(record)
        if self.writer is not None:
            for key, value in scalars.items():
                self.writer.add_scalar(key, value, step)
            self.writer.flush()
        if self.trackio is not None:
            self.trackio.log(scalars, step=step)

    def close(self) -> None:
        """Flush and close every backend."""
        if self.writer is not None:
            self.writer.close()
            self.writer = None
        if self.trackio is not None:
            self.trackio.finish()
            self.trackio = None

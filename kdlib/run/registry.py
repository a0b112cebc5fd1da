"""The registry of a run's models, and the one builder of a distillation run for the notebooks.

Notebook 01 writes ``<run>/teachers/teachers.json``; notebooks 02 and 03 each write a registry file
(``<run>/distill/single.json``, ``<run>/distill/ensemble.json``) naming the students they trained; notebook 04
writes ``<run>/released/released.json`` when its ``released_students`` parameter names students trained
elsewhere (the authors' released ones, kind "released": evaluated and compared with their teachers, never
distilled here; :func:`released_entries` checks them against the run's teachers and, for a pinned
``revision``, downloads the hub files into ``<run>/released/<key>`` with kdlib.engine.teachers.pin_teacher).
Every later step (evaluation, loyalty, results) finds the models
through :func:`models`, so the schema of an entry lives in one place, :class:`ModelEntry`.

:func:`distill_run` turns "these students learn from these teachers" into the two things a distillation
step needs: the ``kdlib.engine.distill.DistillConfig`` dict (teachers with weights, students with their
tokenizer, initialisation and output folder, the step's settings) and the registry entries of its
students. The module stays light (no torch): the notebook runs ``distill`` on ``plan.config`` itself.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kdlib.io import write_json_atomic

if TYPE_CHECKING:
    import pandas

REGISTRY_FILES = ("single", "ensemble")  # <run>/distill/<name>.json, in the order the steps write them
RELEASED_FILE = Path("released") / "released.json"  # notebook 04's released students, relative to the run
RELEASED_FIELDS = ("path", "teachers", "revision")  # what a released_students spec may hold
ROLES = ("teacher", "control", "released")  # kinds that are their own role; every other kind is a "student"


def slug(name: str) -> str:
    """A folder-safe key for a display name: 'DistilMulti-BERT-base-ro (sum)' -> 'distilmulti-bert-base-ro-sum'."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


@dataclass(frozen=True)
class ModelEntry:
    """One model of a run, as the later notebooks find it.

    name:     display name used in every table ("Distil-BERT-base-ro").
    path:     the model folder (or a hub id for hub teachers).
    kind:     "teacher", "single-teacher", "ensemble (<strategy>)", "control" (MLM only) or "released" (a
              student trained elsewhere, e.g. the authors' on the hub: evaluated here, not distilled).
    key:      folder-safe name (``slug(name)``), used for the model's evaluation folders.
    teachers: the teachers a student learnt from (empty for a teacher).
    log:      the distillation log (``log.jsonl``) of a student, None for a teacher.
    """

    name: str
    path: str
    kind: str
    key: str = ""
    teachers: list[str] = field(default_factory=list)
    log: str | None = None

    @property
    def role(self) -> str:
        """ "teacher", "student", "control" or "released": how the tables group the model."""
        return self.kind if self.kind in ROLES else "student"

    def record(self) -> dict[str, Any]:
        """The JSON record of a registry file (the name is the file's key)."""
        return {
            "path": self.path,
            "teachers": list(self.teachers),
            "kind": self.kind,
            "log": self.log,
            "key": self.key or slug(self.name),
        }


def records(entries: Sequence[ModelEntry]) -> dict[str, dict[str, Any]]:
    """The content of a registry file ({name: record}); the notebook writes it with runner.write_json."""
    return {e.name: e.record() for e in entries}


def read_registry(path: str | os.PathLike) -> list[ModelEntry]:
    """The entries of one registry file; a record without `kind`/`key` gets the defaults of old runs."""
    path = Path(path)
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of model name -> record")
    out = []
    for name, rec in data.items():
        if not isinstance(rec, dict) or "path" not in rec:
            raise ValueError(f"{path}: entry {name!r} has no 'path'")
        out.append(
            ModelEntry(
                name=name,
                path=rec["path"],
                kind=rec.get("kind", "student"),
                key=rec.get("key") or slug(name),
                teachers=list(rec.get("teachers", [])),
                log=rec.get("log"),
            )
        )
    return out


def trained_models(run_dir: str | os.PathLike) -> dict[str, ModelEntry]:
    """The models made in the run: the teachers (notebook 01), then the students and the control (02, 03)."""
    run = Path(run_dir)
    teachers_file = run / "teachers" / "teachers.json"
    if not teachers_file.is_file():
        raise FileNotFoundError(f"{teachers_file} does not exist: run notebook 01-teachers first")
    zoo = {
        name: ModelEntry(name=name, path=info["path"], kind="teacher", key=slug(name))
        for name, info in json.loads(teachers_file.read_text(encoding="utf-8")).items()
    }
    for part in REGISTRY_FILES:
        path = run / "distill" / f"{part}.json"
        if path.is_file():
            zoo.update({e.name: e for e in read_registry(path)})
    return zoo


def models(run_dir: str | os.PathLike) -> dict[str, ModelEntry]:
    """Every model of a run: :func:`trained_models`, then the released students notebook 04 registered."""
    zoo = trained_models(run_dir)
    released = Path(run_dir) / RELEASED_FILE
    if released.is_file():
        zoo.update({e.name: e for e in read_registry(released)})
    return zoo


def _check_released(name: str, spec: Any, zoo: Mapping[str, ModelEntry]) -> list[str]:
    """What is wrong with one released_students entry (empty: nothing)."""
    if not isinstance(spec, Mapping) or not spec.get("path"):
        return [f"{name!r}: expected {{'path': hub id or folder, 'teachers': [...], 'revision': None}}, got {spec!r}"]
    problems = [
        f"{name!r}: unknown field {k!r} (fields: {', '.join(RELEASED_FIELDS)})"
        for k in spec
        if k not in RELEASED_FIELDS
    ]
    teachers = spec.get("teachers")
    if isinstance(teachers, str) or not teachers:
        problems.append(f"{name!r}: 'teachers' must be a non-empty list of the run's teacher names")
    else:
        run_teachers = [n for n, e in zoo.items() if e.kind == "teacher"]
        problems += [
            f"{name!r}: teacher {t!r} is not one of the run's teachers {run_teachers}"
            for t in teachers
            if t not in run_teachers
        ]
    clash = [n for n, e in zoo.items() if n == name or e.key == slug(name)]
    problems += [
        f"{name!r}: the run already has a model named {n!r} (the same folder key {slug(name)!r})" for n in clash
    ]
    return problems


def released_entries(run_dir: str | os.PathLike, specs: Mapping[str, Mapping[str, Any]]) -> list[ModelEntry]:
    """Entries (kind "released") of {name: {"path", "teachers", "revision"}}; a pinned one goes to <run>/released."""
    run = Path(run_dir).resolve()
    zoo = trained_models(run)
    problems = [p for name, spec in specs.items() for p in _check_released(name, spec, zoo)]
    if problems:
        raise ValueError("released_students: " + "; ".join(problems))
    entries = []
    for name, spec in specs.items():
        key, path = slug(name), str(spec["path"])
        if spec.get("revision"):
            from kdlib.engine.teachers import pin_teacher

            path = str(pin_teacher(path, run / RELEASED_FILE.parent / key, spec["revision"]))
        entries.append(ModelEntry(name=name, path=path, kind="released", key=key, teachers=list(spec["teachers"])))
    return entries


def write_released(run_dir: str | os.PathLike, entries: Sequence[ModelEntry]) -> Path | None:
    """Write <run>/released/released.json, or remove it when there are no entries (it follows the parameter)."""
    path = Path(run_dir) / RELEASED_FILE
    if not entries:
        path.unlink(missing_ok=True)
        return None
    return write_json_atomic(path, records(entries))


@dataclass
class DistillRun:
    """One distillation step's plan: where it writes, its DistillConfig dict, the entries of its students."""

    out_dir: Path
    config: dict[str, Any]
    entries: list[ModelEntry]

    @property
    def config_path(self) -> Path:
        """Where the step writes its config (what `python -m kdlib distill --config` or torchrun reads)."""
        return self.out_dir / "config.json"


def distill_run(
    run_dir: str | os.PathLike,
    folder: str,
    students: Mapping[str, Sequence[str]],
    *,
    teachers: Mapping[str, Mapping[str, Any]],
    kind: str,
    settings: Mapping[str, Any],
    seed: int,
    device: str,
    weights: Mapping[str, float] | None = None,
    init: str = "teacher",
    shape: str = "distilbert",
    tokenizer_from: str | None = None,
    **options: Any,
) -> DistillRun:
    """Plan a distillation into ``<run>/distill/<folder>`` of `students` ({display name: [teacher names]}).

    teachers: notebook 01's teachers.json ({name: {"path": ...}}); the config lists the teachers the
    students need, in order of first use, each with its weight from `weights` (default 1.0).
    Each student takes its tokenizer from `tokenizer_from` (default: its first teacher) and is saved in
    ``<run>/students/<slug>``. `settings` (a profile's distill_config) and `options` (e.g.
    strategy="sum", or alpha_ce=0.0 for the control) go into the config as they are.
    """
    run = Path(run_dir).resolve()
    needed = list(dict.fromkeys(t for names in students.values() for t in names))
    unknown = [t for t in needed if t not in teachers]
    if unknown or not students:
        raise ValueError(
            f"distill_run {folder!r}: students {dict(students)} name teachers {unknown}; "
            f"notebook 01 made {list(teachers)}"
        )
    weights = dict(weights or {})
    out = run / "distill" / folder
    specs, entries = [], []
    for name, names in students.items():
        key = slug(name)
        specs.append(
            {
                "name": key,
                "teachers": list(names),
                "tokenizer_from": tokenizer_from or names[0],
                "init": init,
                "shape": shape,
                "out_dir": str(run / "students" / key),
            }
        )
        entries.append(
            ModelEntry(
                name=name,
                path=str(run / "students" / key),
                kind=kind,
                key=key,
                teachers=list(names),
                log=str(out / "log.jsonl"),
            )
        )
    config = {
        "teachers": [{"name": t, "path": teachers[t]["path"], "weight": float(weights.get(t, 1.0))} for t in needed],
        "students": specs,
        **options,
        "seed": seed,
        "device": device,
        "out_dir": str(out),
        "corpus": str(run / "corpus"),
        **settings,
    }
    return DistillRun(out_dir=out, config=config, entries=entries)


def entries_table(entries: Sequence[ModelEntry], run_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """Rows (name, kind, teachers, folder relative to the run) for a page's table of the trained models."""
    run = Path(run_dir).resolve()

    def rel(path: str) -> str:  # a hub id stays as it is
        p = Path(path)
        return str(p.relative_to(run)) if p.is_absolute() and p.is_relative_to(run) else path

    return [
        {"model": e.name, "kind": e.kind, "teachers": ", ".join(e.teachers), "folder": rel(e.path)} for e in entries
    ]


LOSS_COLUMNS = {
    "steps": "steps",
    "wall_time_s": "seconds",
    "tokens_per_s": "tokens/s",
    "first_losses.total": "first total",
    "final_losses.total": "final total",
    "final_losses.mlm": "final MLM",
    "final_losses.kl": "final KL",
    "final_losses.cos": "final cos",
}


def loss_table(summary: Mapping[str, Any], entries: Sequence[ModelEntry]) -> "pandas.DataFrame":
    """One row per student of a distillation summary (kdlib.engine.distill's, keyed by student key): steps, time,
    throughput, first and final total loss and the final loss terms, under the students' display names."""
    import pandas as pd

    rows = {}
    for e in entries:
        s = summary[e.key]
        flat = {
            "steps": s.get("steps"),
            "wall_time_s": s.get("wall_time_s"),
            "tokens_per_s": s.get("tokens_per_s"),
            **{f"first_losses.{k}": v for k, v in (s.get("first_losses") or {}).items()},
            **{f"final_losses.{k}": v for k, v in (s.get("final_losses") or {}).items()},
        }
        rows[e.name] = {label: flat.get(key) for key, label in LOSS_COLUMNS.items()}
    return pd.DataFrame(rows).T.rename_axis("student")

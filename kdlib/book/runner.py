"""The notebook pipeline: profiles and a papermill runner with skip-on-rerun.

A *profile* (YAML in ``kdlib/book/profiles/``) holds the parameters of every notebook in ``notebooks/``;
``run_pipeline`` executes the notebooks in order into one run folder, each reading the JSON its
predecessors wrote there (``read_json``; ``write_json`` writes atomically) and recording wall time and
peak memory in ``run_summary.json`` (``summary_table``). ``kdlib.book.build.build_book`` renders a run's
executed notebooks. The tables and figures the notebooks show live in :mod:`kdlib.analysis.reporting`.
A profile may declare its own tasks and language (top-level ``tasks`` and ``language``, see
kdlib.data.tasks): the run reads every declared file first, writes them to ``<run>/tasks.json`` and points
``$KDLIB_TASKS`` at it for the notebook kernels, so that every task name a notebook passes to kdlib
resolves to the profile's declaration.
"""

from __future__ import annotations

import ast
import contextlib
import copy
import hashlib
import json
import logging
import os
import re
import resource
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from kdlib.colab import ensure_drive
from kdlib.data import load as data
from kdlib.data import tasks as tasks_mod
from kdlib.io import read_json, write_json, write_json_atomic  # noqa: F401  (runner.read_json: kept for old notebooks)
from kdlib.run.registry import slug  # noqa: F401  (runner.slug: the one slug, defined with the registry)

log = logging.getLogger("kdlib.book.runner")

PACKAGE_DIR = Path(__file__).resolve().parent
PROFILES_DIR = PACKAGE_DIR / "profiles"
REPO_ROOT = PACKAGE_DIR.parents[1]
DEFAULT_NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
KERNEL_NAME = "python3"
BOOK_FILES = ("_config.yml", "_toc.yml", "references.bib", "book")


class PipelineError(RuntimeError):
    """A notebook of the pipeline failed; names the step, the failing cell and the kept executed copy."""

    def __init__(self, step: str, message: str, executed_path: Path | None = None):
        super().__init__(message)
        self.step = step
        self.executed_path = executed_path


# --------------------------------------------------------------------------- profiles


def available_profiles() -> list[str]:
    """Names of the profiles shipped with kdlib."""
    return sorted(p.stem for p in PROFILES_DIR.glob("*.yaml"))


def _deep_merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _profile_path(name_or_path: str | os.PathLike) -> Path:
    text = str(name_or_path)
    path = Path(text)
    if path.suffix in {".yaml", ".yml", ".json"} or os.sep in text:
        if not path.is_file():
            raise FileNotFoundError(f"profile file {path} does not exist")
        return path
    candidate = PROFILES_DIR / f"{text}.yaml"
    if not candidate.is_file():
        raise ValueError(
            f"unknown profile {text!r}; valid profiles: {', '.join(available_profiles())} "
            f"(or a path to a .yaml/.json file)"
        )
    return candidate


PROFILE_KEYS = (
    "name",
    "description",
    "extends",
    "language",
    "tasks",
    "params",
    "notebooks",
    "steps",
    "title",
    "teachers",
    "students",
    "optional",
)


def _declared_tasks(raw: dict, where: str, *, own_tasks: bool, own_params: dict, own_notebooks: dict) -> None:
    """Validate ``language`` and ``tasks``; a profile's own declared tasks become its task list."""
    if raw.get("language") is not None:
        tasks_mod.check_language(raw["language"], f"profile {where}")
    if raw.get("tasks") is None:
        raw.pop("tasks", None)
        return
    specs = tasks_mod.parse_declarations(raw["tasks"], language=raw.get("language"), where=f"profile {where}: tasks")
    params = raw["params"] = dict(raw.get("params") or {})
    if own_tasks and "tasks" not in own_params:
        params["tasks"] = list(specs)
        for nb, nb_params in (raw.get("notebooks") or {}).items():  # inherited per-notebook task lists
            if isinstance(nb_params, dict) and "tasks" not in (own_notebooks.get(nb) or {}):
                nb_params.pop("tasks", None)
    unknown = [t for t in params.get("tasks") or [] if t not in specs and t not in tasks_mod.BUILTIN]
    if unknown:
        raise ValueError(
            f"profile {where}: params.tasks names {unknown}, which are neither declared under "
            f"`tasks` ({', '.join(specs)}) nor built in"
        )


def load_profile(name_or_path: str | os.PathLike | dict, _seen: tuple[str, ...] = ()) -> dict:
    """Load a profile by name (kdlib/book/profiles/NAME.yaml), path or dict, resolving `extends:` chains.

    Returns a dict with keys ``name``, ``description``, ``params`` (common to every notebook) and
    ``notebooks`` (per-notebook parameters, keyed by notebook stem such as ``04-evaluate``), plus
    ``language`` and ``tasks`` when the profile (or one it extends) sets them: ``tasks`` maps task
    names to declarations (kdlib.data.tasks, validated here) and its names become ``params.tasks``, the
    task list of every notebook, unless the same profile sets ``params.tasks`` itself.
    """
    if isinstance(name_or_path, dict):
        raw, where = copy.deepcopy(name_or_path), "<dict>"
    else:
        path = _profile_path(name_or_path)
        where = str(path)
        if where in _seen:
            raise ValueError(f"profile {where}: `extends` cycle through {' -> '.join(_seen)}")
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise ValueError(f"profile {path}: not valid YAML/JSON: {exc}") from exc
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise ValueError(f"profile {path}: expected a mapping at the top level, got {type(raw).__name__}")
        raw.setdefault("name", path.stem)
    own_params = dict(raw.get("params") or {}) if isinstance(raw.get("params"), dict) else {}
    own_notebooks = raw.get("notebooks") if isinstance(raw.get("notebooks"), dict) else {}
    own_tasks = raw.get("tasks") is not None
    unknown = set(raw) - set(PROFILE_KEYS)
    if unknown:
        raise ValueError(
            f"profile {where}: unknown top-level keys {sorted(unknown)}; expected {', '.join(PROFILE_KEYS)}"
        )
    for key in ("params", "notebooks"):
        if raw.get(key) is not None and not isinstance(raw[key], dict):
            raise ValueError(f"profile {where}: `{key}` must be a mapping")
    for nb, params in (raw.get("notebooks") or {}).items():
        if params is not None and not isinstance(params, dict):
            raise ValueError(f"profile {where}: notebooks.{nb} must be a mapping of parameters")
    parent = raw.pop("extends", None)
    if parent:
        base_dir = Path(where).parent if where != "<dict>" else PROFILES_DIR
        parent_ref = parent if not str(parent).endswith((".yaml", ".yml", ".json")) else base_dir / parent
        base = load_profile(parent_ref, _seen + (where,))
        if raw.get("tasks") is not None:  # declared tasks replace the parent's, never merge with them
            base.pop("tasks", None)
        raw = _deep_merge({k: v for k, v in base.items() if k not in ("name", "description")}, raw)
    _declared_tasks(raw, where, own_tasks=own_tasks, own_params=own_params, own_notebooks=own_notebooks)
    _check_identity(raw, where)
    raw.setdefault("description", "")
    raw["params"] = dict(raw.get("params") or {})
    raw["notebooks"] = {k: dict(v or {}) for k, v in (raw.get("notebooks") or {}).items()}
    try:
        json.dumps(raw)
    except TypeError as exc:
        raise ValueError(f"profile {where}: parameters must be JSON-friendly: {exc}") from exc
    return raw


# --------------------------------------------------------------------------- the book's title and model names

PAPER_LANGUAGE = tasks_mod.DEFAULT_LANGUAGE  # the paper's: its poster numbers apply to runs of this language only
LANGUAGE_NAMES = {
    "ro": "Romanian",
    "nl": "Dutch",
    "de": "German",
    "fr": "French",
    "en": "English",
    "it": "Italian",
    "es": "Spanish",
    "pt": "Portuguese",
    "pl": "Polish",
    "hu": "Hungarian",
    "cs": "Czech",
    "sv": "Swedish",
    "da": "Danish",
    "fi": "Finnish",
    "tr": "Turkish",
    "el": "Greek",
    "bg": "Bulgarian",
}
# the roles a profile may name (`teachers:` and `students:`); the defaults are the paper's Romanian names
MODEL_ROLES = {"teachers": ("cased", "uncased"), "students": ("cased", "uncased", "ensemble")}
DEFAULT_TEACHERS = {"cased": "BERT-base-ro", "uncased": "RoBERT-base"}


def _check_identity(raw: dict, where: str) -> None:
    """Validate ``title``, ``teachers``, ``students`` and ``optional`` (one-line errors)."""
    title = raw.get("title")
    if title is not None and (not isinstance(title, str) or not title.strip() or "\n" in title):
        raise ValueError(f"profile {where}: `title` must be a one-line, non-empty string, got {title!r}")
    for key, roles in MODEL_ROLES.items():
        names = raw.get(key)
        if names is None:
            continue
        if not isinstance(names, dict) or set(names) - set(roles):
            raise ValueError(f"profile {where}: `{key}` must map {', '.join(roles)} to model names, got {names!r}")
        for role, name in names.items():
            if not isinstance(name, str) or not name.strip() or "(" in name or "/" in name:
                raise ValueError(f"profile {where}: {key}.{role} must be a model name without '(' or '/', got {name!r}")
    names = list(model_names(raw).values())
    if len(set(names)) < len(names):
        raise ValueError(f"profile {where}: the teachers' and students' names must differ, got {names}")
    optional = raw.get("optional")
    if optional is not None and (not isinstance(optional, list) or not all(isinstance(s, str) for s in optional)):
        raise ValueError(f"profile {where}: `optional` must be a list of step names, got {optional!r}")


def profile_language(profile: dict) -> str:
    """The profile's language code (the paper's, Romanian, when it sets none)."""
    return profile.get("language") or tasks_mod.DEFAULT_LANGUAGE


def book_title(profile: dict) -> str:
    """The book's title: the profile's ``title``, else 'Distilling <language> BERTs from one or two teachers'."""
    if profile.get("title"):
        return profile["title"]
    code = profile_language(profile)
    name = LANGUAGE_NAMES.get(re.split(r"[-_]", code)[0].lower())
    return (
        f"Distilling {name} BERTs from one or two teachers" if name else f"Distilling BERTs ({code}) from two teachers"
    )


def model_names(profile: dict) -> dict[str, str]:
    """Display names of the two teachers (cased, uncased), their students and the two-teacher student."""
    t = {**DEFAULT_TEACHERS, **(profile.get("teachers") or {})}
    s = profile.get("students") or {}
    return {
        "cased": t["cased"],
        "uncased": t["uncased"],
        "cased_student": s.get("cased", f"Distil-{t['cased']}"),
        "uncased_student": s.get("uncased", f"Distil-{t['uncased']}"),
        "ensemble": s.get("ensemble", f"DistilMulti-{t['cased']}"),
    }


def model_parameters(profile: dict) -> dict[str, dict]:
    """The notebook parameters that name the models, from the profile's ``teachers``/``students`` ({} without them:
    the notebooks' defaults, the paper's names); a profile's own per-notebook settings override these."""
    if not profile.get("teachers") and not profile.get("students"):
        return {}
    n = model_names(profile)
    return {
        "01-teachers": {"local_teachers": {n["cased"]: {"lowercase": False}, n["uncased"]: {"lowercase": True}}},
        "02-distill-single": {
            "students": [
                {"name": n["cased_student"], "teacher": n["cased"]},
                {"name": n["uncased_student"], "teacher": n["uncased"]},
            ]
        },
        "03-distill-ensemble": {
            "teacher_weights": {n["cased"]: 1.0, n["uncased"]: 1.0},
            "ensemble_name": n["ensemble"],
        },
        "08-corpus-shape": {"teacher": n["cased"]},
    }


# --------------------------------------------------------------------------- declared tasks for the notebooks

TASKS_FILE = "tasks.json"


def task_declarations(profile: dict) -> dict:
    """``{"language": ..., "tasks": {...}}`` of a loaded profile (only the keys it sets; {} for none)."""
    return {k: profile[k] for k in ("language", "tasks") if profile.get(k) is not None}


def check_declared_tasks(declared: dict, data_dir: str | None = None) -> None:
    """Read every declared task once, so that a malformed file fails before the first notebook runs."""
    specs = tasks_mod.parse_declarations(declared["tasks"], language=declared.get("language"))
    for spec in specs.values():
        data.load_task(spec, data_dir)


def write_task_declarations(run_dir: Path, declared: dict) -> Path | None:
    """Write ``run_dir/tasks.json`` (the file ``$KDLIB_TASKS`` names for the notebooks); None without any.

    A stale file of an earlier profile is removed, so a run without declarations uses the seven tasks.
    """
    path = run_dir / TASKS_FILE
    if not declared:
        path.unlink(missing_ok=True)
        return None
    write_json(path, declared)
    return path


@contextlib.contextmanager
def tasks_environment(tasks_file: Path | None):
    """Set (or, without declarations, unset) ``$KDLIB_TASKS`` while a notebook kernel starts and runs.

    The kernel inherits this process's environment, so ``kdlib.data.tasks`` there resolves the profile's
    task names and language through the run's ``tasks.json``.
    """
    old = os.environ.get(tasks_mod.TASKS_ENV)
    if tasks_file is None:
        os.environ.pop(tasks_mod.TASKS_ENV, None)
    else:
        os.environ[tasks_mod.TASKS_ENV] = str(tasks_file)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(tasks_mod.TASKS_ENV, None)
        else:
            os.environ[tasks_mod.TASKS_ENV] = old


# --------------------------------------------------------------------------- steps and parameters


def list_steps(notebooks_dir: str | os.PathLike = DEFAULT_NOTEBOOKS_DIR) -> list[Path]:
    """Notebooks named NN-name.ipynb, in execution order."""
    nb_dir = Path(notebooks_dir)
    if not nb_dir.is_dir():
        raise FileNotFoundError(f"notebooks folder {nb_dir} does not exist")
    steps = sorted(p for p in nb_dir.glob("*.ipynb") if re.match(r"^\d\d-", p.name))
    if not steps:
        raise FileNotFoundError(f"no NN-name.ipynb notebooks in {nb_dir}")
    return steps


def _match_step(key: str, names: list[str]) -> str:
    hits = [n for n in names if n == key or n.split("-", 1)[0] == key or n.split("-", 1)[1] == key]
    if len(hits) != 1:
        raise ValueError(f"step {key!r} matches {hits or 'nothing'}; steps are: {', '.join(names)}")
    return hits[0]


def parse_set(items: list[str] | None) -> dict[str, Any]:
    """`--set key=value` pairs -> dict; values are parsed as YAML (numbers, lists, true/false, null)."""
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise ValueError(f"--set {item!r}: expected key=value (e.g. seed=1 or 04-evaluate.tasks=[upos])")
        key, value = item.split("=", 1)
        out[key.strip()] = yaml.safe_load(value) if value != "" else ""
    return out


def _notebook_params(path: Path) -> dict[str, Any]:
    import papermill

    return papermill.inspect_notebook(str(path))


def resolve_parameters(
    profile: dict, steps: list[Path], run_dir: Path, overrides: dict | None = None
) -> dict[str, dict]:
    """Parameters per step: profile common params + per-notebook params + overrides.

    Common params and unprefixed overrides go to every notebook that declares them; per-notebook
    params and `step.key` overrides must name a parameter the notebook declares (checked here,
    before any notebook runs).
    """
    names = [p.stem for p in steps]
    declared = {p.stem: set(_notebook_params(p)) for p in steps}
    for nb in profile["notebooks"]:
        if nb not in names:
            raise ValueError(f"profile {profile['name']!r}: notebooks.{nb} is not a step; steps: {', '.join(names)}")
    common = dict(profile["params"])
    common["profile"] = profile["name"]
    common["run_dir"] = str(run_dir)
    if common.get("data_dir") or os.environ.get("KDLIB_DATA_DIR"):
        common["data_dir"] = str(Path(common.get("data_dir") or os.environ["KDLIB_DATA_DIR"]).resolve())
    per_step = {n: {} for n in names}
    global_over: dict[str, Any] = {}
    for key, value in (overrides or {}).items():
        if "." in key:
            step_key, param = key.split(".", 1)
            per_step[_match_step(step_key, names)][param] = value
        else:
            global_over[key] = value
    for key in global_over:
        if key not in common and not any(key in d for d in declared.values()):
            raise ValueError(f"--set {key}: no notebook declares a parameter {key!r}")
    result = {}
    named = model_parameters(profile)
    for name in names:
        params = {k: v for k, v in {**common, **global_over}.items() if k in declared[name]}
        params.update({k: v for k, v in named.get(name, {}).items() if k in declared[name]})
        specific = {**profile["notebooks"].get(name, {}), **per_step[name]}
        unknown = set(specific) - declared[name]
        if unknown:
            raise ValueError(
                f"notebook {name}: unknown parameter(s) {sorted(unknown)}; it declares {sorted(declared[name])}"
            )
        params.update(specific)
        result[name] = params
    return result


# --------------------------------------------------------------------------- planning: can each step apply?


@dataclass(frozen=True)
class StepNeeds:
    """What a step needs of a profile: a task of one of `kinds` among its tasks, or a run in `language`."""

    what: str
    kinds: tuple[str, ...] = ()
    language: str | None = None


ANY_TASK = StepNeeds("at least one task", kinds=tasks_mod.KINDS)
STEP_NEEDS = {  # read from the notebooks: what each step's code needs to run at all
    "04-evaluate": ANY_TASK,
    "05-loyalty": ANY_TASK,
    "06-bench": StepNeeds(
        "Romanian text (its training benchmark reads the built-in RO-STS train split)", language="ro"
    ),
    "07-task-distill": StepNeeds(
        "a classification or tagging task among its tasks", kinds=("classification", "tagging")
    ),
    "08-corpus-shape": ANY_TASK,
}
TEACHER_REFS = {  # parameters that name notebook 01's teachers: step -> (parameter, the names it holds)
    "02-distill-single": ("students", lambda v: [s["teacher"] for s in v]),
    "03-distill-ensemble": ("teacher_weights", lambda v: list(v)),
    "07-task-distill": ("teacher", lambda v: [] if v is None else [v]),
    "08-corpus-shape": ("teacher", lambda v: [v]),
}


def _defaults(path: Path) -> dict[str, Any]:
    """A notebook's parameter defaults as values (those that are not literals left out)."""
    out = {}
    for name, info in _notebook_params(path).items():
        with contextlib.suppress(ValueError, SyntaxError):
            out[name] = ast.literal_eval(info["default"])
    return out


def _kind(name: str, specs: dict) -> str:
    """The kind of a task name: the profile's declaration, else the built-in task's."""
    spec = specs.get(name) or tasks_mod.BUILTIN.get(name)
    return spec.kind if spec is not None else "unknown"


def _teachers_made(values: dict) -> list[str]:
    """The teachers notebook 01 makes with these parameters."""
    key = "hub_teachers" if values.get("teacher_source") == "hub" else "local_teachers"
    return list(values.get(key) or {})


def _unmet(step: str, values: dict, teachers: list[str], prof: dict, specs: dict) -> str | None:
    """'it needs X, and Y' when the step cannot apply to the profile; None when it can."""
    needs = STEP_NEEDS.get(step)
    if needs and needs.language and profile_language(prof) != needs.language:
        return f"it needs {needs.what}, and the profile's language is {profile_language(prof)}"
    if needs and needs.kinds and "tasks" in values:
        have = {t: _kind(t, specs) for t in values["tasks"] or []}
        if not any(k in needs.kinds for k in have.values()):
            found = ", ".join(f"{t} ({k})" for t, k in have.items()) or "none"
            return f"it needs {needs.what}, and its tasks are: {found}"
    if teachers and step in TEACHER_REFS and TEACHER_REFS[step][0] in values:
        key, names_of = TEACHER_REFS[step]
        wrong = [n for n in names_of(values[key]) if n not in teachers]
        if wrong:
            return (
                f"its {key} names {', '.join(map(repr, wrong))}, and 01-teachers makes {', '.join(teachers)} "
                "(name the models with the profile's `teachers:`)"
            )
    return None


def plan_steps(prof: dict, steps: list[Path], params: dict[str, dict]) -> dict[str, str]:
    """Check, before any step runs, that each step can apply to the profile; {step: sentence} of those skipped.

    A step that cannot apply is skipped with a sentence when the profile lists it under ``optional:``, and
    otherwise refused with a one-line ValueError naming the step and what it needs (:data:`STEP_NEEDS`).
    """
    optional = {_match_step(s, list(params)) for s in prof.get("optional") or []}
    specs = tasks_mod.parse_declarations(prof["tasks"], language=prof.get("language")) if prof.get("tasks") else {}
    values = {p.stem: {**_defaults(p), **params[p.stem]} for p in steps}
    first = [p for p in list_steps(steps[0].parent) if p.stem == "01-teachers"] if steps else []
    teachers = _teachers_made({**_defaults(first[0]), **params[first[0].stem]}) if first else []
    skipped = {}
    for name in values:
        why = _unmet(name, values[name], teachers, prof, specs)
        if why is None:
            continue
        if name not in optional:
            raise ValueError(
                f"profile {prof['name']!r}: step {name} cannot apply: {why}; list it under `optional:` to skip it"
            )
        skipped[name] = f"Step {name} is skipped for profile `{prof['name']}`: {why}."
        log.warning(skipped[name])
    return skipped


def _hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


# --------------------------------------------------------------------------- memory sampling


class _TreeMemorySampler:
    """Samples the summed RSS of this process's children (the notebook kernel and its workers)."""

    def __init__(self, interval: float = 0.1):  # a kernel lives at least ~0.5 s: several samples even then
        self.interval, self.peak, self._stop = interval, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import psutil

        me = psutil.Process()
        while not self._stop.is_set():
            total = 0
            for child in me.children(recursive=True):
                try:
                    total += child.memory_info().rss
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    pass
            self.peak = max(self.peak, total)
            self._stop.wait(self.interval)

    def __enter__(self) -> "_TreeMemorySampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def _children_maxrss_mb() -> float:
    # ru_maxrss is in KiB on Linux: the largest single waited-for child so far.
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


# --------------------------------------------------------------------------- the runner


def _profile_steps(prof: dict, notebooks_dir: str | os.PathLike) -> list[Path]:
    """The notebooks a profile runs: all NN-name.ipynb, or those its `steps:` list names."""
    steps = list_steps(notebooks_dir)
    if prof.get("steps"):
        wanted = [_match_step(s, [p.stem for p in steps]) for s in prof["steps"]]
        steps = [p for p in steps if p.stem in wanted]
    return steps


def _left_out(params: dict[str, dict], steps: list[Path]) -> dict[str, str]:
    """{step: sentence} for the steps a profile's `steps:` list leaves out."""
    run = {p.stem for p in steps}
    return {n: f"Step {n} is left out by the profile's `steps:` list." for n in params if n not in run}


def book_stamp(prof: dict) -> dict[str, Any]:
    """What the book of a run reads of its profile: its title and language (kept in run_summary.json)."""
    return {"title": book_title(prof), "language": profile_language(prof)}


def _open_summary(run_dir: Path, profile: str, stamp: dict) -> tuple[dict, Path]:
    """The run's run_summary.json (kept across invocations), stamped with this invocation's profile, its
    `stamp` (profile hash, git commit)."""
    (run_dir / "notebooks").mkdir(parents=True, exist_ok=True)
    path = run_dir / "run_summary.json"
    summary = json.loads(path.read_text()) if path.is_file() else {}
    summary.update({"profile": profile, **stamp, "run_dir": str(run_dir), "python": sys.version.split()[0]})
    summary.setdefault("steps", {})
    return summary, path


def _failure(nb: Path, error: dict, executed: Path) -> PipelineError:
    """The error of a failed step: notebook, cell, exception and where the executed copy is kept."""
    msg = (
        f"notebook {nb.name} failed in cell {error['cell_index']} "
        f"(execution count {error['exec_count']}): {error['ename']}: {error['evalue']}\n"
        f"executed copy kept for reading: {executed}"
    )
    log.error(msg)
    return PipelineError(nb.stem, msg, executed)


MACHINE_PARAMS = ("data_dir",)  # where this machine keeps the task data: not part of what a step computes


def portable_parameters(params: dict, run_dir: Path) -> Any:
    """A step's parameters without absolute paths: the run folder becomes ``<run>``, the data folder is left out."""
    kept = {k: v for k, v in params.items() if k not in MACHINE_PARAMS}
    return json.loads(json.dumps(kept, sort_keys=True, default=str).replace(str(run_dir), "<run>"))


def _step_hashes(steps: list[Path], params: dict[str, dict], declared: dict, run_dir: Path) -> dict[str, str]:
    """A hash per step over its portable parameters, its notebook source, the profile's declared tasks and the
    hash of the step before it: the same wherever the run folder lies, so a copied run folder reruns nothing."""
    chain, hashes = "", {}
    for nb in steps:
        own = [chain, portable_parameters(params[nb.stem], run_dir), hashlib.sha256(nb.read_bytes()).hexdigest()]
        chain = _hash(own + ([declared] if declared else []))
        hashes[nb.stem] = chain
    return hashes


def _code_hash(nb: Path) -> str:
    """Hash of a notebook's code cells (what it computes; its prose and outputs left out)."""
    cells = json.loads(nb.read_text(encoding="utf-8")).get("cells", [])
    return _hash(["".join(c.get("source", "")) for c in cells if c.get("cell_type") == "code"])


def profile_hash(
    profile: str | os.PathLike | dict,
    notebooks_dir: str | os.PathLike = DEFAULT_NOTEBOOKS_DIR,
    overrides: dict | None = None,
) -> str:
    """Hash of what a run of `profile` computes: the resolved profile (with `overrides`) and its notebooks' code."""
    prof = load_profile(profile)
    resolved = {k: v for k, v in prof.items() if k not in ("name", "description")}
    code = {nb.stem: _code_hash(nb) for nb in _profile_steps(prof, notebooks_dir)}
    return _hash({"profile": resolved, "overrides": overrides or {}, "notebooks": code})


def git_commit(root: Path = REPO_ROOT) -> dict[str, Any]:
    """``{"git_commit": sha, "git_dirty": bool}`` of the repository at `root`; {} outside a git checkout."""

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True).stdout.strip()

    try:
        return {"git_commit": git("rev-parse", "HEAD"), "git_dirty": bool(git("status", "--porcelain"))}
    except (OSError, subprocess.CalledProcessError):
        return {}


def _up_to_date(run_dir: Path, nb: Path, step_hash: str) -> bool:
    """The step's marker holds `step_hash` and its executed copy exists."""
    marker = run_dir / ".done" / f"{nb.stem}.json"
    return (
        marker.is_file()
        and (run_dir / "notebooks" / nb.name).is_file()
        and json.loads(marker.read_text()).get("hash") == step_hash
    )


def _execute(
    nb: Path,
    executed: Path,
    params: dict,
    *,
    run_dir: Path,
    kernel_name: str,
    timeout: int | None,
    tasks_file: Path | None,
) -> dict:
    """Run one notebook with papermill; its summary entry (status, wall time, peak memory, error if any)."""
    import papermill
    from papermill.exceptions import PapermillExecutionError

    t0 = time.perf_counter()
    status, error = "ok", None
    with _TreeMemorySampler() as sampler, tasks_environment(tasks_file):
        try:
            papermill.execute_notebook(
                str(nb),
                str(executed),
                parameters=params,
                kernel_name=kernel_name,
                progress_bar=False,
                cwd=str(run_dir),
                execution_timeout=timeout,
            )
        except PapermillExecutionError as exc:
            status = "failed"
            error = {
                "cell_index": exc.cell_index,
                "exec_count": exc.exec_count,
                "ename": exc.ename,
                "evalue": exc.evalue,
            }
    return {
        "status": status,
        "wall_s": round(time.perf_counter() - t0, 2),
        "peak_rss_mb": round(sampler.peak / 2**20, 1),
        "parameters": params,
        "skipped_last_run": False,
        **({"error": error} if error else {}),
    }


def run_pipeline(
    profile: str | os.PathLike | dict,
    out_dir: str | os.PathLike | None = None,
    *,
    only: str | None = None,
    overrides: dict | None = None,
    force: bool = False,
    notebooks_dir: str | os.PathLike = DEFAULT_NOTEBOOKS_DIR,
    kernel_name: str = KERNEL_NAME,
    timeout: int | None = None,
) -> dict:
    """Execute the notebooks of `profile` in order with papermill into `out_dir` (default runs/<profile>).

    Executed copies go to out_dir/notebooks/NN-name.ipynb; a step whose marker
    out_dir/.done/NN-name.json holds the same parameter hash (own params without absolute paths, notebook
    source and the hashes of the steps before it) is skipped, also in a copied run folder. The first failure
    raises PipelineError naming the notebook and cell; out_dir/run_summary.json records wall time and peak
    memory per step, the profile hash (:func:`profile_hash`) and the git commit the run was made with.
    """
    from tqdm.auto import tqdm

    # plan: profile, steps, parameters (all checked before anything runs), hashes
    prof = load_profile(profile)
    run_dir = Path(out_dir or REPO_ROOT / "runs" / prof["name"]).resolve()
    params = resolve_parameters(prof, list_steps(notebooks_dir), run_dir, overrides)  # all: inherited ones checked
    steps = _profile_steps(prof, notebooks_dir)
    skipped = {**_left_out(params, steps), **plan_steps(prof, steps, params)}  # refuses a step that cannot apply
    steps = [p for p in steps if p.stem not in skipped]
    only_name = _match_step(only, [p.stem for p in steps]) if only else None
    declared = task_declarations(prof)
    if declared.get("tasks"):
        check_declared_tasks(declared, prof["params"].get("data_dir"))
    hashes = _step_hashes(steps, params, declared, run_dir)
    ensure_drive(run_dir, mount=False)  # on Colab: never create a local folder where Drive should be mounted
    stamp = {"profile_hash": profile_hash(prof, notebooks_dir, overrides), **git_commit(), **book_stamp(prof)}
    stamp["skipped"] = skipped
    summary, summary_path = _open_summary(run_dir, prof["name"], stamp)
    tasks_file = write_task_declarations(run_dir, declared)
    todo = [nb for nb in steps if only_name in (None, nb.stem)]
    log.info("run %s: %d step(s) into %s", prof["name"], len(todo), run_dir)
    t_run = time.perf_counter()
    bar = tqdm(todo, desc=f"kdlib run {prof['name']}", unit="step")
    for nb in bar:
        name = nb.stem
        bar.set_postfix_str(name)
        # skip a step that is up to date (never with --only or --force)
        if only_name is None and not force and _up_to_date(run_dir, nb, hashes[name]):
            log.info("[%s] up to date, skipped", name)
            summary["steps"].setdefault(name, {})["skipped_last_run"] = True
            continue
        if only_name is not None:
            missing = [p.stem for p in steps[: steps.index(nb)] if not (run_dir / ".done" / f"{p.stem}.json").is_file()]
            if missing:
                log.warning("[%s] steps before it have not completed in %s: %s", name, run_dir, missing)
        # this step and every later one lose their markers: their inputs are about to change
        for later in steps[steps.index(nb) :]:
            (run_dir / ".done" / f"{later.stem}.json").unlink(missing_ok=True)
        log.info("[%s] running (%d parameters)", name, len(params[name]))
        executed = run_dir / "notebooks" / nb.name
        summary["steps"][name] = entry = _execute(
            nb, executed, params[name], run_dir=run_dir, kernel_name=kernel_name, timeout=timeout, tasks_file=tasks_file
        )
        summary["children_maxrss_mb"] = round(_children_maxrss_mb(), 1)
        _finalise_summary(summary, steps, summary_path)
        if "error" in entry:
            raise _failure(nb, entry["error"], executed)
        write_json(
            run_dir / ".done" / f"{name}.json",
            {
                "hash": hashes[name],
                "parameters": params[name],
                "wall_s": entry["wall_s"],
                "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
            },
        )
        log.info("[%s] done in %.1f s (peak %.0f MB)", name, entry["wall_s"], entry["peak_rss_mb"])
    summary["last_invocation_wall_s"] = round(time.perf_counter() - t_run, 2)
    _finalise_summary(summary, steps, summary_path)
    return summary


def _finalise_summary(summary: dict, steps: list[Path], path: Path) -> None:
    ordered = {p.stem: summary["steps"][p.stem] for p in steps if p.stem in summary["steps"]}
    summary["steps"] = ordered
    summary["total_wall_s"] = round(sum(s.get("wall_s", 0.0) for s in ordered.values()), 2)
    summary["peak_rss_mb"] = max([s.get("peak_rss_mb", 0.0) for s in ordered.values()] or [0.0])
    summary["complete"] = all(s.get("status") == "ok" for s in ordered.values()) and len(ordered) == len(steps)
    write_json(path, summary)


# --------------------------------------------------------------------------- run outputs


def summary_table(run_dir: str | os.PathLike) -> "pd.DataFrame":  # noqa: F821  (pandas imported here on use)
    """Per-step wall time and peak memory from run_dir/run_summary.json."""
    import pandas as pd

    summary = read_json(Path(run_dir) / "run_summary.json")
    rows = [
        {"step": k, "status": v.get("status"), "wall_s": v.get("wall_s"), "peak_rss_mb": v.get("peak_rss_mb")}
        for k, v in summary["steps"].items()
    ]
    return pd.DataFrame(rows).set_index("step")


# --------------------------------------------------------------------------- CLI

"""The notebook pipeline: profiles, a papermill runner with skip-on-rerun, results tables, the book build.

A *profile* (YAML in ``kdlib/profiles/``) holds the parameters of every notebook in ``notebooks/``;
``run_pipeline`` executes the notebooks in order into one run folder, each reading the JSON its
predecessors wrote there. The results helpers (``collect_results``, ``paper_table``, ...) live here
so that the notebooks only call them; ``build_book`` renders a run's executed notebooks.
"""
from __future__ import annotations

import argparse
import copy
import hashlib
import json
import logging
import os
import re
import resource
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import yaml

from kdlib.io import write_json_atomic

log = logging.getLogger("kdlib.runner")

PACKAGE_DIR = Path(__file__).resolve().parent
PROFILES_DIR = PACKAGE_DIR / "profiles"
REPO_ROOT = PACKAGE_DIR.parent
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
        raise ValueError(f"unknown profile {text!r}; valid profiles: {', '.join(available_profiles())} "
                         f"(or a path to a .yaml/.json file)")
    return candidate


def load_profile(name_or_path: str | os.PathLike | dict, _seen: tuple[str, ...] = ()) -> dict:
    """Load a profile by name (kdlib/profiles/NAME.yaml), path or dict, resolving `extends:` chains.

    Returns a dict with keys ``name``, ``description``, ``params`` (common to every notebook) and
    ``notebooks`` (per-notebook parameters, keyed by notebook stem such as ``04-evaluate``).
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
    unknown = set(raw) - {"name", "description", "extends", "params", "notebooks", "steps"}
    if unknown:
        raise ValueError(f"profile {where}: unknown top-level keys {sorted(unknown)}; "
                         "expected name, description, extends, params, notebooks, steps")
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
        raw = _deep_merge({k: v for k, v in base.items() if k not in ("name", "description")}, raw)
    raw.setdefault("description", "")
    raw["params"] = dict(raw.get("params") or {})
    raw["notebooks"] = {k: dict(v or {}) for k, v in (raw.get("notebooks") or {}).items()}
    try:
        json.dumps(raw)
    except TypeError as exc:
        raise ValueError(f"profile {where}: parameters must be JSON-friendly: {exc}") from exc
    return raw


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


def resolve_parameters(profile: dict, steps: list[Path], run_dir: Path,
                       overrides: dict | None = None) -> dict[str, dict]:
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
    for name in names:
        params = {k: v for k, v in {**common, **global_over}.items() if k in declared[name]}
        specific = {**profile["notebooks"].get(name, {}), **per_step[name]}
        unknown = set(specific) - declared[name]
        if unknown:
            raise ValueError(f"notebook {name}: unknown parameter(s) {sorted(unknown)}; "
                             f"it declares {sorted(declared[name])}")
        params.update(specific)
        result[name] = params
    return result


def _hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


write_json = write_json_atomic  # runner.write_json(path, data): the notebooks' name for kdlib.io's writer


# --------------------------------------------------------------------------- memory sampling

class _TreeMemorySampler:
    """Samples the summed RSS of this process's children (the notebook kernel and its workers)."""

    def __init__(self, interval: float = 0.5):
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

def run_pipeline(profile: str | os.PathLike | dict, out_dir: str | os.PathLike | None = None, *,
                 only: str | None = None, overrides: dict | None = None, force: bool = False,
                 notebooks_dir: str | os.PathLike = DEFAULT_NOTEBOOKS_DIR,
                 kernel_name: str = KERNEL_NAME, timeout: int | None = None) -> dict:
    """Execute the notebooks of `profile` in order with papermill into `out_dir` (default runs/<profile>).

    Executed copies go to out_dir/notebooks/NN-name.ipynb; a step whose marker
    out_dir/.done/NN-name.json holds the same parameter hash (own params, notebook source and
    the hashes of the steps before it) is skipped. The first failure raises PipelineError naming the
    notebook and cell; out_dir/run_summary.json records wall time and peak memory per step.
    """
    import papermill
    from papermill.exceptions import PapermillExecutionError
    from tqdm.auto import tqdm

    prof = load_profile(profile)
    run_dir = Path(out_dir or REPO_ROOT / "runs" / prof["name"]).resolve()
    steps = list_steps(notebooks_dir)
    if prof.get("steps"):
        wanted = [_match_step(s, [p.stem for p in steps]) for s in prof["steps"]]
        steps = [p for p in steps if p.stem in wanted]
    params = resolve_parameters(prof, steps, run_dir, overrides)
    only_name = _match_step(only, [p.stem for p in steps]) if only else None

    chain, hashes = "", {}
    for nb in steps:
        chain = _hash([chain, params[nb.stem], hashlib.sha256(nb.read_bytes()).hexdigest()])
        hashes[nb.stem] = chain

    (run_dir / "notebooks").mkdir(parents=True, exist_ok=True)
    summary_path = run_dir / "run_summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    summary.update({"profile": prof["name"], "run_dir": str(run_dir), "python": sys.version.split()[0]})
    summary.setdefault("steps", {})
    todo = [nb for nb in steps if only_name in (None, nb.stem)]
    log.info("run %s: %d step(s) into %s", prof["name"], len(todo), run_dir)
    t_run = time.perf_counter()
    bar = tqdm(todo, desc=f"kdlib run {prof['name']}", unit="step")
    for nb in bar:
        name = nb.stem
        bar.set_postfix_str(name)
        marker = run_dir / ".done" / f"{name}.json"
        executed = run_dir / "notebooks" / nb.name
        if only_name is None and not force and marker.is_file() and executed.is_file():
            if json.loads(marker.read_text()).get("hash") == hashes[name]:
                log.info("[%s] up to date, skipped", name)
                summary["steps"].setdefault(name, {})["skipped_last_run"] = True
                continue
        if only_name is not None:
            before = steps[: steps.index(nb)]
            missing = [p.stem for p in before if not (run_dir / ".done" / f"{p.stem}.json").is_file()]
            if missing:
                log.warning("[%s] steps before it have not completed in %s: %s", name, run_dir, missing)
        marker.unlink(missing_ok=True)
        for later in steps[steps.index(nb) + 1:]:  # their inputs are about to change: never skip them afterwards
            (run_dir / ".done" / f"{later.stem}.json").unlink(missing_ok=True)
        log.info("[%s] running (%d parameters)", name, len(params[name]))
        t0 = time.perf_counter()
        status, error = "ok", None
        with _TreeMemorySampler() as sampler:
            try:
                papermill.execute_notebook(
                    str(nb), str(executed), parameters=params[name], kernel_name=kernel_name,
                    progress_bar=False, cwd=str(run_dir), execution_timeout=timeout)
            except PapermillExecutionError as exc:
                status = "failed"
                error = {"cell_index": exc.cell_index, "exec_count": exc.exec_count,
                         "ename": exc.ename, "evalue": exc.evalue}
        wall = time.perf_counter() - t0
        summary["steps"][name] = {"status": status, "wall_s": round(wall, 2),
                                  "peak_rss_mb": round(sampler.peak / 2**20, 1),
                                  "parameters": params[name], "skipped_last_run": False,
                                  **({"error": error} if error else {})}
        summary["children_maxrss_mb"] = round(_children_maxrss_mb(), 1)
        _finalise_summary(summary, steps, summary_path)
        if error:
            msg = (f"notebook {nb.name} failed in cell {error['cell_index']} "
                   f"(execution count {error['exec_count']}): {error['ename']}: {error['evalue']}\n"
                   f"executed copy kept for reading: {executed}")
            log.error(msg)
            raise PipelineError(name, msg, executed)
        write_json(marker, {"hash": hashes[name], "parameters": params[name],
                                    "wall_s": round(wall, 2), "finished": time.strftime("%Y-%m-%dT%H:%M:%S")})
        log.info("[%s] done in %.1f s (peak %.0f MB)", name, wall, sampler.peak / 2**20)
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


# --------------------------------------------------------------------------- results helpers

TASK_ORDER = ("upos", "xpos", "ner", "sapn", "sar", "di", "sts")
PAPER_MODELS = ("BERT-base-ro", "RoBERT-base", "Distil-BERT-base-ro", "Distil-RoBERT-base",
                "DistilMulti-BERT-base-ro")
# The authors' LREC 2022 poster (paper-spec section 7.0), taken as the paper's final table.
POSTER_TABLE = {
    "BERT-base-ro": {"upos": 98.00, "xpos": 96.46, "ner": 85.88, "sapn": 97.94, "sar": 79.61, "di": 95.41, "sts": 79.94},
    "RoBERT-base": {"upos": 98.02, "xpos": 97.15, "ner": 85.14, "sapn": 98.20, "sar": 79.40, "di": 96.17, "sts": 81.18},
    "Distil-BERT-base-ro": {"upos": 97.97, "xpos": 97.08, "ner": 83.35, "sapn": 98.12, "sar": 80.51, "di": 96.31, "sts": 80.57},
    "Distil-RoBERT-base": {"upos": 97.12, "xpos": 95.79, "ner": 83.11, "sapn": 97.61, "sar": 79.58, "di": 96.11, "sts": 79.80},
    "DistilMulti-BERT-base-ro": {"upos": 98.07, "xpos": 96.93, "ner": 83.22, "sapn": 97.74, "sar": 79.77, "di": 96.18, "sts": 80.66},
}
POSTER_LOYALTY = {  # rows read as the three students (paper-spec section 7.0)
    "Distil-BERT-base-ro": {"L-L": 87.80, "P-L": 74.76, "R-L": 94.96},
    "Distil-RoBERT-base": {"L-L": 84.63, "P-L": 71.95, "R-L": 92.24},
    "DistilMulti-BERT-base-ro": {"L-L": 89.75, "P-L": 73.23, "R-L": 94.64},
}


def base_model(name: str) -> str:
    """Paper model name without a variant suffix: 'DistilMulti-BERT-base-ro (sum)' -> 'DistilMulti-BERT-base-ro'."""
    return name.split(" (", 1)[0]


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file a previous step wrote, with an error naming the step output that is missing."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: run the earlier pipeline step that writes it")
    return json.loads(path.read_text(encoding="utf-8"))


def collect_results(run_dir: str | os.PathLike) -> "pandas.DataFrame":
    """Long table of fine-tuning results written by notebook 04 (run_dir/evaluate/results.json).

    Columns: model, role, task, metric, mean, std, n_seeds (scores x100 as the paper prints them).
    """
    import pandas as pd

    rows = read_json(Path(run_dir) / "evaluate" / "results.json")
    if not rows:
        raise ValueError(f"{run_dir}/evaluate/results.json holds no results")
    return pd.DataFrame(rows)


def paper_table(results: "pandas.DataFrame", *, with_poster: bool = True) -> "pandas.DataFrame":
    """Wide table in the paper's layout: one row per model, one column per task (mean x100).

    With `with_poster`, each model row carries the poster's number beside ours ("ours"/"paper").
    """
    import pandas as pd

    tasks = [t for t in TASK_ORDER if t in set(results["task"])]
    ours = results.pivot_table(index="model", columns="task", values="mean", aggfunc="first")[tasks]
    order = sorted(ours.index, key=lambda m: (PAPER_MODELS.index(base_model(m)) if base_model(m) in PAPER_MODELS
                                              else len(PAPER_MODELS), m))
    ours = ours.loc[order]
    if not with_poster:
        return ours.round(2)
    poster = pd.DataFrame(POSTER_TABLE).T
    paper = pd.DataFrame([poster.loc[base_model(m)] if base_model(m) in poster.index else pd.Series(dtype=float)
                          for m in order], index=order).reindex(columns=tasks)
    table = pd.concat({"ours": ours, "paper": paper}, axis=1).swaplevel(0, 1, axis=1)
    return table.reindex(columns=pd.MultiIndex.from_product([tasks, ["ours", "paper"]])).round(2)


def relative_drop(results: "pandas.DataFrame", teacher_of: dict[str, str | list[str]]) -> "pandas.DataFrame":
    """Relative drop (%) of each student vs its teacher per task: 100 * (teacher - student) / teacher.

    `teacher_of` maps a student to a teacher name, or to several (their mean score is used).
    """
    import pandas as pd

    wide = results.pivot_table(index="model", columns="task", values="mean", aggfunc="first")
    rows = {}
    for student, teachers in teacher_of.items():
        teachers = [teachers] if isinstance(teachers, str) else list(teachers)
        missing = [m for m in [student, *teachers] if m not in wide.index]
        if missing:
            raise KeyError(f"relative_drop: no results for {missing}; have {list(wide.index)}")
        ref = wide.loc[teachers].mean(axis=0)
        rows[student] = 100.0 * (ref - wide.loc[student]) / ref.abs()
    cols = [t for t in TASK_ORDER if t in wide.columns]
    return pd.DataFrame(rows).T[cols].round(2)


def read_log(path: str | os.PathLike) -> "pandas.DataFrame":
    """A distillation log.jsonl as a DataFrame (one row per logged step)."""
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: the distillation step did not write its log")
    from kdlib.distill import read_log as read_records

    rows = []
    for rec in read_records(path):
        per_student = rec.pop("students", None)
        if isinstance(per_student, dict):  # kdlib.distill: {"step", ..., "students": {name: {total, kl, mlm, cos}}}
            rows += [{**rec, "student": name, **comps} for name, comps in per_student.items()]
        else:
            rows.append(rec)
    return pd.DataFrame(rows)


def summary_table(run_dir: str | os.PathLike) -> "pandas.DataFrame":
    """Per-step wall time and peak memory from run_dir/run_summary.json."""
    import pandas as pd

    summary = read_json(Path(run_dir) / "run_summary.json")
    rows = [{"step": k, "status": v.get("status"), "wall_s": v.get("wall_s"), "peak_rss_mb": v.get("peak_rss_mb")}
            for k, v in summary["steps"].items()]
    return pd.DataFrame(rows).set_index("step")


def slug(name: str) -> str:
    """A folder-safe key for a model's display name: 'DistilMulti-BERT-base-ro (sum)' -> 'distilmulti-bert-base-ro-sum'."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


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


def model_zoo(run_dir: str | os.PathLike) -> dict[str, dict]:
    """Every model of a run: the teachers (01), the students (02, 03) and the control, with path, role and key."""
    run = Path(run_dir)
    zoo: dict[str, dict] = {}
    for name, info in read_json(run / "teachers" / "teachers.json").items():
        zoo[name] = {"path": info["path"], "role": "teacher", "key": slug(name), "teachers": []}
    for part in ("single", "ensemble"):
        path = run / "distill" / f"{part}.json"
        if path.is_file():
            for name, info in read_json(path).items():
                role = "control" if info.get("kind") == "control" else "student"
                zoo[name] = {"path": info["path"], "role": role, "key": info.get("key", slug(name)),
                             "teachers": info.get("teachers", []), "log": info.get("log")}
    return zoo


def result_row(model: str, role: str, seeds_summary: dict) -> dict:
    """One results row (scores x100) from a kdlib.finetune.finetune_seeds summary, with size and test timing."""
    test = seeds_summary["test"]["score"]
    runs = [read_json(Path(r) / "metrics.json") for r in seeds_summary["runs"]]
    return {"model": model, "role": role, "task": seeds_summary["task"], "metric": seeds_summary["metric"],
            "mean": 100.0 * test["mean"], "std": 100.0 * test["std"], "n_seeds": len(seeds_summary["seeds"]),
            "values": [100.0 * v for v in test["values"]], "parameters": runs[0].get("parameters"),
            "test_examples": runs[0]["examples"]["test"],
            "test_seconds": float(sum(r["timing"]["test_seconds"] for r in runs) / len(runs)),
            "dir": str(Path(seeds_summary["runs"][0]).parent)}


def teacher_map(run_dir: str | os.PathLike, results: "pandas.DataFrame") -> dict[str, list[str]]:
    """Student (or control) -> its teachers, for the students and teachers that have results."""
    have = set(results["model"])
    return {name: info["teachers"] for name, info in model_zoo(run_dir).items()
            if info["role"] != "teacher" and name in have and info["teachers"]
            and all(t in have for t in info["teachers"])}


def loyalty_rows(run_dir: str | os.PathLike, tasks: list[str]) -> list[dict]:
    """Loyalty (x100) of every student and the control to each of its teachers (and their mean), per task.

    Uses the test predictions of the first seed of notebook 04 (run_dir/evaluate/<model>/<task>/seed-<s>).
    """
    from kdlib.loyalty import PREDICTIONS_FILE, loyalty_report

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
                rows.append({"student": name, "role": info["role"], "task": task, "reference": ref,
                             "examples": report["examples"],
                             **{k: 100.0 * v for k, v in values.items() if k.endswith("_loyalty")}})
    return rows


def loyalty_table(rows: "pandas.DataFrame") -> "pandas.DataFrame":
    """Mean loyalty over tasks per student and reference (L-L, P-L over tagging/classification, R-L on STS),
    beside the poster's numbers for the student (paper-spec section 7.0)."""
    import pandas as pd

    cols = {"label_loyalty": "L-L", "probability_loyalty": "P-L", "regression_loyalty": "R-L"}
    present = [c for c in cols if c in rows.columns]
    table = rows.groupby(["student", "reference"], sort=False)[present].mean().rename(columns=cols)
    poster = pd.DataFrame([{f"{k} (poster)": POSTER_LOYALTY.get(base_model(s), {}).get(k) for k in cols.values()}
                           for s, _ in table.index], index=table.index)
    return pd.concat([table, poster.dropna(axis=1, how="all")], axis=1).round(2)


def plot_distill_log(path: str | os.PathLike, *, title: str = "", ax=None):
    """Loss curves (total and each component) against the step, from a distill log.jsonl."""
    import matplotlib.pyplot as plt

    df = read_log(path)
    step = next((c for c in ("step", "global_step", "optimizer_step") if c in df.columns), None)
    if step is None:
        df = df.reset_index().rename(columns={"index": "step"})
        step = "step"
    skip = {step, "lr", "tokens_per_s", "elapsed", "epoch", "tokens"}
    losses = [c for c in df.columns if c not in skip and df[c].dtype.kind in "fi"]
    if not losses:
        raise ValueError(f"{path}: no loss columns; columns are {list(df.columns)}")
    fig = None
    if ax is None:
        fig, ax = plt.subplots(figsize=(7, 3.5))
    group = "student" if "student" in df.columns else None
    for key, part in (df.groupby(group) if group else [("", df)]):
        for col in losses:
            sub = part[[step, col]].dropna()
            if len(sub):
                ax.plot(sub[step], sub[col], label=f"{key} {col}".strip())
    ax.set_xlabel("step"); ax.set_ylabel("loss"); ax.set_title(title or Path(path).parent.name)
    ax.legend(fontsize=7)
    return fig or ax.figure


def plot_all_logs(run_dir: str | os.PathLike):
    """One panel of distillation loss curves per student of the run."""
    import matplotlib.pyplot as plt

    students = {n: i for n, i in model_zoo(run_dir).items() if i["role"] != "teacher" and i.get("log")}
    logs = sorted({i["log"] for i in students.values()})
    fig, axes = plt.subplots(1, len(logs), figsize=(5 * len(logs), 3.5), squeeze=False)
    for ax, log_path in zip(axes[0], logs):
        names = [n for n, i in students.items() if i["log"] == log_path]
        plot_distill_log(log_path, title=", ".join(names), ax=ax)
    fig.tight_layout()
    return fig


def plot_score_vs_size_speed(results: "pandas.DataFrame"):
    """Mean score over tasks against encoder parameters and against test-set inference throughput."""
    import matplotlib.pyplot as plt

    agg = results.groupby("model").agg(score=("mean", "mean"), parameters=("parameters", "first"),
                                       examples=("test_examples", "sum"), seconds=("test_seconds", "sum"),
                                       role=("role", "first"))
    agg["examples_per_s"] = agg["examples"] / agg["seconds"]
    colors = {"teacher": "tab:blue", "student": "tab:orange", "control": "tab:gray"}
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, col, label in ((axes[0], "parameters", "encoder parameters"),
                           (axes[1], "examples_per_s", "test examples per second (inference)")):
        for name, row in agg.iterrows():
            ax.scatter(row[col], row["score"], color=colors.get(row["role"], "k"), s=40)
            ax.annotate(name, (row[col], row["score"]), fontsize=7, xytext=(4, 2), textcoords="offset points")
        ax.set_xlabel(label); ax.set_ylabel("mean score over tasks (x100)")
    axes[0].set_title("score vs size"); axes[1].set_title("score vs speed")
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- the book

def _markdown_table(df: "pandas.DataFrame") -> str:
    return df.to_markdown()


def stage_book(run_dir: str | os.PathLike, dest: str | os.PathLike | None = None) -> Path:
    """Assemble the book sources for one run in `dest` (default _build/src).

    Copies _config.yml, _toc.yml, references.bib and book/ from the repository, the run's EXECUTED
    notebooks into dest/notebooks/ (same paths as the repository's, so Colab buttons open the clean
    notebooks on GitHub), and writes book/_generated/run.md (wall time and memory of the run).
    """
    run_dir = Path(run_dir).resolve()
    dest = Path(dest or REPO_ROOT / "_build" / "src").resolve()
    executed = run_dir / "notebooks"
    steps = list_steps(DEFAULT_NOTEBOOKS_DIR)
    missing = [p.name for p in steps if not (executed / p.name).is_file()]
    if missing:
        raise FileNotFoundError(f"run {run_dir} lacks executed notebooks {missing}; run the pipeline first "
                                f"(python -m kdlib run --profile ... --out {run_dir})")
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    for item in BOOK_FILES:
        src = REPO_ROOT / item
        if src.is_dir():
            shutil.copytree(src, dest / item, ignore=shutil.ignore_patterns("_generated", "__pycache__"))
        elif src.is_file():
            shutil.copy2(src, dest / item)
    (dest / "notebooks").mkdir()
    for p in steps:
        shutil.copy2(executed / p.name, dest / "notebooks" / p.name)
    gen = dest / "book" / "_generated"
    gen.mkdir(parents=True, exist_ok=True)
    summary = read_json(run_dir / "run_summary.json")
    table = summary_table(run_dir)
    text = (f"Profile **{summary['profile']}**; total wall time of the steps "
            f"**{summary['total_wall_s'] / 60:.1f} min**; peak memory of the notebook kernel "
            f"**{summary['peak_rss_mb']:.0f} MB** (summed RSS of the kernel process tree, sampled "
            f"every 0.5 s).\n\n" + _markdown_table(table) + "\n")
    (gen / "run.md").write_text(text, encoding="utf-8")
    return dest


def build_book(run_dir: str | os.PathLike, *, out: str | os.PathLike | None = None, strict: bool = True) -> Path:
    """Stage the run's executed notebooks and build the HTML book (warnings as errors); returns index.html."""
    root = Path(out or REPO_ROOT).resolve()
    src = stage_book(run_dir, root / "_build" / "src")
    cmd = [sys.executable, "-c", "from jupyter_book.cli.main import main; main()",
           "build", str(src), "--path-output", str(root)]
    if strict:
        cmd += ["-W", "-n", "--keep-going"]
    log.info("building the book: %s", " ".join(cmd))
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"jupyter-book build failed (exit {proc.returncode}):\n{proc.stdout[-6000:]}\n{proc.stderr[-4000:]}")
    index = root / "_build" / "html" / "index.html"
    if not index.is_file():
        raise RuntimeError(f"jupyter-book build ended without {index}")
    return index


# --------------------------------------------------------------------------- CLI

def cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m kdlib run",
                                     description="Run the notebook pipeline of a profile with papermill.")
    parser.add_argument("--profile", default="cpu", help=f"profile name ({', '.join(available_profiles())}) or a YAML path")
    parser.add_argument("--out", default=None, help="run folder (default runs/<profile>)")
    parser.add_argument("--only", default=None, help="run only this step (e.g. 04-evaluate, 04 or evaluate)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a parameter (all notebooks that declare it, or STEP.KEY=VALUE); repeatable")
    parser.add_argument("--force", action="store_true", help="rerun steps even if they are up to date")
    parser.add_argument("--notebooks", default=str(DEFAULT_NOTEBOOKS_DIR), help="folder of NN-name.ipynb notebooks")
    parser.add_argument("--book", action="store_true", help="after the run, build the book from it into _build/html")
    parser.add_argument("--book-only", action="store_true", help="only build the book from an existing run folder")
    parser.add_argument("--book-root", default=None,
                        help="folder under which the book is built as _build/html (default: the repository)")
    parser.add_argument("--list", action="store_true", help="list profiles and steps, then exit")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S")
    if args.list:
        print("profiles:", ", ".join(available_profiles()))
        print("steps:", ", ".join(p.stem for p in list_steps(args.notebooks)))
        return 0
    try:
        prof = load_profile(args.profile)
        out = Path(args.out or REPO_ROOT / "runs" / prof["name"])
        if not args.book_only:
            summary = run_pipeline(prof, out, only=args.only, overrides=parse_set(args.set),
                                   force=args.force, notebooks_dir=args.notebooks)
            print(f"run {prof['name']}: {summary['total_wall_s']:.1f} s of steps, peak {summary['peak_rss_mb']:.0f} MB; "
                  f"summary in {out / 'run_summary.json'}")
        if args.book or args.book_only:
            index = build_book(out, out=args.book_root)
            print(f"book: {index}")
    except PipelineError as exc:
        print(f"kdlib run: {exc}", file=sys.stderr)
        return 1
    except (ValueError, FileNotFoundError, KeyError, RuntimeError) as exc:
        print(f"kdlib run: {exc}", file=sys.stderr)
        return 2
    return 0

"""Two run folders side by side: the reader's reproduction check (``python -m kdlib compare RUN_A RUN_B``).

RUN_A is the published run (the book's), RUN_B a rerun of it (or the same profile on another machine).

*Figures.* Every score (``evaluate/results.json``), loyalty figure (``loyalty/loyalty.json``) and claim
(``claims/*.json``) of either run is classed as ``identical``, ``within interval`` (different, but B's value
lies inside A's published 95% interval), ``beyond interval``, ``different (no interval)`` (A publishes no
interval for it) or ``missing`` (in one run only). A claim's interval is its own; the intervals of scores and
loyalties are passed in by the caller (:mod:`kdlib.book.commands` computes them from A's predictions with
:mod:`kdlib.analysis.stats`, a layer above this one). A claim whose verdict differs (or that one run lacks)
is a *changed verdict*: the command then exits 1.

*Files.* Every result file under both folders (teacher vocabularies and weights, students' weights,
predictions, scores, loyalty, claims, logs, registries; not the executed notebooks, nor the step markers of
``.done/``, whose parameters ``run_summary.json`` repeats) is compared after the
run folder's own absolute path is replaced by ``<run>``: bytes first, then content: safetensors and torch
checkpoints tensor by tensor, exactly; ``.npz``/``.npy`` array by array; gensim ``.kv`` word vectors by their
words and vectors; JSON and JSON lines field by field; text line by line.
*Measured* fields (wall time, elapsed, tokens/s, latency, peak memory, dates, machine and software names)
are never compared: they are listed apart as "timing, not compared" (:func:`is_timing`), as are the
benchmark's files (``bench/``), which hold measurements only. ``same content`` marks a file whose bytes
differ while every value is identical (for instance a zip archive's member timestamps).
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

IDENTICAL, WITHIN, BEYOND, NO_INTERVAL, MISSING = (
    "identical",
    "within interval",
    "beyond interval",
    "different (no interval)",
    "missing",
)
SAME_CONTENT, DIFFERS, ONLY_A, ONLY_B = "same content", "differs", "only in A", "only in B"
LOYALTY_SHORT = {"label_loyalty": "L-L", "probability_loyalty": "P-L", "regression_loyalty": "R-L"}
NOT_RESULTS = ("notebooks/", ".done/")  # executed notebooks (what they show is in the result files); step markers
MEASURED_FILES = ("bench/",)  # the speed and size benchmark: measurements only
TIMING_NAMES = frozenset("elapsed seconds finished created started date timestamp timing latency wall".split())
TIMING_RE = re.compile(
    r"(_s|_seconds|_per_s|_ms)$|(^|_)(wall|rss|maxrss|ram|latency|throughput|memory|elapsed|seconds)(_|$)"
)
MACHINE_NAMES = frozenset(
    "python torch transformers platform hostname host machine cpu gpu cpu_count torch_threads threads "
    "data_dir git_commit git_dirty load_average_at_start load_average_at_end".split()
)
DETAILS = 5  # differing fields shown per file
TEXT_SUFFIXES = (".md", ".txt", ".csv", ".tsv", "")  # "" : checkpoints/latest


class CompareError(ValueError):
    """Bad input: a path that is not a run folder."""


# --------------------------------------------------------------------------- what is a measured field


def is_timing(key: str, value: Any = None) -> bool:
    """Whether a JSON field is a measured time, memory, date or machine/software name (never compared)."""
    if key in TIMING_NAMES or TIMING_RE.search(key):
        return True
    return key in MACHINE_NAMES and not isinstance(value, (list, dict))  # rng.json's "python" is RNG state


# --------------------------------------------------------------------------- figures


@dataclass
class Figure:
    """One score, loyalty figure or claim of the two runs and how they compare."""

    kind: str
    key: str
    a: float | None
    b: float | None
    status: str = ""
    interval: tuple[float, float] | None = None
    verdict_a: str | None = None
    verdict_b: str | None = None

    @property
    def verdict_changed(self) -> bool:
        """A claim's verdict differs between the runs (or one run lacks the claim)."""
        return self.kind == "claim" and self.verdict_a != self.verdict_b


def _read(path: Path) -> Any:
    """A JSON file's content; None when it is missing or unreadable."""
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
    except (ValueError, UnicodeDecodeError):
        return None


def score_figures(run: Path) -> dict[str, dict]:
    """``{key: {"value": mean}}`` of every score in ``evaluate/results.json`` (key 'model / task (metric)')."""
    rows = _read(run / "evaluate" / "results.json") or []
    return {f"{r['model']} / {r['task']} ({r['metric']})": {"value": r.get("mean"), "record": r} for r in rows}


def loyalty_figures(run: Path) -> dict[str, dict]:
    """``{key: {"value": loyalty}}`` of ``loyalty/loyalty.json`` (key 'student -> reference / task (L-L)')."""
    out = {}
    for r in _read(run / "loyalty" / "loyalty.json") or []:
        for measure, short in LOYALTY_SHORT.items():
            if measure in r:
                key = f"{r['student']} -> {r['reference']} / {r['task']} ({short})"
                out[key] = {"value": r[measure], "record": r, "measure": measure}
    return out


def claim_figures(run: Path) -> dict[str, dict]:
    """``{key: {"value", "interval", "verdict", "record"}}`` of every claim in ``claims/*.json`` ('file:id')."""
    out = {}
    for path in sorted((run / "claims").glob("*.json")):
        for c in _read(path) or []:
            iv = c.get("interval") or {}
            interval = (iv["low"], iv["high"]) if "low" in iv else None
            out[f"{path.stem}:{c['id']}"] = {
                "value": iv.get("estimate"),
                "interval": interval,
                "verdict": c.get("verdict"),
                "record": c,
            }
    return out


def _same(a: Any, b: Any) -> bool:
    """Equal values (two NaNs count as equal)."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


def classify(a: dict | None, b: dict | None, interval: tuple[float, float] | None) -> str:
    """identical / within interval / beyond interval / different (no interval) / missing, for one figure."""
    if a is None or b is None:
        return MISSING
    if _same(_strip_timing(a["record"]), _strip_timing(b["record"])) and _same(a["value"], b["value"]):
        return IDENTICAL
    if interval is None or b["value"] is None:
        return NO_INTERVAL
    return WITHIN if interval[0] <= b["value"] <= interval[1] else BEYOND


def _strip_timing(obj: Any) -> Any:
    """`obj` without its measured fields (and without paths, which name the run folder)."""
    if isinstance(obj, dict):
        return {k: _strip_timing(v) for k, v in obj.items() if not is_timing(k, v) and k != "dir"}
    if isinstance(obj, list):
        return [_strip_timing(v) for v in obj]
    return obj


def compare_figures(
    run_a: Path, run_b: Path, intervals: Mapping[str, tuple[float, float]] | None = None
) -> list[Figure]:
    """Every score, loyalty figure and claim of either run, classed against A's published interval."""
    intervals = intervals or {}
    out = []
    for kind, read in (("score", score_figures), ("loyalty", loyalty_figures), ("claim", claim_figures)):
        fa, fb = read(run_a), read(run_b)
        for key in list(fa) + [k for k in fb if k not in fa]:
            a, b = fa.get(key), fb.get(key)
            interval = (a or {}).get("interval") or intervals.get(key)
            fig = Figure(kind, key, (a or {}).get("value"), (b or {}).get("value"), classify(a, b, interval), interval)
            if kind == "claim":
                fig.verdict_a, fig.verdict_b = (a or {}).get("verdict"), (b or {}).get("verdict")
            out.append(fig)
    return out


# --------------------------------------------------------------------------- files


@dataclass
class FileDiff:
    """One result file of either run: its status and the first differing fields."""

    path: str
    status: str
    details: list[str] = field(default_factory=list)


def result_files(run: Path) -> list[str]:
    """Relative paths of the run's files, the executed notebooks left out."""
    files = (p.relative_to(run).as_posix() for p in run.rglob("*") if p.is_file())
    return sorted(f for f in files if not f.startswith(NOT_RESULTS))


def _portable(text: str, run: Path) -> str:
    """`text` with the run folder's absolute path(s) replaced by ``<run>``."""
    for root in sorted({str(run), str(run.resolve())}, key=len, reverse=True):
        text = text.replace(root, "<run>")
    return text


def _text(path: Path, run: Path) -> str:
    """A text file with the run folder's absolute path(s) replaced by ``<run>``."""
    return _portable(path.read_text(encoding="utf-8"), run)


def _compare_text(pa: Path, pb: Path, run_a: Path, run_b: Path) -> list[str]:
    """'line N: a -> b' for the differing lines of two text files (paths to their run folders made equal)."""
    try:
        la, lb = _text(pa, run_a).splitlines(), _text(pb, run_b).splitlines()
    except UnicodeDecodeError:
        return ["bytes differ"]
    out = [
        f"line {i + 1}: {_short(x.strip())} -> {_short(y.strip())}" for i, (x, y) in enumerate(zip(la, lb)) if x != y
    ]
    return out + ([f"{len(la)} lines -> {len(lb)} lines"] if len(la) != len(lb) else [])


def _diff(a: Any, b: Any, where: str, out: list[str], timing: set[str]) -> None:
    """Append 'where: a -> b' for every differing non-timing leaf; add the differing timing fields' names."""
    if isinstance(a, dict) and isinstance(b, dict):
        for k in list(a) + [k for k in b if k not in a]:
            va, vb = a.get(k), b.get(k)
            if is_timing(k, va if k in a else vb):
                if not _same(va, vb):
                    timing.add(k)
            elif k not in a or k not in b:
                out.append(f"{where}.{k}: only in {'B' if k not in a else 'A'}")
            else:
                _diff(va, vb, f"{where}.{k}", out, timing)
    elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (va, vb) in enumerate(zip(a, b)):
            _diff(va, vb, f"{where}[{i}]", out, timing)
    elif not _same(a, b):
        out.append(f"{where or '.'}: {_short(a)} -> {_short(b)}")


def _short(x: Any) -> str:
    """A value shortened for one line of the report."""
    text = repr(x) if not isinstance(x, (dict, list)) else f"<{type(x).__name__} of {len(x)}>"
    return text if len(text) <= 40 else text[:37] + "..."


def _json_docs(text: str, jsonl: bool) -> Any:
    """The JSON document of `text`, or the list of its lines' documents for JSON lines."""
    return [json.loads(line) for line in text.splitlines() if line.strip()] if jsonl else json.loads(text)


def _compare_json(pa: Path, pb: Path, run_a: Path, run_b: Path, timing: set[str]) -> list[str]:
    """The differing non-timing fields of two JSON (or JSON lines) files; timing fields go to `timing`."""
    try:
        jsonl = pa.suffix == ".jsonl"
        da, db = _json_docs(_text(pa, run_a), jsonl), _json_docs(_text(pb, run_b), jsonl)
    except (ValueError, UnicodeDecodeError) as exc:
        return [f"not readable as JSON: {exc}"]
    out: list[str] = []
    _diff(da, db, "", out, timing)
    return out


def _npz_array(z: Any, key: str, run: Path) -> Any:
    """An array of an open .npz; text arrays with the run folder's path replaced by ``<run>``."""
    import numpy as np

    x = z[key]
    return np.vectorize(lambda v: _portable(str(v), run))(x) if x.dtype.kind in "US" and x.size else x


def _compare_npz(pa: Path, pb: Path, run_a: Path, run_b: Path) -> list[str]:
    """The differing arrays of two .npz archives (text arrays with the run folders' paths made equal)."""
    import numpy as np

    with np.load(pa, allow_pickle=False) as za, np.load(pb, allow_pickle=False) as zb:
        out = [f"array {k}: only in {'A' if k in za.files else 'B'}" for k in set(za.files) ^ set(zb.files)]
        for k in sorted(set(za.files) & set(zb.files)):
            x, y = _npz_array(za, k, run_a), _npz_array(zb, k, run_b)
            equal_nan = x.dtype.kind in "fc" and y.dtype.kind in "fc"
            if x.shape != y.shape or not np.array_equal(x, y, equal_nan=equal_nan):
                out.append(f"array {k}: {_array_delta(x, y)}")
    return out


def _array_delta(x: Any, y: Any) -> str:
    """How two differing arrays differ: shape, largest difference or how many values."""
    import numpy as np

    if x.shape != y.shape:
        return f"shape {x.shape} -> {y.shape}"
    if x.dtype.kind in "fiu" and y.dtype.kind in "fiu":
        return f"max |diff| {float(np.nanmax(np.abs(x.astype(float) - y.astype(float)))):.3g}"
    return f"{int((x != y).sum())} of {x.size} values differ"


def _tensors(obj: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(name, leaf) of a nested checkpoint (dicts, lists, tensors, numbers)."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _tensors(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from _tensors(v, f"{prefix}[{i}]")
    else:
        yield prefix, obj


def _compare_tensors(a: dict, b: dict) -> list[str]:
    """The differing tensors and values of two nested checkpoints, compared exactly."""
    import torch

    ta, tb = dict(_tensors(a)), dict(_tensors(b))
    out = [f"{k}: only in {'A' if k in ta else 'B'}" for k in sorted(set(ta) ^ set(tb))]
    for k in sorted(set(ta) & set(tb)):
        x, y = ta[k], tb[k]
        if isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor):
            if x.dtype != y.dtype or x.shape != y.shape:
                out.append(f"tensor {k}: {x.dtype}{tuple(x.shape)} -> {y.dtype}{tuple(y.shape)}")
            elif not torch.equal(x, y):
                out.append(f"tensor {k}: {_tensor_delta(x, y)}")
        elif not _same(x, y):
            out.append(f"{k}: {_short(x)} -> {_short(y)}")
    return out


def _tensor_delta(x: Any, y: Any) -> str:
    """How two differing tensors of one dtype and shape differ."""
    if x.is_floating_point():
        return f"max |diff| {(x.double() - y.double()).abs().max().item():.3g}"
    return f"{int((x != y).sum())} of {x.numel()} values differ"


def _compare_npy(pa: Path, pb: Path, *_: Path) -> list[str]:
    """Whether two .npy arrays differ (memory-mapped: they can be large)."""
    import numpy as np

    x, y = np.load(pa, mmap_mode="r", allow_pickle=False), np.load(pb, mmap_mode="r", allow_pickle=False)
    same = x.shape == y.shape and np.array_equal(x, y, equal_nan=x.dtype.kind in "fc" and y.dtype.kind in "fc")
    return [] if same else [f"array: {_array_delta(x, y)}"]


def _compare_kv(pa: Path, pb: Path, *_: Path) -> list[str]:
    """The differing words and vectors of two gensim KeyedVectors files (their save-time log left aside)."""
    from gensim.models import KeyedVectors

    a, b = KeyedVectors.load(str(pa), mmap="r"), KeyedVectors.load(str(pb), mmap="r")
    out = [] if a.index_to_key == b.index_to_key else ["words differ"]
    return out + _compare_npy_arrays({"vectors": a.vectors}, {"vectors": b.vectors})


def _compare_npy_arrays(a: dict, b: dict) -> list[str]:
    """The differing arrays of two name -> array mappings with the same names."""
    import numpy as np

    return [f"array {k}: {_array_delta(a[k], b[k])}" for k in a if not np.array_equal(a[k], b[k])]


def _compare_safetensors(pa: Path, pb: Path, *_: Path) -> list[str]:
    """The differing tensors (and metadata) of two safetensors files."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    out = _compare_tensors(load_file(str(pa)), load_file(str(pb)))
    with safe_open(str(pa), "pt") as fa, safe_open(str(pb), "pt") as fb:
        if fa.metadata() != fb.metadata():
            out.append(f"metadata: {_short(fa.metadata())} -> {_short(fb.metadata())}")
    return out


def _compare_torch(pa: Path, pb: Path, *_: Path) -> list[str]:
    """The differing tensors and values of two torch checkpoints (train_state.pt)."""
    import torch

    a = torch.load(pa, map_location="cpu", weights_only=True)
    return _compare_tensors({"": a}, {"": torch.load(pb, map_location="cpu", weights_only=True)})


def compare_file(rel: str, run_a: Path, run_b: Path, timing: set[str]) -> FileDiff:
    """How one result file of both runs compares (bytes, then content)."""
    pa, pb = run_a / rel, run_b / rel
    suffix = pa.suffix
    if suffix in (".json", ".jsonl"):
        details = _compare_json(pa, pb, run_a, run_b, timing)
        return FileDiff(rel, DIFFERS if details else IDENTICAL, details[:DETAILS])
    if pa.read_bytes() == pb.read_bytes():
        return FileDiff(rel, IDENTICAL)
    readers = {
        ".safetensors": _compare_safetensors,
        ".npz": _compare_npz,
        ".npy": _compare_npy,
        ".pt": _compare_torch,
        ".kv": _compare_kv,
    }
    if suffix in TEXT_SUFFIXES:
        details = _compare_text(pa, pb, run_a, run_b)
        return FileDiff(rel, DIFFERS if details else IDENTICAL, details[:DETAILS])
    if suffix not in readers:
        return FileDiff(rel, DIFFERS, ["bytes differ"])
    try:
        details = readers[suffix](pa, pb, run_a, run_b)
    except Exception as exc:  # noqa: BLE001  (a corrupt weights file or archive: report it, never crash)
        details = [f"bytes differ; not readable as {suffix}: {type(exc).__name__}: {exc}"[:200]]
    return FileDiff(rel, DIFFERS if details else SAME_CONTENT, details[:DETAILS] or ["bytes differ, values identical"])


def compare_files(run_a: Path, run_b: Path) -> tuple[list[FileDiff], list[str], list[str]]:
    """(file differences, measured files, names of the differing timing fields) of two runs."""
    fa, fb = result_files(run_a), result_files(run_b)
    timing: set[str] = set()
    diffs, measured = [], []
    for rel in sorted(set(fa) | set(fb)):
        if rel.startswith(MEASURED_FILES):
            measured.append(rel)
        elif rel not in fb or rel not in fa:
            diffs.append(FileDiff(rel, ONLY_A if rel not in fb else ONLY_B))
        else:
            diffs.append(compare_file(rel, run_a, run_b, timing))
    return diffs, measured, sorted(timing)


# --------------------------------------------------------------------------- the report


@dataclass
class Report:
    """Everything `compare` found: figures, files, the measured fields left out, and the exit code."""

    run_a: str
    run_b: str
    figures: list[Figure]
    files: list[FileDiff]
    measured_files: list[str]
    timing_fields: list[str]

    @property
    def changed_verdicts(self) -> list[Figure]:
        """The claims whose verdict differs between the runs."""
        return [f for f in self.figures if f.verdict_changed]

    @property
    def exit_code(self) -> int:
        """0: no claim's verdict changed; 1: at least one did."""
        return 1 if self.changed_verdicts else 0

    def as_dict(self) -> dict[str, Any]:
        """The report as JSON-friendly data (what --json prints)."""
        d = asdict(self)
        d["changed_verdicts"] = [f.key for f in self.changed_verdicts]
        d["exit_code"] = self.exit_code
        return d


def check_run(path: str | Path) -> Path:
    """The run folder at `path`, or CompareError naming it and what was expected."""
    run = Path(path)
    if not (run / "run_summary.json").is_file():
        raise CompareError(
            f"{run}: expected a run folder (a folder holding run_summary.json, as `python -m kdlib run` makes)"
        )
    return run


def compare(run_a: str | Path, run_b: str | Path, intervals: Mapping[str, tuple[float, float]] | None = None) -> Report:
    """Compare run B with the published run A: figures against A's intervals, then every result file."""
    a, b = check_run(run_a), check_run(run_b)
    files, measured, timing = compare_files(a, b)
    return Report(str(a), str(b), compare_figures(a, b, intervals), files, measured, timing)


def _num(x: float | None) -> str:
    """A figure for the table."""
    return "—" if x is None else f"{x:.4g}"


def _counts(items: list[str]) -> str:
    """'3 identical, 1 differs': how often each status occurs, in order of first appearance."""
    return ", ".join(f"{items.count(s)} {s}" for s in dict.fromkeys(items)) or "none"


def figures_table(figures: list[Figure]) -> list[str]:
    """The figures as aligned text lines: kind, figure, A, B, status (and a claim's verdicts)."""
    width = max([len(f.key) for f in figures] + [6])
    lines = [f"{'kind':<8} {'figure':<{width}} {'A':>10} {'B':>10}  status"]
    for f in figures:
        verdicts = f"  [{f.verdict_a or '—'} -> {f.verdict_b or '—'}]" if f.kind == "claim" else ""
        lines.append(f"{f.kind:<8} {f.key:<{width}} {_num(f.a):>10} {_num(f.b):>10}  {f.status}{verdicts}")
    return lines


def file_lines(files: list[FileDiff]) -> list[str]:
    """The files that are not identical, one line each with their details; a folder only one run has, once."""
    lines, folders = [], {}
    for d in files:
        if d.status in (ONLY_A, ONLY_B):
            folder = "/".join(d.path.split("/")[:2]) + "/" if d.path.count("/") >= 2 else d.path
            folders.setdefault((d.status, folder), []).append(d.path)
        elif d.status != IDENTICAL:
            lines.append(f"  {d.status:<13} {d.path}" + "".join(f"\n      {x}" for x in d.details))
    for (status, folder), paths in folders.items():
        lines.append(f"  {status:<13} {folder}" + (f" ({len(paths)} files)" if folder.endswith("/") else ""))
    return lines


def format_report(report: Report) -> str:
    """The readable report `compare` prints."""
    lines = [f"A (published): {report.run_a}", f"B (rerun):     {report.run_b}", ""]
    lines += figures_table(report.figures) if report.figures else ["no scores, loyalty figures or claims in A or B"]
    for kind in ("score", "loyalty", "claim"):
        statuses = [f.status for f in report.figures if f.kind == kind]
        label = {"score": "scores", "loyalty": "loyalty figures", "claim": "claims"}[kind]
        lines.append(f"{label}: {_counts(statuses)}")
    lines += ["", f"result files: {_counts([d.status for d in report.files])}"]
    lines += file_lines(report.files)
    lines.append(f"timing, not compared: {', '.join(report.timing_fields) or 'no differing fields'}")
    if report.measured_files:
        lines.append(f"timing, not compared (measurement files): {', '.join(report.measured_files)}")
    changed = report.changed_verdicts
    lines.append("")
    lines.append(f"verdict changed: {', '.join(f.key for f in changed)}" if changed else "no claim's verdict changed")
    return "\n".join(lines)


def cli(argv: list[str], intervals: Any = None) -> int:
    """`python -m kdlib compare RUN_A RUN_B [--json]`; `intervals(run_a)` gives A's score/loyalty intervals."""
    ap = argparse.ArgumentParser(prog="python -m kdlib compare", description=__doc__.split("\n\n")[0])
    ap.add_argument("run_a", help="the published run folder (e.g. the book's)")
    ap.add_argument("run_b", help="your rerun (or the same profile on another machine)")
    ap.add_argument("--json", action="store_true", help="print the report as JSON")
    args = ap.parse_args(argv)
    try:
        run_a = check_run(args.run_a)
        check_run(args.run_b)
        report = compare(run_a, args.run_b, intervals(run_a) if intervals else None)
    except CompareError as exc:
        print(f"kdlib compare: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(report.as_dict(), indent=2, default=str) if args.json else format_report(report))
    return report.exit_code

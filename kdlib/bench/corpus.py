"""How the corpus path scales (``python -m kdlib bench --only corpus [--json]``).

For corpora of 0.1 M, 1 M and 10 M sentences (the train-split corpus repeated, each copy prefixed with
its repetition number so that de-duplication keeps every line), the benchmark measures

* preparation: ``kdlib.data.corpus.load_text_corpus`` (normalise, de-duplicate, write Arrow) and
  ``kdlib.data.corpus.save_corpus`` (the run's corpus folder and its length index), as sentences per minute;
* distillation: a separate process running the distillation CLI (tiny random teacher and student, a few
  steps) on the prepared folder: its peak resident memory (its own VmHWM), its set-up time before the
  first step and the median time of a step after the first. The preparing process's own peak (it holds
  the de-duplication hashes, ~70 bytes a sentence) is reported beside it.

Goals (issue #16): peak RSS grows by at most 200 MB from the smallest to the largest corpus, preparation
runs at >= 1 M sentences per minute on 2 cores, and the step time does not depend on the corpus size.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from kdlib.data import corpus as kcorpus
from kdlib.engine.distill import read_log

SIZES = (100_000, 1_000_000, 10_000_000)
QUICK_SIZES = (20_000, 200_000)
GOALS = {"rss_growth_mb": 200.0, "prepare_sentences_per_min": 1_000_000.0}


def write_repeated_corpus(path: Path, n: int, base: list[str]) -> Path:
    """A text file of `n` distinct lines: the base sentences repeated, copy k prefixed with "k "."""
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(n):
            k, j = divmod(i, len(base))
            fh.write(f"{k} {base[j]}\n")
    return path


def prepare(text_file: Path, out_dir: Path, cache_dir: Path) -> dict[str, float]:
    """Prepare `text_file` the way a run does; returns its size and the seconds it took."""
    t0 = time.perf_counter()
    ds = kcorpus.load_text_corpus(str(text_file), cache_dir=str(cache_dir), normalize=True, dedup=True)
    kcorpus.save_corpus(ds, out_dir)
    seconds = time.perf_counter() - t0
    return {"sentences": len(ds), "prepare_s": seconds, "sentences_per_min": 60 * len(ds) / seconds}


def _tiny_config(root: Path, teacher: Path, steps: int) -> Path:
    config = {
        "teachers": [{"name": "t", "path": str(teacher)}],
        "students": [{"name": "s", "teachers": ["t"], "num_layers": 1, "out_dir": str(root / "student")}],
        "batch_size": 8,
        "max_len": 32,
        "max_steps": steps,
        "save_every": 0,
        "device": "cpu",
        "out_dir": str(root / "distill"),
        "seed": 0,
    }
    path = root / "distill.json"
    path.write_text(json.dumps(config))
    return path


_CHILD = (
    "import sys\nfrom kdlib.engine.distill import cli\nrc = cli(sys.argv[1:])\n"
    "print('VmHWM', [l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')][0])\n"
    "sys.exit(rc)"
)


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM), in MB."""
    with open("/proc/self/status", encoding="ascii") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmHWM")) / 1024


def distill_process(corpus_dir: Path, teacher: Path, root: Path, steps: int = 4) -> dict[str, float]:
    """Run the distillation CLI on the prepared corpus in its own process and measure it.

    The peak memory is the child's own VmHWM, printed by the child itself: ``ru_maxrss`` of a child
    started by fork/exec also counts the parent's resident memory at the fork.
    """
    config = _tiny_config(root, teacher, steps)
    env = {**os.environ, "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1"}
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, "--config", str(config), "--corpus", str(corpus_dir)],
        env=env,
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"distill on {corpus_dir} failed: {proc.stderr[-2000:]}")
    hwm_kb = int(next(line.split()[1] for line in proc.stdout.splitlines() if line.startswith("VmHWM")))
    elapsed = [r["elapsed"] for r in read_log(root / "distill" / "log.jsonl") if "elapsed" in r]
    steps_s = [b - a for a, b in zip(elapsed, elapsed[1:])]
    return {
        "peak_rss_mb": hwm_kb / 1024,
        "setup_s": wall - elapsed[-1],
        "step_s": statistics.median(steps_s) if steps_s else elapsed[0],
    }


def bench_corpus(sizes: tuple[int, ...] = SIZES, *, work_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """Prepare and distil on each corpus size; rows per size plus the growth figures and goals."""
    from kdlib.bench.speed import QUICK_TRAIN, make_teachers  # here: kdlib.bench.speed imports this module

    base = list(kcorpus.build_corpus("ordered")["text"])
    with tempfile.TemporaryDirectory(prefix="kdlib-corpus-bench-", dir=work_dir) as tmp:
        root = Path(tmp)
        teacher = make_teachers(root / "teachers", base[:2000], QUICK_TRAIN)["t1"]
        rows = []
        for n in sizes:
            here = root / f"n{n}"
            here.mkdir()
            text = write_repeated_corpus(here / "corpus.txt", n, base)
            row = {
                "requested": n,
                **prepare(text, here / "corpus", here / "cache"),
                "prepare_peak_rss_mb": peak_rss_mb(),
            }
            text.unlink()
            row.update(distill_process(here / "corpus", teacher, here))
            rows.append(row)
            print(json.dumps(row), file=sys.stderr)
    first, last = rows[0], rows[-1]
    return {
        "rows": rows,
        "base_sentences": len(base),
        "rss_growth_mb": last["peak_rss_mb"] - first["peak_rss_mb"],
        "min_sentences_per_min": min(r["sentences_per_min"] for r in rows),
        "step_time_ratio": last["step_s"] / first["step_s"],
        "goals": GOALS,
    }


def cli(argv: list[str]) -> int:
    """`python -m kdlib bench --only corpus [--json] [--sizes 100000,1000000,10000000] [--quick]`."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m kdlib bench --only corpus")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--quick", action="store_true", help=f"sizes {','.join(map(str, QUICK_SIZES))}")
    p.add_argument("--sizes", default=None, help="comma-separated corpus sizes in sentences (default 0.1 M, 1 M, 10 M)")
    p.add_argument("--work-dir", default=None, help="where the corpora are written (default: the temp folder)")
    args = p.parse_args(argv)
    try:
        sizes = tuple(int(s) for s in args.sizes.split(",")) if args.sizes else (QUICK_SIZES if args.quick else SIZES)
        if not sizes or min(sizes) <= 0:
            raise ValueError
    except ValueError:
        print(f"kdlib bench: --sizes {args.sizes!r}: expected comma-separated positive integers", file=sys.stderr)
        return 2
    result = bench_corpus(sizes, work_dir=args.work_dir)
    if args.json:
        print(json.dumps(result))
    else:
        for r in result["rows"]:
            print(
                f"{r['sentences']:>11,} sentences: prepared in {r['prepare_s']:.1f} s "
                f"({r['sentences_per_min'] / 1e6:.2f} M/min), distill peak {r['peak_rss_mb']:.0f} MB, "
                f"set-up {r['setup_s']:.1f} s, {r['step_s'] * 1000:.0f} ms/step"
            )
        print(
            f"peak RSS growth {result['rss_growth_mb']:.0f} MB (goal <= {GOALS['rss_growth_mb']:.0f}); "
            f"slowest preparation {result['min_sentences_per_min'] / 1e6:.2f} M sentences/min "
            f"(goal >= {GOALS['prepare_sentences_per_min'] / 1e6:.0f}); step time ratio {result['step_time_ratio']:.2f}"
        )
    return 0

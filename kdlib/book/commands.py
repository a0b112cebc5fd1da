"""The book's commands: `python -m kdlib run` (the notebook pipeline, then the book), `python -m kdlib readme`
(the README's headline, or `--check` whether it is stale) and `python -m kdlib compare` (a rerun against the
published run, with the published run's intervals from kdlib.analysis.stats).

Kept apart from :mod:`kdlib.book.runner` and :mod:`kdlib.book.build` so that neither imports the other's caller.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from pathlib import Path

import yaml

from kdlib.analysis import stats
from kdlib.book import build, runner
from kdlib.book.readme import check_readme
from kdlib.eval.loyalty import Predictions
from kdlib.run import compare as compare_mod


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m kdlib run", description="Run the notebook pipeline of a profile with papermill."
    )
    parser.add_argument(
        "--profile", default="cpu", help=f"profile name ({', '.join(runner.available_profiles())}) or a YAML path"
    )
    parser.add_argument("--out", default=None, help="run folder (default runs/<profile>)")
    parser.add_argument("--only", default=None, help="run only this step (e.g. 04-evaluate, 04 or evaluate)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a parameter (all notebooks that declare it, or STEP.KEY=VALUE); repeatable",
    )
    parser.add_argument("--force", action="store_true", help="rerun steps even if they are up to date")
    parser.add_argument(
        "--notebooks", default=str(runner.DEFAULT_NOTEBOOKS_DIR), help="folder of NN-name.ipynb notebooks"
    )
    parser.add_argument("--book", action="store_true", help="after the run, build the book from it into _build/html")
    parser.add_argument("--book-only", action="store_true", help="only build the book from an existing run folder")
    parser.add_argument(
        "--book-root",
        default=None,
        help="folder under which the book is built as _build/html (default: the repository)",
    )
    parser.add_argument("--list", action="store_true", help="list profiles and steps, then exit")
    parser.add_argument(
        "--show",
        action="store_true",
        help="print every step's resolved parameters (profile, then --set; <run> = the run folder), then exit "
        "without running anything",
    )
    args = parser.parse_args(argv)
    level = logging.WARNING if args.show else logging.INFO  # --show prints the plan alone
    logging.basicConfig(level=level, format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S")
    if args.list:
        print("profiles:", ", ".join(runner.available_profiles()))
        print("steps:", ", ".join(p.stem for p in runner.list_steps(args.notebooks)))
        return 0
    try:
        prof = runner.load_profile(args.profile)
        out = Path(args.out or runner.REPO_ROOT / "runs" / prof["name"])
        if args.show:
            print(show(prof, out, only=args.only, overrides=runner.parse_set(args.set), notebooks_dir=args.notebooks))
            return 0
        if not args.book_only:
            summary = runner.run_pipeline(
                prof,
                out,
                only=args.only,
                overrides=runner.parse_set(args.set),
                force=args.force,
                notebooks_dir=args.notebooks,
            )
            print(
                f"run {prof['name']}: {summary['total_wall_s']:.1f} s of steps, peak {summary['peak_rss_mb']:.0f} MB; "
                f"profile hash {summary.get('profile_hash')}; summary in {out / 'run_summary.json'}"
            )
        if args.book or args.book_only:
            index = build.build_book(out, out=args.book_root)
            print(f"book: {index}")
    except runner.PipelineError as exc:
        print(f"kdlib run: {exc}", file=sys.stderr)
        return 1
    except (ValueError, FileNotFoundError, KeyError, RuntimeError) as exc:
        print(f"kdlib run: {exc}", file=sys.stderr)
        return 2
    return 0


def show(prof: dict, out: Path, *, only: str | None, overrides: dict, notebooks_dir: str) -> str:
    """What `run` would run: each step's parameters as kdlib.book.runner resolves them, the run folder as <run>."""
    run_dir = out.resolve()
    params = runner.resolve_parameters(prof, runner.list_steps(notebooks_dir), run_dir, overrides)
    planned = runner._profile_steps(prof, notebooks_dir)
    skipped = runner.plan_steps(prof, planned, params)  # refuses, as `run` does, a step that cannot apply
    steps = [p.stem for p in planned if p.stem not in skipped]
    if only:
        steps = [runner._match_step(only, steps)]
    shown = {name: _shown_parameters(params[name], run_dir) for name in steps}
    body = yaml.safe_dump(shown, sort_keys=False, default_flow_style=None, allow_unicode=True, width=120)
    notes = "".join(f"# {sentence}\n" for sentence in skipped.values())
    return f"# profile {prof['name']}: {len(steps)} step(s); <run> = {out}\n{notes}{body.rstrip()}"


def _shown_parameters(params: dict, run_dir: Path) -> dict:
    """A step's parameters with paths relative to the run folder (<run>); machine paths (data_dir) kept as they are."""
    machine = {k: params[k] for k in runner.MACHINE_PARAMS if k in params}
    return {**runner.portable_parameters(params, run_dir), **machine}


def readme(argv: list[str]) -> int:
    """`python -m kdlib readme --run runs/cpu [--readme README.md]`: the README's headline from a run;
    `--check`: exit 0 when the headline's profile hash is the current profile's, 1 when it is stale."""
    ap = argparse.ArgumentParser(prog="python -m kdlib readme", description=build.update_readme.__doc__)
    ap.add_argument("--run", help="a complete run folder (e.g. runs/cpu)")
    ap.add_argument("--readme", default=str(runner.REPO_ROOT / "README.md"), help="the README to update or check")
    ap.add_argument("--check", action="store_true", help="only say whether the headline is fresh (exit 0) or stale (1)")
    args = ap.parse_args(argv)
    if not args.check and not args.run:
        ap.error("give --run RUN (update the headline) or --check")
    try:
        if args.check:
            fresh, line = check_readme(args.readme)
            print(line)
            return 0 if fresh else 1
        path = build.update_readme(args.run, args.readme)
    except (ValueError, FileNotFoundError, KeyError) as exc:
        print(f"kdlib readme: {exc}", file=sys.stderr)
        return 2
    print(f"updated the headline of {path} from {args.run}")
    return 0


def published_intervals(run: Path, n_resamples: int = 1000) -> dict[str, tuple[float, float]]:
    """95% intervals (kdlib.analysis.stats) of the run's scores and loyalty figures, keyed as compare keys them."""
    out = {}
    for key, fig in compare_mod.score_figures(run).items():
        r = fig["record"]
        out[key] = _interval(lambda r=r: stats.score_interval(_runs(run, r["model"], r["task"]), metric=r["metric"]))
    for key, fig in compare_mod.loyalty_figures(run).items():
        r, m = fig["record"], fig["measure"]
        out[key] = _interval(
            lambda r=r, m=m: stats.loyalty_interval(
                _runs(run, r["reference"], r["task"]), _runs(run, r["student"], r["task"]), m
            )
        )
    return {k: v for k, v in out.items() if v is not None}


def _runs(run: Path, model: str, task: str) -> list[Predictions]:
    """A model's test predictions on a task (none for the mean of several teachers, which has no interval)."""
    return stats.load_runs(run, model, task) if model != "mean of teachers" else []


def _interval(compute: Callable[[], stats.Interval]) -> tuple[float, float] | None:
    """(low, high) of the interval `compute()` returns, or None where the run lacks what it needs."""
    try:
        iv = compute()
    except (FileNotFoundError, ValueError, KeyError, IndexError):
        return None
    return (iv.low, iv.high)


def compare(argv: list[str]) -> int:
    """`python -m kdlib compare RUN_A RUN_B [--json]`: run B against the published run A (kdlib.run.compare)."""
    return compare_mod.cli(argv, intervals=published_intervals)

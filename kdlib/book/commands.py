"""The book's commands: `python -m kdlib run` (the notebook pipeline, then the book) and `python -m kdlib readme`.

Kept apart from :mod:`kdlib.book.runner` and :mod:`kdlib.book.build` so that neither imports the other's caller.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from kdlib.book import build, runner


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
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S")
    if args.list:
        print("profiles:", ", ".join(runner.available_profiles()))
        print("steps:", ", ".join(p.stem for p in runner.list_steps(args.notebooks)))
        return 0
    try:
        prof = runner.load_profile(args.profile)
        out = Path(args.out or runner.REPO_ROOT / "runs" / prof["name"])
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
                f"summary in {out / 'run_summary.json'}"
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


def readme(argv: list[str]) -> int:
    """`python -m kdlib readme --run runs/cpu [--readme README.md]`: the README's headline from a run."""
    ap = argparse.ArgumentParser(prog="python -m kdlib readme", description=build.update_readme.__doc__)
    ap.add_argument("--run", required=True, help="a complete run folder (e.g. runs/cpu)")
    ap.add_argument("--readme", default=str(runner.REPO_ROOT / "README.md"), help="the README to update")
    args = ap.parse_args(argv)
    try:
        path = build.update_readme(args.run, args.readme)
    except (ValueError, FileNotFoundError, KeyError) as exc:
        print(f"kdlib readme: {exc}", file=sys.stderr)
        return 2
    print(f"updated the headline of {path} from {args.run}")
    return 0

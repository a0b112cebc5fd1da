"""The book of a run: its sources staged from the repository and the run, then built with Jupyter Book.

:func:`stage_book` copies the book's files (``_config.yml``, ``_toc.yml``, ``references.bib``, ``book/``)
and the run's EXECUTED notebooks into a staging folder, hides papermill's injected-parameters cell in
the pages (papermill tags it only ``injected-parameters``; the notebooks' setup shows the parameters as
a table instead) and generates ``book/_generated/``: ``run.md`` (time and memory of the steps) and
``headline.md`` + ``summary.png``, the landing page's results (the paper's table beside ours, the claims
verdicts of ``<run>/claims/*.json``, the score-against-speed-and-size figure), each with a sentence whose
numbers come from the run. :func:`build_book` runs ``jupyter-book build`` on it (warnings are errors;
notebooks are never re-executed).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import nbformat
import pandas as pd

from kdlib import colab
from kdlib.analysis import claims, reporting, stats
from kdlib.book import runner
from kdlib.book.notebook import COLAB_RUN_DIR
from kdlib.io import atomic_path, read_json

log = logging.getLogger("kdlib.book.build")


def tag_for_pages(path: Path) -> None:
    """Hide papermill's injected-parameters cell in the book (it holds the build machine's paths; the
    notebook's setup shows the parameters as a table instead): papermill tags it only `injected-parameters`."""
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        tags = cell.metadata.setdefault("tags", [])
        if ("injected-parameters" in tags or "parameters" in tags) and "remove-cell" not in tags:
            tags.append("remove-cell")
    nbformat.write(nb, path)


def claims_markdown(run_dir: str | os.PathLike, *, links: bool = True) -> str:
    """The main claims verdicts of a run (<run>/claims/main.json, written by the claims notebook) as two
    Markdown tables, the paper's claims and this project's own questions, counted apart (claims, not their
    comparisons), then one sentence per companion chapter's claims; or a sentence saying they are absent.
    `links=False` names the chapters in plain Markdown (for the README) instead of MyST `{doc}` links."""
    folder = Path(run_dir) / "claims"
    files = sorted(folder.glob("*.json"))
    if not files:
        return (
            "*This run has no claims verdicts yet: the claims notebook writes them to `<run>/claims/` "
            "when its step runs.*\n"
        )
    main = [f for f in files if f.stem == "main"] or files
    records = [rec for f in main for rec in read_json(f)]
    text = ""
    for kind, title in (
        ("paper", "The paper's claims (its abstract's words)"),
        ("project", "This project's own questions"),
    ):
        recs = [r for r in records if r.get("kind", "paper") == kind]
        if recs:
            frame = claims.claims_frame([claims.Claim(**{**r, "interval": _interval(r.get("interval"))}) for r in recs])
            text += f"{title}:\n\n" + frame.to_markdown(index=False) + "\n\n"
    text += _verdict_counts(records) + "\n"
    steps = {p.stem.split("-", 1)[1]: p.stem for p in runner.list_steps()}
    for f in files:
        if f in main:
            continue
        recs = read_json(f)
        where = f"`{f.name}`"
        if f.stem in steps:
            where = f"{{doc}}`/notebooks/{steps[f.stem]}`" if links else f"`{steps[f.stem]}`"
        counts = claims.verdict_counts([r.get("verdict") for r in recs])
        text += f"\nThe companion chapter {where} checks {len(recs)} claims of its paper: {counts}.\n"
    return text


def _verdict_counts(records: list[dict]) -> str:
    """'Of the paper's 2 claims: 1 supported, 1 not testable here. Of this project's 4 own questions: ...':
    claims (not their comparisons) counted by kind, then how many are not testable here."""
    parts = []
    for kind, name in (("paper", "the paper's {} claims"), ("project", "this project's {} own questions")):
        verdicts = [r.get("verdict") for r in records if r.get("kind", "paper") == kind]
        if verdicts:
            parts.append(f"Of {name.format(len(verdicts))}: {claims.verdict_counts(verdicts)}.")
    untestable = sum(r.get("verdict") == claims.NOT_TESTABLE for r in records)
    if untestable and len(parts) > 1:
        parts.append(f"{untestable} of the {len(records)} {'is' if untestable == 1 else 'are'} not testable here.")
    return " ".join(parts)


def _interval(value: Any) -> Any:
    if isinstance(value, dict):
        return stats.Interval(**value)
    return value


def headline_markdown(run_dir: str | os.PathLike, gen_dir: Path) -> str:
    """The landing page's headline, generated from the run: the paper's table beside ours, the claims
    verdicts and the score-vs-size-and-speed figure (saved into gen_dir), each with a sentence from the data."""
    run = Path(run_dir)
    if not (run / "evaluate" / "results.json").is_file():
        return "*This run has no evaluation results: run the pipeline's evaluation step first.*\n"
    results = reporting.collect_results(run)
    fig = reporting.plot_score_vs_speed_size(results)
    reporting.save_figure(fig, gen_dir / "summary.png")
    prof = read_json(run / "run_summary.json").get("profile", run.name)
    learned = learned_tasks(run)
    return (
        f"## This run's headline (profile `{prof}`)\n\n"
        + models_sentence(run, results)
        + scores_markdown(run, results, learned)
        + "### Claims\n\n"
        + claims_markdown(run)
        + "\n"
        "### Score against size and speed\n\n"
        "```{image} /book/_generated/summary.png\n:alt: mean score against parameters and speed\n"
        ":width: 100%\n```\n\n" + speed_size_sentence(results, learned) + "\n"
    )


def run_language(run: Path) -> str:
    """The language of a run: its summary's, else its tasks.json's, else the paper's."""
    summary = run / "run_summary.json"
    found = read_json(summary).get("language") if summary.is_file() else None
    if found is None and (run / runner.TASKS_FILE).is_file():
        found = read_json(run / runner.TASKS_FILE).get("language")
    return found or runner.PAPER_LANGUAGE


def learned_tasks(run: Path) -> list[str]:
    """The tasks the claims count as learned (kdlib.analysis.claims.RunResults.learned), the run's tasks active."""
    tasks_file = run / runner.TASKS_FILE
    steps = read_json(run / "run_summary.json").get("steps", {}) if (run / "run_summary.json").is_file() else {}
    data_dir = next(
        (s["parameters"]["data_dir"] for s in steps.values() if s.get("parameters", {}).get("data_dir")), None
    )
    with runner.tasks_environment(tasks_file if tasks_file.is_file() else None):
        return claims.RunResults(run, data_dir=data_dir).learned


def models_sentence(run: Path, results: pd.DataFrame) -> str:
    """For a run in another language than the paper's: its teachers and students, and why the poster is absent."""
    language = run_language(run)
    if language == runner.PAPER_LANGUAGE:
        return ""
    roles = results.groupby("model", sort=False)["role"].first()
    teachers = ", ".join(f"**{m}**" for m in roles.index if roles[m] == "teacher")
    others = ", ".join(f"**{m}**" for m in roles.index if roles[m] != "teacher")
    return (
        f"This run applies the paper's method to tasks in `{language}`: teachers {teachers}; students and "
        f"controls {others}. The paper's poster numbers are for its Romanian models and tasks, so none is shown.\n\n"
    )


def scores_markdown(run: Path, results: pd.DataFrame, learned: list[str] | None = None) -> str:
    """The paper's table beside ours (scores x100; the poster's row under ours only for a run in the paper's
    language) and a sentence on the share of its teachers' mean score each student keeps on the learned tasks."""
    poster = run_language(run) == runner.PAPER_LANGUAGE
    table = reporting.paper_table(results, layout="rows", with_poster=poster)  # the poster's row under ours
    table.index = [model if source == "ours" else f"↳ {source}" for model, source in table.index]
    table.columns = [task.upper() for task in table.columns]
    tasks = reporting.task_columns(results["task"])
    beside = "ours beside the poster's (empty where the paper has no such model)" if poster else "this run's models"
    return (
        f"Scores ×100 on {len(tasks)} tasks ({', '.join(t.upper() for t in tasks)}), {beside}:\n\n"
        + table.to_markdown(floatfmt=".1f").replace("nan", "—")
        + "\n\n"
        + kept_sentence(results, reporting.teacher_map(run, results), tasks if learned is None else learned)
    )


def kept_sentence(results: pd.DataFrame, teacher_of: dict[str, list[str]], learned: list[str]) -> str:
    """Which student keeps the largest and the smallest share of its teachers' mean score, over the learned
    tasks only; a sentence saying so when no task is learned (a share of a score at the floor means nothing)."""
    if not learned:
        return (
            "No task is learned by the teachers at this run's scale "
            f"({claims.THRESHOLDS['learned']['text']}), so no share of their score is quoted.\n\n"
        )
    kept = _kept_share(results[results["task"].isin(learned)], teacher_of)
    if kept.empty:
        return ""
    every = set(learned) == set(results["task"])
    over = "the tasks" if every else f"the tasks the teachers learned ({', '.join(t.upper() for t in learned)})"
    return (
        f"Averaged over {over}, **{kept.idxmax()}** keeps the largest share of its teachers' mean score, "
        f"{kept.max():.1f}%; **{kept.idxmin()}** the smallest, {kept.min():.1f}%.\n\n"
    )


# --------------------------------------------------------------------------- the README's headline
README_START = "<!-- headline:start: generated by `python -m kdlib readme --run <run>`; edits here are overwritten -->"
README_END = "<!-- headline:end -->"


def readme_headline(run_dir: str | os.PathLike) -> str:
    """The README's headline of a complete run: when and on what it was measured, what it cost, the paper's
    table beside ours and the claims verdicts, all read from the run folder; stamped with the run's profile hash
    and commit (kdlib.book.readme), so that `python -m kdlib readme --check` can tell when it went stale."""
    from kdlib.book.readme import stamp

    run = Path(run_dir)
    summary = read_json(run / "run_summary.json")
    if not summary.get("complete"):
        raise ValueError(f"{run / 'run_summary.json'}: the run is not complete; finish it before quoting it")
    finished = max((read_json(p)["finished"] for p in (run / ".done").glob("*.json")), default="unknown date")
    device = read_json(run / "bench" / "bench.json").get("device", {})
    machine = f"{device.get('cpu', 'unknown CPU')}, {device.get('cpu_count', '?')} cores" + (
        f", {device['gpu']}" if device.get("gpu") else ", no GPU"
    )
    return (
        stamp(summary)
        + f"Profile `{summary['profile']}`, finished {finished[:10]} on {machine} (torch {device.get('torch', '?')}): "
        f"**{summary['total_wall_s'] / 60:.1f} min** of steps, peak memory "
        f"**{summary['peak_rss_mb'] / 1024:.1f} GB**.\n\n"
        + scores_markdown(run, reporting.collect_results(run), learned_tasks(run))
        + claims_markdown(run, links=False)
    )


def update_readme(run_dir: str | os.PathLike, readme: str | os.PathLike) -> Path:
    """Replace the text between README_START and README_END in `readme` with the run's headline (atomically)."""
    readme = Path(readme)
    text = readme.read_text(encoding="utf-8")
    if text.count(README_START) != 1 or text.count(README_END) != 1:
        raise ValueError(f"{readme}: expected one line {README_START!r} and one line {README_END!r}")
    head, rest = text.split(README_START)
    _, tail = rest.split(README_END)
    body = readme_headline(run_dir)
    with atomic_path(readme) as tmp:
        tmp.write_text(f"{head}{README_START}\n{body}\n{README_END}{tail}", encoding="utf-8")
    return readme


def _kept_share(results: pd.DataFrame, teacher_of: dict[str, list[str]]) -> pd.Series:
    """Per student: 100 * its mean score over the tasks / its teachers' mean score over the same tasks."""
    means = results.groupby("model")["mean"].mean()
    return pd.Series({s: 100.0 * means[s] / means[list(t)].mean() for s, t in teacher_of.items()})


def speed_size_sentence(results: pd.DataFrame, learned: list[str] | None = None) -> str:
    """The students' share of the teachers' parameters and of their mean score (over `learned` tasks, if given)."""
    if learned is not None and not learned:
        return _size_sentence(results) + " No task is learned at this scale, so no share of the score is quoted."
    if learned is not None:
        results = results[results["task"].isin(learned)]
    agg = results.groupby("model").agg(
        score=("mean", "mean"), parameters=("parameters", "first"), role=("role", "first")
    )
    teachers, students = agg[agg["role"] == "teacher"], agg[agg["role"] == "student"]
    if teachers.empty or students.empty:
        return ""
    share = 100.0 * students["parameters"].mean() / teachers["parameters"].mean()
    kept = 100.0 * students["score"].mean() / teachers["score"].mean()
    return (
        f"The students have on average {share:.0f}% of the teachers' encoder parameters and reach "
        f"{kept:.0f}% of their mean score."
    )


def _size_sentence(results: pd.DataFrame) -> str:
    """'The students have on average N% of the teachers' encoder parameters.'"""
    agg = results.groupby("model").agg(parameters=("parameters", "first"), role=("role", "first"))
    teachers, students = agg[agg["role"] == "teacher"], agg[agg["role"] == "student"]
    if teachers.empty or students.empty:
        return ""
    share = 100.0 * students["parameters"].mean() / teachers["parameters"].mean()
    return f"The students have on average {share:.0f}% of the teachers' encoder parameters."


def colab_commands() -> str:
    """The command-line run of the colab profile on Colab, from the one repository URL and release tag."""
    url, ref = colab.repository_url(), colab.release_ref()
    return (
        "```bash\n"
        f'pip install -q "{colab.pip_requirement()}" papermill\n'
        f"git clone -q --branch {ref} {url} repo\n"
        f"cd repo && python -m kdlib run --profile colab --out {COLAB_RUN_DIR}\n```\n"
    )


def skipped_page(notebook: Path, sentence: str) -> str:
    """The page of a step this run did not execute: the chapter's title and the sentence saying why."""
    cells = nbformat.read(notebook, as_version=4).cells
    first = next((c.source.splitlines()[0] for c in cells if c.cell_type == "markdown" and c.source.strip()), "")
    title = first if first.startswith("# ") else f"# {notebook.stem}"
    return f"{title}\n\n*This run did not execute this chapter.* {sentence}\n"


def retitle(dest: Path, title: str) -> None:
    """Set the staged book's title: _config.yml's `title` and the landing page's heading."""
    config = dest / "_config.yml"
    lines = config.read_text(encoding="utf-8").splitlines(keepends=True)
    config.write_text(
        "".join(f"title: {json.dumps(title, ensure_ascii=False)}\n" if ln.startswith("title:") else ln for ln in lines),
        encoding="utf-8",
    )
    intro = dest / "book" / "intro.md"
    head, _, rest = intro.read_text(encoding="utf-8").partition("\n")
    if head.startswith("# "):
        intro.write_text(f"# {title}\n{rest}", encoding="utf-8")


def stage_book(run_dir: str | os.PathLike, dest: str | os.PathLike | None = None) -> Path:
    """Assemble the book sources for one run in `dest` (default _build/src).

    Copies _config.yml, _toc.yml, references.bib and book/ from the repository, the run's EXECUTED
    notebooks into dest/notebooks/ (same paths as the repository's, so Colab buttons open the clean
    notebooks on GitHub) with their injected-parameters cells tagged `remove-cell`, and writes
    book/_generated/: run.md (wall time and memory of the run), headline.md (+ summary.png, the
    landing page's results) and colab.md (the Colab commands of the Reproduce page).
    """
    run_dir = Path(run_dir).resolve()
    dest = Path(dest or runner.REPO_ROOT / "_build" / "src").resolve()
    executed = run_dir / "notebooks"
    steps = runner.list_steps(runner.DEFAULT_NOTEBOOKS_DIR)
    summary = read_json(run_dir / "run_summary.json")
    skipped = summary.get("skipped", {})
    missing = [p.name for p in steps if not (executed / p.name).is_file() and p.stem not in skipped]
    if missing:
        raise FileNotFoundError(
            f"run {run_dir} lacks executed notebooks {missing}; run the pipeline first "
            f"(python -m kdlib run --profile ... --out {run_dir})"
        )
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    for item in runner.BOOK_FILES:
        src = runner.REPO_ROOT / item
        if src.is_dir():
            shutil.copytree(src, dest / item, ignore=shutil.ignore_patterns("_generated", "__pycache__"))
        elif src.is_file():
            shutil.copy2(src, dest / item)
    (dest / "notebooks").mkdir()
    for p in steps:
        if not (executed / p.name).is_file():  # a step the profile skipped or left out: a page that says why
            (dest / "notebooks" / f"{p.stem}.md").write_text(skipped_page(p, skipped[p.stem]), encoding="utf-8")
            continue
        shutil.copy2(executed / p.name, dest / "notebooks" / p.name)
        tag_for_pages(dest / "notebooks" / p.name)
    if summary.get("title"):
        retitle(dest, summary["title"])
    gen = dest / "book" / "_generated"
    gen.mkdir(parents=True, exist_ok=True)
    table = runner.summary_table(run_dir)
    text = (
        f"Profile **{summary['profile']}**; total wall time of the steps "
        f"**{summary['total_wall_s'] / 60:.1f} min**; peak memory of the notebook kernel "
        f"**{summary['peak_rss_mb']:.0f} MB** (summed RSS of the kernel process tree, sampled "
        f"every 0.5 s).\n\n" + table.to_markdown() + "\n"
    )
    (gen / "run.md").write_text(text, encoding="utf-8")
    (gen / "headline.md").write_text(headline_markdown(run_dir, gen), encoding="utf-8")
    (gen / "colab.md").write_text(colab_commands(), encoding="utf-8")
    return dest


def build_book(run_dir: str | os.PathLike, *, out: str | os.PathLike | None = None, strict: bool = True) -> Path:
    """Stage the run's executed notebooks and build the HTML book (warnings as errors); returns index.html."""
    root = Path(out or runner.REPO_ROOT).resolve()
    src = stage_book(run_dir, root / "_build" / "src")
    cmd = [
        sys.executable,
        "-c",
        "from jupyter_book.cli.main import main; main()",
        "build",
        str(src),
        "--path-output",
        str(root),
    ]
    if strict:
        cmd += ["-W", "-n", "--keep-going"]
    log.info("building the book: %s", " ".join(cmd))
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(
            f"jupyter-book build failed (exit {proc.returncode}):\n{proc.stdout[-6000:]}\n{proc.stderr[-4000:]}"
        )
    index = root / "_build" / "html" / "index.html"
    if not index.is_file():
        raise RuntimeError(f"jupyter-book build ended without {index}")
    return index

"""The pipeline runner: profiles, papermill execution in order, skip-on-rerun, failures, run summary."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import nbformat
import pytest

import kdlib
from kdlib import cli
from kdlib.book import build, commands, runner
from kdlib.book.readme import check_readme, stamp

COMMON = 'profile = "x"\nrun_dir = "."\nseed = 0\n'


def _notebook(path: Path, params: str, body: str) -> None:
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell(params)
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell("# test"), cell, nbformat.v4.new_code_cell(body)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


def _write_steps(nb_dir: Path, *, fail_second: bool = False) -> None:
    nb_dir.mkdir()
    _notebook(
        nb_dir / "01-first.ipynb",
        COMMON + "scale = 1\n",
        "import json, pathlib, time\n"
        "pathlib.Path(run_dir, 'first.json').write_text(json.dumps("
        "{'profile': profile, 'seed': seed, 'scale': scale, 't': time.time()}))",
    )
    second = (
        "import json, pathlib\n"
        "first = json.loads(pathlib.Path(run_dir, 'first.json').read_text())\n"
        + ("raise ValueError('boom in the second step')\n" if fail_second else "")
        + "pathlib.Path(run_dir, 'second.json').write_text(json.dumps({'got': first['scale'] * factor}))"
    )
    _notebook(nb_dir / "02-second.ipynb", COMMON + "factor = 10\n", second)
    _notebook(nb_dir / "03-third.ipynb", COMMON, "import pathlib\npathlib.Path(run_dir, 'third.txt').write_text('ok')")


PROFILE = {"name": "tiny", "params": {"seed": 7}, "notebooks": {"01-first": {"scale": 3}}}


def test_shipped_profiles_load_and_extend():
    names = runner.available_profiles()
    assert {"smoke", "cpu", "colab", "paper"} <= set(names)
    for name in names:
        prof = runner.load_profile(name)
        assert prof["name"] == name and prof["params"]["seed"] == 0
        json.dumps(prof)  # JSON-friendly
    paper, colab = runner.load_profile("paper"), runner.load_profile("colab")
    # paper extends colab: inherits the hub teachers, overrides the seeds
    assert paper["notebooks"]["01-teachers"]["hub_teachers"] == colab["notebooks"]["01-teachers"]["hub_teachers"]
    assert len(paper["notebooks"]["04-evaluate"]["seeds"]) == 5 != len(colab["notebooks"]["04-evaluate"]["seeds"])
    # cpu: every task but NER, which its small teachers do not learn (see the profile's header); colab: all seven
    assert set(runner.load_profile("cpu")["params"]["tasks"]) == {"upos", "xpos", "sapn", "sar", "di", "sts"}
    assert "ner" in colab["params"].get("tasks", ["ner"])


def test_profile_errors(tmp_path):
    with pytest.raises(ValueError, match=r"unknown profile 'nope'.*smoke"):
        runner.load_profile("nope")
    with pytest.raises(FileNotFoundError, match="missing.yaml"):
        runner.load_profile(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("params: [1, 2\n")
    with pytest.raises(ValueError, match="bad.yaml: not valid YAML"):
        runner.load_profile(bad)
    bad.write_text("parms: {seed: 1}\n")
    with pytest.raises(ValueError, match="unknown top-level keys.*parms"):
        runner.load_profile(bad)
    child = tmp_path / "child.yaml"
    child.write_text("extends: smoke\nparams: {seed: 3}\n")
    prof = runner.load_profile(child)
    assert prof["params"]["seed"] == 3 and prof["params"]["tasks"] == ["upos", "sapn", "sts"]
    loop = tmp_path / "loop.yaml"
    loop.write_text(f"extends: {loop}\n")
    with pytest.raises(ValueError, match="cycle"):
        runner.load_profile(loop)


def test_parse_set():
    assert runner.parse_set(["seed=3", "04-evaluate.tasks=[upos, sts]", "device=cpu", "x=null"]) == {
        "seed": 3,
        "04-evaluate.tasks": ["upos", "sts"],
        "device": "cpu",
        "x": None,
    }
    with pytest.raises(ValueError, match="key=value"):
        runner.parse_set(["seed"])


def test_pipeline_runs_in_order_skips_and_reruns(tmp_path):
    nb_dir, run = tmp_path / "nbs", tmp_path / "run"
    _write_steps(nb_dir)
    summary = runner.run_pipeline(PROFILE, run, notebooks_dir=nb_dir)
    first = json.loads((run / "first.json").read_text())
    assert first["profile"] == "tiny" and first["seed"] == 7 and first["scale"] == 3
    assert json.loads((run / "second.json").read_text()) == {"got": 30}  # read the previous step's JSON
    assert [*summary["steps"]] == ["01-first", "02-second", "03-third"] and summary["complete"]
    assert all(s["wall_s"] > 0 and s["peak_rss_mb"] > 10 for s in summary["steps"].values())
    on_disk = json.loads((run / "run_summary.json").read_text())
    assert on_disk["total_wall_s"] == pytest.approx(sum(s["wall_s"] for s in on_disk["steps"].values()))
    executed = nbformat.read(run / "notebooks" / "01-first.ipynb", as_version=4)
    injected = [c for c in executed.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert len(injected) == 1 and f'run_dir = "{run.resolve()}"' in injected[0].source
    assert (run / ".done" / "03-third.json").is_file()

    # rerun: nothing executes again
    stamp = first["t"]
    again = runner.run_pipeline(PROFILE, run, notebooks_dir=nb_dir)
    assert json.loads((run / "first.json").read_text())["t"] == stamp
    assert all(s["skipped_last_run"] for s in again["steps"].values())

    # a changed parameter of step 2 reruns step 2 and everything after it, not step 1
    third_before = (run / "notebooks" / "03-third.ipynb").stat().st_mtime_ns
    after = runner.run_pipeline(PROFILE, run, notebooks_dir=nb_dir, overrides={"02-second.factor": 2})
    assert json.loads((run / "first.json").read_text())["t"] == stamp
    assert json.loads((run / "second.json").read_text()) == {"got": 6}
    assert after["steps"]["01-first"]["skipped_last_run"] and not after["steps"]["02-second"]["skipped_last_run"]
    assert (run / "notebooks" / "03-third.ipynb").stat().st_mtime_ns != third_before

    # --only reruns exactly one step
    runner.run_pipeline(PROFILE, run, notebooks_dir=nb_dir, only="first", overrides={"02-second.factor": 2})
    assert json.loads((run / "first.json").read_text())["t"] != stamp
    # ... and the steps after it are no longer "up to date": the next plain run executes them again
    assert not (run / ".done" / "02-second.json").exists() and not (run / ".done" / "03-third.json").exists()
    later = runner.run_pipeline(PROFILE, run, notebooks_dir=nb_dir, overrides={"02-second.factor": 2})
    assert later["steps"]["01-first"]["skipped_last_run"] and not later["steps"]["03-third"]["skipped_last_run"]


def test_failing_notebook_stops_the_run(tmp_path):
    nb_dir, run = tmp_path / "nbs", tmp_path / "run"
    _write_steps(nb_dir, fail_second=True)
    with pytest.raises(runner.PipelineError) as info:
        runner.run_pipeline(PROFILE, run, notebooks_dir=nb_dir)
    msg = str(info.value)
    assert "02-second.ipynb" in msg and "ValueError" in msg and "boom in the second step" in msg
    assert "cell" in msg and info.value.step == "02-second"
    kept = nbformat.read(info.value.executed_path, as_version=4)  # the executed copy is kept for reading
    errors = [o for c in kept.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert errors and errors[0]["evalue"] == "boom in the second step"
    assert not (run / "third.txt").exists() and not (run / ".done" / "02-second.json").exists()
    summary = json.loads((run / "run_summary.json").read_text())
    assert summary["steps"]["02-second"]["status"] == "failed" and not summary["complete"]
    assert summary["steps"]["02-second"]["error"]["ename"] == "ValueError"


def test_bad_parameters_fail_before_running(tmp_path):
    nb_dir, run = tmp_path / "nbs", tmp_path / "run"
    _write_steps(nb_dir)
    bad = {"name": "bad", "notebooks": {"02-second": {"factr": 2}}}
    with pytest.raises(ValueError, match=r"02-second: unknown parameter.*factr.*factor"):
        runner.run_pipeline(bad, run, notebooks_dir=nb_dir)
    with pytest.raises(ValueError, match="no notebook declares a parameter 'sed'"):
        runner.run_pipeline(PROFILE, run, notebooks_dir=nb_dir, overrides={"sed": 1})
    with pytest.raises(ValueError, match="step 'ninth' matches nothing"):
        runner.run_pipeline(PROFILE, run, notebooks_dir=nb_dir, only="ninth")
    assert not (run / "notebooks" / "01-first.ipynb").exists()


def test_cli_reports_failure(tmp_path, capsys):
    nb_dir, run = tmp_path / "nbs", tmp_path / "run"
    _write_steps(nb_dir, fail_second=True)
    prof = tmp_path / "p.yaml"
    prof.write_text("name: p\nparams: {seed: 1}\n")
    code = commands.run(["--profile", str(prof), "--out", str(run), "--notebooks", str(nb_dir), "--set", "seed=2"])
    assert code == 1
    err = capsys.readouterr().err
    assert "02-second.ipynb failed in cell" in err and "boom" in err
    assert json.loads((run / "first.json").read_text())["seed"] == 2
    assert commands.run(["--profile", "nope"]) == 2


def test_a_copied_run_folder_reruns_nothing(tmp_path):
    nb_dir, run, copy = tmp_path / "nbs", tmp_path / "run", tmp_path / "elsewhere" / "copy"
    _write_steps(nb_dir)
    runner.run_pipeline(PROFILE, run, notebooks_dir=nb_dir)
    shutil.copytree(run, copy)
    stamp = json.loads((copy / "first.json").read_text())["t"]
    again = runner.run_pipeline(PROFILE, copy, notebooks_dir=nb_dir)
    assert all(s["skipped_last_run"] for s in again["steps"].values())
    assert json.loads((copy / "first.json").read_text())["t"] == stamp
    hashes = {p.name: json.loads(p.read_text())["hash"] for p in (run / ".done").glob("*.json")}
    assert hashes == {p.name: json.loads(p.read_text())["hash"] for p in (copy / ".done").glob("*.json")}
    # ... while a changed parameter still reruns its step in the copy
    later = runner.run_pipeline(PROFILE, copy, notebooks_dir=nb_dir, overrides={"02-second.factor": 4})
    assert not later["steps"]["02-second"]["skipped_last_run"] and later["steps"]["01-first"]["skipped_last_run"]


def test_portable_parameters_drop_absolute_paths(tmp_path):
    params = {"run_dir": str(tmp_path), "data_dir": "/data", "teacher": f"{tmp_path}/teachers/T", "seed": 1}
    assert runner.portable_parameters(params, tmp_path) == {
        "run_dir": "<run>",
        "teacher": "<run>/teachers/T",
        "seed": 1,
    }


def test_profile_hash_is_recorded_and_follows_profile_overrides_and_code(tmp_path):
    nb_dir, run = tmp_path / "nbs", tmp_path / "run"
    _write_steps(nb_dir)
    summary = runner.run_pipeline(PROFILE, run, notebooks_dir=nb_dir, overrides={"seed": 3})
    made = runner.profile_hash(PROFILE, nb_dir, {"seed": 3})
    assert summary["profile_hash"] == made == json.loads((run / "run_summary.json").read_text())["profile_hash"]
    assert len(summary["git_commit"]) == 40 and isinstance(summary["git_dirty"], bool)
    plain = runner.profile_hash(PROFILE, nb_dir)
    assert plain != made and plain == runner.profile_hash({**PROFILE, "description": "other words"}, nb_dir)
    assert plain != runner.profile_hash({**PROFILE, "params": {"seed": 8}}, nb_dir)
    nb = nbformat.read(nb_dir / "03-third.ipynb", as_version=4)
    nb.cells[0].source = "# other prose"
    nbformat.write(nb, nb_dir / "03-third.ipynb")
    assert runner.profile_hash(PROFILE, nb_dir) == plain  # prose is not what the run computes
    nb.cells[-1].source += "\nprint('more')"
    nbformat.write(nb, nb_dir / "03-third.ipynb")
    assert runner.profile_hash(PROFILE, nb_dir) != plain


OLD_HEADLINE = (
    f"# kdlib\n\n{build.README_START}\nProfile `cpu`, finished 2026-12-01: **66.8 min**.\n{build.README_END}\n"
)


def test_readme_check_fresh_stale_and_unstamped(tmp_path, capsys):
    readme = tmp_path / "README.md"
    readme.write_text(OLD_HEADLINE)
    assert commands.readme(["--check", "--readme", str(readme)]) == 1
    assert capsys.readouterr().out.startswith("stale: the headline of") and "records no profile hash" in readme_check(
        readme
    )
    summary = {"profile": "smoke", "profile_hash": runner.profile_hash("smoke"), "git_commit": "abcdef1234567890"}
    readme.write_text(OLD_HEADLINE.replace("Profile `cpu`", stamp(summary) + "Profile `smoke`"))
    assert "Made at commit `abcdef123456` with profile `smoke`" in readme.read_text()
    assert commands.readme(["--check", "--readme", str(readme)]) == 0
    assert capsys.readouterr().out.startswith("fresh: the headline's profile smoke hash")
    readme.write_text(readme.read_text().replace(summary["profile_hash"], "0123456789abcdef"))
    assert commands.readme(["--check", "--readme", str(readme)]) == 1
    assert "made with profile smoke hash 0123456789abcdef (commit abcdef123456)" in capsys.readouterr().out
    assert commands.readme(["--check", "--readme", str(tmp_path / "missing.md")]) == 2


def test_a_stamped_headline_from_a_run_is_fresh(tmp_path):
    """update_readme stamps the headline with the run's profile hash and commit; --check finds it fresh."""
    source = Path(os.environ.get("KDLIB_RUN_DIR", runner.REPO_ROOT / "runs" / "smoke"))
    if not (source / "run_summary.json").is_file() or not (source / "bench" / "bench.json").is_file():
        pytest.skip(f"no complete run at {source} (set KDLIB_RUN_DIR)")
    run = tmp_path / "run"
    shutil.copytree(source, run, ignore=shutil.ignore_patterns("*.safetensors", "*.pt", "*.arrow", "notebooks"))
    summary = json.loads((run / "run_summary.json").read_text())
    summary.update(
        profile_hash=runner.profile_hash(summary["profile"]), git_commit="0123456789abcdef0123", git_dirty=True
    )
    (run / "run_summary.json").write_text(json.dumps(summary))
    readme = tmp_path / "README.md"
    readme.write_text(OLD_HEADLINE)
    build.update_readme(run, readme)
    text = readme.read_text()
    assert f"profile-hash={summary['profile_hash']} commit=0123456789ab+changes -->" in text
    assert f"Made at commit `0123456789ab+changes` with profile `{summary['profile']}`" in text
    assert check_readme(readme)[0]


def readme_check(readme: Path) -> str:
    return check_readme(readme)[1]


def test_version(capsys):
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"kdlib {kdlib.__version__}"

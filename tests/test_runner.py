"""The pipeline runner: profiles, papermill execution in order, skip-on-rerun, failures, run summary."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest

from kdlib.book import runner

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
    code = runner.cli(["--profile", str(prof), "--out", str(run), "--notebooks", str(nb_dir), "--set", "seed=2"])
    assert code == 1
    err = capsys.readouterr().err
    assert "02-second.ipynb failed in cell" in err and "boom" in err
    assert json.loads((run / "first.json").read_text())["seed"] == 2
    assert runner.cli(["--profile", "nope"]) == 2

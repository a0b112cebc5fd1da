"""kdlib.book.notebook: the Colab install cell on a simulated Colab, the Drive guard, the colab defaults of a
notebook opened from its launch button, and the routing of warnings away from the pages."""

from __future__ import annotations

import re
import subprocess
import sys
import types
import warnings
from pathlib import Path

import nbformat
import pytest
import tomllib
import tqdm.std

from kdlib import colab
from kdlib.book import notebook, runner

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]-*.ipynb"))


def _cells(path: Path) -> list:
    return nbformat.read(path, as_version=4).cells


def _install_cell(path: Path):
    hits = [c for c in _cells(path) if c.cell_type == "code" and colab.INSTALL_TAG in c.source]
    assert len(hits) == 1, f"{path.name}: expected one install cell (first line '# {colab.INSTALL_TAG}')"
    return hits[0]


@pytest.fixture
def fake_colab(monkeypatch):
    """A simulated Colab runtime: fake google, google.colab and google.colab.drive modules."""
    mounted = []
    drive = types.ModuleType("google.colab.drive")
    drive.mount = lambda path: mounted.append(path)
    colab_mod = types.ModuleType("google.colab")
    colab_mod.drive = drive
    google = types.ModuleType("google")
    google.colab = colab_mod
    monkeypatch.setitem(sys.modules, "google", google)
    monkeypatch.setitem(sys.modules, "google.colab", colab_mod)
    monkeypatch.setitem(sys.modules, "google.colab.drive", drive)
    return mounted


def _run_install_cell(path: Path, monkeypatch) -> list[list[str]]:
    calls = []
    monkeypatch.setattr(subprocess, "run", lambda cmd, **kw: calls.append(list(cmd)))
    exec(compile(_install_cell(path).source, f"{path.name}:install", "exec"), {})
    return calls


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_install_cell_on_simulated_colab(path, fake_colab, monkeypatch):
    # the notebook's own cell, run on a fake Colab with pip replaced: exactly the generated command, once
    assert colab.on_colab()
    assert _run_install_cell(path, monkeypatch) == [colab.install_command()]
    cmd = colab.install_command()
    assert cmd[:5] == [sys.executable, "-m", "pip", "install", "-q"]
    assert cmd[5] == f"kdlib @ git+{colab.repository_url()}@{colab.release_ref()}"
    assert "[book]" not in cmd[5]  # no papermill / ipykernel / jupyter-book upgrades in Colab's runtime


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_cells_agree_with_kdlib(path, monkeypatch):
    cells = _cells(path)
    assert _install_cell(path).source == colab.install_cell_source(), (
        f"{path.name}: its install cell differs from kdlib.colab.install_cell_source()"
    )
    assert "remove-cell" in _install_cell(path).metadata.get("tags", [])
    params = [c for c in cells if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1 and "remove-cell" in params[0].metadata["tags"]
    setups = [c for c in cells if f'setup("{path.stem}", globals())' in c.source]
    assert len(setups) == 1, f'{path.name}: expected one setup("{path.stem}", globals()) call'
    assert cells.index(params[0]) < cells.index(_install_cell(path)) < cells.index(setups[0])
    assert not _run_install_cell(path, monkeypatch), "off Colab the install cell must do nothing"


def test_repository_url_and_release_kept_in_one_place():
    url = colab.repository_url()
    assert url == runner.yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]["url"].rstrip("/")
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert colab.release_ref() == f"v{version}"
    texts = [ROOT / "README.md", *sorted((ROOT / "book").glob("*.md")), *NOTEBOOKS]
    for path in texts:
        for found in re.findall(r"https://github\.com/[\w.-]+/[\w.-]+", path.read_text(encoding="utf-8")):
            assert found.removesuffix(".git") == url, f"{path.name} names another repository: {found}"


def test_drive_guard(fake_colab, tmp_path):
    drive_root = tmp_path / "drive"
    run = drive_root / "MyDrive" / "runs" / "colab"
    colab.ensure_drive(tmp_path / "elsewhere", drive_root=drive_root)  # not under Drive: nothing
    with pytest.raises(RuntimeError, match=r"not mounted: run `from google.colab import drive; drive\.mount"):
        colab.ensure_drive(run, mount=False, drive_root=drive_root)
    assert not drive_root.exists(), "the guard must not create the mountpoint"
    colab.ensure_drive(run, drive_root=drive_root)
    assert fake_colab == [str(drive_root)]
    (drive_root / "MyDrive").mkdir(parents=True)  # a local folder in the way
    with pytest.raises(RuntimeError, match="local folder, not your mounted Drive"):
        colab.ensure_drive(run, drive_root=drive_root)


def test_drive_guard_off_colab(tmp_path, monkeypatch):
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    if colab.on_colab():
        pytest.skip("this machine is a Colab runtime")
    colab.ensure_drive(tmp_path / "drive" / "run", mount=False, drive_root=tmp_path / "drive")


def _parameters_namespace(stem: str) -> dict:
    cell = next(c for c in _cells(ROOT / "notebooks" / f"{stem}.ipynb") if "parameters" in c.metadata.get("tags", []))
    namespace: dict = {}
    exec(cell.source, namespace)
    namespace.pop("__builtins__")
    return namespace


@pytest.fixture
def isolated_setup(monkeypatch):
    """setup() patches tqdm and the warnings hooks of this process: put them back after the test."""
    monkeypatch.setattr(tqdm.std.tqdm, "__init__", tqdm.std.tqdm.__init__)
    monkeypatch.setattr(warnings, "showwarning", warnings.showwarning)
    drives = []
    monkeypatch.setattr(notebook, "ensure_drive", lambda run, **kw: drives.append(run))
    return drives


def test_launch_button_defaults_to_the_colab_profile(fake_colab, isolated_setup):
    # 01 opened from its Colab button: the profile's hub teachers and corpus, the Drive run folder
    ns = _parameters_namespace("01-teachers")
    assert ns["profile"] == notebook.NOTEBOOK_DEFAULT_PROFILE and ns["teacher_source"] == "local"
    ctx = notebook.setup("01-teachers", ns, show=False)
    prof = runner.load_profile("colab")
    assert ctx.colab_defaults and ns["profile"] == "colab" and ns["teacher_source"] == "hub"
    assert ns["corpus_name"] == prof["notebooks"]["01-teachers"]["corpus_name"]
    assert ns["run_dir"] == notebook.COLAB_RUN_DIR and isolated_setup == [Path(notebook.COLAB_RUN_DIR).resolve()]
    # 02: the common `device: auto` and the colab distillation settings; nothing it does not declare
    ns = _parameters_namespace("02-distill-single")
    notebook.setup("02-distill-single", ns, show=False)
    assert ns["device"] == prof["params"]["device"] == "auto"
    assert ns["distill_config"] == prof["notebooks"]["02-distill-single"]["distill_config"]
    assert "tasks" not in ns


def test_injected_parameters_are_kept(fake_colab, isolated_setup, tmp_path):
    # a notebook run by the runner (profile injected) keeps its parameters, on Colab too
    ns = {**_parameters_namespace("04-evaluate"), "profile": "smoke", "run_dir": str(tmp_path), "seeds": [3]}
    ctx = notebook.setup("04-evaluate", ns, show=False)
    assert not ctx.colab_defaults and ns["profile"] == "smoke" and ns["seeds"] == [3] and ctx.run == tmp_path


def test_kdlib_warnings_become_notes_others_are_dropped(isolated_setup, tmp_path, data_dir, monkeypatch):
    from kdlib.data import load as data

    monkeypatch.setattr(notebook, "_READER_NOTES", [])
    notebook.quiet(tmp_path)
    warnings.warn("a third-party library complains", UserWarning)
    data.load_task("di", data_dir)  # the offline mirror has no MOROCO files: kdlib warns about the source
    notes = notebook._READER_NOTES
    assert notes and all("third-party" not in n for n in notes)
    assert any("MOROCO" in n for n in notes)
    assert not any(str(data_dir) in n or re.search(r"(?<![\w<$.])/(work|tmp|home|root)/", n) for n in notes), notes
    assert tqdm.std.tqdm(range(3), disable=False).disable, "progress bars stay off in the kernel"


def test_relative_paths_and_parameter_table(tmp_path, monkeypatch):
    monkeypatch.setenv("KDLIB_DATA_DIR", str(tmp_path / "data"))
    run = tmp_path / "run"
    text = notebook.relative_paths(f"{run}/distill/single and {tmp_path}/data/ro/x.conllu and /opt/a/b/c.py", run)
    assert text == "<run>/distill/single and $KDLIB_DATA_DIR/ro/x.conllu and …/b/c.py"
    table = notebook.parameters_table(
        {
            "profile": "smoke",
            "run_dir": str(run),
            "seed": 0,
            "distill_config": {"max_steps": 30, "lr": 5e-4},
            "tasks": ["upos", "sts"],
        },
        run,
    )
    assert table.loc["run_dir", "value"] == "the run folder" and "profile" not in table.index
    assert table.loc["distill_config", "value"] == "max_steps=30, lr=0.0005"
    assert table.loc["tasks", "value"] == "upos, sts"


def test_runner_refuses_an_unmounted_drive(fake_colab, tmp_path, monkeypatch):
    # the command line cannot mount Drive: it stops before creating the run folder
    drive_root = tmp_path / "drive"
    monkeypatch.setattr(colab, "DRIVE_ROOT", drive_root)
    prof = {"name": "tiny", "params": {}, "notebooks": {}}
    nb_dir = tmp_path / "nbs"
    nb_dir.mkdir()
    cell = nbformat.v4.new_code_cell('profile = "default"\nrun_dir = "x"')
    cell.metadata["tags"] = ["parameters"]
    nb = nbformat.v4.new_notebook(cells=[cell])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, nb_dir / "01-first.ipynb")
    with pytest.raises(RuntimeError, match="not mounted"):
        runner.run_pipeline(prof, drive_root / "MyDrive" / "run", notebooks_dir=nb_dir)
    assert not drive_root.exists()


def test_book_sources_have_no_control_characters():
    """A Python string that wrote LaTeX without r"" turns \\bar into a backspace and \\frac into a form feed."""
    texts = [ROOT / "README.md", *sorted((ROOT / "book").glob("*.md")), *NOTEBOOKS]
    for path in texts:
        for number, line in enumerate(path.read_text(encoding="utf-8").split("\n"), 1):  # not splitlines: \f is a break
            bad = re.findall(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]", line)
            assert not bad, f"{path.name}, line {number}: control character {bad[0]!r} in {line[:80]!r}"

"""kdlib.book.notebook: the Colab install cell on a simulated Colab, one source for where the code lives, the
Drive and GPU guards, the colab defaults of a notebook opened from its launch button (the reader's edits win),
progress bars for a person but not for the pages, and the routing of warnings away from the pages."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import types
import warnings
from pathlib import Path

import nbformat
import pytest
import tomllib
import torch
import tqdm.std
from IPython.core.inputtransformer2 import TransformerManager

import kdlib
from kdlib import colab
from kdlib.book import build, notebook, runner

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


def _run_install_cell(path: Path, monkeypatch) -> list[tuple[str, str]]:
    """The cell as IPython runs it (``%pip`` becomes a line magic), with the magics recorded, not run."""
    monkeypatch.setattr(subprocess, "run", lambda *a, **kw: pytest.fail("the install cell must use %pip"))
    calls: list[tuple[str, str]] = []
    shell = types.SimpleNamespace(run_line_magic=lambda name, line: calls.append((name, line)))
    code = TransformerManager().transform_cell(_install_cell(path).source)
    exec(compile(code, f"{path.name}:install", "exec"), {"get_ipython": lambda: shell})
    return calls


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_install_cell_on_simulated_colab(path, fake_colab, monkeypatch):
    # the notebook's own cell, run on a fake Colab: exactly one %pip of the pinned release, no [book] extra
    assert colab.on_colab()
    requirement = f"{colab.DISTRIBUTION} @ git+{colab.REPOSITORY_URL}@{colab.release_ref()}"
    assert _run_install_cell(path, monkeypatch) == [("pip", f'install -q "{requirement}"')]
    assert colab.install_command() == f'%pip install -q "{requirement}"' and "[book]" not in requirement


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
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    assert not _run_install_cell(path, monkeypatch), "off Colab the install cell must do nothing"


def test_code_location_has_one_source():
    # the version is kdlib.__version__; the tag, the install cell, the launch buttons and the Reproduce page
    # all derive from it and from colab.REPOSITORY_URL
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" in project["project"]["dynamic"] and project["project"]["name"] == colab.DISTRIBUTION
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "kdlib.__version__"}
    assert colab.release_ref() == f"v{kdlib.__version__}"
    repo = colab.book_config()["repository"]
    assert repo["url"].rstrip("/") == colab.REPOSITORY_URL, "_config.yml names another repository"
    assert repo["branch"] == colab.release_ref(), "the launch buttons must open the notebooks of the release tag"
    commands = build.colab_commands()
    assert f'"{colab.pip_requirement()}"' in commands
    assert f"--branch {colab.release_ref()} {colab.REPOSITORY_URL}" in commands
    assert "_generated/colab.md" in (ROOT / "book" / "reproduce.md").read_text(encoding="utf-8")
    texts = [ROOT / "README.md", *sorted((ROOT / "book").glob("*.md")), *NOTEBOOKS]
    for path in texts:
        text = path.read_text(encoding="utf-8")
        for found in re.findall(r"https://github\.com/[\w.-]+/[\w.-]+", text):
            assert found.removesuffix(".git") == colab.REPOSITORY_URL, f"{path.name} names another repository: {found}"
        for found in re.findall(r"[\w.-]+ @ git\+[^\s\"'\\]+", text):
            assert found == colab.pip_requirement(), f"{path.name} installs {found}, not {colab.pip_requirement()}"


def test_declared_defaults_match_the_notebooks():
    # the installed kdlib's copy of each parameters cell: what setup compares the reader's values with on Colab
    shipped = json.loads(notebook.DECLARED_FILE.read_text(encoding="utf-8"))
    assert shipped == notebook.declared_from_notebooks(), (
        "kdlib/book/parameters.json is stale: run "
        "`python -c 'from kdlib.book.notebook import write_declared; write_declared()'`"
    )
    for path in NOTEBOOKS:
        assert set(shipped[path.stem]) == set(runner._notebook_params(path)), path.name  # papermill's view
    package_data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert "book/parameters.json" in package_data["kdlib"], "pip install must ship kdlib/book/parameters.json"


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
    """setup() patches tqdm, the warnings hooks and progress variables of this process: put them back after the
    test; a GPU is there unless a test takes it away."""
    monkeypatch.setattr(tqdm.std.tqdm, "__init__", tqdm.std.tqdm.__init__)
    monkeypatch.setattr(warnings, "showwarning", warnings.showwarning)
    for name in ("TQDM_DISABLE", "HF_DATASETS_DISABLE_PROGRESS_BARS", notebook.ALLOW_CPU_ENV, notebook.PAGES_ENV):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
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
    assert ctx.from_user == [] and {"teacher_source", "corpus_name", "run_dir"} <= set(ctx.from_profile)
    # 02: the common `device: auto` and the colab distillation settings; nothing it does not declare
    ns = _parameters_namespace("02-distill-single")
    notebook.setup("02-distill-single", ns, show=False)
    assert ns["device"] == prof["params"]["device"] == "auto"
    assert ns["distill_config"] == prof["notebooks"]["02-distill-single"]["distill_config"]
    assert "tasks" not in ns


def test_the_readers_edits_win_over_the_colab_profile(fake_colab, isolated_setup, monkeypatch):
    # 04 on Colab, the reader lowered seeds and max_train_examples in the parameters cell: kept, and said so
    ns = {**_parameters_namespace("04-evaluate"), "seeds": [0, 1], "max_train_examples": 50}
    ctx = notebook.setup("04-evaluate", ns, show=False)
    prof = runner.load_profile("colab")["notebooks"]["04-evaluate"]
    assert ns["seeds"] == [0, 1] and ns["max_train_examples"] == 50
    assert ns["finetune_config"] == prof["finetune_config"] and ns["max_eval_examples"] == prof["max_eval_examples"]
    assert ctx.from_user == ["max_train_examples", "seeds"]
    assert "finetune_config" in ctx.from_profile and "seeds" not in ctx.from_profile
    shown = []
    monkeypatch.setattr(notebook, "note", lambda text, **kw: shown.append(text))
    monkeypatch.setattr(notebook, "say", lambda text: None)
    notebook._show_setup(ctx)
    assert "Yours (set in the parameters cell, kept): `max_train_examples`, `seeds`" in shown[0]
    assert "`finetune_config`" in shown[0].split("Yours")[0]


def test_injected_parameters_are_kept(fake_colab, isolated_setup, tmp_path):
    # a notebook run by the runner (profile injected) keeps its parameters, on Colab too
    ns = {**_parameters_namespace("04-evaluate"), "profile": "smoke", "run_dir": str(tmp_path), "seeds": [3]}
    ctx = notebook.setup("04-evaluate", ns, show=False)
    assert not ctx.colab_defaults and ns["profile"] == "smoke" and ns["seeds"] == [3] and ctx.run == tmp_path
    # papermill on Colab without a profile: what it injected wins, even a value equal to the notebook's default
    ns = {**_parameters_namespace("04-evaluate"), "In": ["", "# Parameters\nseeds = [0]\n"]}
    ctx = notebook.setup("04-evaluate", ns, show=False)
    assert ctx.colab_defaults and ns["seeds"] == [0] and "seeds" in ctx.from_user


def test_progress_bars_for_a_person_not_for_the_pages(isolated_setup, tmp_path):
    # a person at the notebook (no papermill cell in the kernel's history): live bars
    ns = {**_parameters_namespace("05-loyalty"), "run_dir": str(tmp_path), "In": ["", "x = 1"]}
    assert notebook.setup("05-loyalty", ns, show=False).progress
    assert not tqdm.std.tqdm(range(3), disable=False).disable
    # the papermill run the book's pages come from: none, even where a caller asks for one
    ns = {**ns, "In": ["", f"# Parameters\nrun_dir = {str(tmp_path)!r}\n"]}
    assert not notebook.setup("05-loyalty", ns, show=False).progress
    assert tqdm.std.tqdm(range(3), disable=False).disable


def test_colab_profile_without_a_gpu_stops_at_once(fake_colab, isolated_setup, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(notebook.SetupStop) as stop:
        notebook.setup("02-distill-single", _parameters_namespace("02-distill-single"), show=False)
    assert "Runtime > Change runtime type > T4 GPU" in str(stop.value) and "\n" not in str(stop.value)
    assert stop.value._render_traceback_() == [f"SetupStop: {notebook.NO_GPU}"]  # IPython shows this one line
    assert isolated_setup == [], "it stops before mounting Drive"
    notebook.setup("05-loyalty", _parameters_namespace("05-loyalty"), show=False)  # no training: goes on
    monkeypatch.setenv(notebook.ALLOW_CPU_ENV, "1")  # a CPU run on purpose
    assert notebook.setup("02-distill-single", _parameters_namespace("02-distill-single"), show=False).colab_defaults


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

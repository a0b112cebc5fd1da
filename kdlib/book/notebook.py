"""The one setup call of every notebook, and what a notebook needs on Colab.

Each notebook of the pipeline starts with a ``parameters`` cell (papermill overrides it from a profile),
a Colab install cell, then::

    from kdlib.book.notebook import setup
    run = setup("02-distill-single", globals()).run

:func:`setup` does, in order:

1. **Parameters.** The notebook's parameters are the plain values of its namespace at that point (the
   parameters cell ran, nothing else did). On Colab, a notebook opened from its launch button has no
   profile injected (``profile == "default"``); setup then takes the ``colab`` profile's values for the
   parameters the notebook declares (the same rule as the runner's: common params to every notebook that
   declares them, then the notebook's own), and the Drive run folder :data:`COLAB_RUN_DIR`, except where
   the reader changed the parameters cell: a value that differs from the notebook's declared default
   (:data:`DECLARED_FILE`, generated from the notebooks by :func:`write_declared`) is the reader's and wins,
   and so does a value papermill injected. The values are written back into the namespace; the page says
   which came from the profile and which from the reader.
2. **A GPU for the colab profile.** On Colab, the colab profile without CUDA stops a notebook that trains
   (it declares ``device``) with one line saying how to switch the runtime, unless
   ``KDLIB_ALLOW_CPU=1`` is set (``%env KDLIB_ALLOW_CPU=1`` in a cell before it: a deliberate CPU run).
3. **Drive.** On Colab, a run folder under ``/content/drive`` needs Drive mounted; setup mounts it
   (:func:`ensure_drive`) or stops with one line saying what to do, before anything is written.
4. **Quiet pages.** In a papermill run (the runs the book's pages are built from: papermill's injected
   ``# Parameters`` cell is in the kernel's input history, or ``KDLIB_PAGES=1``) progress bars are switched
   off (tqdm, datasets, transformers; the terminal keeps the runner's own bar); when a person runs the
   notebook (Colab, Jupyter) tqdm bars stay live. Either way library logging is cut to errors, and
   warnings are routed: those raised by kdlib itself (the DI data source, a rebuilt data file, ...) matter
   to the reader and become a short admonition under the cell that raised them (paths relative to the run
   or data folder); every other warning is dropped from the page.
5. **Seeds and display.** ``transformers.set_seed(seed)`` (python, numpy, torch), pandas display
   options, the book's figure style (:func:`kdlib.analysis.reporting.style`).
6. **The parameters a reader needs**: a small table, paths relative to the run folder (the injected
   papermill cell itself is removed from the pages by the book build).

The Colab install cell before the setup cell comes from :func:`kdlib.colab.install_cell_source`.
"""

from __future__ import annotations

import ast
import json
import logging
import os
import re
import sys
import types
import warnings
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# tqdm.auto (imported by datasets, below) warns at import in a kernel without ipywidgets: not for the page
warnings.filterwarnings("ignore", message="IProgress not found")

import pandas as pd  # noqa: E402

from kdlib.book import runner  # noqa: E402
from kdlib.colab import ensure_drive, on_colab  # noqa: E402

PACKAGE_DIR = Path(__file__).resolve().parents[1]  # kdlib: warnings raised in its code are routed
COLAB_RUN_DIR = "/content/drive/MyDrive/kdlib-runs/colab"  # a launch-button notebook's run folder on Colab
NOTEBOOK_DEFAULT_PROFILE = "default"  # the `profile` default of every parameters cell
DECLARED_FILE = Path(__file__).resolve().parent / "parameters.json"  # each notebook's declared defaults
ALLOW_CPU_ENV = "KDLIB_ALLOW_CPU"  # "1": run the colab profile on a CPU runtime on purpose
PAGES_ENV = "KDLIB_PAGES"  # "1": a run for the book's pages (no progress bars), also without papermill
PAPERMILL_CELL = "# Parameters\n"  # first line of the cell papermill injects (its Python translator)
NO_GPU = (
    "This Colab runtime has no GPU and the colab profile needs one: Runtime > Change runtime type > T4 GPU, "
    f"then run the notebook again (for a CPU run on purpose, run `%env {ALLOW_CPU_ENV}=1` first)"
)
_IPYTHON_NAMES = {"In", "Out", "exit", "quit", "get_ipython", "open"}


def colab_parameters(notebook: str, declared: set[str]) -> dict[str, Any]:
    """The ``colab`` profile's values for the parameters `notebook` declares, and the Drive run folder."""
    prof = runner.load_profile("colab")
    values = {
        **prof["params"],
        **prof["notebooks"].get(notebook, {}),
        "profile": prof["name"],
        "run_dir": COLAB_RUN_DIR,
    }
    return {k: v for k, v in values.items() if k in declared}


def parameters_cell_defaults(source: str) -> dict[str, Any]:
    """The literal values a parameters cell assigns (``name = <literal>``), in order."""
    out = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                out[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                continue
    return out


def declared_from_notebooks(notebooks_dir: Path = runner.DEFAULT_NOTEBOOKS_DIR) -> dict[str, dict[str, Any]]:
    """Each notebook's declared defaults, read from its parameters cell: {stem: {name: value}}."""
    out = {}
    for path in runner.list_steps(notebooks_dir):
        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
        cell = next(c for c in cells if "parameters" in c.get("metadata", {}).get("tags", []))
        source = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
        out[path.stem] = parameters_cell_defaults(source)
    return out


def write_declared(path: Path = DECLARED_FILE, notebooks_dir: Path = runner.DEFAULT_NOTEBOOKS_DIR) -> Path:
    """Write :data:`DECLARED_FILE` from the notebooks (run after changing a parameters cell)."""
    path.write_text(json.dumps(declared_from_notebooks(notebooks_dir), indent=1, ensure_ascii=False) + "\n", "utf-8")
    return path


def declared_defaults(notebook: str, path: Path = DECLARED_FILE) -> dict[str, Any] | None:
    """`notebook`'s declared parameter defaults (the installed kdlib's copy), or None when unknown."""
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8")).get(notebook)


def _same(a: Any, b: Any) -> bool:
    """Equal as the parameters cell would write them (tuples as lists)."""
    return json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)


def injected_names(namespace: MutableMapping[str, Any]) -> set[str] | None:
    """The names papermill injected (its ``# Parameters`` cell in the kernel's input history), None without it."""
    cells = [c for c in namespace.get("In", []) or [] if isinstance(c, str) and c.startswith(PAPERMILL_CELL)]
    if not cells:
        return None
    return set(parameters_cell_defaults(cells[-1]))


def user_set(params: dict[str, Any], defaults: dict[str, Any], injected: set[str]) -> set[str]:
    """The parameters the reader (or papermill) set: injected, or different from the declared default."""
    return {k for k, v in params.items() if k in injected or (k in defaults and not _same(v, defaults[k]))}


# --------------------------------------------------------------------------- quiet pages

_READER_NOTES: list[str] = []


def relative_paths(text: str, run: Path | None = None) -> str:
    """`text` with machine paths replaced: the run folder by ``<run>``, the data folder by
    ``$KDLIB_DATA_DIR``, any other absolute path by its last two components."""
    roots = [(run, "<run>")] if run else []
    if os.environ.get("KDLIB_DATA_DIR"):
        roots.append((Path(os.environ["KDLIB_DATA_DIR"]).resolve(), "$KDLIB_DATA_DIR"))
    for root, name in roots:
        text = text.replace(str(root), name)
    return re.sub(r"(?<![\w<>$.~])/(?:[\w.+-]+/)+[\w.+-]+", lambda m: "…/" + "/".join(m.group(0).split("/")[-2:]), text)


def _is_reader_warning(category: type) -> bool:
    """A UserWarning whose ``warnings.warn`` call is in kdlib (whatever stacklevel attributes it to)."""
    if not issubclass(category, UserWarning):
        return False
    frame = sys._getframe(2)
    while frame is not None and Path(frame.f_code.co_filename).name in ("warnings.py", "notebook.py"):
        frame = frame.f_back
    return frame is not None and Path(frame.f_code.co_filename).resolve().is_relative_to(PACKAGE_DIR)


def _route_warning(run: Path):
    def show(message, category, filename, lineno, file=None, line=None):
        if _is_reader_warning(category):
            text = relative_paths(str(message), run)
            if text not in _READER_NOTES:
                _READER_NOTES.append(text)

    return show


def _flush_notes(*_args) -> None:
    """After each cell: the reader-relevant warnings it raised, as one admonition under it."""
    if _READER_NOTES:
        note("\n".join(f"* {t}" for t in _READER_NOTES), title="Data notes")
        _READER_NOTES.clear()


def progress_bars(on: bool) -> None:
    """Live tqdm bars (a person at the notebook) or none at all (a page of the book), whatever callers ask."""
    import tqdm.std

    init = getattr(tqdm.std.tqdm.__init__, "__wrapped_init__", tqdm.std.tqdm.__init__)
    if on:
        tqdm.std.tqdm.__init__ = init
        return
    os.environ["TQDM_DISABLE"] = "1"

    def silent_init(self, *args, **kwargs):
        kwargs["disable"] = True  # even where a caller passes disable=False: bars belong on a terminal
        init(self, *args, **kwargs)

    silent_init.__wrapped_init__ = init
    tqdm.std.tqdm.__init__ = silent_init


def quiet(run: Path, *, progress: bool = False) -> None:
    """No library logging or foreign warnings in the page, kdlib's warnings as notes; tqdm bars only if `progress`."""
    os.environ["HF_DATASETS_DISABLE_PROGRESS_BARS"] = "1"
    progress_bars(progress)
    warnings.resetwarnings()
    warnings.simplefilter("default")
    warnings.showwarning = _route_warning(run)
    for name in ("transformers", "datasets", "torch", "matplotlib", "urllib3", "huggingface_hub"):
        logging.getLogger(name).setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import datasets
        import transformers
    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    shell = _ipython()
    if shell is not None and _flush_notes not in shell.events.callbacks["post_run_cell"]:
        shell.events.register("post_run_cell", _flush_notes)


def _ipython():
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    return get_ipython()


# --------------------------------------------------------------------------- what a page shows


def say(text: str) -> None:
    """Show `text` (Markdown, e.g. a sentence whose numbers come from the data) as the cell's output."""
    from IPython.display import Markdown, display

    display(Markdown(text))


def note(text: str, *, title: str = "Note", kind: str = "note") -> None:
    """Show a MyST admonition (note, warning, tip, ...) as the cell's output."""
    say(f":::{{admonition}} {title}\n:class: {kind}\n{text}\n:::")


def _show_value(value: Any, run: Path) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}={_show_value(v, run)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        if any(isinstance(v, dict) for v in value):
            return "; ".join(f"({_show_value(v, run)})" for v in value)
        return ", ".join(_show_value(v, run) for v in value) or "(none)"
    if isinstance(value, str) and os.path.isabs(value):
        p = Path(value)
        if p.resolve() == run:
            return "the run folder"
        return relative_paths(value, run)
    return "None" if value is None else str(value)


def parameters_table(params: dict[str, Any], run: Path) -> pd.DataFrame:
    """The step's parameters as a reader needs them: one row each, paths relative to the run folder."""
    rows = {k: _show_value(v, run) for k, v in params.items() if k not in ("profile",)}
    return pd.DataFrame({"value": rows}).rename_axis("parameter")


# --------------------------------------------------------------------------- setup


class SetupStop(RuntimeError):
    """A notebook cannot go on; IPython shows only its one-line message, no traceback."""

    def _render_traceback_(self) -> list[str]:
        return [f"{type(self).__name__}: {self}"]


@dataclass
class Setup:
    """What :func:`setup` resolved: the run folder, the profile, the parameters, where it runs."""

    notebook: str
    run: Path
    profile: str
    params: dict[str, Any] = field(default_factory=dict)
    colab: bool = False
    colab_defaults: bool = False
    from_profile: list[str] = field(default_factory=list)  # parameters the colab profile set
    from_user: list[str] = field(default_factory=list)  # parameters the reader (or papermill) set
    progress: bool = False  # live progress bars (a person runs it), not a page of the book


def notebook_parameters(namespace: MutableMapping[str, Any]) -> dict[str, Any]:
    """The parameters in a notebook's namespace right after its parameters cell: its plain values."""
    return {
        k: v
        for k, v in namespace.items()
        if not k.startswith("_") and k not in _IPYTHON_NAMES and not callable(v) and not isinstance(v, types.ModuleType)
    }


def resolve(notebook: str, params: dict[str, Any], injected: set[str] | None) -> tuple[dict, list[str], list[str]]:
    """On Colab without a profile: (params with the colab profile's values where the reader kept the
    notebook's default, the names taken from the profile, the names the reader set)."""
    defaults = declared_defaults(notebook)
    mine = user_set(params, defaults or {}, injected or set())
    profile = {k: v for k, v in colab_parameters(notebook, set(params)).items() if k not in mine}
    return {**params, **profile}, sorted(profile), sorted(mine)


def require_gpu(ctx: Setup) -> None:
    """Stop a training notebook of the colab profile on a Colab runtime without CUDA (unless KDLIB_ALLOW_CPU=1)."""
    import torch

    if not (ctx.colab and ctx.profile == "colab" and "device" in ctx.params) or torch.cuda.is_available():
        return
    if os.environ.get(ALLOW_CPU_ENV, "") not in ("", "0", "false", "False"):
        return
    raise SetupStop(NO_GPU)


def setup(notebook: str, namespace: MutableMapping[str, Any], *, show: bool = True) -> Setup:
    """Prepare a notebook (see the module docstring); returns the resolved run folder and parameters.

    notebook:  the notebook's stem ("02-distill-single"), to find its colab-profile parameters.
    namespace: the notebook's ``globals()``; parameters replaced by the colab defaults are written back.
    """
    params = notebook_parameters(namespace)
    if "run_dir" not in params:
        raise ValueError(f"notebook {notebook}: its parameters cell declares no run_dir")
    colab, injected = on_colab(), injected_names(namespace)
    use_colab = colab and params.get("profile", NOTEBOOK_DEFAULT_PROFILE) == NOTEBOOK_DEFAULT_PROFILE
    from_profile: list[str] = []
    from_user: list[str] = []
    if use_colab:
        params, from_profile, from_user = resolve(notebook, params, injected)
        namespace.update(params)
    pages = injected is not None or os.environ.get(PAGES_ENV) == "1"
    run = Path(params["run_dir"]).resolve()
    ctx = Setup(notebook, run, str(params.get("profile")), params, colab, use_colab, from_profile, from_user, not pages)
    require_gpu(ctx)
    ensure_drive(run)
    quiet(run, progress=ctx.progress)
    import transformers

    transformers.set_seed(int(params.get("seed", 0)))
    pd.set_option("display.precision", 2)
    from kdlib.analysis import (
        reporting,  # after quiet(): it imports tqdm, which warns at import in a kernel without ipywidgets
    )

    reporting.style()
    if show:
        _show_setup(ctx)
    return ctx


def _names(names: list[str]) -> str:
    return ", ".join(f"`{n}`" for n in names) or "none"


def _show_setup(ctx: Setup) -> None:
    if ctx.colab_defaults:
        mine = [n for n in ctx.from_user if n != "profile"]
        note(
            f"Opened on Colab without a profile: the run folder is `{ctx.params['run_dir']}`. "
            f"From the `colab` profile: {_names([n for n in ctx.from_profile if n != 'profile'])}. "
            f"Yours (set in the parameters cell, kept): {_names(mine)}.",
            title="Colab",
        )
    table = parameters_table(ctx.params, ctx.run)
    say(
        f"Profile **{ctx.profile}**. The parameters of this step (paths relative to the run folder):\n\n"
        + table.to_markdown()
    )

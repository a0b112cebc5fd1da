"""The one setup call of every notebook, and what a notebook needs on Colab.

Each notebook of the pipeline starts with a ``parameters`` cell (papermill overrides it from a profile),
a Colab install cell, then::

    from kdlib.book.notebook import setup
    run = setup("02-distill-single", globals()).run

:func:`setup` does, in order:

1. **Parameters.** The notebook's parameters are the plain values of its namespace at that point (the
   parameters cell ran, nothing else did). On Colab, a notebook opened from its launch button still has
   its own defaults (``profile == "default"``, nothing injected); setup then takes the ``colab``
   profile's values for the parameters the notebook declares (the same rule as the runner's: common
   params to every notebook that declares them, then the notebook's own), and the Drive run folder
   :data:`COLAB_RUN_DIR`. The values are written back into the namespace.
2. **Drive.** On Colab, a run folder under ``/content/drive`` needs Drive mounted; setup mounts it
   (:func:`ensure_drive`) or stops with one line saying what to do, before anything is written.
3. **Quiet pages.** Progress bars are switched off in the kernel (tqdm, datasets, transformers; the
   terminal keeps the runner's own bar), library logging is cut to errors, and warnings are routed:
   those raised by kdlib itself (the DI data source, a rebuilt data file, ...) matter to the reader and
   become a short admonition under the cell that raised them (paths relative to the run or data folder);
   every other warning is dropped from the page.
4. **Seeds and display.** ``transformers.set_seed(seed)`` (python, numpy, torch), pandas display
   options, the book's figure style (:func:`kdlib.analysis.reporting.style`).
5. **The parameters a reader needs**: a small table, paths relative to the run folder (the injected
   papermill cell itself is removed from the pages by the book build).

The Colab install cell before the setup cell comes from :func:`kdlib.colab.install_cell_source`.
"""

from __future__ import annotations

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


def quiet(run: Path) -> None:
    """No progress bars, library logging or foreign warnings in the page; kdlib's warnings as notes."""
    os.environ["TQDM_DISABLE"] = "1"
    os.environ["HF_DATASETS_DISABLE_PROGRESS_BARS"] = "1"
    import tqdm.std

    init = getattr(tqdm.std.tqdm.__init__, "__wrapped_init__", tqdm.std.tqdm.__init__)

    def silent_init(self, *args, **kwargs):
        kwargs["disable"] = True  # even where a caller passes disable=False: bars belong on a terminal
        init(self, *args, **kwargs)

    silent_init.__wrapped_init__ = init
    tqdm.std.tqdm.__init__ = silent_init
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


@dataclass
class Setup:
    """What :func:`setup` resolved: the run folder, the profile, the parameters, where it runs."""

    notebook: str
    run: Path
    profile: str
    params: dict[str, Any] = field(default_factory=dict)
    colab: bool = False
    colab_defaults: bool = False


def notebook_parameters(namespace: MutableMapping[str, Any]) -> dict[str, Any]:
    """The parameters in a notebook's namespace right after its parameters cell: its plain values."""
    return {
        k: v
        for k, v in namespace.items()
        if not k.startswith("_") and k not in _IPYTHON_NAMES and not callable(v) and not isinstance(v, types.ModuleType)
    }


def setup(notebook: str, namespace: MutableMapping[str, Any], *, show: bool = True) -> Setup:
    """Prepare a notebook (see the module docstring); returns the resolved run folder and parameters.

    notebook:  the notebook's stem ("02-distill-single"), to find its colab-profile parameters.
    namespace: the notebook's ``globals()``; parameters replaced by the colab defaults are written back.
    """
    params = notebook_parameters(namespace)
    if "run_dir" not in params:
        raise ValueError(f"notebook {notebook}: its parameters cell declares no run_dir")
    colab = on_colab()
    use_colab = colab and params.get("profile", NOTEBOOK_DEFAULT_PROFILE) == NOTEBOOK_DEFAULT_PROFILE
    if use_colab:
        params.update(colab_parameters(notebook, set(params)))
        namespace.update(params)
    run = Path(params["run_dir"]).resolve()
    ensure_drive(run)
    quiet(run)
    import transformers

    transformers.set_seed(int(params.get("seed", 0)))
    pd.set_option("display.precision", 2)
    from kdlib.analysis import (
        reporting,  # after quiet(): it imports tqdm, which warns at import in a kernel without ipywidgets
    )

    reporting.style()
    ctx = Setup(
        notebook=notebook,
        run=run,
        profile=str(params.get("profile")),
        params=params,
        colab=colab,
        colab_defaults=use_colab,
    )
    if show:
        _show_setup(ctx)
    return ctx


def _show_setup(ctx: Setup) -> None:
    if ctx.colab_defaults:
        note(
            f"Opened on Colab without a profile: this notebook uses the `colab` profile's settings and the "
            f"run folder `{ctx.params['run_dir']}` on your Drive.",
            title="Colab",
        )
    table = parameters_table(ctx.params, ctx.run)
    say(
        f"Profile **{ctx.profile}**. The parameters of this step (paths relative to the run folder):\n\n"
        + table.to_markdown()
    )

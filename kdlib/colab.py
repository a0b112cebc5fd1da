"""Colab: detect the runtime, mount Drive for a run folder on it, and the one pip command that installs kdlib.

Used by :mod:`kdlib.book.notebook` (a notebook's setup mounts Drive) and :mod:`kdlib.book.runner` (the command line
refuses a run folder on an unmounted Drive before creating anything, since a later ``drive.mount`` fails
on a non-empty mountpoint). The Colab install cell of every notebook cannot import kdlib (it installs
it), so its text is generated here (:func:`install_cell_source`) and a test checks each notebook against
it. It installs ``kdlib`` alone (no ``[book]`` extra: papermill, ipykernel and jupyter-book would upgrade
packages of Colab's live runtime) with ``%pip`` (its output, and Colab's restart prompt, show in the cell).

Where the code lives has one source each: the repository is :data:`REPOSITORY_URL` (the book's
``_config.yml`` repeats it for its buttons; a test checks they agree) and the version is ``kdlib.__version__``;
the release tag ``v<version>`` (:func:`release_ref`) is what the install cell pins, what the launch buttons
open (``repository.branch`` of ``_config.yml``) and what the Reproduce page clones.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import yaml

from kdlib import __version__

REPOSITORY_URL = "https://github.com/kdlib-ro/romanian-distillation-book"  # where the code and the book live
DISTRIBUTION = "kdlib-romanian-distil"  # pyproject's [project] name (the import name stays kdlib)
CONFIG_FILE = Path(__file__).resolve().parent.parent / "_config.yml"  # the book's config (in a checkout only)
DRIVE_ROOT = Path("/content/drive")
INSTALL_TAG = "kdlib:colab-install"  # first line of every install cell


def on_colab() -> bool:
    """True inside a Colab runtime (the ``google.colab`` package is importable)."""
    if "google.colab" in sys.modules:
        return True
    try:
        return importlib.util.find_spec("google.colab") is not None
    except (ImportError, ValueError):
        return False


def repository_url() -> str:
    """The repository of the code and the book: :data:`REPOSITORY_URL`."""
    return REPOSITORY_URL


def book_config(config: str | os.PathLike = CONFIG_FILE) -> dict:
    """The book's ``_config.yml`` (a checkout of the repository has it; an installed kdlib does not)."""
    path = Path(config)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: run from a checkout of the repository")
    return yaml.safe_load(path.read_text(encoding="utf-8")) or {}


def release_ref() -> str:
    """The git tag the book of this version is built from, and the notebooks install on Colab: v<version>."""
    return f"v{__version__}"


def pip_requirement(ref: str | None = None) -> str:
    """``<distribution> @ git+<repository>@<ref>``: kdlib and its runtime dependencies only (no [book] extra)."""
    return f"{DISTRIBUTION} @ git+{REPOSITORY_URL}@{ref or release_ref()}"


def install_command(ref: str | None = None) -> str:
    """The ``%pip`` line of the Colab install cell (Colab keeps its own torch, which satisfies kdlib's bound)."""
    return f'%pip install -q "{pip_requirement(ref)}"'


def install_cell_source(ref: str | None = None) -> str:
    """The text of every notebook's install cell: runs :func:`install_command` on Colab only."""
    return (
        f"# {INSTALL_TAG}: on Colab only, install kdlib at the release this book was built from\n"
        "import sys\n\n"
        'if "google.colab" in sys.modules:\n'
        f"    {install_command(ref)}"
    )


def ensure_drive(run_dir: str | os.PathLike, *, mount: bool = True, drive_root: Path | None = None) -> None:
    """On Colab, make sure Google Drive is mounted when `run_dir` lies under `drive_root`.

    Mounts it when `mount` (a notebook: Colab asks for permission); otherwise, or when the mountpoint is
    already a plain non-empty folder (a mount would fail on it), raises RuntimeError with one line saying
    what to do. Does nothing off Colab or for a run folder elsewhere.
    """
    drive_root = drive_root or DRIVE_ROOT
    run = Path(os.path.abspath(run_dir))
    if not on_colab() or not run.is_relative_to(drive_root) or os.path.ismount(drive_root):
        return
    if drive_root.is_dir() and any(drive_root.iterdir()):
        raise RuntimeError(
            f"{drive_root} is a local folder, not your mounted Drive (something wrote there before "
            f"the mount): move it away (`!mv {drive_root} /content/drive-local`), then run this again"
        )
    if not mount:
        raise RuntimeError(
            f"run folder {run} is on Google Drive, which is not mounted: run "
            f"`from google.colab import drive; drive.mount('{drive_root}')` in a notebook cell first"
        )
    from google.colab import drive  # only exists on Colab

    drive.mount(str(drive_root))

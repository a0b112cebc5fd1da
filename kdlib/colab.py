"""Colab: detect the runtime, mount Drive for a run folder on it, and the one pip command that installs kdlib.

Used by :mod:`kdlib.book.notebook` (a notebook's setup mounts Drive) and :mod:`kdlib.book.runner` (the command line
refuses a run folder on an unmounted Drive before creating anything, since a later ``drive.mount`` fails
on a non-empty mountpoint). The Colab install cell of every notebook cannot import kdlib (it installs
it), so its text is generated here (:func:`install_cell_source`) and a test checks each notebook against
it. It installs ``kdlib`` alone (no ``[book]`` extra: papermill, ipykernel and jupyter-book would upgrade
packages of Colab's live runtime), pinned to the release tag ``v<version>`` the book is built from, from
the repository named in the book's ``_config.yml`` (``repository.url``), the one place the URL is kept.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

import yaml

from kdlib import __version__

CONFIG_FILE = Path(__file__).resolve().parent.parent / "_config.yml"  # the book's config: repository.url
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


def repository_url(config: str | os.PathLike = CONFIG_FILE) -> str:
    """The repository URL of the book (``repository.url`` in _config.yml), the one place it is kept."""
    path = Path(config)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} does not exist: the repository URL is read from the book's _config.yml "
            "(run from a checkout of the repository)"
        )
    url = ((yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("repository") or {}).get("url")
    if not url:
        raise ValueError(f"{path}: no repository.url")
    return str(url).rstrip("/")


def release_ref() -> str:
    """The git tag the book of this version is built from, and the notebooks install on Colab: v<version>."""
    return f"v{__version__}"


def pip_requirement(ref: str | None = None) -> str:
    """``kdlib @ git+<repository>@<ref>``: kdlib and its runtime dependencies only (no [book] extra)."""
    return f"kdlib @ git+{repository_url()}@{ref or release_ref()}"


def install_command(ref: str | None = None) -> list[str]:
    """The pip command of the Colab install cell (Colab keeps its own torch: kdlib does not list it)."""
    return [sys.executable, "-m", "pip", "install", "-q", pip_requirement(ref)]


def install_cell_source(ref: str | None = None) -> str:
    """The text of every notebook's install cell: runs :func:`install_command` on Colab only."""
    cmd = ", ".join(["sys.executable", '"-m"', '"pip"', '"install"', '"-q"', json.dumps(pip_requirement(ref))])
    return (
        f"# {INSTALL_TAG}: on Colab only, install kdlib at the release this book was built from\n"
        "import subprocess\nimport sys\n\n"
        'if "google.colab" in sys.modules:\n'
        f"    subprocess.run([{cmd}], check=True)"
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

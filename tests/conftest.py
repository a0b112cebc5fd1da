"""Shared test setup: the offline data mirror and small, fast torch settings."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("KDLIB_DATA_DIR", str((ROOT.parent / "shared" / "data").resolve()))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    path = Path(os.environ["KDLIB_DATA_DIR"])
    if not path.is_dir():
        pytest.fail(f"KDLIB_DATA_DIR={path} is not a folder; point it at the offline data mirror")
    return path

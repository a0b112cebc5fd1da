"""kdlib.io: atomic writes leave either the old file or the new one, never a partial one or a temp file."""

from __future__ import annotations

import json

import pytest

from kdlib.io import atomic_path, write_json_atomic


def test_write_json_atomic_creates_folder_and_keeps_unicode(tmp_path):
    path = write_json_atomic(tmp_path / "a" / "b.json", {"text": "știință", "path": tmp_path})
    assert json.loads(path.read_text(encoding="utf-8")) == {"text": "știință", "path": str(tmp_path)}
    assert "știință" in path.read_text(encoding="utf-8")
    assert [p.name for p in path.parent.iterdir()] == ["b.json"]


def test_failed_write_keeps_the_old_file_and_no_temp(tmp_path):
    path = write_json_atomic(tmp_path / "r.json", {"v": 1})
    with pytest.raises(TypeError):
        write_json_atomic(path, {"v": object.__new__(type("NoStr", (), {"__str__": None}))})
    assert json.loads(path.read_text()) == {"v": 1}
    with pytest.raises(RuntimeError), atomic_path(path) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert json.loads(path.read_text()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_written_files_get_an_ordinary_mode(tmp_path):
    """mkstemp creates 0600; the renamed result must be readable like any file the process writes (umask applies)."""
    import os

    from kdlib.io import write_json_atomic

    umask = os.umask(0o022)
    try:
        path = write_json_atomic(tmp_path / "x.json", {"a": 1})
    finally:
        os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


def test_save_npz_is_byte_reproducible_and_loads(tmp_path):
    """The same arrays written twice, a moment apart, give the same bytes; numpy reads them back exactly."""
    import time

    import numpy as np

    from kdlib.io import save_npz

    arrays = {"ids": np.array(["0:1", "0:2"]), "probs": np.arange(6, dtype=np.float32).reshape(2, 3)}
    save_npz(tmp_path / "a.npz", arrays)
    time.sleep(2.1)  # a zip timestamp has 2-second resolution
    save_npz(tmp_path / "b.npz", arrays)
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()
    loaded = np.load(tmp_path / "a.npz")
    assert sorted(loaded.files) == ["ids", "probs"] and np.array_equal(loaded["probs"], arrays["probs"])

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

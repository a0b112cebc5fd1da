"""Atomic JSON and file writes: a reader never sees a half-written file, a crash leaves the previous version intact.

Everything is written to a temporary file in the destination's folder and moved into place with
`os.replace` (atomic on POSIX and Windows when source and target are on the same file system).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

_UMASK = os.umask(0)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path next to `path`; on success it replaces `path`, on error it is removed.

    The parent folder is created. `suffix` lets writers that pick a format by extension (savefig) see one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp's 0600 would outlive the rename: give the file an ordinary file's mode
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: str | Path, obj: Any) -> Path:
    """Write `obj` as indented UTF-8 JSON (non-JSON values as str) to `path`, atomically; returns `path`."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
    return Path(path)


def write_json(path: str | os.PathLike, data: Any) -> None:
    """`write_json_atomic` returning nothing, so that a notebook cell ending with it shows no machine path."""
    write_json_atomic(path, data)


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file a previous step wrote, with an error naming the step output that is missing."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: run the earlier pipeline step that writes it")
    return json.loads(path.read_text(encoding="utf-8"))


def save_npz(path: str | os.PathLike, arrays: dict[str, Any], *, compress: bool = True) -> None:
    """`numpy.savez_compressed` (or `savez`), atomically and byte-for-byte reproducible.

    numpy stamps each member with the current time, so two runs that compute the same arrays would write
    different bytes; here every member carries one fixed date. `numpy.load` reads the file as usual.
    """
    method = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", compression=method) as archive:
        for name, value in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = method
            with archive.open(info, "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asanyarray(value), allow_pickle=False)

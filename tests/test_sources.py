"""kdlib.data.sources: the registry against MANIFEST.tsv, local verification, and downloads from a local server."""

from __future__ import annotations

import csv
import functools
import http.server
import shutil
import subprocess
import threading
import warnings
from pathlib import Path

import pytest

from kdlib.data import load as data
from kdlib.data import sources

STS_DEV = "ro_sts/dataset/text-similarity/RO-STS.dev.tsv"
STS = [f"ro_sts/dataset/text-similarity/RO-STS.{s}.tsv" for s in ("train", "dev", "test")]


def test_git_blob_sha1_matches_git(tmp_path):
    f = tmp_path / "x.txt"
    f.write_bytes("Știință\n".encode() * 100)
    expected = subprocess.run(["git", "hash-object", str(f)], capture_output=True, text=True, check=True).stdout.strip()
    assert sources.git_blob_sha1(f) == expected


def test_registry_agrees_with_manifest(data_dir):
    with open(data_dir / "MANIFEST.tsv", encoding="utf-8") as fh:
        manifest = {row["path"]: row for row in csv.DictReader(fh, delimiter="\t")}
    checked = 0
    for rel, spec in sources.REGISTRY.items():
        row = manifest.get(rel)
        if row is None:  # MOROCO samples and RONEC v2 train: absent from the mirror
            assert rel.endswith(("samples.txt", "ronec/data/train.json")), rel
            continue
        checked += 1
        if spec.rebuilt_sha256:
            assert row["git_blob_sha1"] == "-" and row["sha256"] == spec.rebuilt_sha256
            continue
        assert (row["commit"], row["source_path"], row["git_blob_sha1"]) == (spec.commit, spec.path, spec.blob_sha1)
        assert row["source_repo"].split(" ")[0] == spec.repo
        assert row["sha256"] == spec.sha256
    assert checked == len(sources.REGISTRY) - 4


def test_local_files_verified(data_dir):
    ok = sources.file_status(STS_DEV, data_dir)
    assert ok["origin"] == "local" and ok["checksum"] == "blob ok"
    rebuilt = sources.file_status("ud_romanian_rrt/ro_rrt-ud-train.conllu", data_dir)
    assert rebuilt["checksum"].startswith("rebuilt copy")
    # LaRoSeDa's train was rebuilt byte-identically: its blob matches the published one
    assert sources.file_status("laroseda/data_splitted/laroseda_train.json", data_dir)["checksum"] == "blob ok"
    with pytest.warns(UserWarning, match=r"ro_rrt-ud-train\.conllu: rebuilt copy.*racai-ai/Rodna"):
        warnings.simplefilter("always")
        sources.fetch("ud_romanian_rrt/ro_rrt-ud-train.conllu", data_dir)


def test_local_mismatch_warns_with_name(data_dir, tmp_path):
    target = tmp_path / STS_DEV
    target.parent.mkdir(parents=True)
    target.write_bytes((data_dir / STS_DEV).read_bytes() + b"\n")
    with pytest.warns(UserWarning, match=r"RO-STS\.dev\.tsv: CHECKSUM MISMATCH"):
        assert sources.fetch(STS_DEV, tmp_path) == target


def test_unknown_file():
    with pytest.raises(KeyError, match="not a registered data file"):
        sources.fetch("nope.txt", None)


# --- downloads from a local HTTP server ----------------------------------------------------------------------


@pytest.fixture
def server(tmp_path, monkeypatch):
    """Serves tmp_path/www (layout <repo>/<commit>/<path>) on 127.0.0.1; base URL and cache point there."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(root))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("KDLIB_DATA_BASE_URL", f"http://127.0.0.1:{httpd.server_address[1]}")
    monkeypatch.setenv("KDLIB_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("KDLIB_DOWNLOAD", raising=False)
    try:
        yield root
    finally:
        httpd.shutdown()
        httpd.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest output clean
        pass


def publish(www: Path, data_dir: Path, rel: str, payload: bytes | None = None) -> Path:
    target = www / sources.mirror_layout_path(sources.REGISTRY[rel])
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes((data_dir / rel).read_bytes() if payload is None else payload)
    return target


def test_download_good_file(server, data_dir, tmp_path):
    publish(server, data_dir, STS_DEV)
    empty = tmp_path / "empty"
    empty.mkdir()
    path = sources.fetch(STS_DEV, empty)
    assert path == tmp_path / "cache" / STS_DEV
    assert path.read_bytes() == (data_dir / STS_DEV).read_bytes()
    assert sources.file_status(STS_DEV, empty)["origin"] == "cache"
    assert list(path.parent.glob("*.part")) == []
    # second call uses the cache (the server no longer has the file)
    shutil.rmtree(server / "dumitrescustefan")
    assert sources.fetch(STS_DEV, empty) == path


def test_download_tampered_file_refused(server, data_dir, tmp_path):
    good = (data_dir / STS_DEV).read_bytes()
    publish(server, data_dir, STS_DEV, good.replace(b"5.0", b"4.0", 1))
    with pytest.raises(sources.ChecksumError, match=r"RO-STS\.dev\.tsv .*git blob id .*download was deleted"):
        sources.fetch(STS_DEV, None)
    cache_dir = tmp_path / "cache" / Path(STS_DEV).parent
    assert not (tmp_path / "cache" / STS_DEV).exists()
    assert list(cache_dir.glob("*")) == []  # no partial or temporary file left behind


def test_download_not_found(server, tmp_path):
    with pytest.raises(sources.DataFileMissingError, match=r"RO-STS\.dev\.tsv is missing.*404.*KDLIB_DATA_DIR"):
        sources.fetch(STS_DEV, tmp_path)


def test_download_disabled(server, tmp_path, monkeypatch, data_dir):
    publish(server, data_dir, STS_DEV)
    monkeypatch.setenv("KDLIB_DOWNLOAD", "0")
    with pytest.raises(sources.DataFileMissingError, match="downloads are disabled"):
        sources.fetch(STS_DEV, tmp_path)
    assert sources.fetch(STS_DEV, tmp_path, download=True).is_file()


def test_load_task_through_download(server, data_dir, tmp_path):
    for rel in STS:
        publish(server, data_dir, rel)
    empty = tmp_path / "empty"
    empty.mkdir()
    ds = data.load_task("sts", empty)
    assert {s: len(ds[s]) for s in data.SPLITS} == {"train": 5749, "validation": 1500, "test": 1379}
    used, _ = data.task_sources("sts", empty)
    assert used["validation"] == [STS_DEV]
    assert all(sources.file_status(rel, empty)["origin"] == "cache" for rel in STS)

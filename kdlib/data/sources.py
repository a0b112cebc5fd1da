"""Where each data file comes from, and how it is found, downloaded and verified.

Every file a task reads has a row in ``REGISTRY``: its path in the data folder (laid out like the
datasets' public repositories, exactly as the offline mirror ``../shared/data`` and its MANIFEST.tsv),
the source repository, the pinned commit, the path in that repository and the git blob SHA-1 that the
source tree records for it. ``fetch`` looks for a file in this order:

1. ``data_dir/<relpath>`` (``KDLIB_DATA_DIR``): used as is; if its blob id differs from the published
   one a warning names the file (the two train files the mirror rebuilt are recognised by their
   MANIFEST sha256 and reported as rebuilt copies);
2. ``cache_dir/<relpath>`` (``KDLIB_CACHE_DIR``, default ``~/.cache/kdlib/data``): an earlier download,
   re-verified;
3. a download of ``{base}/{repo}/{commit}/{path}``, ``base`` = ``KDLIB_DATA_BASE_URL`` (default
   ``https://raw.githubusercontent.com``), written to a temporary name, verified against the blob id and
   only then renamed into the cache; a mismatch deletes the download and raises ``ChecksumError``.
   ``KDLIB_DOWNLOAD=0`` (or ``download=False``) forbids downloads.

A local test server only has to serve a folder laid out as ``<repo>/<commit>/<path>``
(see ``mirror_layout_path``).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.error
import urllib.request
import warnings
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

__all__ = [
    "REGISTRY",
    "SourceFile",
    "ChecksumError",
    "DataFileMissingError",
    "fetch",
    "locate",
    "file_status",
    "git_blob_sha1",
    "sha256_file",
    "default_cache_dir",
    "base_url",
    "downloads_allowed",
    "url_for",
    "mirror_layout_path",
]

DEFAULT_BASE_URL = "https://raw.githubusercontent.com"

# dataset folder in the mirror -> (repository, pinned commit); relpath = folder + "/" + path in repo
_REPOS = {
    "ud_romanian_rrt": ("UniversalDependencies/UD_Romanian-RRT", "cc00bf852bc3c19ac345457eef8b3e5665392a72"),
    "ronec": ("dumitrescustefan/ronec", "5ca6a898d4fa42f27fd49501d4a3265e61e9340c"),
    "laroseda": ("ancatache/LaRoSeDa", "162f4c8f4a10000f7a3b65436512212b3bb629fb"),
    "moroco": ("butnaruandrei/MOROCO", "eb9ee0292d5064ce3bc6c904dcdd4708d3dbe1d3"),
    "ro_sts": ("dumitrescustefan/RO-STS", "98b5804b454892c70815777fe03e874ea7f20f1b"),
}
# The VarDial 2019 zip was deleted from MOROCO's tree later; it is fetched from the commit that held it.
_VARDIAL_COMMIT = "dc23cf0f26c17da07ba3058538d8a430041c0a58"


class ChecksumError(ValueError):
    """A downloaded file's git blob id differs from the published one (the download was deleted)."""


class DataFileMissingError(FileNotFoundError):
    """A data file is neither in the data folder nor in the cache, and could not be downloaded."""


@dataclass(frozen=True)
class SourceFile:
    """One published file: where it lives in the data folder and in its source repository."""

    relpath: str  # path inside the data folder (mirror layout)
    repo: str  # owner/name on GitHub
    commit: str  # pinned commit
    path: str  # path inside the repository
    blob_sha1: str  # git blob SHA-1 recorded by the source tree at `commit`
    sha256: str | None = None  # sha256 of the published bytes, where known (MANIFEST.tsv)
    rebuilt_sha256: str | None = None  # sha256 of the mirror's rebuilt copy (not the published bytes)
    note: str = ""


def _row(
    relpath: str,
    blob: str,
    sha256: str | None = None,
    *,
    rebuilt_sha256: str | None = None,
    commit: str | None = None,
    note: str = "",
) -> SourceFile:
    folder, path = relpath.split("/", 1)
    repo, pinned = _REPOS[folder]
    return SourceFile(relpath, repo, commit or pinned, path, blob, sha256, rebuilt_sha256, note)


_RRT = "ud_romanian_rrt/"
_RONEC1 = "ronec/ronec_v1/ronec/conllup/raw/"
_MOROCO = "moroco/MOROCO/preprocessed/"
_VARDIAL = "moroco/MOROCO/Var-Dial-MRC-2019-eval/"
_STS = "ro_sts/dataset/text-similarity/"

_ROWS = [
    _row(
        _RRT + "ro_rrt-ud-train.conllu",
        "53104d80f613f3df88b3b02dd72286576ce25228",
        rebuilt_sha256="c03d30b1a62cef7dc295cea42e54f802891a9f2ef30e1aad430dc7a79616e15f",
        note="the offline mirror's copy was rebuilt from racai-ai/Rodna (UPOS inferred; same sentences)",
    ),
    _row(
        _RRT + "ro_rrt-ud-dev.conllu",
        "da3c3c78d07a4e05851862516d3baa57a8664af8",
        "6e940a2dfd3c1ded9859f2fa5c9b1edb687cd0b4b9d99c6496f7cc729b8742d9",
    ),
    _row(
        _RRT + "ro_rrt-ud-test.conllu",
        "ae5470899ccb54d12063c59fa8dff636d658e8ae",
        "9084ce9ae5f43d25ff39e66f42f3d2e41e85030891beccb1eb70fed444fbe3f4",
    ),
    _row(
        _RONEC1 + "train.conllu",
        "27f05e49f33c8e7d69a357bad89955feeff89059",
        rebuilt_sha256="1613934ea67815371c881e7ab5640e600c2ab99c2e669b5611d6686ff8a58210",
        note="the offline mirror's copy was rebuilt from ronec_iob.zip (same sentences, corpus order)",
    ),
    _row(
        _RONEC1 + "dev.conllu",
        "9847f37fdc8b88de4cdcfd11b6138d33489afe94",
        "b99f1b7d9fef24635ee66b925e039663ef7fbe5c5a7851ffdb3efa0d9395ad41",
    ),
    _row(
        _RONEC1 + "test.conllu",
        "5e45a6f4210fae598d89cec30ca597bba3cad425",
        "7b1f71cfdbd5fc71e44051e1028369f5245afbfd7b17730b31b785bbff3f9c56",
    ),
    _row(
        "ronec/data/train.json",
        "2fe4ca48da4a6486373ce00ac739481fb7b2033a",
        note="RONEC v2 train: missing from the offline mirror",
    ),
    _row(
        "ronec/data/valid.json",
        "441ea060579b2d940ef874dd5faecba370baa75d",
        "0c3e08c8fb7058c96d91c30cc3fe12b684b682c1c481e84a9d05aac14b59fe04",
    ),
    _row(
        "ronec/data/test.json",
        "8bd2fb3da216301e6c76e8fcd71cd1f7cd96455c",
        "7532619fd6680adb4c3926f5e185f3c1705caeb2d8466e9fe2a4428e81660704",
    ),
    _row(
        "laroseda/data_splitted/laroseda_train.json",
        "ffa17f417ee91ad79ab3bde57b9d745e09a20310",
        "808ae4c9c17d6d75801c48e838d8a700fd950ec9654ab60c386e38193b8f1b8e",
        note="rebuilt in the offline mirror, byte-identical to the published file",
    ),
    _row(
        "laroseda/data_splitted/laroseda_test.json",
        "1c0fc57319a28c0eb8b786c80ff08cb620ca8192",
        "6084cabe923da9f71413357eaa84f3ea4523ef5ff0e81e2c3ac3861405e2151a",
    ),
    _row(
        _MOROCO + "train/samples.txt",
        "f1f7e2356c052b452180afe4422ce2afb54d04e5",
        note="MOROCO texts: missing from the offline mirror",
    ),
    _row(
        _MOROCO + "validation/samples.txt",
        "512933eba849b809ed1f8321e51fb31992df1525",
        note="MOROCO texts: missing from the offline mirror",
    ),
    _row(
        _MOROCO + "test/samples.txt",
        "d34d6da1aafd33b3f50956a203c0d276420df5be",
        note="MOROCO texts: missing from the offline mirror",
    ),
    _row(
        _MOROCO + "train/dialect_labels.txt",
        "0534a7c1c37d269568ea60589fb1703ff04ab34a",
        "2371810d45f4c2e535c6ba3705c6e367c9b1eb30835a5689525affb1bfeae905",
    ),
    _row(
        _MOROCO + "validation/dialect_labels.txt",
        "0dfbc8d6f7c947d130a69abbc4d8e083e7bffc90",
        "9ae17a179e4051bc128a71afc11e25557c4515f785e930bc8bebb5fcb745253d",
    ),
    _row(
        _MOROCO + "test/dialect_labels.txt",
        "908498706ca000c89bb747065d1e43067ffdea08",
        "36fe324a1b07a38294ba3f5ff167d81c5a668c7df480bfc102d7f8089c1fed0b",
    ),
    _row(
        _VARDIAL + "TESTSET-MRC-subtasks-1+2+3-VARDIAL2019.zip",
        "83b5ad2eae213c1d05b3c0248b4718ad4992355c",
        "d6b8f5047057ecbe891e7dff4f7cde7d2749d73a69567e7af500e68683232c0a",
        commit=_VARDIAL_COMMIT,
    ),
    _row(
        _VARDIAL + "subtask1/Gold/subtask-1-gold.txt",
        "fc5109e353229e694b032945e43b53ef69745e54",
        "b063a24b696bb91bafbbccfc014d7f9172fb9687239a8959c1f38ede5e47b3fd",
    ),
    _row(
        _STS + "RO-STS.train.tsv",
        "142cde330be4bb6b6d08e7e502b2b99531223acd",
        "5e2f24ad5443ed1199a0079dd0b5de9f1fec8a2bb3b0a70f6e3616c32d6d282f",
    ),
    _row(
        _STS + "RO-STS.dev.tsv",
        "f9b0f41a13b7c0b4f07b44062b1dbe51700dfba5",
        "914f0ca935c71b317179bab9e052867aeaad84cc143b011d5919a00d444553ef",
    ),
    _row(
        _STS + "RO-STS.test.tsv",
        "6fd1968d8e510c724429208a1804b98089195147",
        "fd84bc1f9581e6352f0c797cb46fdf08a39f7b908a6ff1cfe21deb62f8c78e0c",
    ),
]
REGISTRY: dict[str, SourceFile] = {row.relpath: row for row in _ROWS}


# --- checksums ------------------------------------------------------------------------------------------


def git_blob_sha1(path: str | Path) -> str:
    """Git's blob id of a file: sha1(b"blob <size>\\0" + bytes), what a source tree records."""
    return _hash_cached(str(path), "blob", *_stat_key(path))


def sha256_file(path: str | Path) -> str:
    """Plain sha256 of a file's bytes (MANIFEST.tsv's second checksum)."""
    return _hash_cached(str(path), "sha256", *_stat_key(path))


def _stat_key(path: str | Path) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns


@lru_cache(maxsize=256)
def _hash_cached(path: str, kind: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha1(b"blob %d\0" % size) if kind == "blob" else hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# --- configuration (environment) -------------------------------------------------------------------------


def default_cache_dir() -> Path:
    """Download cache: ``$KDLIB_CACHE_DIR`` or ``~/.cache/kdlib/data``."""
    return Path(os.environ.get("KDLIB_CACHE_DIR") or Path.home() / ".cache" / "kdlib" / "data").expanduser()


def base_url() -> str:
    """Where downloads come from: ``$KDLIB_DATA_BASE_URL`` or raw.githubusercontent.com."""
    return (os.environ.get("KDLIB_DATA_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")


def downloads_allowed(download: bool | None = None) -> bool:
    """An explicit argument wins; otherwise ``KDLIB_DOWNLOAD`` (``0``/``false``/``no`` forbid)."""
    if download is not None:
        return bool(download)
    return os.environ.get("KDLIB_DOWNLOAD", "1").strip().lower() not in {"0", "false", "no", "off"}


def mirror_layout_path(spec: SourceFile) -> str:
    """``<repo>/<commit>/<path>``: where a file sits under the base URL (raw.githubusercontent's layout)."""
    return f"{spec.repo}/{spec.commit}/{spec.path}"


def url_for(relpath: str) -> str:
    """Download URL of a registered file at its pinned commit."""
    return f"{base_url()}/{mirror_layout_path(_spec(relpath))}"


def _spec(relpath: str) -> SourceFile:
    try:
        return REGISTRY[relpath]
    except KeyError:
        raise KeyError(f"{relpath!r} is not a registered data file; known files: {', '.join(REGISTRY)}") from None


# --- locating and verifying -----------------------------------------------------------------------------


def _verify_local(spec: SourceFile, path: Path) -> tuple[bool, str]:
    """(matches the published file?, human-readable status)."""
    if git_blob_sha1(path) == spec.blob_sha1:
        return True, "blob ok"
    if spec.rebuilt_sha256 and sha256_file(path) == spec.rebuilt_sha256:
        return False, "rebuilt copy (sha256 matches MANIFEST; bytes differ from the published file)"
    return False, f"CHECKSUM MISMATCH (git blob {git_blob_sha1(path)}, published {spec.blob_sha1})"


def locate(relpath: str, data_dir: str | Path | None) -> tuple[Path | None, str]:
    """Where a file is available without downloading: (path, "local"|"cache") or (None, "missing")."""
    _spec(relpath)
    if data_dir is not None and (Path(data_dir) / relpath).is_file():
        return Path(data_dir) / relpath, "local"
    cached = default_cache_dir() / relpath
    if cached.is_file():
        return cached, "cache"
    return None, "missing"


def file_status(relpath: str, data_dir: str | Path | None) -> dict:
    """Availability and checksum of one file, without downloading (for ``data --check``)."""
    path, origin = locate(relpath, data_dir)
    status = "not available" if path is None else _verify_local(_spec(relpath), path)[1]
    return {"relpath": relpath, "path": str(path) if path else None, "origin": origin, "checksum": status}


def fetch(relpath: str, data_dir: str | Path | None = None, *, download: bool | None = None) -> Path:
    """Path to a verified copy of a registered data file (see the module docstring for the order).

    Raises DataFileMissingError when the file is absent and cannot be downloaded, and ChecksumError when
    a download does not match its published blob id.
    """
    spec = _spec(relpath)
    path, origin = locate(relpath, data_dir)
    if origin == "local":
        ok, status = _verify_local(spec, path)
        if not ok:
            note = f" ({spec.note})" if spec.note and status.startswith("rebuilt") else ""
            warnings.warn(f"{path}: {status}; using it anyway{note}", stacklevel=2)
        return path
    if origin == "cache":
        if git_blob_sha1(path) == spec.blob_sha1:
            return path
        warnings.warn(f"cached {path} does not match its published blob id; downloading it again", stacklevel=2)
        path.unlink()
    where = Path(data_dir) / relpath if data_dir is not None else f"<KDLIB_DATA_DIR>/{relpath}"
    if not downloads_allowed(download):
        raise DataFileMissingError(
            f"data file {relpath} is missing: not at {where} and not in the cache {default_cache_dir()}, and "
            f"downloads are disabled. Provide it either way: put the file at {where} (set KDLIB_DATA_DIR to a "
            f"folder laid out like ../shared/data), or allow the download (KDLIB_DOWNLOAD=1, network access) of "
            f"{url_for(relpath)}"
        )
    return _download(spec, default_cache_dir() / relpath, where)


def _download(spec: SourceFile, target: Path, where: Path | str) -> Path:
    url = url_for(spec.relpath)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=target.name + ".", suffix=".part", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as resp:
            for chunk in iter(lambda: resp.read(1 << 20), b""):
                out.write(chunk)
    except (urllib.error.URLError, OSError) as exc:
        tmp.unlink(missing_ok=True)
        raise DataFileMissingError(
            f"data file {spec.relpath} is missing (not at {where}, not in the cache) and its download from {url} "
            f"failed: {exc}. Provide it either way: put the file at {where} (KDLIB_DATA_DIR), or allow the "
            f"download (network access to {base_url()}, or KDLIB_DATA_BASE_URL pointing at a copy)"
        ) from exc
    got = git_blob_sha1(tmp)
    if got != spec.blob_sha1:
        tmp.unlink(missing_ok=True)
        raise ChecksumError(
            f"downloaded {spec.relpath} from {url} has git blob id {got}, but the published file at "
            f"{spec.repo}@{spec.commit[:12]} has {spec.blob_sha1}; the download was deleted"
        )
    os.replace(tmp, target)
    return target

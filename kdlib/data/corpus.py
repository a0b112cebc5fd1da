"""The unlabeled text that students are distilled on: the task TRAIN splits, or any `datasets` corpus.

``build_corpus`` turns the train split of every selected task into sentence units:

* tagging tasks (RRT for upos/xpos, RONEC v1 for ner): one sentence per example, tokens joined back
  into text by ``detokenize`` (no space before , . ; : ! ? ) etc., clitic hyphens attached); each train
  file is one document (the files keep corpus order but the rebuilt copies carry no document ids);
* LaRoSeDa (sapn/sar): a review is a document: its title, then its content split into sentences;
* DI (MOROCO or VarDial, whichever ``load_task('di')`` uses): a text is a document, split into sentences;
* RO-STS: each sentence of each pair, split into sentences, is its own document.

A declared task (kdlib.data.tasks) is its own source: tagging sentences as one document, each text of a
classification or regression task as a document (each text of a pair on its own).

Validation and test texts never enter: units come from train splits only, and any unit that equals a
validation/test text or one of its sentences (of any active task: the seven, or the profile's declared
tasks) is dropped as well, since the
datasets share common short sentences ("Recomand!"). Units are de-duplicated (first occurrence kept).

Modes (after RobBERTje, Delobelle et al. 2022): ``ordered`` (task order, then file order), ``shuffled``
(seeded shuffle of the sentences), ``merged`` (walking each document in order, a sentence is joined to
the previous unit with probability ``merge_p``; the merged lines are then shuffled with the seed).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import sys
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Callable, Iterable

import datasets
import numpy as np
from datasets import Dataset, Features, Value
from datasets.arrow_writer import ArrowWriter
from tqdm.auto import tqdm

from kdlib.data import load as data
from kdlib.data import tasks as tasks_mod
from kdlib.data.text import normalizer, split_sentences
from kdlib.io import save_npz

__all__ = [
    "MODES",
    "build_corpus",
    "corpus_stats",
    "load_text_corpus",
    "detokenize",
    "heldout_texts",
    "write_corpus",
    "cli",
]

MODES = ("ordered", "shuffled", "merged")
_NO_SPACE_BEFORE = {",", ".", ";", ":", "!", "?", ")", "]", "}", "%", "...", "…", "”", "»", "'"}
_NO_SPACE_AFTER = {"(", "[", "{", "„", "«", "“"}
# one corpus source per underlying dataset (upos and xpos share RRT, sapn and sar share LaRoSeDa)
_SOURCE_OF = {
    "upos": "rrt",
    "xpos": "rrt",
    "ner": "ronec",
    "sapn": "laroseda",
    "sar": "laroseda",
    "di": "di",
    "sts": "sts",
}
_TASK_OF = {"rrt": "upos", "ronec": "ner", "laroseda": "sapn", "di": "di", "sts": "sts"}


def detokenize(tokens: Iterable[str]) -> str:
    """Join tokens into running text: no space before closing punctuation or after opening brackets,
    and Romanian clitic hyphens attached (``s-`` ``o`` -> ``s-o``, ``2`` ``-a`` -> ``2-a``)."""
    out: list[str] = []
    glue = True
    for tok in tokens:
        attach = glue or tok in _NO_SPACE_BEFORE or (len(tok) > 1 and tok.startswith("-"))
        out.append(tok if attach else " " + tok)
        glue = tok in _NO_SPACE_AFTER or (len(tok) > 1 and tok.endswith("-"))
    return "".join(out).strip()


def _column(ds: Dataset, name: str) -> list:
    """A whole column as a Python list (one batch read; iterating a Column formats row by row)."""
    return ds.select_columns([name])[:][name]


def _clean(text: str) -> str:
    return " ".join(text.split())


def _source_key(task: str | data.TaskSpec) -> str:
    """One corpus source per underlying dataset: a built-in source name, or a declared task's declaration."""
    spec = data.get_task(task)
    if spec.builtin:
        return _SOURCE_OF[spec.name]
    return json.dumps({"name": spec.name, "declaration": spec.declaration()}, sort_keys=True)


def _source_task(key: str) -> data.TaskSpec:
    if key in _TASK_OF:
        return data.TASKS[_TASK_OF[key]]
    content = json.loads(key)
    return tasks_mod.parse_declaration(content["name"], content["declaration"])


@lru_cache(maxsize=32)
def _documents_cached(source: str, split: str, data_dir: str) -> tuple[tuple[str, ...], ...]:
    return tuple(tuple(doc) for doc in _documents(source, split, data_dir))


def _documents(source: str, split: str, data_dir: str) -> list[list[str]]:
    """Sentence units of one split of one dataset, grouped by document."""
    spec = _source_task(source)
    ds = data.load_task(spec, data_dir)[split]
    if spec.kind == "tagging":
        return [[u for u in (_clean(detokenize(toks)) for toks in _column(ds, "tokens")) if u]]
    if source == "laroseda":
        titles, contents = _column(ds, "text_a"), _column(ds, "text_b")
        return [[u for u in [_clean(a)] + split_sentences(b) if u] for a, b in zip(titles, contents)]
    if "text_b" not in ds.column_names:  # DI, or any single-text task: a text is a document
        return [split_sentences(t) for t in _column(ds, "text_a")]
    return [split_sentences(t) for pair in zip(_column(ds, "text_a"), _column(ds, "text_b")) for t in pair]


@lru_cache(maxsize=8)
def _heldout(sources: tuple[str, ...], data_dir: str) -> frozenset[str]:
    blocked: set[str] = set()
    for source in sources:
        ds = data.load_task(_source_task(source), data_dir)
        for split in ("validation", "test"):
            for doc in _documents_cached(source, split, data_dir):
                blocked.update(doc)
            for col in ("text_a", "text_b"):
                if col in ds[split].column_names:
                    for text in _column(ds[split], col):
                        blocked.add(_clean(text))
                        blocked.update(split_sentences(text))
            if "tokens" in ds[split].column_names:
                blocked.update(_clean(" ".join(t)) for t in _column(ds[split], "tokens"))
    return frozenset(blocked)


def _active_sources(extra: list[str] = ()) -> tuple[str, ...]:
    """Sources of every active task (the seven, or the profile's declared tasks) and of ``extra`` tasks."""
    return tuple(dict.fromkeys(_source_key(t) for t in [*tasks_mod.task_names(), *extra]))


def heldout_texts(data_dir=None) -> frozenset[str]:
    """Every validation/test text of the active tasks (the seven, or the declared ones), whole and split
    into sentence units."""
    return _heldout(_active_sources(), str(data.resolve_data_dir(data_dir)))


def build_corpus(
    mode: str = "shuffled",
    *,
    merge_p: float = 0.5,
    seed: int = 0,
    tasks=None,
    data_dir=None,
    max_sentences: int | None = None,
) -> Dataset:
    """Distillation corpus (column ``text``) from the train splits of ``tasks``: names (or declarations) of
    kdlib.data.tasks; default: the active tasks (the profile's declared tasks, else all seven)."""
    if mode not in MODES:
        raise ValueError(f"unknown corpus mode {mode!r}; valid modes: {', '.join(MODES)}")
    if not 0.0 <= merge_p <= 1.0:
        raise ValueError(f"merge_p must be a probability in [0, 1], got {merge_p}")
    if max_sentences is not None and max_sentences <= 0:
        raise ValueError(f"max_sentences must be positive, got {max_sentences}")
    tasks = list(tasks_mod.task_names() if tasks is None else ([tasks] if isinstance(tasks, str) else tasks))
    for task in tasks:
        data.get_task(task)  # ValueError naming the valid tasks
    root = str(data.resolve_data_dir(data_dir))
    blocked = _heldout(_active_sources(tasks), root)
    seen: set[str] = set()
    docs: list[list[str]] = []
    for source in dict.fromkeys(_source_key(t) for t in tasks):
        for doc in _documents_cached(source, "train", root):
            kept = []
            for unit in doc:
                if unit not in blocked and unit not in seen:
                    kept.append(unit)
                    seen.add(unit)
            if kept:
                docs.append(kept)
    rng = random.Random(seed)
    if mode == "merged":
        units: list[str] = []
        for doc in docs:
            units.append(doc[0])
            for sentence in doc[1:]:
                if rng.random() < merge_p:
                    units[-1] = units[-1] + " " + sentence
                else:
                    units.append(sentence)
        units = list(dict.fromkeys(units))
    else:
        units = [u for doc in docs for u in doc]
    if mode != "ordered":
        rng.shuffle(units)
    if max_sentences is not None:
        units = units[:max_sentences]
    if not units:
        raise ValueError(f"the corpus for tasks {tasks} is empty")
    return Dataset.from_dict({"text": units})


def corpus_stats(ds: Dataset) -> dict:
    """Size of a text corpus: lines ("sentences"), characters and whitespace-separated words."""
    index = length_index(ds, ("total_chars", "total_words"))
    return {"sentences": len(ds), "characters": int(index["total_chars"]), "words": int(index["total_words"])}


def length_index(ds: Dataset, columns: tuple[str, ...] = ("n_words", "n_chars")) -> dict[str, np.ndarray]:
    """Words and characters of every text as int32 arrays (``n_words``, ``n_chars``) and their totals
    (``total_words``, ``total_chars``, 0-d int64), computed once per corpus.

    For an on-disk corpus the index is saved beside its Arrow files, named by the corpus fingerprint
    (``lengths-<fingerprint>.npz``), so a later run, a resumed run and every DDP rank load ~8 bytes per
    text instead of reading the texts again; ``columns`` loads only the arrays asked for (the totals
    without the per-text arrays).
    """
    if "text" not in ds.column_names:
        raise ValueError(f"corpus must have a 'text' column; got {ds.column_names}")
    cache = _index_path(ds)
    if cache is not None and cache.exists():
        with np.load(cache) as saved:
            if all(c in saved.files for c in columns):  # an index saved before the totals were: computed again
                return {c: saved[c] for c in columns}
    n_words = np.zeros(len(ds), dtype=np.int32)
    n_chars = np.zeros(len(ds), dtype=np.int32)
    i = 0
    for batch in tqdm(
        ds.select_columns(["text"]).iter(batch_size=10_000),
        total=-(-len(ds) // 10_000),
        desc="length index",
        disable=len(ds) < 1_000_000,
        dynamic_ncols=True,
    ):
        texts = [t if isinstance(t, str) else "" for t in batch["text"]]
        n_words[i : i + len(texts)] = [len(t.split()) for t in texts]
        n_chars[i : i + len(texts)] = [len(t) for t in texts]
        i += len(texts)
    index = {
        "n_words": n_words,
        "n_chars": n_chars,
        "total_words": np.int64(n_words.sum(dtype=np.int64)),
        "total_chars": np.int64(n_chars.sum(dtype=np.int64)),
    }
    if cache is not None:
        try:
            save_npz(cache, index, compress=False)
        except OSError:  # a read-only corpus folder: the index is simply computed again next time
            pass
    return {c: index[c] for c in columns}


def save_corpus(ds: Dataset, path: str | Path) -> Dataset:
    """Save a corpus for distillation and return it memory-mapped from there, with its length index.

    Written in record batches of ``RECORD_BATCH`` rows (``datasets`` writes 1,000): opening an Arrow
    stream reads every batch's header, and with small batches that touches (and counts as resident)
    most of the file; with large ones a 10 M-sentence corpus opens in a few MB.
    """
    old = datasets.config.DEFAULT_MAX_BATCH_SIZE
    datasets.config.DEFAULT_MAX_BATCH_SIZE = RECORD_BATCH  # read by save_to_disk as its batch size
    try:
        ds.save_to_disk(str(path))
    finally:
        datasets.config.DEFAULT_MAX_BATCH_SIZE = old
    saved = datasets.load_from_disk(str(path))
    length_index(saved)
    return saved


RECORD_BATCH = 100_000


def _index_path(ds: Dataset) -> Path | None:
    """Where the length index of an on-disk corpus lives (None for an in-memory one)."""
    if not ds.cache_files:
        return None
    return Path(ds.cache_files[0]["filename"]).parent / f"lengths-{ds._fingerprint}.npz"


def load_text_corpus(
    name_or_path: str,
    *,
    split: str = "train",
    text_column: str = "text",
    max_sentences: int | None = None,
    config: str | None = None,
    normalize: bool = True,
    language: str | None = None,
    dedup: bool = True,
    filter_heldout: bool | None = None,
    data_dir=None,
    cache_dir: str | None = None,
    revision: str | None = None,
) -> Dataset:
    """Any text corpus as an on-disk Dataset with one column ``text`` (empty lines dropped, normalised for
    ``language``: default the active profile's, else Romanian; see kdlib.data.text.normalizer).

    ``name_or_path``: a text file, a folder of ``*.txt`` files, a folder written by ``save_to_disk``, or a
    hub dataset name (``"name:config"`` or ``config=``; e.g. ``"wikimedia/wikipedia:20231101.ro"``) or a
    folder of json/parquet/csv files, which is always *streamed*: its rows (documents: an article, a web
    page) are split into lines and sentences, so ``max_sentences`` counts sentences and no text is cut at
    the distillation's ``max_len``. Texts pass one at a time through normalisation, de-duplication (first
    occurrence kept, by a 64-bit hash) and, by default for streamed corpora, the filter against every
    validation/test text of the evaluation tasks (``heldout_texts``), and are written to an Arrow file
    (under ``cache_dir``, default the ``datasets`` cache) as they come: memory stays flat whatever the
    corpus size, and a second call with the same source and settings reuses the file. ``revision``: the hub
    corpus's commit (a profile pins it, as the task data is pinned); None reads the newest.
    """
    if max_sentences is not None and max_sentences <= 0:
        raise ValueError(f"max_sentences must be positive, got {max_sentences}")
    texts, streamed, source_key = _raw_texts(name_or_path, split, text_column, config, revision)
    if filter_heldout is None:
        filter_heldout = streamed
    blocked = heldout_texts(data_dir) if filter_heldout else frozenset()
    language = (language or tasks_mod.active()[0]) if normalize else None
    settings = [source_key, split, text_column, max_sentences, language, dedup, len(blocked), _STORE_VERSION]
    fingerprint = hashlib.sha256(json.dumps(settings, default=str).encode()).hexdigest()[:16]
    path = Path(cache_dir or datasets.config.HF_DATASETS_CACHE) / "kdlib-corpus" / f"{fingerprint}.arrow"
    if not path.exists():
        norm = normalizer(language) if language is not None else None
        _write_texts(_clean_units(texts, norm, dedup, blocked, max_sentences), path)
    ds = Dataset.from_file(str(path))
    if len(ds) == 0:
        path.unlink()
        raise ValueError(f"corpus {name_or_path} contains no text")
    return ds


_STORE_VERSION = 1
_DATA_FILES = ("*.jsonl", "*.json", "*.parquet", "*.csv", "*.jsonl.gz", "*.json.gz")


def _write_texts(texts: Iterable[str], path: Path) -> None:
    """Stream texts into an Arrow file in record batches of RECORD_BATCH rows; atomic (rename at the end)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    writer = ArrowWriter(features=Features({"text": Value("string")}), path=str(tmp), writer_batch_size=RECORD_BATCH)
    try:
        batch: list[str] = []
        for text in texts:
            batch.append(text)
            if len(batch) == RECORD_BATCH:
                writer.write_batch({"text": batch})
                batch = []
        writer.write_batch({"text": batch})
        writer.finalize()
        writer.close()
        os.replace(tmp, path)
    except BaseException:
        writer.close()
        tmp.unlink(missing_ok=True)
        raise


def _raw_texts(
    name_or_path: str, split: str, text_column: str, config: str | None, revision: str | None = None
) -> tuple[Iterable[str], bool, str]:
    """(texts, streamed, source key): the raw texts of a local corpus, or the sentences of a streamed one."""
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return _file_lines([path]), False, f"{path.resolve()}{_stat_key(path)}"
    if path.is_dir() and ((path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists()):
        ds = datasets.load_from_disk(str(path))
        if isinstance(ds, datasets.DatasetDict):
            ds = ds[split]
        if text_column not in ds.column_names:
            raise ValueError(f"corpus {name_or_path} has no column {text_column!r}; columns: {ds.column_names}")
        return _batched_column(ds, text_column), False, f"{path.resolve()}:{ds._fingerprint}"
    if path.is_dir() and any(path.glob("*.txt")):
        return _file_lines(sorted(path.glob("*.txt"))), False, f"{path.resolve()}{_stat_key(path)}"
    if path.is_dir() and not any(f for pattern in _DATA_FILES for f in path.glob(pattern)):
        raise FileNotFoundError(f"{path} holds no *.txt files and is not a saved dataset")
    if not path.exists() and (
        name_or_path.startswith((".", "/", "~")) or path.suffix in {".txt", ".gz", ".xz", ".jsonl"}
    ):
        raise FileNotFoundError(f"corpus path {name_or_path} does not exist")
    # a hub corpus, or a local folder of json/parquet/csv files: streamed, never listed in memory
    name, _, cfg = name_or_path.partition(":") if not path.is_dir() else (str(path), "", "")
    stream = datasets.load_dataset(name, cfg or config or None, split=split, streaming=True, revision=revision)
    key = f"{path.resolve()}{_stat_key(path)}" if path.is_dir() else f"hub:{name}:{cfg or config}:{split}:{revision}"
    return _document_sentences(stream, text_column, None), True, key


def _file_lines(files: list[Path]) -> Iterable[str]:
    for file in files:
        with open(file, encoding="utf-8") as fh:
            yield from fh


def _stat_key(path: Path) -> str:
    """Size and modification time of a file or of a folder's files: a changed source is read again."""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return ":" + ",".join(f"{p.stat().st_size}-{p.stat().st_mtime_ns}" for p in files)


def _batched_column(ds: Dataset, column: str, batch_size: int = 10_000) -> Iterable[str]:
    for batch in ds.select_columns([column]).iter(batch_size=batch_size):
        yield from batch[column]


def _clean_units(
    texts: Iterable, norm: Callable[[str], str] | None, dedup: bool, blocked: frozenset[str], limit: int | None
) -> Iterable[str]:
    """Texts: stripped, normalised, first occurrence only, no held-out text, at most `limit`."""
    seen: set[int] = set()
    n = 0
    with tqdm(total=limit, unit=" sentences", desc="corpus", dynamic_ncols=True, mininterval=2) as bar:
        for text in texts:
            if not isinstance(text, str) or not text.strip():
                continue
            text = text.strip()
            if norm is not None:
                text = norm(text)
            if text in blocked:
                continue
            if dedup:
                key = int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")
                if key in seen:
                    continue
                seen.add(key)
            yield text
            n += 1
            bar.update()
            if limit is not None and n >= limit:
                return


def _document_sentences(rows: Iterable[dict], text_column: str, limit: int | None) -> Iterable[str]:
    """Sentences of each row's text (lines, then `split_sentences`), at most `limit` of them."""
    n = 0
    for row in rows:
        if text_column not in row:
            raise ValueError(f"corpus rows have no column {text_column!r}; columns: {sorted(row)}")
        for line in str(row[text_column] or "").splitlines():
            for sentence in split_sentences(line):
                yield sentence
                n += 1
                if limit is not None and n >= limit:
                    return


def write_corpus(ds: Dataset, out: str | Path) -> Path:
    """Write one text per line, atomically (temporary file in the same folder, then rename)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=out.name + ".", suffix=".tmp", dir=out.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            for text in _column(ds, "text"):
                fh.write(_clean(text) + "\n")
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out


def cli(argv: list[str]) -> int:
    """``python -m kdlib corpus --mode shuffled --out corpus.txt`` (prints stats as JSON)."""
    parser = argparse.ArgumentParser(prog="python -m kdlib corpus", description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=MODES, default="shuffled")
    parser.add_argument("--merge-p", type=float, default=0.5, help="merge probability (mode merged)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--tasks",
        default=None,
        help="comma-separated tasks whose train splits are used (default: the active tasks, see kdlib.data.tasks)",
    )
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--max-sentences", type=int, default=None)
    parser.add_argument(
        "--source",
        default=None,
        help="use this text corpus (file, folder or hub name) instead of the task train splits",
    )
    parser.add_argument("--out", required=True, help="output text file, one text per line")
    args = parser.parse_args(argv)
    try:
        if args.source:
            ds = load_text_corpus(args.source, max_sentences=args.max_sentences)
        else:
            tasks = args.tasks.split(",") if args.tasks else None
            ds = build_corpus(
                args.mode,
                merge_p=args.merge_p,
                seed=args.seed,
                tasks=tasks,
                data_dir=args.data_dir,
                max_sentences=args.max_sentences,
            )
    except (ValueError, FileNotFoundError) as exc:
        print(f"kdlib corpus: {exc}", file=sys.stderr)
        return 2
    path = write_corpus(ds, args.out)
    stats = {
        "out": str(path),
        "mode": None if args.source else args.mode,
        "source": args.source or "task train splits",
        **corpus_stats(ds),
    }
    print(json.dumps(stats))
    return 0

"""The unlabeled text that students are distilled on: the task TRAIN splits, or any `datasets` corpus.

``build_corpus`` turns the train split of every selected task into sentence units:

* tagging tasks (RRT for upos/xpos, RONEC v1 for ner): one sentence per example, tokens joined back
  into text by ``detokenize`` (no space before , . ; : ! ? ) etc., clitic hyphens attached); each train
  file is one document (the files keep corpus order but the rebuilt copies carry no document ids);
* LaRoSeDa (sapn/sar): a review is a document: its title, then its content split into sentences;
* DI (MOROCO or VarDial, whichever ``load_task('di')`` uses): a text is a document, split into sentences;
* RO-STS: each sentence of each pair, split into sentences, is its own document.

A declared task (kdlib.tasks) is its own source: tagging sentences as one document, each text of a
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
import json
import os
import random
import sys
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Iterable

import datasets
from datasets import Dataset

from kdlib import data
from kdlib import tasks as tasks_mod
from kdlib.text import normalizer, split_sentences

__all__ = ["MODES", "build_corpus", "corpus_stats", "load_text_corpus", "detokenize", "heldout_texts",
           "write_corpus", "cli"]

MODES = ("ordered", "shuffled", "merged")
_NO_SPACE_BEFORE = {",", ".", ";", ":", "!", "?", ")", "]", "}", "%", "...", "…", "”", "»", "'"}
_NO_SPACE_AFTER = {"(", "[", "{", "„", "«", "“"}
# one corpus source per underlying dataset (upos and xpos share RRT, sapn and sar share LaRoSeDa)
_SOURCE_OF = {"upos": "rrt", "xpos": "rrt", "ner": "ronec", "sapn": "laroseda", "sar": "laroseda",
              "di": "di", "sts": "sts"}
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
    if "text_b" not in ds.column_names:   # DI, or any single-text task: a text is a document
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


def build_corpus(mode: str = "shuffled", *, merge_p: float = 0.5, seed: int = 0, tasks=None, data_dir=None,
                 max_sentences: int | None = None) -> Dataset:
    """Distillation corpus (column ``text``) from the train splits of ``tasks``: names (or declarations) of
    kdlib.tasks; default: the active tasks (the profile's declared tasks, else all seven)."""
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
    texts = _column(ds, "text")
    return {"sentences": len(texts), "characters": sum(map(len, texts)), "words": sum(len(t.split()) for t in texts)}


def load_text_corpus(name_or_path: str, *, split: str = "train", text_column: str = "text",
                     max_sentences: int | None = None, config: str | None = None,
                     normalize: bool = True, language: str | None = None) -> Dataset:
    """Any text corpus as a Dataset with one column ``text`` (empty lines dropped, normalised for
    ``language``: default the active profile's, else Romanian; see kdlib.text.normalizer).

    ``name_or_path``: a text file, a folder of ``*.txt`` files, a folder written by ``save_to_disk``, or a
    hub dataset name (``"name:config"`` or ``config=``; e.g. ``"wikimedia/wikipedia:20231101.ro"``), which
    is streamed when ``max_sentences`` is given so that only that many sentences are read. Hub rows are
    documents (a Wikipedia article, an OSCAR page): they are split into lines and sentences, so that
    ``max_sentences`` counts sentences and no text is cut at the distillation's ``max_len``.
    """
    if max_sentences is not None and max_sentences <= 0:
        raise ValueError(f"max_sentences must be positive, got {max_sentences}")
    path = Path(name_or_path).expanduser()
    if path.is_file():
        ds = datasets.load_dataset("text", data_files=str(path), split="train")
    elif path.is_dir() and ((path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists()):
        ds = datasets.load_from_disk(str(path))
        if isinstance(ds, datasets.DatasetDict):
            ds = ds[split]
    elif path.is_dir():
        files = sorted(str(p) for p in path.glob("*.txt"))
        if not files:
            raise FileNotFoundError(f"{path} holds no *.txt files and is not a saved dataset")
        ds = datasets.load_dataset("text", data_files=files, split="train")
    elif name_or_path.startswith((".", "/", "~")) or path.suffix in {".txt", ".gz", ".xz", ".jsonl"}:
        raise FileNotFoundError(f"corpus path {name_or_path} does not exist")
    else:
        name, _, cfg = name_or_path.partition(":")
        stream = datasets.load_dataset(name, cfg or config, split=split, streaming=max_sentences is not None)
        ds = Dataset.from_dict({text_column: list(_document_sentences(stream, text_column, max_sentences))})
    if text_column not in ds.column_names:
        raise ValueError(f"corpus {name_or_path} has no column {text_column!r}; columns: {ds.column_names}")
    texts = [t.strip() for t in _column(ds, text_column) if isinstance(t, str) and t.strip()]
    if normalize:
        norm = normalizer(language or tasks_mod.active()[0])
        texts = [norm(t) for t in texts]
    if max_sentences is not None:
        texts = texts[:max_sentences]
    if not texts:
        raise ValueError(f"corpus {name_or_path} contains no text")
    return Dataset.from_dict({"text": texts})


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
    parser.add_argument("--tasks", default=None, help="comma-separated tasks whose train splits are used (default: the active tasks, "
                             "see kdlib.tasks)")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--max-sentences", type=int, default=None)
    parser.add_argument("--source", default=None,
                        help="use this text corpus (file, folder or hub name) instead of the task train splits")
    parser.add_argument("--out", required=True, help="output text file, one text per line")
    args = parser.parse_args(argv)
    try:
        if args.source:
            ds = load_text_corpus(args.source, max_sentences=args.max_sentences)
        else:
            tasks = args.tasks.split(",") if args.tasks else None
            ds = build_corpus(args.mode, merge_p=args.merge_p, seed=args.seed, tasks=tasks, data_dir=args.data_dir,
                              max_sentences=args.max_sentences)
    except (ValueError, FileNotFoundError) as exc:
        print(f"kdlib corpus: {exc}", file=sys.stderr)
        return 2
    path = write_corpus(ds, args.out)
    stats = {"out": str(path), "mode": None if args.source else args.mode, "source": args.source or "task train splits",
             **corpus_stats(ds)}
    print(json.dumps(stats))
    return 0

"""Readers of the generic task formats of :mod:`kdlib.data.tasks`: CoNLL-U, CoNLL (BIO), CSV/TSV, JSON Lines.

Each reader turns one file into records of the :mod:`kdlib.data.load` schema (tagging: ``id``, ``tokens``,
``tags``; classification/regression: ``id``, ``text_a`` [, ``text_b``], ``label``) with labels still as
strings (regression: floats), and raises ``ValueError("<file>, line <n>: expected ..., found ...")`` on
the first malformed line. ``datasets`` rows (a hub or saved dataset) are converted by
:func:`dataset_records` with the same checks, naming the split and row.

* CoNLL-U: 10 tab-separated columns; comments, multiword ranges (``1-2``) and empty nodes (``1.1``)
  are skipped; the tag is the UPOS, XPOS or FEATS column; ``id`` is the ``# sent_id`` or the
  sentence number.
* CoNLL: whitespace-separated columns, the token first and its BIO tag (``O``, ``B-X``, ``I-X``)
  last; blank lines end sentences and ``-DOCSTART-`` lines are skipped.
* CSV/TSV: a header row names the columns (Python's ``csv`` module: quoted fields may hold the
  delimiter); JSON Lines: one object per line.
"""

from __future__ import annotations

import csv
import json
import math
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

__all__ = [
    "fail",
    "read_conllu",
    "conllu_records",
    "conll_records",
    "table_records",
    "jsonl_records",
    "dataset_records",
    "text_columns",
]

_BIO = re.compile(r"^(O|[BI]-\S+)$")
Norm = Callable[[str], str]


def fail(path: Path | str, line: int | None, what: str) -> ValueError:
    """``ValueError("<path>, line <line>: <what>")`` (no line part when ``line`` is None)."""
    where = f"{path}, line {line}" if line is not None else str(path)
    return ValueError(f"{where}: {what}")


class Sentence:
    """One CoNLL-U sentence: id, text and document metadata, every token's columns and line number."""

    __slots__ = ("sent_id", "text", "doc", "forms", "columns", "lines")

    def __init__(self, sent_id: str, text: str | None, doc: str | None, columns: list[list[str]], lines: list[int]):
        self.sent_id, self.text, self.doc = sent_id, text, doc
        self.forms = [c[1] for c in columns]
        self.columns, self.lines = columns, lines


def read_conllu(path: Path, n_columns: int) -> list[Sentence]:
    """CoNLL-U(-Plus) sentences; skip comments, multiword ranges and empty nodes; check column counts."""
    sentences: list[Sentence] = []
    meta: dict[str, str] = {}
    doc: str | None = None
    cur: list[tuple[int, list[str]]] = []

    def close() -> None:
        if cur:
            sent_id = meta.get("sent_id", str(len(sentences) + 1))
            sentences.append(Sentence(sent_id, meta.get("text"), doc, [c for _, c in cur], [n for n, _ in cur]))
        cur.clear()
        meta.clear()

    with open(path, encoding="utf-8") as fh:
        for lineno, raw in enumerate(fh, 1):
            line = raw.rstrip("\n").rstrip("\r")
            if not line.strip():
                close()
                continue
            if line.startswith("#"):
                key, sep, value = line[1:].partition("=")
                key = key.strip()
                if sep and key in {"sent_id", "text"}:
                    meta[key] = value.strip()
                elif sep and key == "newdoc id":
                    doc = value.strip()
                continue
            cols = line.split("\t")
            if len(cols) != n_columns:
                raise fail(
                    path,
                    lineno,
                    f"expected {n_columns} tab-separated columns (CoNLL-U token line), "
                    f"found {len(cols)}: {line[:80]!r}",
                )
            token_id = cols[0]
            if "-" in token_id or "." in token_id:  # multiword-token range or empty node
                continue
            if not token_id.isdigit():
                raise fail(path, lineno, f"expected an integer token ID in column 1, found {token_id!r}")
            cur.append((lineno, cols))
    close()
    return sentences


def conllu_records(
    path: Path, n_columns: int, tag_column: int, names: list[str] | None, norm: Norm, bio: bool = False
) -> list[dict]:
    """Records ``{id, tokens, tags}`` (tags as strings, validated against ``names`` when given)."""
    allowed = set(names) if names is not None else None
    records = []
    for sent in read_conllu(path, n_columns):
        tags = [cols[tag_column] for cols in sent.columns]
        for tag, line in zip(tags, sent.lines):
            if tag == "" or (tag == "_" and allowed is not None) or (allowed is not None and tag not in allowed):
                expected = "a BIO tag (O, B-CLASS, I-CLASS)" if bio else "one of the known tags"
                raise fail(
                    path,
                    line,
                    f"column {tag_column + 1}: expected {expected}, found {tag!r}"
                    + (f"; known: {', '.join(names)}" if names and len(names) < 40 else ""),
                )
        records.append({"id": sent.sent_id, "tokens": [norm(t) for t in sent.forms], "tags": tags})
    return records


def conll_records(path: Path, names: list[str] | None, norm: Norm, split: str) -> list[dict]:
    """BIO-tagged CoNLL sentences (token first, tag last, blank lines between sentences)."""
    allowed = set(names) if names is not None else None
    records: list[dict] = []
    tokens: list[str] = []
    tags: list[str] = []

    def close() -> None:
        if tokens:
            records.append({"id": f"{split}-{len(records) + 1}", "tokens": list(tokens), "tags": list(tags)})
        tokens.clear()
        tags.clear()

    with open(path, encoding="utf-8") as fh:
        for lineno, raw in enumerate(fh, 1):
            cols = raw.split()
            if not cols:
                close()
                continue
            if cols[0] == "-DOCSTART-":
                continue
            if len(cols) < 2:
                raise fail(
                    path, lineno, f"expected a token and its BIO tag (at least 2 columns), found {raw.strip()!r}"
                )
            tag = cols[-1]
            if not _BIO.match(tag) or (allowed is not None and tag not in allowed):
                raise fail(
                    path,
                    lineno,
                    f"last column: expected a BIO tag (O, B-CLASS, I-CLASS)"
                    f"{' of the declared labels' if allowed else ''}, found {tag!r}",
                )
            tokens.append(norm(cols[0]))
            tags.append(tag)
    close()
    return records


def text_columns(options: Mapping[str, Any]) -> list[tuple[str, str]]:
    """[(record field, source column)] of a classification/regression declaration."""
    if "text_a" in options:
        pairs = [("text_a", options["text_a"])]
        if "text_b" in options:
            pairs.append(("text_b", options["text_b"]))
        return pairs
    return [("text_a", options.get("text", "text"))]


def _text_record(
    row: Mapping[str, Any],
    where: Callable[[], tuple[Any, int | None]],
    options: Mapping[str, Any],
    kind: str,
    norm: Norm,
    default_id: str,
    allowed: set[str] | None,
) -> dict:
    """One classification/regression record from a row, with every check of a declared column."""
    rec: dict[str, Any] = {"id": str(row[options["id"]]) if "id" in options else default_id}
    for field_name, column in text_columns(options):
        value = row[column]
        if not isinstance(value, str) or not value.strip():
            raise fail(*where(), f"column {column!r}: expected a non-empty text, found {value!r}")
        rec[field_name] = norm(value)
    value = row[options.get("label", "label")]
    if kind == "regression":
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = math.nan
        low, high = options.get("range", (-math.inf, math.inf))
        if not math.isfinite(number) or not low <= number <= high:
            bounds = f" between {low} and {high}" if "range" in options else ""
            raise fail(
                *where(), f"column {options.get('label', 'label')!r}: expected a number{bounds}, found {value!r}"
            )
        rec["label"] = number
    else:
        label = str(value).strip() if value is not None else ""
        if not label or (allowed is not None and label not in allowed):
            known = f" (one of {', '.join(sorted(allowed))})" if allowed else ""
            raise fail(*where(), f"column {options.get('label', 'label')!r}: expected a label{known}, found {value!r}")
        rec["label"] = label
    return rec


def _needed_columns(options: Mapping[str, Any], kind: str) -> list[str]:
    if kind == "tagging":
        return [options.get("tokens", "tokens"), options.get("tags", "tags")] + (
            [options["id"]] if "id" in options else []
        )
    cols = [c for _, c in text_columns(options)] + [options.get("label", "label")]
    return cols + ([options["id"]] if "id" in options else [])


def table_records(
    path: Path, delimiter: str, options: Mapping[str, Any], kind: str, norm: Norm, split: str, allowed: set[str] | None
) -> list[dict]:
    """CSV/TSV rows with a header; every declared column must be in the header."""
    with open(path, encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh, delimiter=delimiter)
        header = reader.fieldnames or []
        missing = [c for c in _needed_columns(options, kind) if c not in header]
        if missing:
            raise fail(
                path,
                1,
                f"expected a header row with column(s) {', '.join(map(repr, missing))}; "
                f"found {', '.join(map(repr, header)) or 'nothing'}",
            )
        records = []
        for row in reader:
            line = reader.line_num
            if None in row or any(v is None for v in row.values()):
                found = len(header) + len(row[None]) if None in row else sum(v is not None for v in row.values())
                raise fail(path, line, f"expected {len(header)} fields as in the header row, found {found}")
            records.append(
                _text_record(row, lambda line=line: (path, line), options, kind, norm, f"{split}-{line}", allowed)
            )
    return records


def _tagging_row(
    row: Mapping[str, Any], where, options: Mapping[str, Any], norm: Norm, default_id: str, allowed: set[str] | None
) -> dict:
    tokens, tags = row[options.get("tokens", "tokens")], row[options.get("tags", "tags")]
    ok = (
        isinstance(tokens, list)
        and isinstance(tags, list)
        and len(tokens) == len(tags)
        and tokens
        and all(isinstance(t, str) and t for t in tokens)
        and all(isinstance(t, str) and t for t in tags)
    )
    if not ok:
        raise fail(*where(), "expected non-empty `tokens` and `tags` lists of strings of equal length")
    bad = [t for t in tags if allowed is not None and t not in allowed]
    if bad:
        raise fail(*where(), f"expected tags among the declared labels, found {bad[0]!r}")
    return {
        "id": str(row[options["id"]]) if "id" in options else default_id,
        "tokens": [norm(t) for t in tokens],
        "tags": list(tags),
    }


def jsonl_records(
    path: Path, options: Mapping[str, Any], kind: str, norm: Norm, split: str, allowed: set[str] | None
) -> list[dict]:
    """JSON Lines: one object per non-empty line holding the declared columns."""
    records = []
    needed = _needed_columns(options, kind)
    with open(path, encoding="utf-8") as fh:
        for lineno, raw in enumerate(fh, 1):
            if not raw.strip():
                continue
            try:
                row = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise fail(path, lineno, f"invalid JSON at column {exc.colno}: {exc.msg}") from None
            if not isinstance(row, dict) or any(c not in row for c in needed):
                raise fail(path, lineno, f"expected a JSON object with key(s) {', '.join(needed)}")
            where = lambda lineno=lineno: (path, lineno)
            records.append(
                _tagging_row(row, where, options, norm, f"{split}-{lineno}", allowed)
                if kind == "tagging"
                else _text_record(row, where, options, kind, norm, f"{split}-{lineno}", allowed)
            )
    return records


def dataset_records(
    rows: Iterable[Mapping[str, Any]],
    features: Mapping[str, Any],
    where: str,
    options: Mapping[str, Any],
    kind: str,
    norm: Norm,
    allowed: set[str] | None,
) -> list[dict]:
    """Rows of a ``datasets`` split; ClassLabel ids (labels, tag sequences) become their names."""
    needed = _needed_columns(options, kind)
    missing = [c for c in needed if c not in features]
    if missing:
        raise fail(where, None, f"expected column(s) {', '.join(missing)}; the dataset has {', '.join(features)}")

    def names_of(column: str):
        feature = features[column]
        feature = getattr(feature, "feature", feature)  # Sequence(ClassLabel) -> ClassLabel
        return getattr(feature, "names", None)

    label_col = options.get("tags" if kind == "tagging" else "label", "tags" if kind == "tagging" else "label")
    names = names_of(label_col) if kind != "regression" else None
    records = []
    for i, row in enumerate(rows):
        row = dict(row)
        if names is not None:
            value = row[label_col]
            row[label_col] = [names[v] for v in value] if isinstance(value, list) else names[value]
        elif kind == "tagging":
            row[label_col] = [str(v) for v in row[label_col]] if isinstance(row[label_col], list) else row[label_col]
        here = lambda i=i: (f"{where}, row {i}", None)
        records.append(
            _tagging_row(row, here, options, norm, str(i), allowed)
            if kind == "tagging"
            else _text_record(row, here, options, kind, norm, str(i), allowed)
        )
    return records

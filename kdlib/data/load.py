"""Evaluation tasks loaded as ``datasets.DatasetDict``: the paper's seven Romanian tasks and any declared task.

A task is named (one of the seven below, or a task declared in the active profile) or given as a
declaration mapping (``load_task({"kind": "tagging", "format": "conllu", ...})``); the registry and the
declaration keys are in :mod:`kdlib.data.tasks`, the generic readers in :mod:`kdlib.data.readers`. A declared
task without a validation file gets one carved from train (seeded ``SPLIT_SEED``, stratified by label
for classification when every class has two examples; the note is in ``task_sources``, in
``info.description`` and logged); its test file stays whole.

Every task has ``train``, ``validation`` and ``test`` splits. Columns:

* tagging (``upos``, ``xpos``, ``ner``): ``id`` (str), ``tokens`` (list of str), ``tags`` (list of
  ``ClassLabel``). CoNLL-U comment lines, multiword-token ranges (``1-2``) and empty nodes (``1.1``) are
  skipped.
* classification (``sapn``, ``sar``, ``di``): ``id``, ``text_a``, for LaRoSeDa also ``text_b``
  (``text_a`` = review title, ``text_b`` = review content), ``label`` (``ClassLabel``).
* regression (``sts``): ``id``, ``text_a``, ``text_b``, ``label`` (float32 similarity, 0-5).

Sources and the splits made here (fixed seed ``SPLIT_SEED``, stratified by label):

* ``upos``/``xpos``: UD Romanian-RRT train/dev/test (8,043 / 752 / 729 sentences). UPOS uses the 17
  universal tags; XPOS (MULTEXT-East MSDs) the sorted inventory of all three files ("_", unspecified,
  is kept as a tag: 2 tokens of the mirror's rebuilt train file have it).
* ``ner``: RONEC v1 CoNLL-U Plus, BIO tags of 16 classes (4,173 / 522 / 522 sentences), the default.
  ``version=2`` reads RONEC v2 JSON (15 classes); its train file is missing offline and is downloaded;
  ``v2_train="carve"`` instead carves train/validation (80/20, seeded, not stratified) from the
  1,330-sentence v2 validation file (1,064 / 266), keeping the official test (2,000).
* ``sapn``/``sar``: LaRoSeDa ``data_splitted`` (12,000 train / 3,000 test); validation = 10% of train,
  stratified by star rating: 10,800 train / 1,200 validation / 3,000 test. ``sapn``: negative (1-2
  stars) / positive (4-5); ``sar``: classes "1", "2", "4", "5".
* ``di``: MOROCO's official splits (21,719 / 5,921 / 5,924) when its ``samples.txt`` files can be had
  (``source="moroco"`` downloads them); otherwise (``source="auto"`` offline, or ``source="vardial"``)
  the VarDial 2019 MRC set (5,923 texts, MD/RO gold), carved 80/10/10, stratified: 4,737 / 593 / 593.
  Labels: ``moldavian`` / ``romanian``. A warning says which source is used.
* ``sts``: RO-STS TSVs ``score<TAB>sentence1<TAB>sentence2`` (5,749 / 1,500 / 1,379 pairs).

Text is normalised with ``kdlib.data.text.normalizer(task language)`` unless ``normalize=False``: for the
seven (Romanian) tasks ``normalize_romanian`` (cedilla -> comma-below, NFC); for a declared task of
another language only NFC. Bad input raises ``ValueError`` naming the file, the line and what was expected.
"""

from __future__ import annotations

import argparse
import collections
import copy
import io
import json
import logging
import os
import sys
import warnings
import zipfile
from collections.abc import Callable, Mapping
from functools import lru_cache
from pathlib import Path

import datasets
import pyarrow.compute as pc
from datasets import ClassLabel, Dataset, DatasetDict, Features, Sequence, Value

from kdlib.data import readers, sources
from kdlib.data import tasks as tasks_mod
from kdlib.data.tasks import TaskSpec, get_task
from kdlib.data.text import normalizer

__all__ = [
    "TaskSpec",
    "TASKS",
    "TASK_NAMES",
    "SPLITS",
    "SPLIT_SEED",
    "UPOS_TAGS",
    "RONEC_V1_CLASSES",
    "RONEC_V2_CLASSES",
    "resolve_data_dir",
    "load_task",
    "load_split",
    "label_names",
    "task_sources",
    "check",
    "cli",
]

SPLITS = ("train", "validation", "test")
SPLIT_SEED = 42
LAROSEDA_VALIDATION_FRACTION = 0.10
VARDIAL_FRACTIONS = (0.8, 0.1, 0.1)
RONEC_V2_CARVE_VALIDATION = 0.2
log = logging.getLogger("kdlib.data.load")


TASKS: dict[str, TaskSpec] = tasks_mod.BUILTIN  # the seven Romanian tasks (kdlib.data.tasks)
TASK_NAMES = tasks_mod.BUILTIN_NAMES

UPOS_TAGS = [
    "ADJ",
    "ADP",
    "ADV",
    "AUX",
    "CCONJ",
    "DET",
    "INTJ",
    "NOUN",
    "NUM",
    "PART",
    "PRON",
    "PROPN",
    "PUNCT",
    "SCONJ",
    "SYM",
    "VERB",
    "X",
]
RONEC_V1_CLASSES = [
    "DATETIME",
    "EVENT",
    "FACILITY",
    "GPE",
    "LANGUAGE",
    "LOC",
    "MONEY",
    "NAT_REL_POL",
    "NUMERIC_VALUE",
    "ORDINAL",
    "ORGANIZATION",
    "PERIOD",
    "PERSON",
    "PRODUCT",
    "QUANTITY",
    "WORK_OF_ART",
]
# in RONEC v2's ner_ids order (B-X = 2k-1, I-X = 2k)
RONEC_V2_CLASSES = [
    "PERSON",
    "ORG",
    "GPE",
    "LOC",
    "NAT_REL_POL",
    "EVENT",
    "LANGUAGE",
    "WORK_OF_ART",
    "DATETIME",
    "PERIOD",
    "MONEY",
    "QUANTITY",
    "NUMERIC",
    "ORDINAL",
    "FACILITY",
]
SAPN_NAMES = ["negative", "positive"]
SAR_NAMES = ["1", "2", "4", "5"]
DI_NAMES = ["moldavian", "romanian"]

_RONEC1 = "ronec/ronec_v1/ronec/conllup/raw/{}.conllu"
_RONEC2 = "ronec/data/{}.json"
_LAROSEDA = "laroseda/data_splitted/laroseda_{}.json"
_MOROCO = "moroco/MOROCO/preprocessed/{}/{}.txt"
_VARDIAL_ZIP = "moroco/MOROCO/Var-Dial-MRC-2019-eval/TESTSET-MRC-subtasks-1+2+3-VARDIAL2019.zip"
_VARDIAL_GOLD = "moroco/MOROCO/Var-Dial-MRC-2019-eval/subtask1/Gold/subtask-1-gold.txt"
_STS = "ro_sts/dataset/text-similarity/RO-STS.{}.tsv"
_UD_FILE_SPLIT = {"train": "train", "validation": "dev", "test": "test"}

# options each task accepts (besides normalize), with their allowed values
_OPTIONS: dict[str, dict[str, tuple]] = {
    "upos": {},
    "xpos": {},
    "sapn": {},
    "sar": {},
    "sts": {},
    "ner": {"version": (1, 2), "v2_train": ("download", "carve")},
    "di": {"source": ("auto", "moroco", "vardial")},
}


def bio_names(classes: list[str]) -> list[str]:
    """``O`` then ``B-X``, ``I-X`` for each class, in the given class order."""
    return ["O"] + [f"{p}-{c}" for c in classes for p in ("B", "I")]


# --- data folder ---------------------------------------------------------------------------------------


def resolve_data_dir(data_dir: str | Path | None = None) -> Path:
    """The data folder: the argument, else ``$KDLIB_DATA_DIR``, else ``~/.cache/kdlib/data``.

    A folder named by the argument or the variable must exist (a typo should not silently download).
    """
    if data_dir is None and os.environ.get("KDLIB_DATA_DIR"):
        data_dir, origin = os.environ["KDLIB_DATA_DIR"], "KDLIB_DATA_DIR"
    else:
        origin = "data_dir"
    if data_dir is None:
        return sources.default_cache_dir()
    path = Path(data_dir).expanduser().resolve()
    if not path.is_dir():
        raise FileNotFoundError(
            f"{origin}={data_dir} is not a folder; point it at a folder laid out like the "
            f"offline mirror ../shared/data (see its README.md)"
        )
    return path


# --- parsing (the generic readers live in kdlib.data.readers) ------------------------------------------------

_fail = readers.fail
_read_conllu = readers.read_conllu
_tagging_split = readers.conllu_records


def _load_json(path: Path):
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except json.JSONDecodeError as exc:
        raise _fail(path, exc.lineno, f"invalid JSON at column {exc.colno}: {exc.msg}") from None


def _laroseda_reviews(path: Path) -> list[dict]:
    data = _load_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("reviews"), list):
        raise _fail(path, None, 'expected a JSON object {"reviews": [...]} (LaRoSeDa data_splitted format)')
    keys = ("index", "title", "content", "starRating")
    for i, review in enumerate(data["reviews"]):
        if not isinstance(review, dict) or any(not isinstance(review.get(k), str) for k in keys):
            raise _fail(path, None, f"review #{i}: expected string fields {', '.join(keys)}, got {review!r:.120}")
        if review["starRating"] not in SAR_NAMES:
            raise _fail(
                path,
                None,
                f"review #{i} (index {review['index']}): expected starRating 1, 2, 4 or 5, "
                f"found {review['starRating']!r}",
            )
    return data["reviews"]


def _sts_split(path: Path, norm: Callable[[str], str], split: str) -> list[dict]:
    records = []
    with open(path, encoding="utf-8") as fh:
        for lineno, raw in enumerate(fh, 1):
            line = raw.rstrip("\n").rstrip("\r")
            if not line.strip():
                continue
            cols = line.split("\t")
            if len(cols) != 3:
                raise _fail(
                    path, lineno, f"expected 3 tab-separated columns (score, sentence1, sentence2), found {len(cols)}"
                )
            try:
                score = float(cols[0])
            except ValueError:
                score = float("nan")
            if not 0.0 <= score <= 5.0:
                raise _fail(path, lineno, f"expected a similarity score between 0 and 5 in column 1, found {cols[0]!r}")
            records.append(
                {"id": f"{split}-{lineno}", "text_a": norm(cols[1]), "text_b": norm(cols[2]), "label": score}
            )
    return records


def _id_label_lines(path: Path, what: str) -> list[tuple[str, str, int]]:
    rows = []
    with open(path, encoding="utf-8") as fh:
        for lineno, raw in enumerate(fh, 1):
            line = raw.rstrip("\n").rstrip("\r")
            if not line:
                continue
            key, sep, value = line.partition("\t")
            if not sep:
                raise _fail(path, lineno, f"expected ID<TAB>{what}")
            rows.append((key, value, lineno))
    return rows


# --- per-task builders: return ({split: records}, {split: [relpaths]}, source note) ------------------------


class _Files:
    """Fetches files for one load and remembers which split used which file."""

    def __init__(self, data_dir: Path):
        self.data_dir = data_dir
        self.used: dict[str, list[str]] = {s: [] for s in SPLITS}

    def get(self, relpath: str, *splits: str) -> Path:
        path = sources.fetch(relpath, self.data_dir)
        for split in splits:
            self.used[split].append(relpath)
        return path


def _stratified_split(labels: list, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    from sklearn.model_selection import train_test_split

    idx = list(range(len(labels)))
    keep, carved = train_test_split(idx, test_size=fraction, random_state=seed, stratify=labels)
    return sorted(keep), sorted(carved)


def _build_ner(files: _Files, norm, version: int = 1, v2_train: str = "download") -> tuple[dict, list[str]]:
    if version == 1:
        names = bio_names(RONEC_V1_CLASSES)
        return {
            s: _tagging_split(files.get(_RONEC1.format(_UD_FILE_SPLIT[s]), s), 11, 10, names, norm, bio=True)
            for s in SPLITS
        }, names
    names = bio_names(RONEC_V2_CLASSES)

    def read(split_file: str, *splits: str) -> list[dict]:
        path = files.get(_RONEC2.format(split_file), *splits)
        data = _load_json(path)
        if not isinstance(data, list):
            raise _fail(path, None, "expected a JSON list of sentences (RONEC v2 format)")
        recs = []
        for i, item in enumerate(data):
            ok = (
                isinstance(item, dict)
                and isinstance(item.get("tokens"), list)
                and isinstance(item.get("ner_tags"), list)
                and len(item["tokens"]) == len(item["ner_tags"])
            )
            if not ok or any(t not in names for t in item["ner_tags"]):
                raise _fail(
                    path,
                    None,
                    f"sentence #{i}: expected tokens and ner_tags lists of equal length "
                    f"with BIO tags of the 15 RONEC v2 classes",
                )
            recs.append(
                {"id": str(item.get("id", i)), "tokens": [norm(t) for t in item["tokens"]], "tags": item["ner_tags"]}
            )
        return recs

    test = read("test", "test")
    if v2_train == "carve":
        pool = read("valid", "train", "validation")
        import random

        order = list(range(len(pool)))
        random.Random(SPLIT_SEED).shuffle(order)
        n_val = round(len(pool) * RONEC_V2_CARVE_VALIDATION)
        val_idx, train_idx = sorted(order[:n_val]), sorted(order[n_val:])
        return {"train": [pool[i] for i in train_idx], "validation": [pool[i] for i in val_idx], "test": test}, names
    try:
        train = read("train", "train")
    except sources.DataFileMissingError as exc:
        raise sources.DataFileMissingError(
            f"{exc}\nRONEC v2's train split is not in the offline mirror. Use load_task('ner') for RONEC v1 "
            f"(complete), or load_task('ner', version=2, v2_train='carve') to carve train/validation from "
            f"the v2 validation file."
        ) from None
    return {"train": train, "validation": read("valid", "validation"), "test": test}, names


def _build_laroseda(files: _Files, norm, task: str) -> tuple[dict, list[str]]:
    train_all = _laroseda_reviews(files.get(_LAROSEDA.format("train"), "train", "validation"))
    test = _laroseda_reviews(files.get(_LAROSEDA.format("test"), "test"))
    keep, carved = _stratified_split([r["starRating"] for r in train_all], LAROSEDA_VALIDATION_FRACTION, SPLIT_SEED)

    def rec(r: dict) -> dict:
        star = r["starRating"]
        label = ("negative" if star in {"1", "2"} else "positive") if task == "sapn" else star
        return {"id": r["index"], "text_a": norm(r["title"]), "text_b": norm(r["content"]), "label": label}

    out = {
        "train": [rec(train_all[i]) for i in keep],
        "validation": [rec(train_all[i]) for i in carved],
        "test": [rec(r) for r in test],
    }
    return out, SAPN_NAMES if task == "sapn" else SAR_NAMES


def _moroco_available(data_dir: Path) -> bool:
    return all(sources.locate(_MOROCO.format(s, "samples"), data_dir)[1] != "missing" for s in SPLITS)


def _build_moroco(files: _Files, norm) -> dict:
    out = {}
    dialect = {"1": "moldavian", "2": "romanian"}
    for split in SPLITS:
        samples_path = files.get(_MOROCO.format(split, "samples"), split)
        labels_path = files.get(_MOROCO.format(split, "dialect_labels"), split)
        samples = _id_label_lines(samples_path, "text")
        labels = _id_label_lines(labels_path, "dialect label (1 or 2)")
        if len(samples) != len(labels):
            raise _fail(samples_path, None, f"{len(samples)} samples but {len(labels)} labels in {labels_path}")
        recs = []
        for (sid, text, _), (lid, lab, lineno) in zip(samples, labels):
            if sid != lid:
                raise _fail(labels_path, lineno, f"expected ID {sid} (same order as {samples_path.name}), found {lid}")
            if lab not in dialect:
                raise _fail(labels_path, lineno, f"expected dialect label 1 (Moldavian) or 2 (Romanian), found {lab!r}")
            recs.append({"id": sid, "text_a": norm(text), "label": dialect[lab]})
        out[split] = recs
    return out


def _build_vardial(files: _Files, norm) -> dict:
    zip_path = files.get(_VARDIAL_ZIP, *SPLITS)
    gold_path = files.get(_VARDIAL_GOLD, *SPLITS)
    with zipfile.ZipFile(zip_path) as zf:
        name = next((n for n in zf.namelist() if n.endswith("/test.txt") and "__MACOSX" not in n), None)
        if name is None:
            raise _fail(zip_path, None, "expected a test.txt file inside the VarDial 2019 MRC zip")
        texts = io.TextIOWrapper(zf.open(name), encoding="utf-8").read().split("\n")
    if texts and texts[-1] == "":
        texts.pop()
    gold = Path(gold_path).read_text(encoding="utf-8").split("\n")
    if gold and gold[-1] == "":
        gold.pop()
    if len(texts) != len(gold):
        raise _fail(gold_path, None, f"expected one MD/RO label per text of {name} ({len(texts)}), found {len(gold)}")
    labels = []
    for lineno, g in enumerate(gold, 1):
        g = g.strip()
        if g not in {"MD", "RO"}:
            raise _fail(gold_path, lineno, f"expected MD or RO, found {g!r}")
        labels.append("moldavian" if g == "MD" else "romanian")
    recs = [
        {"id": f"vardial-{i + 1}", "text_a": norm(t.strip()), "label": lab}
        for i, (t, lab) in enumerate(zip(texts, labels))
    ]
    rest, test_idx = _stratified_split(labels, VARDIAL_FRACTIONS[2], SPLIT_SEED)
    val_share = VARDIAL_FRACTIONS[1] / (VARDIAL_FRACTIONS[0] + VARDIAL_FRACTIONS[1])
    train_pos, val_pos = _stratified_split([labels[i] for i in rest], val_share, SPLIT_SEED)
    return {
        "train": [recs[rest[i]] for i in train_pos],
        "validation": [recs[rest[i]] for i in val_pos],
        "test": [recs[i] for i in test_idx],
    }


def _build_di(files: _Files, norm, source: str = "auto") -> tuple[dict, list[str], str]:
    if source == "auto":
        source = "moroco" if _moroco_available(files.data_dir) else "vardial-auto"
    out = _build_moroco(files, norm) if source == "moroco" else _build_vardial(files, norm)
    return out, DI_NAMES, source


_DI_FALLBACK = "; MOROCO texts not found"


def _warn_source(name: str, source: str) -> None:
    """Say which DI source ``auto`` fell back to, on every load (the parse itself is cached)."""
    if name == "di" and source.endswith(_DI_FALLBACK):
        warnings.warn(
            "di: MOROCO's samples.txt files are not available locally; using the VarDial 2019 MRC "
            "set carved 80/10/10 (pass source='moroco' to download MOROCO)",
            stacklevel=3,
        )


# --- declared tasks: generic formats (kdlib.data.readers), validation carved from train -----------------------


def _declared_file(files: _Files, spec: TaskSpec, split: str) -> Path:
    """A declared split's file: absolute, a pinned data-folder file (fetched), or data-folder relative."""
    value = spec.options[split]
    path = Path(value).expanduser()
    if not path.is_absolute():
        if value in sources.REGISTRY:
            return files.get(value, split)
        path = files.data_dir / value
    if not path.is_file():
        raise FileNotFoundError(
            f"task {spec.name!r}: {split} file {path} does not exist (expected a {spec.format} "
            f"file; a relative path is read from the data folder {files.data_dir})"
        )
    files.used[split].append(str(path))
    return path


def _fixed_names(spec: TaskSpec) -> list[str] | None:
    """The label inventory known before reading: declared ``labels``, or the 17 UPOS tags."""
    if spec.options.get("labels"):
        return [str(x) for x in spec.options["labels"]]
    if spec.format == "conllu" and spec.options.get("column", "upos") == "upos":
        return UPOS_TAGS
    return None


def _read_declared_file(spec: TaskSpec, path: Path, split: str, names: list[str] | None, norm) -> list[dict]:
    allowed = set(names) if names is not None else None
    if spec.format == "conllu":
        column = tasks_mod.CONLLU_COLUMNS[spec.options.get("column", "upos")]
        return readers.conllu_records(path, 10, column, names, norm)
    if spec.format == "conll":
        return readers.conll_records(path, names, norm, split)
    if spec.format == "jsonl":
        return readers.jsonl_records(path, spec.options, spec.kind, norm, split, allowed)
    delimiter = "," if spec.format == "csv" else "\t"
    return readers.table_records(path, delimiter, spec.options, spec.kind, norm, split, allowed)


def _read_hf_dataset(spec: TaskSpec, names: list[str] | None, norm) -> dict[str, list[dict]]:
    """The splits of a ``datasets`` dataset (hub name or saved folder); validation may be absent."""
    name, opts = spec.options["name"], spec.options
    path = Path(name).expanduser()
    try:
        ds = datasets.load_from_disk(str(path)) if path.is_dir() else datasets.load_dataset(name, opts.get("config"))
    except (FileNotFoundError, ValueError, ConnectionError) as exc:
        raise FileNotFoundError(
            f"task {spec.name!r}: cannot load dataset {name!r}"
            f"{' config ' + repr(opts['config']) if opts.get('config') else ''}: {exc}"
        ) from None
    if not isinstance(ds, DatasetDict):
        raise ValueError(
            f"task {spec.name!r}: dataset {name!r} is a single split; expected splits "
            f"(a DatasetDict with train and test)"
        )
    out = {}
    for split in SPLITS:
        split_name = opts.get(split, split)
        if split_name not in ds:
            if split == "validation" and "validation" not in opts:
                continue
            raise ValueError(
                f"task {spec.name!r}: dataset {name!r} has no split {split_name!r} (used as {split}); "
                f"its splits: {', '.join(ds)}"
            )
        out[split] = readers.dataset_records(
            ds[split_name],
            ds[split_name].features,
            f"{name} [{split_name}]",
            opts,
            spec.kind,
            norm,
            set(names) if names else None,
        )
    return out


def _carve_validation(spec: TaskSpec, train: list[dict]) -> tuple[list[dict], list[dict], str]:
    """(train, validation, note): a seeded share of train, stratified by label where every class allows it."""
    from sklearn.model_selection import train_test_split

    fraction = spec.options.get("validation_fraction", tasks_mod.DEFAULT_VALIDATION_FRACTION)
    n = len(train)
    n_val = max(1, round(n * fraction))
    if n < 2 or n_val >= n:
        raise ValueError(
            f"task {spec.name!r}: train has {n} example(s), too few to carve a validation split "
            f"({fraction:.0%}); declare a validation file"
        )
    labels = [r["label"] for r in train] if spec.kind == "classification" else None
    counts = collections.Counter(labels or [])
    stratify = labels if labels and min(counts.values()) >= 2 and len(counts) <= min(n_val, n - n_val) else None
    keep, carved = train_test_split(list(range(n)), test_size=n_val, random_state=SPLIT_SEED, stratify=stratify)
    note = (
        f"validation carved from train: {n_val} of {n} examples ({fraction:.0%}, seed {SPLIT_SEED}, "
        f"{'stratified by label' if stratify else 'not stratified'})"
    )
    return [train[i] for i in sorted(keep)], [train[i] for i in sorted(carved)], note


def _inventory(records: dict[str, list[dict]], spec: TaskSpec) -> list[str]:
    """Sorted label inventory of all splits (BIO: O, then B-/I- of each sorted class; numbers by value)."""
    if spec.kind == "tagging":
        seen = {t for recs in records.values() for r in recs for t in r["tags"]}
        if spec.format == "conll":
            return bio_names(sorted({t[2:] for t in seen if t != "O"}))
    else:
        seen = {r["label"] for recs in records.values() for r in recs}

    def key(label: str):
        try:
            return (0, float(label), label)
        except ValueError:
            return (1, 0.0, label)

    return sorted(seen, key=key)


def _build_declared(spec: TaskSpec, files: _Files, norm) -> tuple[dict, list[str] | None, str]:
    """Records of a task of a generic format, its label names and a description of the source."""
    names = _fixed_names(spec)
    if spec.format == "datasets":
        records = _read_hf_dataset(spec, names, norm)
    else:
        records = {
            s: _read_declared_file(spec, _declared_file(files, spec, s), s, names, norm)
            for s in SPLITS
            if spec.options.get(s)
        }
    source = spec.dataset
    if "validation" not in records:
        records["train"], records["validation"], note = _carve_validation(spec, records["train"])
        files.used["validation"] = list(files.used["train"])
        source += f" ({note})"
        log.info("task %s: %s", spec.name, note)
    if names is None and spec.kind != "regression":
        names = _inventory(records, spec)
    return records, names, source


# --- assembling datasets ------------------------------------------------------------------------------------


def _features(kind: str, names: list[str] | None, pair: bool) -> Features:
    if kind == "tagging":
        return Features(
            {"id": Value("string"), "tokens": Sequence(Value("string")), "tags": Sequence(ClassLabel(names=names))}
        )
    cols = {"id": Value("string"), "text_a": Value("string")}
    if pair:
        cols["text_b"] = Value("string")
    cols["label"] = Value("float32") if kind == "regression" else ClassLabel(names=names)
    return Features(cols)


_DEFAULTS = {"ner": {"version": 1, "v2_train": "download"}, "di": {"source": "auto"}}


def _check_options(name: str, options: dict) -> dict:
    """Validate options and fill in defaults (so equal requests share one cache entry)."""
    allowed = _OPTIONS[name]
    for key, value in options.items():
        if key not in allowed:
            valid = ", ".join(allowed) or "none"
            raise TypeError(f"load_task({name!r}): unknown option {key!r}; valid options: {valid}")
        if value not in allowed[key]:
            raise ValueError(f"load_task({name!r}): {key}={value!r}; expected one of {allowed[key]}")
    return {**_DEFAULTS.get(name, {}), **options}


def _check_task(name) -> TaskSpec:
    """The spec of a task name or declaration (ValueError listing the valid names for an unknown one)."""
    return get_task(name)


def _build_builtin(spec: TaskSpec, files: _Files, norm, opts: dict) -> tuple[dict, list[str] | None, str]:
    """The registered builder of one of the seven Romanian tasks (UPOS/XPOS: the generic CoNLL-U reader)."""
    name = spec.name
    if spec.format == "conllu":
        return _build_declared(spec, files, norm)
    if spec.format == "ronec":
        records, names = _build_ner(files, norm, **opts)
        return (
            records,
            names,
            f"RONEC v{opts.get('version', 1)}"
            + (" (train/validation carved from v2 valid)" if opts.get("v2_train") == "carve" else ""),
        )
    if spec.format == "laroseda":
        records, names = _build_laroseda(files, norm, name)
        return records, names, "LaRoSeDa (validation carved from train, 10%, stratified)"
    if spec.format == "moroco":
        records, names, used = _build_di(files, norm, **opts)
        source = "MOROCO (official splits)" if used == "moroco" else "VarDial 2019 MRC (carved 80/10/10, stratified)"
        return records, names, source + (_DI_FALLBACK if used == "vardial-auto" else "")
    records = {s: _sts_split(files.get(_STS.format(_UD_FILE_SPLIT[s]), s), norm, s) for s in SPLITS}
    return records, None, spec.dataset


def _assemble(spec: TaskSpec, records: dict, names: list[str] | None, files: _Files, source: str) -> DatasetDict:
    """One Dataset per split with the kdlib.data.load features (a declared task's source in ``info.description``)."""
    pair = spec.kind != "tagging" and any("text_b" in r for r in records["train"])
    features = _features(spec.kind, names, pair=pair)
    info = None if spec.builtin else datasets.DatasetInfo(description=source, features=features)
    out = {}
    for split in SPLITS:
        if not records[split]:
            raise ValueError(f"task {spec.name!r}: split {split!r} is empty (read from {', '.join(files.used[split])})")
        out[split] = Dataset.from_list(
            records[split], features=features, info=copy.deepcopy(info), split=datasets.NamedSplit(split)
        )
    return DatasetDict(out)


def _identity(text: str) -> str:
    return text


@lru_cache(maxsize=32)
def _load_cached(name: str, data_dir: str, normalize: bool, options: tuple) -> tuple[DatasetDict, dict, str]:
    spec = TASKS[name]
    files = _Files(Path(data_dir))
    norm = normalizer(spec.language) if normalize else _identity
    records, names, source = _build_builtin(spec, files, norm, dict(options))
    return _assemble(spec, records, names, files, source), {s: list(v) for s, v in files.used.items()}, source


@lru_cache(maxsize=32)
def _load_declared_cached(
    name: str, declaration: str, data_dir: str, normalize: bool, stamps: tuple
) -> tuple[DatasetDict, dict, str]:
    spec = tasks_mod.parse_declaration(name, json.loads(declaration))
    files = _Files(Path(data_dir))
    norm = normalizer(spec.language) if normalize else _identity
    try:
        records, names, source = _build_declared(spec, files, norm)
        ds = _assemble(spec, records, names, files, source)
    except ValueError as exc:
        message = str(exc)
        raise ValueError(message if message.startswith("task ") else f"task {name!r}: {message}") from None
    return ds, {s: list(v) for s, v in files.used.items()}, source


def _stamps(spec: TaskSpec, root: Path) -> tuple:
    """(path, mtime, size) of a declared task's files, so that an edited file is read again."""
    values = [spec.options.get("name")] if spec.format == "datasets" else [spec.options.get(s) for s in SPLITS]
    out = []
    for value in filter(None, values):
        path = Path(value).expanduser()
        path = path if path.is_absolute() else root / value
        stat = path.stat() if path.exists() else None
        out.append((str(path), stat.st_mtime_ns if stat else None, stat.st_size if stat else None))
    return tuple(out)


def _cached(name, data_dir, normalize: bool, options: dict):
    spec = _check_task(name)
    root = resolve_data_dir(data_dir)
    if spec.builtin:
        options = _check_options(spec.name, options)
        return _load_cached(spec.name, str(root), bool(normalize), tuple(sorted(options.items())))
    if options:
        raise TypeError(
            f"load_task({spec.name!r}): a declared task takes no options (got {sorted(options)}); "
            f"put them in its declaration"
        )
    declaration = json.dumps(spec.declaration(), sort_keys=True)
    return _load_declared_cached(spec.name, declaration, str(root), bool(normalize), _stamps(spec, root))


def load_task(
    name: str | Mapping | TaskSpec, data_dir: str | Path | None = None, *, normalize: bool = True, **options
) -> DatasetDict:
    """Load a task as a DatasetDict with train/validation/test (see the module docstring).

    ``name``: one of the seven Romanian tasks, a task declared in the active profile (kdlib.data.tasks), or a
    declaration mapping such as ``{"kind": "tagging", "format": "conllu", "column": "upos", "train": ...,
    "test": ...}``. Options of the built-in tasks: ``ner``: ``version`` (1 | 2), ``v2_train``
    ("download" | "carve"); ``di``: ``source`` ("auto" | "moroco" | "vardial"). Parsed results are
    cached in memory (declared files: until they change); each call returns a copy.
    """
    ds, _, source = _cached(name, data_dir, normalize, options)
    _warn_source(name if isinstance(name, str) else "", source)
    return copy.deepcopy(ds)


def load_split(name: str | Mapping, split: str, data_dir: str | Path | None = None, **kwargs) -> Dataset:
    """One split of a task; an unknown split name raises with the valid ones."""
    spec = _check_task(name)
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r} for task {spec.name!r}; valid splits: {', '.join(SPLITS)}")
    return load_task(name, data_dir, **kwargs)[split]


def task_sources(
    name: str | Mapping, data_dir: str | Path | None = None, *, normalize: bool = True, **options
) -> tuple[dict[str, list[str]], str]:
    """({split: [files read: data-folder relpaths or paths]}, description of the source) for one task."""
    _, used, source = _cached(name, data_dir, normalize, options)
    return used, source


def label_names(ds_dict: DatasetDict | Dataset, task: str | Mapping) -> list[str] | None:
    """Label names of a loaded task (None for a regression task such as ``sts``)."""
    spec = _check_task(task)
    ds = ds_dict["train"] if isinstance(ds_dict, DatasetDict) else ds_dict
    feature = ds.features["tags"].feature if spec.kind == "tagging" else ds.features["label"]
    return list(feature.names) if isinstance(feature, ClassLabel) else None


# --- `python -m kdlib data --check` ---------------------------------------------------------------------


def _file_note(path: str, root: Path) -> str:
    """A file read by a task: a pinned data file with its origin and checksum state, or the path itself."""
    if path not in sources.REGISTRY:
        return f"{path} [declared]"
    status = sources.file_status(path, root)
    return f"{status['relpath']} [{status['origin']}, {status['checksum']}]"


def check(data_dir: str | Path | None = None, tasks: list[str] | None = None) -> tuple[list[dict], bool]:
    """Load every task; rows {task, split, examples, tokens, source, files}; ok=False if anything failed."""
    rows, ok = [], True
    for name in tasks or tasks_mod.task_names():
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                ds = load_task(name, data_dir)
                used, source = task_sources(name, data_dir)
            root = resolve_data_dir(data_dir)
            for split in SPLITS:
                files = "; ".join(_file_note(r, root) for r in dict.fromkeys(used[split]))
                tokens = (
                    pc.sum(pc.list_value_length(ds[split].data.column("tokens"))).as_py()
                    if get_task(name).kind == "tagging"
                    else None
                )
                rows.append(
                    {
                        "task": name,
                        "split": split,
                        "examples": len(ds[split]),
                        "tokens": tokens,
                        "source": source,
                        "files": files,
                    }
                )
            for w in caught:
                rows.append(
                    {
                        "task": name,
                        "split": "-",
                        "examples": None,
                        "tokens": None,
                        "source": "warning",
                        "files": str(w.message).splitlines()[0],
                    }
                )
        except Exception as exc:  # report every task, then fail
            ok = False
            rows.append(
                {
                    "task": name,
                    "split": "-",
                    "examples": None,
                    "tokens": None,
                    "source": "FAILED",
                    "files": f"{type(exc).__name__}: {exc}".splitlines()[0],
                }
            )
    return rows, ok


def format_table(rows: list[dict]) -> str:
    """Plain-text table of ``check`` rows."""
    header = ["task", "split", "examples", "tokens", "source", "files"]
    cells = [
        [("" if r[h] is None else f"{r[h]:,}" if isinstance(r[h], int) else str(r[h])) for h in header] for r in rows
    ]
    widths = [max(len(h), *(len(c[i]) for c in cells)) if cells else len(h) for i, h in enumerate(header)]
    widths[-1] = len(header[-1])  # last column is not padded
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += [
        "  ".join(c.ljust(w) if i < 2 or i > 3 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))).rstrip()
        for row in cells
    ]
    return "\n".join(lines)


def cli(argv: list[str]) -> int:
    """``python -m kdlib data --check [--data-dir D] [--task T ...] [--json]``."""
    parser = argparse.ArgumentParser(prog="python -m kdlib data", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="load every task and print split sizes and sources")
    parser.add_argument("--data-dir", default=None, help="data folder (default: $KDLIB_DATA_DIR)")
    parser.add_argument(
        "--task", action="append", help="only these tasks (repeatable; default: the active tasks, see kdlib.data.tasks)"
    )
    parser.add_argument("--json", action="store_true", help="print the rows as JSON instead of a table")
    args = parser.parse_args(argv)
    if not args.check:
        parser.print_help()
        return 2
    rows, ok = check(args.data_dir, args.task)
    print(json.dumps(rows, indent=1, ensure_ascii=False) if args.json else format_table(rows))
    if not ok:
        print("data check FAILED (see the rows marked FAILED)", file=sys.stderr)
    return 0 if ok else 1

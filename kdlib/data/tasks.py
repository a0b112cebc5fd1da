"""The task registry: what a task is (kind, headline metric, reader and its files), for any language.

A task is a :class:`TaskSpec`. The seven Romanian tasks of the paper are built-in entries
(``BUILTIN``: UPOS and XPOS are ``conllu`` entries on UD Romanian-RRT; the others name the special
reader of their dataset, ``ronec``, ``laroseda``, ``moroco``, ``ro-sts``, see :mod:`kdlib.data.load`). Any other task is
*declared* by a mapping, validated by :func:`parse_declaration`::

    {"kind": "tagging", "format": "conllu", "column": "upos",
     "train": "/data/nl_alpino-ud-train.conllu", "test": "/data/nl_alpino-ud-test.conllu"}

Keys (unknown keys are an error):

* ``kind``: ``tagging`` | ``classification`` | ``regression`` (required);
* ``format``: ``conllu`` (``column``: ``upos`` (default), ``xpos`` or ``feats``), ``conll`` (token in the
  first column, a BIO tag in the last; ``-DOCSTART-`` lines skipped), ``csv`` / ``tsv`` (a header row) /
  ``jsonl`` (one object per line; columns named by ``text`` or ``text_a`` + ``text_b``, ``label``, an
  optional ``id``; tagging jsonl: ``tokens`` and ``tags`` lists), or ``datasets`` (``name``: a hub name
  or a local path, ``config``; ``train``/``validation``/``test`` are then split names);
* ``train``, ``test`` (required, file paths), ``validation`` (optional: when absent, ``validation_fraction``
  (default 0.1) of train is carved off, seeded, stratified by label for classification; test stays whole);
* ``metric`` (default: macro_f1 for tagging and classification, pearson for regression), ``labels``
  (the label inventory and its order; default: universal UPOS tags for ``upos``, else the sorted labels
  of all splits), ``range`` (regression: ``[low, high]`` bounds checked per line), ``language``
  (text normalisation, default the profile's), ``description``, ``dataset`` (a name for tables).

A relative path is a data-folder path: a pinned file of :mod:`kdlib.data.sources` is fetched (and
verified) like the built-in tasks' files, any other is read from the data folder.

*Active* declarations: :func:`register_tasks` (in this process), else the JSON file named by the
environment variable ``KDLIB_TASKS`` (``{"language": ..., "tasks": {name: declaration}}``), which
``python -m kdlib run`` writes to ``<run>/tasks.json`` for a profile with a ``tasks`` mapping and sets
for the notebooks' kernels. :func:`get_task` resolves a name through the active declarations, then
the built-ins; :func:`task_names` lists the active tasks (the declared ones, else the seven).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "TaskSpec",
    "BUILTIN",
    "BUILTIN_NAMES",
    "KINDS",
    "FORMATS",
    "TASKS_ENV",
    "DEFAULT_LANGUAGE",
    "parse_declaration",
    "parse_declarations",
    "check_language",
    "register_tasks",
    "clear_registered",
    "active",
    "get_task",
    "task_names",
    "unknown_task_error",
]

KINDS = ("tagging", "classification", "regression")
DEFAULT_METRIC = {"tagging": "macro_f1", "classification": "macro_f1", "regression": "pearson"}
METRICS_OF_KIND = {
    "tagging": ("macro_f1", "accuracy"),
    "classification": ("macro_f1", "accuracy"),
    "regression": ("pearson",),
}
# format -> kinds it can hold
FORMATS = {
    "conllu": ("tagging",),
    "conll": ("tagging",),
    "csv": ("classification", "regression"),
    "tsv": ("classification", "regression"),
    "jsonl": KINDS,
    "datasets": KINDS,
}
CONLLU_COLUMNS = {"upos": 3, "xpos": 4, "feats": 5}
TASKS_ENV = "KDLIB_TASKS"
DEFAULT_LANGUAGE = "ro"
DEFAULT_VALIDATION_FRACTION = 0.1

_COMMON_KEYS = {
    "kind",
    "format",
    "train",
    "validation",
    "test",
    "metric",
    "labels",
    "language",
    "description",
    "dataset",
    "validation_fraction",
}
_FORMAT_KEYS = {
    "conllu": {"column"},
    "conll": set(),
    "csv": {"text", "text_a", "text_b", "label", "id", "range"},
    "tsv": {"text", "text_a", "text_b", "label", "id", "range"},
    "jsonl": {"text", "text_a", "text_b", "label", "id", "range", "tokens", "tags"},
    "datasets": {"name", "config", "text", "text_a", "text_b", "label", "id", "range", "tokens", "tags"},
}
_LANGUAGE = re.compile(r"^[A-Za-z]{2,3}([-_][A-Za-z0-9]{2,8})*$")


@dataclass(frozen=True)
class TaskSpec:
    """What a task is: its name, head type, headline metric, dataset, description, and how to read it.

    ``format`` names the reader (a built-in dataset reader or a generic format) and ``options`` holds
    the rest of its declaration (files, columns, labels), as a JSON-friendly dict.
    """

    name: str
    kind: str  # "tagging" | "classification" | "regression"
    metric: str  # "macro_f1" | "accuracy" | "pearson"
    dataset: str
    description: str
    format: str = "builtin"
    options: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)
    language: str = DEFAULT_LANGUAGE

    @property
    def builtin(self) -> bool:
        """True for one of the seven Romanian tasks of the paper (kdlib.data.tasks.BUILTIN)."""
        return BUILTIN.get(self.name) is self

    def declaration(self) -> dict:
        """The mapping this spec was parsed from (declared tasks), JSON-friendly."""
        return {
            "kind": self.kind,
            "format": self.format,
            "metric": self.metric,
            "language": self.language,
            "dataset": self.dataset,
            "description": self.description,
            **dict(self.options),
        }


_RRT = {
    split: f"ud_romanian_rrt/ro_rrt-ud-{part}.conllu"
    for split, part in (("train", "train"), ("validation", "dev"), ("test", "test"))
}
BUILTIN: dict[str, TaskSpec] = {
    "upos": TaskSpec(
        "upos",
        "tagging",
        "macro_f1",
        "UD Romanian-RRT",
        "universal part-of-speech tag per token",
        "conllu",
        {"column": "upos", **_RRT},
    ),
    "xpos": TaskSpec(
        "xpos",
        "tagging",
        "macro_f1",
        "UD Romanian-RRT",
        "MULTEXT-East (MSD) tag per token",
        "conllu",
        {"column": "xpos", **_RRT},
    ),
    "ner": TaskSpec("ner", "tagging", "macro_f1", "RONEC v1 (v2 optional)", "BIO named-entity tag per token", "ronec"),
    "sapn": TaskSpec(
        "sapn", "classification", "accuracy", "LaRoSeDa", "review polarity: negative / positive", "laroseda"
    ),
    "sar": TaskSpec("sar", "classification", "macro_f1", "LaRoSeDa", "review star rating: 1, 2, 4, 5", "laroseda"),
    "di": TaskSpec(
        "di", "classification", "macro_f1", "MOROCO / VarDial 2019 MRC", "dialect: Moldavian / Romanian", "moroco"
    ),
    "sts": TaskSpec("sts", "regression", "pearson", "RO-STS", "sentence-pair similarity, 0-5", "ro-sts"),
}
BUILTIN_NAMES = tuple(BUILTIN)


# --- validating declarations ------------------------------------------------------------------------------


def check_language(language: Any, where: str) -> str:
    """A language code such as ``ro``, ``nl`` or ``pt-BR`` (else ValueError naming ``where``)."""
    if not isinstance(language, str) or not _LANGUAGE.match(language):
        raise ValueError(f"{where}: language must be a language code such as 'ro', 'nl' or 'id', got {language!r}")
    return language


def _bad(name: str, what: str) -> ValueError:
    return ValueError(f"task {name!r}: {what}")


def _check_columns(name: str, decl: dict, fmt: str, kind: str) -> None:
    for key in ("text", "text_a", "text_b", "label", "id", "tokens", "tags", "name", "config"):
        if key in decl and not (isinstance(decl[key], str) and decl[key]):
            raise _bad(name, f"`{key}` must be a non-empty column name (string), got {decl[key]!r}")
    if "text" in decl and ("text_a" in decl or "text_b" in decl):
        raise _bad(name, "give either `text` (one text) or `text_a` and `text_b` (a pair), not both")
    if "text_b" in decl and "text_a" not in decl:
        raise _bad(name, "`text_b` needs `text_a` (the first text of the pair)")
    if kind == "tagging" and any(k in decl for k in ("text", "text_a", "text_b", "label", "range")):
        raise _bad(name, "a tagging task has `tokens` and `tags` columns, not text/label")
    if kind != "tagging" and any(k in decl for k in ("tokens", "tags")):
        raise _bad(name, f"a {kind} task has text and `label` columns, not tokens/tags")
    if fmt == "datasets" and "name" not in decl:
        raise _bad(name, "format 'datasets' needs `name`: a hub dataset name or a local path")
    if fmt == "conllu":
        column = decl.get("column", "upos")
        if column not in CONLLU_COLUMNS:
            raise _bad(name, f"`column` must be one of {', '.join(CONLLU_COLUMNS)} (CoNLL-U), got {column!r}")


def _check_splits(name: str, decl: dict, fmt: str) -> None:
    required = () if fmt == "datasets" else ("train", "test")
    for split in ("train", "validation", "test"):
        value = decl.get(split)
        if value is None:
            if split in required:
                raise _bad(name, f"`{split}` is required: the path of the {split} file")
            continue
        if not isinstance(value, str) or not value:
            what = "a split name" if fmt == "datasets" else "a file path"
            raise _bad(name, f"`{split}` must be {what} (string), got {value!r}")
        if fmt != "datasets" and os.path.isabs(value) and not os.path.isfile(value):
            raise FileNotFoundError(f"task {name!r}: {split} file {value} does not exist (expected a {fmt} file)")
    fraction = decl.get("validation_fraction", DEFAULT_VALIDATION_FRACTION)
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction < 1:
        raise _bad(name, f"`validation_fraction` must be a number between 0 and 1, got {fraction!r}")


def _check_extras(name: str, decl: dict, kind: str) -> None:
    labels = decl.get("labels")
    if labels is not None:
        if kind == "regression":
            raise _bad(name, "`labels` applies to tagging and classification tasks, not regression")
        if not isinstance(labels, list) or not labels or len(set(map(str, labels))) != len(labels):
            raise _bad(name, f"`labels` must be a non-empty list of distinct labels, got {labels!r}")
    bounds = decl.get("range")
    if bounds is not None:
        ok = (
            isinstance(bounds, list)
            and len(bounds) == 2
            and all(isinstance(b, (int, float)) and not isinstance(b, bool) for b in bounds)
            and bounds[0] < bounds[1]
        )
        if kind != "regression" or not ok:
            raise _bad(name, f"`range` must be [low, high] with low < high, for a regression task; got {bounds!r}")
    for key in ("description", "dataset"):
        if key in decl and not isinstance(decl[key], str):
            raise _bad(name, f"`{key}` must be a string, got {decl[key]!r}")


def parse_declaration(name: str, decl: Any, *, language: str | None = None) -> TaskSpec:
    """Validate one declaration (see the module docstring) and return its :class:`TaskSpec`.

    Raises ValueError (FileNotFoundError for a missing absolute file) naming the task and the key.
    ``language`` is the default when the declaration sets none (the profile's language, else ``ro``).
    """
    if not isinstance(name, str) or not re.match(r"^[A-Za-z0-9][\w.-]*$", name):
        raise ValueError(f"task name {name!r}: expected letters, digits, '_', '-' or '.'")
    if not isinstance(decl, Mapping):
        raise _bad(name, f"expected a mapping (kind, format, train, test, ...), got {type(decl).__name__}")
    decl = dict(decl)
    kind, fmt = decl.get("kind"), decl.get("format")
    if kind not in KINDS:
        raise _bad(name, f"`kind` must be one of {', '.join(KINDS)}, got {kind!r}")
    if fmt not in FORMATS:
        raise _bad(name, f"`format` must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if kind not in FORMATS[fmt]:
        raise _bad(name, f"format {fmt!r} holds {' or '.join(FORMATS[fmt])} tasks, not {kind}")
    unknown = set(decl) - _COMMON_KEYS - _FORMAT_KEYS[fmt]
    if unknown:
        raise _bad(
            name,
            f"unknown key(s) {sorted(unknown)} for format {fmt!r}; valid keys: "
            f"{', '.join(sorted(_COMMON_KEYS | _FORMAT_KEYS[fmt]))}",
        )
    metric = decl.pop("metric", DEFAULT_METRIC[kind])
    if metric not in METRICS_OF_KIND[kind]:
        raise _bad(name, f"`metric` of a {kind} task must be one of {', '.join(METRICS_OF_KIND[kind])}, got {metric!r}")
    lang = check_language(decl.pop("language", language or DEFAULT_LANGUAGE), f"task {name!r}")
    _check_columns(name, decl, fmt, kind)
    _check_splits(name, decl, fmt)
    _check_extras(name, decl, kind)
    decl.pop("kind"), decl.pop("format")
    dataset = decl.pop("dataset", None) or decl.get("name") or Path(str(decl.get("train", name))).name
    description = decl.pop("description", None) or f"{kind} ({fmt})"
    return TaskSpec(name, kind, metric, dataset, description, fmt, decl, lang)


def parse_declarations(tasks: Any, *, language: str | None = None, where: str = "tasks") -> dict[str, TaskSpec]:
    """Validate a ``{name: declaration}`` mapping; errors are prefixed with ``where``."""
    if not isinstance(tasks, Mapping) or not tasks:
        raise ValueError(f"{where}: expected a non-empty mapping of task name -> declaration")
    out = {}
    for name, decl in tasks.items():
        try:
            out[str(name)] = parse_declaration(str(name), decl, language=language)
        except FileNotFoundError as exc:
            raise FileNotFoundError(f"{where}: {exc}") from None
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None
    return out


# --- the active declarations ----------------------------------------------------------------------------

_registered: dict[str, TaskSpec] = {}
_registered_language: list[str] = []
_env_cache: dict[tuple, tuple[str | None, dict[str, TaskSpec]]] = {}


def register_tasks(tasks: Mapping[str, Any], *, language: str | None = None) -> dict[str, TaskSpec]:
    """Make declared tasks (name -> declaration) the active ones in this process; returns their specs."""
    specs = parse_declarations(tasks, language=language)
    _registered.clear()
    _registered.update(specs)
    _registered_language[:] = [language] if language else []
    return specs


def clear_registered() -> None:
    """Forget the tasks of :func:`register_tasks` (the ``KDLIB_TASKS`` file, if any, applies again)."""
    _registered.clear()
    _registered_language.clear()


def _from_env() -> tuple[str | None, dict[str, TaskSpec]]:
    path = os.environ.get(TASKS_ENV)
    if not path:
        return None, {}
    try:
        stat = os.stat(path)
    except OSError:
        raise FileNotFoundError(
            f"{TASKS_ENV}={path}: no such file (expected the JSON task declarations of a run, <run>/tasks.json)"
        ) from None
    key = (path, stat.st_mtime_ns, stat.st_size)
    if key not in _env_cache:
        try:
            content = json.loads(Path(path).read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}, line {exc.lineno}: invalid JSON ({exc.msg})") from None
        if not isinstance(content, dict) or set(content) - {"language", "tasks"}:
            raise ValueError(f"{path}: expected a JSON object with keys language and tasks")
        language = content.get("language")
        if language is not None:
            check_language(language, path)
        specs = parse_declarations(content["tasks"], language=language, where=path) if content.get("tasks") else {}
        _env_cache.clear()
        _env_cache[key] = (language, specs)
    return _env_cache[key]


def active() -> tuple[str, dict[str, TaskSpec]]:
    """(language, declared tasks) in force: :func:`register_tasks`, else ``$KDLIB_TASKS``, else ("ro", {})."""
    if _registered or _registered_language:
        return (_registered_language[0] if _registered_language else DEFAULT_LANGUAGE), dict(_registered)
    language, specs = _from_env()
    return language or DEFAULT_LANGUAGE, specs


def task_names() -> tuple[str, ...]:
    """Names of the active tasks: the declared ones if any are active, else the seven built-in tasks."""
    declared = active()[1]
    return tuple(declared) if declared else BUILTIN_NAMES


def unknown_task_error(name: Any) -> ValueError:
    """The error for a task name that is neither declared nor built in (lists the valid names)."""
    valid = list(dict.fromkeys([*active()[1], *BUILTIN_NAMES]))
    return ValueError(
        f"unknown task {name!r}; valid tasks: {', '.join(valid)} (or declare it: a mapping with "
        f"kind, format, train, test; see kdlib.data.tasks)"
    )


def get_task(task: str | Mapping | TaskSpec) -> TaskSpec:
    """The spec of a task name (active declarations first, then the built-ins), a declaration or a spec."""
    if isinstance(task, TaskSpec):
        return task
    if isinstance(task, Mapping):
        return parse_declaration("declared", task, language=active()[0])
    declared = active()[1]
    if task in declared:
        return declared[task]
    if task in BUILTIN:
        return BUILTIN[task]
    raise unknown_task_error(task)

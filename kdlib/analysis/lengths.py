"""Scores split by input length: do some models do better on long inputs than on short ones?

RobBERTje (Delobelle et al. 2022) reports that distilling on merged consecutive sentences helps "on tasks
with long sequences". To read such a claim on one task (any classification or tagging task whose examples
vary in length; :func:`binning_problem` says in a sentence why a task's lengths cannot be binned), the test
examples are put into length bins and every model is scored on each bin separately, with the same intervals
as the whole-test scores:

1. :func:`example_lengths` counts the sub-tokens of every example of a split with the models' tokenizer,
   WITHOUT truncation (special tokens included): a sentence pair (LaRoSeDa title + review, STS) as the
   fine-tuning encodes it, a tagged sentence from its words. The count says how long the input is, even
   where fine-tuning truncates it to ``max_len`` (:func:`binned_scores` also reports how many were cut).
2. :func:`length_bins` cuts the examples into ``n_bins`` quantile bins of length (tertiles by default:
   short / medium / long), each example in exactly one bin; equal lengths always share a bin
   (``pandas.qcut`` on the lengths), so bins hold about, not exactly, a third each.
3. :func:`split_by_bin` restricts each run's :class:`~kdlib.eval.loyalty.Predictions` to the examples of a bin
   (for tagging tasks the unit is the sentence: every word of a sentence goes to its sentence's bin), and
   :func:`binned_scores` / :func:`binned_differences` score them with :func:`kdlib.analysis.stats.score_interval` /
   :func:`kdlib.analysis.stats.difference_interval` (paired bootstrap over the bin's examples and spread over
   fine-tuning seeds).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from kdlib.analysis.stats import difference_interval, score_interval
from kdlib.eval.loyalty import Predictions
from kdlib.eval.metrics import task_kind_and_metric

__all__ = [
    "binned_differences",
    "binned_scores",
    "binning_problem",
    "example_lengths",
    "length_bins",
    "split_by_bin",
    "subset_predictions",
    "unit_of",
]

BIN_NAMES = {2: ("short", "long"), 3: ("short", "medium", "long")}


def example_lengths(
    task: str, tokenizer, *, split: str = "test", data_dir: str | Path | None = None, dataset=None
) -> dict[str, int]:
    """Sub-tokens (special tokens included, no truncation) of every example of ``split``, by example id.

    ``dataset`` (a DatasetDict or a single split with the kdlib.data.load schema) replaces ``load_task``.
    """
    kind, _ = task_kind_and_metric(task)
    if dataset is None:
        from kdlib.data.load import load_task

        dataset = load_task(task, data_dir)
    rows = dataset[split] if hasattr(dataset, "keys") and split in dataset else dataset
    ids = [str(i) for i in rows["id"]]
    if kind == "tagging":
        enc = tokenizer(list(rows["tokens"]), is_split_into_words=True, truncation=False, verbose=False)
    else:
        pair = list(rows["text_b"]) if "text_b" in rows.column_names else None
        enc = tokenizer(list(rows["text_a"]), pair, truncation=False, verbose=False)  # long is fine: only counted
    return dict(zip(ids, (len(x) for x in enc["input_ids"])))


def length_bins(lengths: Mapping[str, int], n_bins: int = 3, *, labels: Sequence[str] | None = None) -> pd.DataFrame:
    """Quantile bins of ``lengths`` (id -> length): a frame indexed by id with ``length`` and ``bin``.

    ``bin`` is an ordered categorical (shortest first) named short / (medium /) long for 2-3 bins, else
    "bin 1".."bin n". Raises if the lengths cannot be cut into ``n_bins`` distinct bins.
    """
    if not isinstance(n_bins, int) or isinstance(n_bins, bool) or n_bins < 2:
        raise ValueError(f"length_bins: n_bins={n_bins!r}; expected an integer >= 2")
    if len(lengths) < n_bins:
        raise ValueError(f"length_bins: {len(lengths)} examples cannot fill {n_bins} bins")
    names = list(labels) if labels is not None else list(BIN_NAMES.get(n_bins, [f"bin {i + 1}" for i in range(n_bins)]))
    if len(names) != n_bins:
        raise ValueError(f"length_bins: {len(names)} labels for {n_bins} bins")
    frame = pd.DataFrame({"length": pd.Series(lengths, dtype="int64")})
    try:
        frame["bin"] = pd.qcut(frame["length"], n_bins, labels=names)
    except ValueError as exc:  # duplicate edges: too many equal lengths for this many quantiles
        raise ValueError(
            f"length_bins: the {len(frame)} lengths (only {frame['length'].nunique()} distinct) "
            f"cannot be cut into {n_bins} quantile bins ({exc})"
        ) from exc
    frame.index.name = "id"
    return frame


def binning_problem(lengths: Mapping[str, int], n_bins: int = 3) -> str:
    """Why ``lengths`` cannot be cut into ``n_bins`` quantile bins, as a sentence; '' when they can."""
    try:
        length_bins(lengths, n_bins)
    except ValueError as exc:
        return str(exc)
    return ""


def unit_of(pred: Predictions) -> list[str]:
    """The binned unit of each prediction row: the example id, or for tagging the sentence id of the word."""
    return [i.rsplit(":", 1)[0] for i in pred.ids] if pred.kind == "tagging" else list(pred.ids)


def subset_predictions(pred: Predictions, rows: Sequence[int] | np.ndarray) -> Predictions:
    """The predictions at row indices ``rows`` (same task, model, split and labels)."""
    rows = np.asarray(rows, dtype=np.int64)
    pick = lambda a: None if a is None else np.asarray(a)[rows]
    return Predictions(
        pred.task,
        pred.model,
        pred.kind,
        pred.split,
        pred.label_names,
        [pred.ids[i] for i in rows],
        pick(pred.gold),
        pick(pred.pred),
        probs=pick(pred.probs),
        outputs=pick(pred.outputs),
    )


def split_by_bin(runs: Sequence[Predictions], bins: pd.DataFrame) -> dict[str, list[Predictions]]:
    """Each bin's share of every run: {bin: [run restricted to the bin's examples, ...]} in bin order.

    Every row of every run lands in exactly one bin; a run with an example that ``bins`` lacks is an error.
    """
    if not runs:
        raise ValueError("split_by_bin: no runs")
    bin_of = bins["bin"].astype(str).to_dict()
    order = [str(b) for b in bins["bin"].cat.categories]
    out: dict[str, list[Predictions]] = {b: [] for b in order}
    for pred in runs:
        units = unit_of(pred)
        missing = sorted({u for u in units if u not in bin_of})
        if missing:
            raise ValueError(
                f"split_by_bin: {len(missing)} {pred.task} example(s) of {pred.model} have no length "
                f"bin (first: {missing[0]!r}); bin the same split the predictions are on"
            )
        labels = np.array([bin_of[u] for u in units])
        for b in order:
            out[b].append(subset_predictions(pred, np.flatnonzero(labels == b)))
    return out


def _bin_info(bins: pd.DataFrame, part: list[Predictions], name: str, max_len: int | None) -> dict:
    units = list(dict.fromkeys(unit_of(part[0])))
    lengths = bins.loc[units, "length"]
    info = {"bin": name, "examples": len(units), "min_length": int(lengths.min()), "max_length": int(lengths.max())}
    if max_len is not None:
        info["truncated"] = int((lengths > max_len).sum())
    return info


def binned_scores(
    runs_by_model: Mapping[str, Sequence[Predictions]],
    bins: pd.DataFrame,
    *,
    metric: str | None = None,
    max_len: int | None = None,
    **interval_kw,
) -> pd.DataFrame:
    """One row per (model, bin): examples, length range, [truncated at ``max_len``], estimate, low, high.

    ``runs_by_model``: model -> its fine-tuning runs (one Predictions per seed) on the same test examples.
    ``interval_kw`` goes to :func:`kdlib.analysis.stats.score_interval` (n_resamples, seed, level).
    """
    rows = []
    for model, runs in runs_by_model.items():
        for name, part in split_by_bin(runs, bins).items():
            if not part[0].ids:
                continue  # no example of this run in the bin (a capped test set)
            interval = score_interval(part, metric=metric, **interval_kw)
            rows.append({"model": model, **_bin_info(bins, part, name, max_len), **interval.as_dict()})
    return pd.DataFrame(rows)


def binned_differences(
    runs_a: Sequence[Predictions],
    runs_b: Sequence[Predictions],
    bins: pd.DataFrame,
    *,
    metric: str | None = None,
    **interval_kw,
) -> pd.DataFrame:
    """score(a) - score(b) per bin, paired over the bin's examples (stats.difference_interval)."""
    parts_a, parts_b = split_by_bin(runs_a, bins), split_by_bin(runs_b, bins)
    rows = []
    for name in parts_a:
        if not parts_a[name][0].ids:
            continue
        interval = difference_interval(parts_a[name], parts_b[name], metric=metric, **interval_kw)
        rows.append({**_bin_info(bins, parts_a[name], name, None), **interval.as_dict()})
    return pd.DataFrame(rows)

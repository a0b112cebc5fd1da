"""kdlib.analysis.lengths: sub-token lengths of test examples, tertile bins, and scores per bin on real test splits."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import make_tokenizer, ro_sentences

from kdlib.analysis.lengths import (
    binned_differences,
    binned_scores,
    example_lengths,
    length_bins,
    split_by_bin,
    subset_predictions,
)
from kdlib.data.load import load_task
from kdlib.eval.loyalty import Predictions


@pytest.fixture(scope="module")
def tokenizer(data_dir, tmp_path_factory):
    return make_tokenizer(ro_sentences(data_dir, 1500), tmp_path_factory.mktemp("tok"), lowercase=False)


@pytest.fixture(scope="module")
def sapn_test(data_dir):
    return load_task("sapn", data_dir)["test"]


def predictions(split, task: str, kind: str, *, correct: float, seed: int) -> Predictions:
    """Predictions on a real test split: a share `correct` of the examples right, the rest wrong."""
    rng = np.random.default_rng(seed)
    if kind == "tagging":
        ids = [f"{s}:{w}" for s, toks in zip(split["id"], split["tags"]) for w in range(len(toks))]
        gold = np.array([t for tags in split["tags"] for t in tags], dtype=np.int64)
        n_labels = int(gold.max()) + 1
    else:
        ids = [str(i) for i in split["id"]]
        gold = np.asarray(split["label"], dtype=np.int64)
        n_labels = 2
    pred = np.where(rng.random(len(gold)) < correct, gold, (gold + 1) % n_labels)
    probs = np.eye(n_labels, dtype=np.float32)[pred]
    return Predictions(task, "m", kind, "test", [str(i) for i in range(n_labels)], ids, gold, pred, probs=probs)


def test_example_lengths_count_untruncated_subtokens(tokenizer, sapn_test, data_dir):
    lengths = example_lengths("sapn", tokenizer, data_dir=data_dir)
    assert list(lengths) == [str(i) for i in sapn_test["id"]]
    first = sapn_test[0]
    assert lengths[str(first["id"])] == len(tokenizer(first["text_a"], first["text_b"])["input_ids"])
    assert max(lengths.values()) > 512  # long reviews are counted in full, not cut at max_len
    tagged = load_task("upos", data_dir)["test"]
    upos = example_lengths("upos", tokenizer, dataset=tagged)
    words = {str(i): len(t) for i, t in zip(tagged["id"], tagged["tokens"])}
    assert len(upos) == len(tagged) and all(upos[i] >= words[i] + 2 for i in upos)  # >= 1 sub-token a word + CLS/SEP


def test_tertiles_partition_the_examples_by_length(tokenizer, data_dir):
    lengths = example_lengths("sapn", tokenizer, data_dir=data_dir)
    bins = length_bins(lengths)
    assert list(bins["bin"].cat.categories) == ["short", "medium", "long"]
    assert set(bins.index) == set(lengths) and len(bins) == len(lengths)
    sizes = bins["bin"].value_counts()
    assert (abs(sizes - len(lengths) / 3) < 0.02 * len(lengths)).all(), sizes
    ranges = bins.groupby("bin", observed=True)["length"].agg(["min", "max"])
    assert (
        ranges.loc["short", "max"]
        < ranges.loc["medium", "min"]
        <= ranges.loc["medium", "max"]
        < ranges.loc["long", "min"]
    )
    assert list(length_bins(lengths, 2)["bin"].cat.categories) == ["short", "long"]


def test_bad_bins():
    with pytest.raises(ValueError, match="n_bins=1"):
        length_bins({"a": 1, "b": 2}, 1)
    with pytest.raises(ValueError, match="only 1 distinct"):
        length_bins({str(i): 7 for i in range(30)})
    with pytest.raises(ValueError, match="2 examples cannot fill 3 bins"):
        length_bins({"a": 1, "b": 2})


@pytest.mark.parametrize("task", ["sapn", "upos"])
def test_bins_cover_every_test_example_once(task, tokenizer, data_dir):
    split = load_task(task, data_dir)["test"]
    if task == "upos":
        split = split.select(range(300))
    kind = "tagging" if task == "upos" else "classification"
    bins = length_bins(example_lengths(task, tokenizer, dataset=split))
    runs = [predictions(split, task, kind, correct=0.8, seed=s) for s in (0, 1)]
    parts = split_by_bin(runs, bins)
    assert list(parts) == ["short", "medium", "long"]
    for r, run in enumerate(runs):
        ids = [i for b in parts for i in parts[b][r].ids]
        assert sorted(ids) == sorted(run.ids)  # every example (word) exactly once
        for b, part in parts.items():
            units = {i.rsplit(":", 1)[0] for i in part[r].ids} if kind == "tagging" else set(part[r].ids)
            assert units == set(bins.index[bins["bin"] == b])
            row = {i: k for k, i in enumerate(run.ids)}
            assert all(part[r].gold[k] == run.gold[row[i]] for k, i in enumerate(part[r].ids))
    table = binned_scores({"a": runs}, bins, max_len=64)
    assert table["examples"].sum() == len(bins) and list(table["bin"]) == ["short", "medium", "long"]
    assert (table["low"] <= table["estimate"]).all() and (table["estimate"] <= table["high"]).all()
    assert table["truncated"].iloc[-1] >= table["truncated"].iloc[0]


def test_scores_per_bin_follow_the_predictions(tokenizer, sapn_test):
    bins = length_bins(example_lengths("sapn", tokenizer, dataset=sapn_test))
    perfect = predictions(sapn_test, "sapn", "classification", correct=1.0, seed=0)
    long_ids = set(bins.index[bins["bin"] == "long"])
    wrong_on_long = Predictions(
        "sapn",
        "m",
        "classification",
        "test",
        perfect.label_names,
        perfect.ids,
        perfect.gold,
        np.array([1 - p if i in long_ids else p for i, p in zip(perfect.ids, perfect.pred)]),
        probs=perfect.probs[:, ::-1].copy(),
    )
    table = binned_scores({"perfect": [perfect]}, bins).set_index("bin")
    assert (table["estimate"] == 100.0).all()
    diff = binned_differences([perfect], [wrong_on_long], bins).set_index("bin")
    assert diff.loc["long", "estimate"] == pytest.approx(100.0) and diff.loc["short", "estimate"] == pytest.approx(0.0)
    stray = subset_predictions(perfect, [0, 1])
    with pytest.raises(ValueError, match="have no length bin"):
        split_by_bin([stray], bins.drop(index=stray.ids[0]))

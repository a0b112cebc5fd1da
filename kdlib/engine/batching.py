"""From a corpus to masked batches: which texts form each batch, and how they are encoded and masked.

* `load_corpus` reads a corpus spec (a kdlib.data.corpus mode, a prepared corpus folder, a text file or folder, a
  `datasets` name); `TextCorpus` reads its non-empty texts by index, so an on-disk corpus stays on disk and
  only its word counts (4 bytes a text, computed once) are held in memory, in every DDP rank alike.
* `batch_order` cuts one epoch into length-bucketed batches, a deterministic function of (seed, epoch);
  `BatchStream` walks through the epochs and knows its position (epoch, batch index), which is all a
  checkpoint needs to continue with exactly the next batch.
* `make_batch` splits a batch into words, encodes it once per distinct tokenizer ("view") and masks the
  same words in every view (80/10/10 per word), optionally more often for rare words (`word_weights`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator, Sequence

import datasets
import numpy as np
import torch
from datasets import Dataset

from kdlib.data import corpus as kcorpus
from kdlib.engine.align import WordView, encode_words, split_words, token_counts
from kdlib.engine.mlm import apply_mask_actions, sample_mask_actions, smoothing_weights

CORPUS_MODES = kcorpus.MODES


# ------------------------------------------------------------------------------------------ corpus
def load_corpus(spec: str, *, seed: int = 0, max_sentences: int | None = None) -> Dataset:
    """A kdlib.data.corpus mode ("ordered"/"shuffled"/"merged") or any text corpus (file, folder, dataset name)."""
    if spec in CORPUS_MODES:
        return kcorpus.build_corpus(spec, seed=seed, max_sentences=max_sentences)
    saved = Path(spec).expanduser()
    if max_sentences is None and ((saved / "dataset_info.json").exists() or (saved / "state.json").exists()):
        return datasets.load_from_disk(str(saved))  # a prepared corpus: memory-mapped as it is
    return kcorpus.load_text_corpus(spec, max_sentences=max_sentences)


class TextCorpus:
    """The non-empty texts of a corpus, read by index.

    An on-disk ``datasets`` corpus stays memory-mapped: only its word counts (``kdlib.data.corpus.length_index``,
    computed once and saved beside it; kept as uint16, 2 bytes per text) live in memory, and a batch reads
    its own rows.
    A list of strings or an in-memory Dataset works the same way (tests, notebooks).
    """

    def __init__(self, corpus: Any):
        if isinstance(corpus, (list, tuple)):
            corpus = Dataset.from_dict({"text": [t if isinstance(t, str) else "" for t in corpus]})
        cols = getattr(corpus, "column_names", None)
        if cols is None or "text" not in cols:
            raise ValueError(f"corpus must be a list of strings or a datasets.Dataset with a 'text' column; got {cols}")
        self.dataset = corpus
        words = kcorpus.length_index(corpus, ("n_words",))["n_words"]
        self.rows = None if words.all() else np.flatnonzero(words).astype(np.int64)  # rows of non-empty texts
        words = words if self.rows is None else words[self.rows]
        np.minimum(words, np.iinfo(np.uint16).max, out=words)  # in place: the loaded array is ours
        self.lengths = words.astype(np.uint16)  # bucketing needs no more: 2 bytes a text

    def __len__(self) -> int:
        return len(self.lengths)

    def texts(self, idx: Sequence[int] | np.ndarray) -> list[str]:
        """The texts at positions `idx` (positions among the non-empty texts)."""
        rows = np.asarray(idx, dtype=np.int64)
        if self.rows is not None:
            rows = self.rows[rows]
        return self.dataset[rows.tolist()]["text"]

    def __iter__(self) -> Iterator[str]:
        """Every text, read in batches (for counting tokens over the corpus)."""
        for start in range(0, len(self), 10_000):
            yield from self.texts(np.arange(start, min(start + 10_000, len(self))))

    def info(self) -> dict:
        """kdlib.data.corpus.corpus_stats of the whole corpus (sentences, words, characters), from the totals
        saved with its length index."""
        return kcorpus.corpus_stats(self.dataset)


# ------------------------------------------------------------------------------------------- order
def batch_order(lengths: Sequence[int] | np.ndarray, batch_size: int, seed: int, epoch: int, pool: int) -> np.ndarray:
    """Length-bucketed batches for one epoch, (n_batches, batch_size) indices, a function of (seed, epoch).

    Shuffle, sort by length (stable) within pools of `pool` batches (little padding), cut into full
    batches, then shuffle the batches. The data position (epoch, batch index) is therefore enough to
    resume. numpy throughout, int32 indices shuffled in place: 4 bytes per text at any corpus size.
    """
    lengths = np.asarray(lengths)
    rng = np.random.default_rng(seed * 100_003 + epoch)
    perm = np.arange(len(lengths), dtype=np.int32 if len(lengths) < 2**31 else np.int64)
    rng.shuffle(perm)
    chunk = batch_size * pool
    for i in range(0, len(perm), chunk):
        part = perm[i : i + chunk]
        part[:] = part[np.argsort(lengths[part], kind="stable")]
    n_full = len(perm) // batch_size
    batches = perm[: n_full * batch_size].reshape(n_full, batch_size)
    rng.shuffle(batches)  # rows in place: no second copy of the order
    return batches


class BatchStream:
    """Endless batches of a TextCorpus (epoch after epoch of `batch_order`) that knows where it is.

    `position` is (epoch, index of the next batch within the epoch); a stream built with a saved position
    continues with exactly the batch the saved run would have read next.
    """

    def __init__(
        self, corpus: TextCorpus, batch_size: int, *, seed: int, pool: int, epoch: int = 0, batch_idx: int = 0
    ):
        self.corpus, self.batch_size, self.seed, self.pool = corpus, batch_size, seed, pool
        self.epoch, self.batch_idx = epoch, batch_idx
        self.order = self._order()
        if not len(self.order):
            raise ValueError("no full batch could be formed from the corpus")

    def _order(self) -> np.ndarray:
        return batch_order(self.corpus.lengths, self.batch_size, self.seed, self.epoch, self.pool)

    @property
    def position(self) -> dict[str, int]:
        return {"epoch": self.epoch, "batch_idx": self.batch_idx}

    def next(self) -> list[str]:
        """The next batch of texts (a new epoch starts when this one is used up)."""
        if self.batch_idx >= len(self.order):
            self.epoch, self.batch_idx = self.epoch + 1, 0
            self.order = self._order()
        idx = self.order[self.batch_idx]
        self.batch_idx += 1
        return self.corpus.texts(idx)


# --------------------------------------------------------------------------------------- masking
def word_weights(corpus: TextCorpus, tokenizer, smoothing: float | None) -> torch.Tensor | None:
    """count^-smoothing per token id of `tokenizer` over the corpus (None without smoothing)."""
    if not smoothing:
        return None
    return smoothing_weights(token_counts(tokenizer, corpus), smoothing)


def make_batch(
    texts: list[str],
    views: dict[str, Any],
    config,
    generator: torch.Generator,
    token_weights: tuple[str, torch.Tensor] | None = None,
) -> tuple[dict[str, WordView], torch.Tensor]:
    """Encode texts once per view and mask the same `config.mask_prob` of words in every view.

    Returns ({view: WordView with masked input_ids and labels}, masked_word (B, W) bool).
    Candidate words are those whose first sub-token survives truncation (`config.max_len`) in every view;
    `token_weights` = (view, weight per token id) makes a word's chance follow its first sub-token's weight.
    """
    words = split_words(texts)
    encoded = {k: encode_words(tok, words, config.max_len) for k, tok in views.items()}
    present = torch.stack([v.first_pos >= 0 for v in encoded.values()]).all(0)  # (B, W)
    weights = present.float()
    if token_weights is not None:
        key, tw = token_weights
        fp = encoded[key].first_pos
        first_ids = encoded[key].input_ids.gather(1, fp.clamp(min=0))
        weights = weights * tw[first_ids]
    n_w = present.shape[1]
    actions = sample_mask_actions(weights.reshape(-1), config.mask_prob, generator)
    out = {}
    for key, v in encoded.items():
        unit = torch.where(
            v.word_index >= 0,
            torch.arange(v.input_ids.shape[0])[:, None] * n_w + v.word_index,
            torch.full_like(v.word_index, -1),
        )
        ids, labels = apply_mask_actions(
            v.input_ids, unit, actions, views[key].mask_token_id, len(views[key]), generator
        )
        out[key] = WordView(ids, v.attention_mask, v.word_index, v.first_pos, labels)
    return out, (actions > 0).reshape(present.shape)

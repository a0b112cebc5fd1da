"""From a corpus to masked batches: which texts form each batch, and how they are encoded and masked.

* `load_corpus` reads a corpus spec (a kdlib.corpus mode, a text file or folder, a `datasets` name);
  `corpus_texts` keeps its non-empty texts.
* `batch_order` cuts one epoch into length-bucketed batches, a deterministic function of (seed, epoch);
  `BatchStream` walks through the epochs and knows its position (epoch, batch index), which is all a
  checkpoint needs to continue with exactly the next batch.
* `make_batch` splits a batch into words, encodes it once per distinct tokenizer ("view") and masks the
  same words in every view (80/10/10 per word), optionally more often for rare words (`word_weights`).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from datasets import Dataset

from kdlib import corpus as kcorpus
from kdlib.align import WordView, encode_words, split_words
from kdlib.losses import apply_mask_actions, sample_mask_actions, smoothing_weights

CORPUS_MODES = kcorpus.MODES


# ------------------------------------------------------------------------------------------ corpus
def load_corpus(spec: str, *, seed: int = 0, max_sentences: int | None = None) -> Dataset:
    """A kdlib.corpus mode ("ordered"/"shuffled"/"merged") or any text corpus (file, folder, dataset name)."""
    if spec in CORPUS_MODES:
        return kcorpus.build_corpus(spec, seed=seed, max_sentences=max_sentences)
    return kcorpus.load_text_corpus(spec, max_sentences=max_sentences)


def corpus_texts(corpus: Any) -> list[str]:
    """Texts of a datasets.Dataset ("text" column) or a list of strings; empty lines dropped."""
    if isinstance(corpus, (list, tuple)):
        texts = list(corpus)
    else:
        cols = getattr(corpus, "column_names", None)
        if cols is None or "text" not in cols:
            raise ValueError(f"corpus must be a list of strings or a datasets.Dataset with a 'text' column; "
                             f"got {cols}")
        texts = corpus["text"]
    return [t for t in texts if isinstance(t, str) and t.split()]


def corpus_info(corpus: Any, texts: list[str]) -> dict:
    """kdlib.corpus.corpus_stats of the corpus (sentences, words, characters ...)."""
    return dict(kcorpus.corpus_stats(corpus if isinstance(corpus, Dataset) else Dataset.from_dict({"text": texts})))


# ------------------------------------------------------------------------------------------- order
def batch_order(lengths: list[int], batch_size: int, seed: int, epoch: int, pool: int) -> list[list[int]]:
    """Length-bucketed batches for one epoch, a deterministic function of (seed, epoch).

    Shuffle, sort by length within pools of `pool` batches (little padding), cut into full batches,
    then shuffle the batches. The data position (epoch, batch index) is therefore enough to resume.
    """
    g = torch.Generator().manual_seed(seed * 100_003 + epoch)
    perm = torch.randperm(len(lengths), generator=g).tolist()
    chunk = batch_size * pool
    batches: list[list[int]] = []
    for i in range(0, len(perm), chunk):
        part = sorted(perm[i:i + chunk], key=lambda j: lengths[j])
        batches += [part[k:k + batch_size] for k in range(0, len(part), batch_size)]
    batches = [b for b in batches if len(b) == batch_size]
    return [batches[i] for i in torch.randperm(len(batches), generator=g).tolist()]


class BatchStream:
    """Endless batches of `texts` (epoch after epoch of `batch_order`) that knows where it is.

    `position` is (epoch, index of the next batch within the epoch); a stream built with a saved position
    continues with exactly the batch the saved run would have read next.
    """

    def __init__(self, texts: list[str], batch_size: int, *, seed: int, pool: int, epoch: int = 0,
                 batch_idx: int = 0):
        self.texts, self.batch_size, self.seed, self.pool = texts, batch_size, seed, pool
        self.lengths = [len(t.split()) for t in texts]
        self.epoch, self.batch_idx = epoch, batch_idx
        self.order = self._order()
        if not self.order:
            raise ValueError("no full batch could be formed from the corpus")

    def _order(self) -> list[list[int]]:
        return batch_order(self.lengths, self.batch_size, self.seed, self.epoch, self.pool)

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
        return [self.texts[i] for i in idx]


# --------------------------------------------------------------------------------------- masking
def word_weights(texts: list[str], tokenizer, smoothing: float | None) -> torch.Tensor | None:
    """count^-smoothing per token id of `tokenizer` over the corpus (None without smoothing)."""
    if not smoothing:
        return None
    counts = np.zeros(len(tokenizer), dtype=np.int64)
    for i in range(0, len(texts), 1000):
        for ids in tokenizer(texts[i:i + 1000], add_special_tokens=False)["input_ids"]:
            np.add.at(counts, ids, 1)
    return smoothing_weights(torch.from_numpy(counts), smoothing)


def make_batch(texts: list[str], views: dict[str, Any], config, generator: torch.Generator,
               token_weights: tuple[str, torch.Tensor] | None = None) -> tuple[dict[str, WordView], torch.Tensor]:
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
        unit = torch.where(v.word_index >= 0, torch.arange(v.input_ids.shape[0])[:, None] * n_w + v.word_index,
                           torch.full_like(v.word_index, -1))
        ids, labels = apply_mask_actions(v.input_ids, unit, actions, views[key].mask_token_id,
                                         len(views[key]), generator)
        out[key] = WordView(ids, v.attention_mask, v.word_index, v.first_pos, labels)
    return out, (actions > 0).reshape(present.shape)

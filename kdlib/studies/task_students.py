"""Students of task-specific distillation (Nityasya et al. 2022): BiLSTM, CNN and small BERTs, and their inputs.

Every student is an ``nn.Module`` with ``kind`` ("classification" or "tagging") and
``forward(input_ids, attention_mask, token_type_ids=None)`` returning logits (batch, labels) or
(batch, tokens, labels), the interface of :class:`kdlib.eval.finetune.TaskModel`, so fine-tuning's feature format,
collation and prediction (``kdlib.eval.finetune.encode_split`` / ``predict``) serve all of them.

* Word students read one id per word (lower-cased ``\\w+`` words and punctuation marks; tagging tasks keep the
  dataset's tokens, so a word is a tagged unit and no sub-token alignment is needed):
  - ``bilstm``: embeddings -> one bidirectional LSTM layer (packed, so padding never enters the backward
    direction) -> per-word linear layer (tagging) or masked max-pool over time -> linear (classification);
  - ``cnn`` (Kim 2014): embeddings -> parallel 1-D convolutions of several widths ("same" padding, ReLU) ->
    per-word concatenation (tagging) or masked max-over-time pooling and concatenation (classification)
    -> dropout -> linear.
  Embeddings start random (N(0, 1) like ``nn.Embedding``) or from fastText vectors (gensim ``FastText``,
  trained on the distillation corpus with the same word split; unseen words get their sub-word n-gram
  vector), and are fine-tuned either way.
* Small BERTs (``bert-tiny`` 2 layers/128, ``bert-mini`` 4/256, ``bert-small`` 4/512, Turc et al. 2019's
  shapes) are ``TaskModel``s over a randomly initialised ``BertModel`` with the teacher's tokenizer, or over one
  of this book's task-agnostic students (``agnostic``: the student folder and its own tokenizer).
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from kdlib.eval.finetune import TaskModel

WORD_STUDENTS = ("bilstm", "cnn")
BERT_SHAPES = {  # name: (layers, hidden, heads); feed-forward = 4 x hidden
    "bert-tiny": (2, 128, 2),
    "bert-mini": (4, 256, 4),
    "bert-small": (4, 512, 8),
}
AGNOSTIC = "agnostic"
STUDENTS = (*WORD_STUDENTS, *BERT_SHAPES, AGNOSTIC)
EMBEDDINGS = ("random", "fasttext")
PAD, UNK = 0, 1
_WORD = re.compile(r"\w+|[^\w\s]")


def split_words(text: str) -> list[str]:
    """Words and punctuation marks of a text, case kept (unlabeled sentences for the tagging teachers)."""
    return _WORD.findall(text)


def word_tokens(text: str) -> list[str]:
    """Lower-cased words and punctuation marks of a text (the word students' and fastText's unit)."""
    return _WORD.findall(text.lower())


class WordVocab:
    """Word -> id for the word students: 0 = padding, 1 = unknown, then words by train frequency."""

    def __init__(self, words: Sequence[str]) -> None:
        self.words = ["<pad>", "<unk>", *words]
        self.index = {w: i for i, w in enumerate(self.words)}

    @classmethod
    def build(cls, sentences: Iterable[Sequence[str]], *, max_size: int = 30000, min_count: int = 1) -> WordVocab:
        counts = Counter(w for s in sentences for w in s)
        ranked = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))
        return cls(ranked[:max_size])

    def __len__(self) -> int:
        return len(self.words)

    def ids(self, words: Sequence[str]) -> list[int]:
        return [self.index.get(w, UNK) for w in words]


# ------------------------------------------------------------------------------------------ fastText
def fasttext_vectors(
    sentences: Sequence[Sequence[str]], cache_dir: str | Path, *, dim: int = 100, epochs: int = 5, seed: int = 0
):
    """gensim FastText word vectors trained on ``sentences`` (lists of words), cached in ``cache_dir``.

    The cache folder's name hashes the sentences and settings, so a run trains once and a changed corpus retrains.
    One worker thread keeps training deterministic for a seed. Returns gensim ``KeyedVectors``.
    """
    from gensim.models import FastText
    from gensim.models.fasttext import FastTextKeyedVectors

    digest = hashlib.sha1(json.dumps([dim, epochs, seed]).encode())
    for s in sentences:
        digest.update(("\x1f".join(s) + "\x1e").encode())
    folder = Path(cache_dir) / f"fasttext-{dim}d-{digest.hexdigest()[:12]}"
    if (folder / "vectors.kv").is_file():
        return FastTextKeyedVectors.load(str(folder / "vectors.kv"))
    model = FastText(vector_size=dim, window=5, min_count=2, epochs=epochs, seed=seed, workers=1, min_n=3, max_n=6)
    model.build_vocab(corpus_iterable=[list(s) for s in sentences])
    model.train(corpus_iterable=[list(s) for s in sentences], total_examples=len(sentences), epochs=epochs)
    tmp = folder.with_name(f".{folder.name}.tmp")  # gensim writes several files: save a folder, then rename it
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model.wv.lifecycle_events = None  # else the file records the save's time, host and path: equal vectors, other bytes
    model.wv.save(str(tmp / "vectors.kv"))
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    return model.wv


def embedding_matrix(vocab: WordVocab, vectors=None, *, dim: int = 100, seed: int = 0) -> torch.Tensor:
    """(len(vocab), dim) initial embeddings: N(0, 1) rows, replaced by fastText vectors (scaled to unit std)."""
    gen = torch.Generator().manual_seed(seed)
    weight = torch.randn(len(vocab), dim, generator=gen)
    if vectors is not None:
        if vectors.vector_size != dim:
            raise ValueError(f"fastText vectors have {vectors.vector_size} dimensions, the student expects {dim}")
        vecs = np.stack([vectors[w] for w in vocab.words[2:]]) if len(vocab) > 2 else np.zeros((0, dim))
        std = float(vecs.std()) or 1.0
        weight[2:] = torch.from_numpy(vecs / std).float()
    weight[PAD] = 0.0
    return weight


# ------------------------------------------------------------------------------------- word students
def _masked_max(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Max over time of (B, T, H) where mask (B, T) is 1."""
    return x.masked_fill(~mask.bool().unsqueeze(-1), torch.finfo(x.dtype).min).max(dim=1).values


class WordStudent(nn.Module):
    """BiLSTM or Kim-CNN over word embeddings, with a tagging or classification head (module docstring)."""

    def __init__(
        self,
        arch: str,
        kind: str,
        num_labels: int,
        embeddings: torch.Tensor,
        *,
        hidden: int = 128,
        filters: int = 100,
        widths: Sequence[int] = (3, 4, 5),
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        if arch not in WORD_STUDENTS:
            raise ValueError(f"word student must be one of {WORD_STUDENTS}, got {arch!r}")
        if kind not in ("classification", "tagging"):
            raise ValueError(f"word students do classification or tagging, not {kind!r}")
        self.arch, self.kind = arch, kind
        self.embed = nn.Embedding.from_pretrained(embeddings.clone(), freeze=False, padding_idx=PAD)
        dim = embeddings.shape[1]
        if arch == "bilstm":
            self.lstm = nn.LSTM(dim, hidden, batch_first=True, bidirectional=True)
            width = 2 * hidden
        else:
            self.widths = tuple(widths)
            self.convs = nn.ModuleList(nn.Conv1d(dim, filters, w) for w in widths)
            width = filters * len(widths)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(width, num_labels)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        x = self.dropout(self.embed(input_ids))
        if self.arch == "bilstm":
            lengths = attention_mask.sum(1).clamp(min=1).cpu()
            packed = nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
            h, _ = self.lstm(packed)
            h, _ = nn.utils.rnn.pad_packed_sequence(h, batch_first=True, total_length=x.shape[1])
        else:
            x = x * attention_mask.unsqueeze(-1)  # padding contributes zeros to the windows
            x = x.transpose(1, 2)  # "same" padding, explicit (left (w-1)//2, right w//2) so even widths work too
            h = torch.cat(
                [torch.relu(conv(F.pad(x, ((w - 1) // 2, w // 2)))) for w, conv in zip(self.widths, self.convs)], dim=1
            ).transpose(1, 2)
        if self.kind == "classification":
            h = _masked_max(h, attention_mask)
        return self.head(self.dropout(h))


def encode_words(rows: dict[str, list], vocab: WordVocab, kind: str, *, max_words: int = 256) -> list[dict[str, Any]]:
    """Word-student features in kdlib.eval.finetune's format (input_ids, attention_mask, labels[, words]).

    Tagging: one feature per sentence (every word kept), ``words`` = (position, sentence, word) for each word,
    so ``kdlib.eval.finetune.predict`` regroups per-word outputs. Classification: text_a then text_b (if any),
    truncated to ``max_words``.
    """
    feats = []
    if kind == "tagging":
        for s, (toks, tags) in enumerate(zip(rows["tokens"], rows["tags"])):
            ids = vocab.ids([t.lower() for t in toks]) or [UNK]
            feats.append(
                {
                    "input_ids": ids,
                    "attention_mask": [1] * len(ids),
                    "labels": [int(t) for t in tags],
                    "words": [(i, s, i) for i in range(len(toks))],
                }
            )
        return feats
    pairs = rows.get("text_b") or [None] * len(rows["text_a"])
    for a, b, y in zip(rows["text_a"], pairs, rows["label"]):
        words = word_tokens(a) + (word_tokens(b) if b else [])
        ids = (vocab.ids(words) or [UNK])[:max_words]
        feats.append({"input_ids": ids, "attention_mask": [1] * len(ids), "labels": int(y)})
    return feats


# ------------------------------------------------------------------------------------ BERT students
def small_bert(
    shape: str, kind: str, num_labels: int, tokenizer, *, max_len: int = 128, dropout: float = 0.1, seed: int = 0
) -> TaskModel:
    """A randomly initialised small BERT (``bert-tiny`` / ``bert-mini`` / ``bert-small``) with a task head."""
    from transformers import BertConfig, BertModel

    if shape not in BERT_SHAPES:
        raise ValueError(f"small BERT shape must be one of {list(BERT_SHAPES)}, got {shape!r}")
    layers, hidden, heads = BERT_SHAPES[shape]
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=4 * hidden,
        max_position_embeddings=max(max_len, 64),
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
        pad_token_id=tokenizer.pad_token_id or 0,
    )
    return TaskModel(BertModel(config, add_pooling_layer=False), kind, num_labels, dropout)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())

"""Hub-shaped stand-ins for the authors' released students (racai/distilbert-*), saved like hub models.

A stand-in folder holds what a hub snapshot of a DistilBERT masked LM holds: ``config.json`` (model_type
distilbert, DistilBertForMaskedLM, sinusoidal position embeddings), ``model.safetensors`` (random weights) and
the tokenizer files (``vocab.txt``, ``tokenizer.json``, ``tokenizer_config.json``, ``special_tokens_map.json``)
of a WordPiece vocabulary of exactly the requested size: the pieces a tokenizer learns from the given Romanian
sentences, then ``[unusedN]`` entries (as in BERT's own vocabularies) up to that size.

:func:`released_standins` builds the three with the real shapes (DistilBERT, 6 layers x 768, 12 heads; vocabularies
of 50,000 cased and 37,788 uncased: :data:`RELEASED`), about 330 MB each; only a ``slow`` test does. The fast
tests call :func:`save_standin` with smaller shapes (a few layers of width 32, a vocabulary of hundreds) for speed.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

# display name -> (hub id, teachers, vocabulary size, lower-cased): the authors' three released students
RELEASED: dict[str, tuple[str, list[str], int, bool]] = {
    "Distil-BERT-base-ro (released)": ("racai/distilbert-base-romanian-cased", ["BERT-base-ro"], 50_000, False),
    "Distil-RoBERT-base (released)": ("racai/distilbert-base-romanian-uncased", ["RoBERT-base"], 37_788, True),
    "DistilMulti-BERT-base-ro (released)": (
        "racai/distilbert-multi-base-romanian-cased",
        ["BERT-base-ro", "RoBERT-base"],
        50_000,
        False,
    ),
}


def padded_vocab(sentences: Sequence[str], size: int, *, lowercase: bool) -> list[str]:
    """A WordPiece vocabulary of exactly ``size`` entries: learnt pieces (id order), then ``[unusedN]`` fillers."""
    from transformers import AutoTokenizer

    from kdlib.engine.teachers import train_tokenizer

    with tempfile.TemporaryDirectory() as tmp:
        train_tokenizer(sentences, tmp, vocab_size=size, lowercase=lowercase)
        vocab = AutoTokenizer.from_pretrained(tmp).get_vocab()
    pieces = sorted(vocab, key=vocab.get)[:size]
    return pieces + [f"[unused{i}]" for i in range(size - len(pieces))]


def save_tokenizer(out: Path, pieces: Sequence[str], *, lowercase: bool) -> Any:
    """A BERT WordPiece tokenizer of ``pieces`` saved into ``out`` as the hub holds one (accents kept when uncased)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import BertTokenizerFast

    out.mkdir(parents=True, exist_ok=True)
    (out / "vocab.txt").write_text("\n".join(pieces) + "\n", encoding="utf-8")
    vocab = {piece: i for i, piece in enumerate(pieces)}
    core = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))  # built here: transformers 4 and 5 agree on this
    core.normalizer = normalizers.BertNormalizer(strip_accents=False, lowercase=lowercase)
    core.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    core.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    core.decoder = decoders.WordPiece(prefix="##")
    core.add_special_tokens(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
    tok = BertTokenizerFast(tokenizer_object=core, do_lower_case=lowercase, strip_accents=False, model_max_length=512)
    tok.save_pretrained(out)
    return tok


def save_standin(
    out: Path,
    sentences: Sequence[str],
    *,
    vocab_size: int,
    lowercase: bool,
    layers: int = 6,
    dim: int = 768,
    heads: int = 12,
    seed: int = 0,
) -> Path:
    """A DistilBertForMaskedLM with random weights and its tokenizer, saved into ``out`` like a hub model."""
    from transformers import DistilBertConfig, DistilBertForMaskedLM

    tok = save_tokenizer(out, padded_vocab(sentences, vocab_size, lowercase=lowercase), lowercase=lowercase)
    assert len(tok) == vocab_size, f"stand-in tokenizer has {len(tok)} entries, expected {vocab_size}"
    config = DistilBertConfig(
        vocab_size=vocab_size,
        dim=dim,
        n_layers=layers,
        n_heads=heads,
        hidden_dim=4 * dim,
        max_position_embeddings=512,
        sinusoidal_pos_embds=True,
        pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(seed)
    DistilBertForMaskedLM(config).save_pretrained(out, safe_serialization=True)
    return out


def released_standins(root: Path, sentences: Sequence[str], **shape: int) -> dict[str, dict[str, Any]]:
    """The three as stand-ins under ``root`` (real shapes unless ``shape`` says), as notebook 04's released_students."""
    specs = {}
    for i, (name, (hub_id, teachers, size, lower)) in enumerate(RELEASED.items()):
        folder = save_standin(root / hub_id.split("/")[1], sentences, vocab_size=size, lowercase=lower, seed=i, **shape)
        specs[name] = {"path": str(folder), "teachers": list(teachers), "revision": None}
    return specs

"""Small builders shared by several test modules: real Romanian sentences, tokenizers, tiny teachers."""

from __future__ import annotations

from pathlib import Path

import torch

from kdlib.data.load import load_task


def ro_sentences(data_dir: Path, n: int, *, capitals_first: bool = False) -> list[str]:
    """n distinct sentences of the RO-STS train split (via kdlib.data.load, so normalised to comma-below ș/ț).

    ``capitals_first`` puts sentences with capital Ș / Ț first (rare; the tokenizer tests need them).
    """
    train = load_task("sts", data_dir)["train"]
    seen: dict[str, None] = {}
    for a, b in zip(train["text_a"], train["text_b"]):
        for text in (a.strip(), b.strip()):
            if text:
                seen.setdefault(text, None)
    texts = list(seen)
    if capitals_first:
        texts.sort(key=lambda t: not ("Ș" in t or "Ț" in t))  # stable
        assert "Ș" in texts[0]
    assert len(texts) >= n, f"RO-STS train has only {len(texts)} distinct sentences"
    return texts[:n]


def make_tokenizer(sentences: list[str], out: Path, *, lowercase: bool, vocab_size: int = 600):
    """A WordPiece tokenizer trained with kdlib.engine.teachers.train_tokenizer, reloaded with AutoTokenizer."""
    from transformers import AutoTokenizer

    from kdlib.engine.teachers import train_tokenizer

    train_tokenizer(sentences, out, vocab_size=vocab_size, lowercase=lowercase)
    return AutoTokenizer.from_pretrained(out)


def tiny_teacher(tokenizer, *, hidden: int = 32, layers: int = 2, seed: int = 0, dropout: float = 0.0):
    """A tiny BertForMaskedLM (dropout 0 by default, so DDP and one process compare closely)."""
    from transformers import BertConfig, BertForMaskedLM

    torch.manual_seed(seed)
    cfg = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=2 * hidden,
        max_position_embeddings=64,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
        pad_token_id=tokenizer.pad_token_id,
    )
    return BertForMaskedLM(cfg).eval()

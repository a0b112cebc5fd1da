"""Teachers: tokenizer training (cased / uncased), tiny MLM pretraining on real Romanian text, loading errors."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import datasets
import pytest
import torch
from helpers import ro_sentences

from kdlib.engine.teachers import TeacherConfig, cli, load_teacher, pretrain_teacher, pseudo_perplexity, train_tokenizer


@pytest.fixture(scope="module")
def sentences(data_dir) -> list[str]:
    return ro_sentences(data_dir, 2000, capitals_first=True)


TINY = dict(
    hidden_size=32,
    num_layers=2,
    num_heads=2,
    intermediate_size=64,
    vocab_size=1000,
    steps=100,
    batch_size=32,
    max_len=64,
    max_position_embeddings=64,
    lr=1e-2,
    warmup=0.1,
    pppl_texts=20,
)


@pytest.fixture(scope="module")
def tiny_teacher(sentences, tmp_path_factory) -> tuple[Path, dict]:
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("teachers") / "cased"
    metrics = pretrain_teacher(
        datasets.Dataset.from_dict({"text": sentences}),
        out,
        lowercase=False,
        config=TeacherConfig(**TINY),
        progress=False,
    )
    return out, metrics


def test_tokenizers_cased_and_uncased_keep_romanian_diacritics(sentences, tmp_path):
    from transformers import AutoTokenizer, BertTokenizerFast

    for lowercase in (False, True):
        out = tmp_path / ("uncased" if lowercase else "cased")
        train_tokenizer(sentences, out, vocab_size=800, lowercase=lowercase)
        tok = AutoTokenizer.from_pretrained(out)
        assert isinstance(tok, BertTokenizerFast) and tok.do_lower_case is lowercase
        assert [tok.convert_tokens_to_ids(t) for t in ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]] == [0, 1, 2, 3, 4]
        assert len(tok) == 800
        enc = tok("Școala Națională", "Un bărbat cântă.")
        assert enc.tokens()[0] == "[CLS]" and enc.tokens().count("[SEP]") == 2
        assert set(enc["token_type_ids"]) == {0, 1}
        text = tok.decode(tok("Școala Națională")["input_ids"], skip_special_tokens=True)
        assert text == ("școala națională" if lowercase else "Școala Națională")
        assert tok.unk_token not in tok.tokenize("Școala Națională își începe anul în București")
    cased = AutoTokenizer.from_pretrained(tmp_path / "cased")
    uncased = AutoTokenizer.from_pretrained(tmp_path / "uncased")
    assert cased("Ana")["input_ids"] != cased("ana")["input_ids"]
    assert uncased("ANA ȘI ȚARA")["input_ids"] == uncased("ana și țara")["input_ids"]


def test_pretrained_teacher_learns_and_loads(tiny_teacher):
    from transformers import AutoModelForMaskedLM

    out, metrics = tiny_teacher
    assert {"config.json", "model.safetensors", "tokenizer.json", "vocab.txt", "metrics.json"} <= set(os.listdir(out))
    assert not out.with_name(out.name + ".tmp").exists()
    # At init the held-out loss is about log(vocab); 100 steps must bring it clearly below.
    assert abs(metrics["heldout_mlm_loss_init"] - math.log(metrics["vocab_size"])) < 0.3
    assert metrics["heldout_mlm_loss"] < metrics["heldout_mlm_loss_init"] - 0.7  # measured: 6.92 -> 5.78
    assert 1 < metrics["pseudo_perplexity"] < metrics["vocab_size"]
    assert metrics["train_loss_final"] < metrics["train_loss_first"]
    assert json.loads((out / "metrics.json").read_text()) == json.loads(json.dumps(metrics))
    model, tok = load_teacher(str(out))
    assert type(model).__name__ == "BertForMaskedLM" and not model.training
    assert not any(p.requires_grad for p in model.parameters())
    assert model.config.num_hidden_layers == 2 and model.config.vocab_size == len(tok) == 1000
    AutoModelForMaskedLM.from_pretrained(out)
    # A complete folder is reused, not retrained.
    mtime = (out / "model.safetensors").stat().st_mtime_ns
    again = pretrain_teacher(datasets.Dataset.from_dict({"text": ["x"]}), out, lowercase=False)
    assert again == json.loads((out / "metrics.json").read_text())
    assert (out / "model.safetensors").stat().st_mtime_ns == mtime


def test_pseudo_perplexity_matches_one_mask_at_a_time(tiny_teacher, sentences):
    model, tok = load_teacher(str(tiny_teacher[0]))
    texts = sentences[-3:]
    nll, n = 0.0, 0
    with torch.no_grad():
        for text in texts:
            ids = tok(text, truncation=True, max_length=64)["input_ids"]
            for pos in range(1, len(ids) - 1):
                masked = torch.tensor([ids])
                masked[0, pos] = tok.mask_token_id
                logp = torch.log_softmax(model(input_ids=masked).logits[0, pos], -1)
                nll -= float(logp[ids[pos]])
                n += 1
    expected = math.exp(nll / n)
    assert pseudo_perplexity(model, tok, texts, batch_size=7) == pytest.approx(expected, rel=1e-4)


def test_load_teacher_errors(tmp_path, tiny_teacher, monkeypatch):
    from transformers import BertConfig, BertModel, GPT2Config

    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_teacher(str(tmp_path / "no" / "such" / "teacher"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match="hub id.*no hub is reachable offline"):
        load_teacher("kdlib-test/no-such-model")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_teacher(str(tmp_path / "empty"))
    GPT2Config(n_embd=8, n_layer=1, n_head=2).save_pretrained(tmp_path / "gpt2")
    with pytest.raises(ValueError, match="no masked-LM class"):
        load_teacher(str(tmp_path / "gpt2"))
    # A saved BertModel has no MLM head: AutoModelForMaskedLM would add a random one; refuse it.
    base = BertModel(
        BertConfig(
            vocab_size=1000,
            hidden_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=32,
            max_position_embeddings=64,
        ),
        add_pooling_layer=False,
    )
    base.save_pretrained(tmp_path / "bert-base-only")
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
        if (tiny_teacher[0] / name).exists():  # transformers 5 writes no special_tokens_map.json
            (tmp_path / "bert-base-only" / name).write_bytes((tiny_teacher[0] / name).read_bytes())
    with pytest.raises(ValueError, match="not a masked LM.*BertModel"):
        load_teacher(str(tmp_path / "bert-base-only"))


def test_bad_config_and_corpus_fail_before_training(tmp_path, sentences):
    with pytest.raises(ValueError, match="hidden_size=30 is not divisible by num_heads=4"):
        TeacherConfig(hidden_size=30, num_heads=4)
    with pytest.raises(ValueError, match="steps=0"):
        TeacherConfig(steps=0)
    (tmp_path / "c.json").write_text('{"hidden_size": 64, "layers": 2}')
    with pytest.raises(ValueError, match=r"unknown field\(s\) \['layers'\]"):
        TeacherConfig.from_file(tmp_path / "c.json")
    with pytest.raises(ValueError, match="'text' column"):
        pretrain_teacher(datasets.Dataset.from_dict({"sentence": sentences}), tmp_path / "t", lowercase=False)
    with pytest.raises(ValueError, match="expected at least 10"):
        pretrain_teacher(datasets.Dataset.from_dict({"text": sentences[:5]}), tmp_path / "t", lowercase=False)
    (tmp_path / "half").mkdir()
    with pytest.raises(FileExistsError, match="no metrics.json"):
        pretrain_teacher(datasets.Dataset.from_dict({"text": sentences}), tmp_path / "half", lowercase=False)


def test_cli_trains_from_a_text_file(tmp_path, sentences, capsys):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(sentences[:300]) + "\n", encoding="utf-8")
    out = tmp_path / "uncased"
    argv = [
        "--corpus",
        str(corpus),
        "--out",
        str(out),
        "--lowercase",
        "--steps",
        "3",
        "--hidden-size",
        "16",
        "--num-layers",
        "1",
        "--num-heads",
        "2",
        "--intermediate-size",
        "32",
        "--vocab-size",
        "300",
        "--batch-size",
        "8",
        "--max-len",
        "32",
        "--pppl-texts",
        "3",
        "--threads",
        "1",
    ]
    assert cli(argv) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["lowercase"] is True and printed["train_sentences"] + printed["heldout_sentences"] == 300
    model, tok = load_teacher(str(out))
    assert model.config.hidden_size == 16 and tok.do_lower_case
    assert cli(["--corpus", str(tmp_path / "missing.txt"), "--out", str(tmp_path / "x")]) != 0


def test_masked_lm_loss_equals_the_models_own_loss(tiny_teacher, sentences):
    from transformers import DataCollatorForLanguageModeling

    from kdlib.engine.teachers import masked_lm_loss

    model, tok = load_teacher(str(tiny_teacher[0]))
    torch.manual_seed(0)
    batch = DataCollatorForLanguageModeling(tok)([{"input_ids": tok(t)["input_ids"]} for t in sentences[:16]])
    with torch.no_grad():
        assert float(masked_lm_loss(model, batch)) == pytest.approx(float(model(**batch).loss), rel=1e-5)


def test_pin_teacher_downloads_only_a_pinned_revision(tmp_path, monkeypatch):
    import huggingface_hub

    from kdlib.engine.teachers import pin_teacher

    calls = []
    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda *a, **k: calls.append((a, k)) or k["local_dir"])
    assert pin_teacher("org/bert", tmp_path / "t", None) == "org/bert"
    assert calls == []
    assert pin_teacher("org/bert", tmp_path / "t", "abc123") == str(tmp_path / "t")
    assert calls == [(("org/bert",), {"revision": "abc123", "local_dir": str(tmp_path / "t")})]

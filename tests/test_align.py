"""Word alignment across tokenizers and vocabulary projection, on real Romanian sentences (RO-STS)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from helpers import make_tokenizer, ro_sentences

from kdlib.align import aligned_words, build_vocab_map, encode_words, project_distribution, split_words, token_key


@pytest.fixture(scope="module")
def sentences(data_dir) -> list[str]:
    return ro_sentences(data_dir, 1500)


@pytest.fixture(scope="module")
def toks(sentences, tmp_path_factory):
    root = tmp_path_factory.mktemp("tok")
    return (make_tokenizer(sentences, root / "cased", lowercase=False),
            make_tokenizer(sentences, root / "uncased", lowercase=True))


def test_first_subtokens_align_by_word(sentences, toks):
    cased, uncased = toks
    words = split_words(sentences[:16])
    vc, vu = encode_words(cased, words, 64), encode_words(uncased, words, 64)
    b, w, sp, tp = aligned_words(vc.first_pos, vu.first_pos)
    assert len(b) == sum(len(x) for x in words)  # nothing truncated at 64
    for bi, wi, si, ti in zip(b.tolist(), w.tolist(), sp.tolist(), tp.tolist()):
        word = words[bi][wi]
        for tok, pos, view in ((cased, si, vc), (uncased, ti, vu)):
            piece = tok.convert_ids_to_tokens(int(view.input_ids[bi, pos]))
            assert view.word_index[bi, pos] == wi
            assert piece == "[UNK]" or word.lower().startswith(piece.lower()), (word, piece)


def test_truncated_words_are_dropped(sentences, toks):
    cased, uncased = toks
    words = split_words(sentences[:8])
    vc, vu = encode_words(cased, words, 64), encode_words(uncased, words, 8)
    b, w, sp, tp = aligned_words(vc.first_pos, vu.first_pos)
    assert int(vu.attention_mask.sum(1).max()) <= 8
    assert (vu.first_pos[b, w] >= 0).all() and (tp < 8).all()
    assert len(b) < sum(len(x) for x in words)


def test_vocab_map_on_hand_vocabularies(tmp_path):
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    def tok(vocab):
        t = Tokenizer(models.WordLevel({v: i for i, v in enumerate(vocab)}, unk_token="[UNK]"))
        return PreTrainedTokenizerFast(tokenizer_object=t, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                       sep_token="[SEP]", mask_token="[MASK]")

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    teacher = tok(specials + ["masa", "##ta", "ţară", "zzz"])           # uncased, cedilla
    student = tok(specials + ["masa", "Masa", "ta", "##ta", "țară"])   # cased, comma-below
    vm = build_vocab_map(teacher, student)
    dense = vm.sparse().to_dense()
    assert dense[5, 5] == 0.5 and dense[5, 6] == 0.5      # masa -> masa, Masa (split)
    assert dense[6, 8] == 1.0 and dense[6, 7] == 0.0      # ##ta -> ##ta, never word-initial "ta"
    assert dense[7, 9] == 1.0                             # ţară (cedilla) -> țară (comma)
    assert dense[8].sum() == 0                            # zzz unmapped
    assert torch.equal(dense[:5, :5], torch.eye(5))       # specials by role
    exact = build_vocab_map(teacher, student, case="exact_first").sparse().to_dense()
    assert exact[5, 5] == 1.0 and exact[5, 6] == 0.0
    p = torch.tensor([[0.0, 0.0, 0.0, 0.0, 0.0, 0.4, 0.2, 0.1, 0.3]])
    q, unmapped = project_distribution(p, vm)
    assert abs(unmapped.item() - 0.3) < 1e-6
    expected = torch.tensor([[0, 0, 0, 0, 0, 0.2, 0.2, 0.0, 0.2, 0.1]]) / 0.7
    assert torch.allclose(q, expected, atol=1e-6)


def test_real_tokenizers_projection_reports_unmapped_mass(toks):
    cased, uncased = toks
    assert token_key("##Ţara") == (True, "țara")
    vm = build_vocab_map(uncased, cased)  # RoBERT-like uncased teacher -> cased student
    assert 0.3 < vm.coverage < 1.0
    p = torch.softmax(torch.randn(4, len(uncased)), -1)
    q, unmapped = project_distribution(p, vm)
    assert torch.allclose(q.sum(-1), torch.ones(4), atol=1e-5)
    mapped_mass = p[:, vm.mapped_teacher].sum(-1)
    assert torch.allclose(unmapped, 1 - mapped_mass, atol=1e-5)
    assert (unmapped > 0).all()

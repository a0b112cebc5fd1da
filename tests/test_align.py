"""Word alignment across tokenizers and vocabulary projection, on real Romanian sentences (RO-STS)."""

from __future__ import annotations

import pytest
import torch
from helpers import make_tokenizer, ro_sentences

from kdlib.engine.align import (
    EnsembleTarget,
    aligned_words,
    build_vocab_map,
    encode_words,
    first_piece_mismatch,
    oracle_mass,
    project_distribution,
    split_words,
    token_counts,
    token_key,
)


@pytest.fixture(scope="module")
def sentences(data_dir) -> list[str]:
    return ro_sentences(data_dir, 1500)


@pytest.fixture(scope="module")
def toks(sentences, tmp_path_factory):
    root = tmp_path_factory.mktemp("tok")
    return (
        make_tokenizer(sentences, root / "cased", lowercase=False),
        make_tokenizer(sentences, root / "uncased", lowercase=True),
    )


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
        return PreTrainedTokenizerFast(
            tokenizer_object=t,
            unk_token="[UNK]",
            pad_token="[PAD]",
            cls_token="[CLS]",
            sep_token="[SEP]",
            mask_token="[MASK]",
        )

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    teacher = tok(specials + ["masa", "##ta", "ţară", "zzz"])  # uncased, cedilla
    student = tok(specials + ["masa", "Masa", "ta", "##ta", "țară"])  # cased, comma-below
    vm = build_vocab_map(teacher, student)
    dense = vm.sparse().to_dense()
    assert dense[5, 5] == 0.5 and dense[5, 6] == 0.5  # masa -> masa, Masa (split)
    assert dense[6, 8] == 1.0 and dense[6, 7] == 0.0  # ##ta -> ##ta, never word-initial "ta"
    assert dense[7, 9] == 1.0  # ţară (cedilla) -> țară (comma)
    assert dense[8].sum() == 0  # zzz unmapped
    assert torch.equal(dense[:5, :5], torch.eye(5))  # specials by role
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


# ------------------------------------------------------------------- case-aware projection (issue 10)
def _hand_tokenizers():
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    def tok(vocab):
        t = Tokenizer(models.WordLevel({v: i for i, v in enumerate(vocab)}, unk_token="[UNK]"))
        return PreTrainedTokenizerFast(
            tokenizer_object=t,
            unk_token="[UNK]",
            pad_token="[PAD]",
            cls_token="[CLS]",
            sep_token="[SEP]",
            mask_token="[MASK]",
        )

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    # teacher (uncased): 5 de, 6 masa, 7 zzz;  student (cased): 5 de, 6 De, 7 DE, 8 masa, 9 ##de
    return tok(specials + ["de", "masa", "zzz"]), tok(specials + ["de", "De", "DE", "masa", "##de"])


def test_count_prior_shares_mass_by_corpus_counts():
    teacher, student = _hand_tokenizers()
    counts = torch.tensor([0, 0, 0, 0, 0, 79, 19, 0, 4, 50])
    dense = build_vocab_map(teacher, student, case="count", student_counts=counts).sparse().to_dense()
    assert torch.allclose(dense[5, 5:8], torch.tensor([80.0, 20.0, 1.0]) / 101)  # add-one smoothed counts
    assert dense[5, 9] == 0 and dense[6, 8] == 1.0  # never a '##' piece; single target
    assert torch.allclose(dense[5:7].sum(-1), torch.ones(2)) and dense[7].sum() == 0  # zzz unmapped
    with pytest.raises(ValueError, match="student_counts"):
        build_vocab_map(teacher, student, case="count")


def test_co_teacher_prior_overrides_counts_per_row():
    teacher, student = _hand_tokenizers()
    counts = torch.tensor([0, 0, 0, 0, 0, 99, 0, 0, 4, 0])
    vm = build_vocab_map(teacher, student, case="prior", student_counts=counts)
    p = torch.zeros(3, 8)
    p[:, 5] = 1.0  # the uncased teacher is sure of "de"
    prior = torch.zeros(3, 10)
    prior[0, [5, 6, 7]] = torch.tensor([0.1, 0.6, 0.1])  # sentence start: the co-teacher prefers "De"
    prior[1, 5] = 0.3  # mid-sentence: only "de"
    q, unmapped = project_distribution(p, vm, prior=prior)  # row 2: no prior mass -> the count prior
    assert torch.allclose(q[0, 5:8], torch.tensor([0.125, 0.75, 0.125]))
    assert torch.allclose(q[1, 5:8], torch.tensor([1.0, 0.0, 0.0]))
    assert torch.allclose(q[2, 5:8], torch.tensor([100.0, 1.0, 1.0]) / 102)
    assert torch.allclose(q.sum(-1), torch.ones(3)) and torch.all(unmapped < 1e-6)
    # without a co-teacher the same map is the count prior; oracle mass reads the student's true piece
    q_none, _ = project_distribution(p, vm)
    assert torch.allclose(q_none, q[2].expand(3, -1))
    mass = oracle_mass(torch.tensor([5, 5]), torch.tensor([6, 8]), vm, prior=prior[:2])
    assert torch.allclose(mass, torch.tensor([0.75, 0.0]))


def test_prior_power_sharpens_within_each_group_only():
    teacher, student = _hand_tokenizers()
    counts = torch.tensor([0, 0, 0, 0, 0, 99, 0, 0, 4, 0])
    vm = build_vocab_map(teacher, student, case="prior", student_counts=counts, prior_power=2.0)
    p = torch.zeros(2, 8)
    p[0, 5] = 1.0  # sure of "de"
    p[1, 5], p[1, 6] = 0.5, 0.5  # half "de", half "masa"
    prior = torch.zeros(2, 10)
    prior[0, [5, 6, 7]] = torch.tensor([1e-30, 2e-30, 1e-30])  # tiny but ranked: squared, not underflowed
    prior[1, [5, 6, 8]] = torch.tensor([0.1, 0.3, 0.6])
    q, _ = project_distribution(p, vm, prior=prior)
    assert torch.allclose(q[0, 5:8], torch.tensor([1.0, 4.0, 1.0]) / 6)  # shares 1 : 4 : 1 = (1 : 2 : 1) ** 2
    assert torch.allclose(q[1, 5:9], torch.tensor([0.05, 0.45, 0.0, 0.5]))  # "masa" (single target) untouched
    with pytest.raises(ValueError, match="case_prior_power"):
        build_vocab_map(teacher, student, case="prior", prior_power=0)


def test_empty_rows_are_zero_not_uniform():
    teacher, student = _hand_tokenizers()
    vm = build_vocab_map(teacher, student)
    p = torch.zeros(2, 8)
    p[0, 7], p[1, 6], p[1, 7] = 1.0, 0.25, 0.75
    q, unmapped = project_distribution(p, vm)
    assert torch.all(q[0] == 0) and unmapped[0] == 1.0
    assert q[1, 8] == 1.0 and abs(float(unmapped[1]) - 0.75) < 1e-6


def test_mass_weighted_average_ignores_empty_rows():
    target = EnsembleTarget(3, 4)
    same = torch.tensor([[0.5, 0.5, 0, 0], [0, 0, 1.0, 0], [0.25, 0.25, 0.25, 0.25]])
    target.add(same, 1.0)
    before = target.result()[1].clone()
    proj = torch.tensor([[0, 0, 0, 1.0], [0, 1.0, 0, 0]])
    target.add(proj, 1.0, rows=torch.tensor([0, 1]), mass=torch.tensor([0.0, 0.5]))
    keep, avg = target.result()
    assert keep.all()
    assert torch.equal(avg[0], before[0]) and torch.equal(avg[2], before[2])  # the empty row changed nothing
    assert torch.allclose(avg[1], torch.tensor([0, 0.5 / 1.5, 1 / 1.5, 0]))  # half-mapped row counts half
    assert torch.allclose(avg.sum(-1), torch.ones(3))
    only_cross = EnsembleTarget(2, 4)
    only_cross.add(proj, 1.0, rows=torch.tensor([0, 1]), mass=torch.tensor([0.0, 0.5]))
    keep, avg = only_cross.result()
    assert keep.tolist() == [False, True] and torch.equal(avg, torch.tensor([[0, 1.0, 0, 0]]))


def test_first_piece_mismatch_on_real_words(sentences, toks):
    cased, uncased = toks
    counts = token_counts(cased, sentences)
    assert counts.sum() > 0 and counts[cased.cls_token_id] == 0
    vm = build_vocab_map(uncased, cased, case="count", student_counts=counts)
    words = split_words(sentences[:200])
    vc, vu = encode_words(cased, words, 64), encode_words(uncased, words, 64)
    b, w, sp, tp = aligned_words(vc.first_pos, vu.first_pos)
    s_ids, t_ids = vc.input_ids[b, sp], vu.input_ids[b, tp]
    mismatch = first_piece_mismatch(s_ids, t_ids, vm)
    assert 0 < mismatch.float().mean() < 0.5
    for bi, wi, si, ti, bad in list(zip(b.tolist(), w.tolist(), s_ids.tolist(), t_ids.tolist(), mismatch.tolist())):
        s_tok, t_tok = cased.convert_ids_to_tokens(si), uncased.convert_ids_to_tokens(ti)
        assert bad == (token_key(s_tok) != token_key(t_tok) and not (s_tok == t_tok == "[UNK]")), (words[bi][wi],)
    # the oracle is zero exactly on mismatched words, and rows sum to one where mapped
    mass = oracle_mass(t_ids, s_ids, vm)
    assert torch.all(mass[mismatch] == 0) and torch.all(mass[~mismatch] > 0)
    q, _ = project_distribution(torch.softmax(torch.randn(5, len(uncased)), -1), vm)
    assert torch.allclose(q.sum(-1), torch.ones(5), atol=1e-5)


def test_teachers_from_different_seeds_are_independent(sentences, tmp_path):
    from datasets import Dataset

    from kdlib.engine.align import hidden_agreement
    from kdlib.engine.teachers import (
        TeacherConfig,
        load_teacher,
        pretrain_teacher,
        teacher_seeds,
    )

    seeds = teacher_seeds(0, ["cased", "uncased"])
    assert len(set(seeds.values())) == 2
    corpus = Dataset.from_dict({"text": sentences[:400]})
    shape = {
        "hidden_size": 32,
        "num_layers": 1,
        "num_heads": 2,
        "intermediate_size": 64,
        "vocab_size": 400,
        "max_len": 32,
        "steps": 3,
        "batch_size": 8,
        "heldout_max": 20,
        "pppl_texts": 2,
        "pppl_max_len": 16,
    }
    models = {}
    for tag, seed in (("a", seeds["cased"]), ("a_again", seeds["cased"]), ("b", seeds["uncased"])):
        pretrain_teacher(
            corpus,
            tmp_path / tag,
            lowercase=False,
            config=TeacherConfig(**shape, seed=seed),
            progress=False,
            device="cpu",
        )
        models[tag] = load_teacher(str(tmp_path / tag), device="cpu")
    words = split_words(sentences[400:440])
    same = hidden_agreement(*models["a"], *models["a_again"], words, max_len=32)
    other = hidden_agreement(*models["a"], *models["b"], words, max_len=32)
    assert same["cosine"] > 0.95  # one seed: (nearly) the same teacher twice
    assert other["cosine"] < 0.5 < other["cosine_linear"]  # other seed: unrelated coordinates, linearly related

"""Students: the layer rule, exact copying from a BERT teacher, and the random / Bort-like options."""

from __future__ import annotations

import pytest
import torch
from helpers import ro_sentences
from transformers import AutoModelForMaskedLM, BertConfig, BertForMaskedLM, RobertaConfig, RobertaForMaskedLM

from kdlib.engine.students import count_parameters, make_student, teacher_layer_map
from kdlib.engine.teachers import train_tokenizer


@pytest.fixture(scope="module")
def sentences(data_dir) -> list[str]:
    return ro_sentences(data_dir, 1500, capitals_first=True)


@pytest.fixture(scope="module")
def tokenizer(sentences, tmp_path_factory):
    return train_tokenizer(sentences, tmp_path_factory.mktemp("tok"), vocab_size=600, lowercase=False)


def bert_teacher(vocab_size: int, layers: int, *, hidden: int = 32, heads: int = 4, seed: int = 0) -> BertForMaskedLM:
    """A random BERT MLM, dropout off; token-type and LayerNorm weights perturbed so copying errors show."""
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=2 * hidden,
        max_position_embeddings=64,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    model = BertForMaskedLM(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "LayerNorm" in name or "token_type" in name or name.endswith("bias"):
                p.add_(torch.randn_like(p) * 0.5)
    return model


def test_teacher_layer_map():
    assert teacher_layer_map(12, 6) == [0, 2, 4, 7, 9, 11]  # HF extract_distilbert.py
    assert teacher_layer_map(4, 2) == [0, 3]
    assert teacher_layer_map(12, 4) == [0, 4, 7, 11]  # 11/3 = 3.67 -> 4, 7.33 -> 7
    assert teacher_layer_map(5, 3) == [0, 2, 4]
    assert teacher_layer_map(6, 3) == [0, 3, 5]  # 2.5 rounds half-up to 3 (Python's round would give 2)
    assert teacher_layer_map(12, 1) == [0]
    for L in range(1, 25):
        for n in range(1, L + 1):
            m = teacher_layer_map(L, n)
            assert len(m) == n and m[0] == 0 and all(a < b for a, b in zip(m, m[1:]))
            assert n == 1 or m[-1] == L - 1
        assert teacher_layer_map(L, L) == list(range(L))
    for bad in [(6, 12), (12, 0), (0, 1), (12, -1), (12, True), (12.0, 6)]:
        with pytest.raises(ValueError, match="teacher_layer_map"):
            teacher_layer_map(*bad)


def expected_copies(teacher: BertForMaskedLM, layers: list[int]) -> dict[str, torch.Tensor]:
    """Student parameter name -> the teacher tensor it must equal (HF extract_distilbert.py's mapping)."""
    t = dict(teacher.named_parameters())
    emb = "bert.embeddings."
    out = {
        "distilbert.embeddings.word_embeddings.weight": t[emb + "word_embeddings.weight"],
        "distilbert.embeddings.position_embeddings.weight": t[emb + "position_embeddings.weight"]
        + t[emb + "token_type_embeddings.weight"][0],
        "distilbert.embeddings.LayerNorm.weight": t[emb + "LayerNorm.weight"],
        "distilbert.embeddings.LayerNorm.bias": t[emb + "LayerNorm.bias"],
        "vocab_transform.weight": t["cls.predictions.transform.dense.weight"],
        "vocab_transform.bias": t["cls.predictions.transform.dense.bias"],
        "vocab_layer_norm.weight": t["cls.predictions.transform.LayerNorm.weight"],
        "vocab_layer_norm.bias": t["cls.predictions.transform.LayerNorm.bias"],
        "vocab_projector.bias": t["cls.predictions.bias"],
    }
    names = {
        "attention.q_lin": "attention.self.query",
        "attention.k_lin": "attention.self.key",
        "attention.v_lin": "attention.self.value",
        "attention.out_lin": "attention.output.dense",
        "sa_layer_norm": "attention.output.LayerNorm",
        "ffn.lin1": "intermediate.dense",
        "ffn.lin2": "output.dense",
        "output_layer_norm": "output.LayerNorm",
    }
    for i, j in enumerate(layers):
        for s_name, t_name in names.items():
            for kind in ("weight", "bias"):
                out[f"distilbert.transformer.layer.{i}.{s_name}.{kind}"] = t[f"bert.encoder.layer.{j}.{t_name}.{kind}"]
    return out


def test_student_layers_equal_the_chosen_teacher_layers(tokenizer):
    teacher = bert_teacher(len(tokenizer), 12)
    student = make_student(teacher)
    assert student.config.n_layers == 6 and student.config.kdlib_teacher_layers == [0, 2, 4, 7, 9, 11]
    expected = expected_copies(teacher, [0, 2, 4, 7, 9, 11])
    params = dict(student.named_parameters())  # the tied decoder weight is the word embedding
    assert set(params) == set(expected), "every student parameter must come from the teacher"
    for name, tensor in expected.items():
        assert torch.equal(params[name], tensor), name
    assert student.vocab_projector.weight is student.distilbert.embeddings.word_embeddings.weight
    assert torch.equal(student.vocab_projector.weight, teacher.cls.predictions.decoder.weight)


def test_full_depth_student_reproduces_the_teacher(tokenizer, sentences):
    """With every teacher layer copied, the student computes exactly the teacher's function (segment 0)."""
    torch.set_num_threads(1)
    teacher = bert_teacher(len(tokenizer), 4)
    assert teacher.bert.embeddings.token_type_embeddings.weight[0].abs().max() > 0.1
    student = make_student(teacher, num_layers=4).eval()
    batch = tokenizer(sentences[100:108], padding=True, truncation=True, max_length=64, return_tensors="pt")
    assert (batch["attention_mask"] == 0).any(), "the batch should contain padding"
    with torch.no_grad():
        t = teacher(**batch, output_hidden_states=True)
        s = student(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], output_hidden_states=True)
    real = batch["attention_mask"].bool()
    assert len(s.hidden_states) == len(t.hidden_states) == 5
    for layer, (sh, th) in enumerate(zip(s.hidden_states, t.hidden_states)):  # 0 = embedding output
        torch.testing.assert_close(sh[real], th[real], atol=1e-5, rtol=1e-5, msg=f"hidden state {layer}")
    torch.testing.assert_close(s.logits[real], t.logits[real], atol=1e-5, rtol=1e-5)


def test_random_init_differs_and_is_seeded(tokenizer):
    teacher = bert_teacher(len(tokenizer), 4)
    state = torch.random.get_rng_state()
    a = make_student(teacher, init="random", seed=1)
    assert torch.equal(torch.random.get_rng_state(), state), "make_student must not move the global RNG"
    b = make_student(teacher, init="random", seed=1)
    c = make_student(teacher, init="random", seed=2)
    for (name, pa), pb, _pc in zip(a.named_parameters(), b.parameters(), c.parameters()):
        assert torch.equal(pa, pb), name
    assert not torch.equal(
        a.distilbert.embeddings.word_embeddings.weight, c.distilbert.embeddings.word_embeddings.weight
    )
    copied = make_student(teacher)
    for name, p in a.named_parameters():
        if p.dim() == 2:  # matrices (LayerNorm vectors start as ones/zeros in both)
            assert not torch.equal(p, dict(copied.named_parameters())[name]), name


def test_bort_shape(tokenizer):
    teacher = bert_teacher(len(tokenizer), 12, hidden=96, heads=12)
    bort = make_student(teacher, init="random", shape="bort")
    c = bort.config
    assert (c.n_layers, c.n_heads, c.dim, c.hidden_dim) == (4, 8, 96, 72)  # 12 -> 4 layers, 12 -> 8 heads
    distil = make_student(teacher)
    assert count_parameters(bort)["encoder"] < count_parameters(distil)["encoder"]
    out = bort(input_ids=tokenizer(["Un avion decolează."], return_tensors="pt")["input_ids"])
    assert out.logits.shape[-1] == len(tokenizer)
    with pytest.raises(ValueError, match="use init='random' for shape='bort'"):
        make_student(teacher, init="teacher", shape="bort")
    small = make_student(bert_teacher(len(tokenizer), 4), init="random", shape="bort")  # scaled down
    assert (small.config.n_layers, small.config.n_heads) == (1, 2)  # 4/3 -> 1 layer; 8/3 -> 3, not a divisor of 32 -> 2


def test_bad_requests(tokenizer):
    teacher = bert_teacher(len(tokenizer), 4)
    with pytest.raises(ValueError, match="init='nope'"):
        make_student(teacher, init="nope")
    with pytest.raises(ValueError, match="shape='tall'"):
        make_student(teacher, shape="tall")
    with pytest.raises(ValueError, match="cannot be initialised"):
        make_student(teacher, num_layers=5)
    roberta = RobertaForMaskedLM(
        RobertaConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=64,
            max_position_embeddings=70,
        )
    )
    with pytest.raises(ValueError, match="BERT masked-LM teacher.*RobertaForMaskedLM"):
        make_student(roberta)
    assert make_student(roberta, init="random").config.n_layers == 1


def test_student_round_trips_and_counts(tokenizer, tmp_path):
    teacher = bert_teacher(len(tokenizer), 4)
    student = make_student(teacher).eval()
    student.save_pretrained(tmp_path / "s", safe_serialization=True)
    loaded = AutoModelForMaskedLM.from_pretrained(tmp_path / "s").eval()
    ids = tokenizer(["Școala Națională își începe anul."], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=ids).logits, student(input_ids=ids).logits)
    counts = count_parameters(student)
    assert counts["total"] == student.num_parameters() == counts["embeddings"] + counts["encoder"] + counts["head"]
    assert count_parameters(teacher)["total"] == teacher.num_parameters()
    assert counts["encoder"] * 2 == count_parameters(teacher)["encoder"]


def test_bort_shape_at_the_teachers_real_size():
    """At BERT-base's shape (12 layers x 768, 12 heads, FFN 3072) the two student shapes are RobBERTje's:
    DistilBERT 6 layers / 12 heads / FFN 3072, Bort 4 layers / 8 heads / FFN 0.75 x 768; both 768 wide."""
    from types import SimpleNamespace

    from transformers import DistilBertModel

    from kdlib.bench.speed import distilbert_param_formula
    from kdlib.engine.students import student_config

    teacher = SimpleNamespace(config=BertConfig(vocab_size=50000))  # the config is all the shape rule reads
    distil, bort = student_config(teacher), student_config(teacher, shape="bort")
    assert (distil.n_layers, distil.n_heads, distil.dim, distil.hidden_dim) == (6, 12, 768, 3072)
    assert (bort.n_layers, bort.n_heads, bort.dim, bort.hidden_dim) == (4, 8, 768, 576)
    assert bort.dim % bort.n_heads == 0 and bort.vocab_size == distil.vocab_size == 50000
    built = DistilBertModel(bort).num_parameters()
    assert built == distilbert_param_formula(50000, layers=4, ffn=576)
    assert built < 0.75 * distilbert_param_formula(50000, layers=6, ffn=3072)

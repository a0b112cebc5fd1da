"""Task-specific distillation (kdlib.studies.task_distill): students learn SAPN, losses match hand computation, every
student gets its size and speed figures, wrong teachers and bad CLI input are refused in one line."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import make_tokenizer

from kdlib.data.load import load_task
from kdlib.eval.finetune import TaskModel, predict
from kdlib.eval.loyalty import load_predictions
from kdlib.eval.metrics import compute_metrics, majority_baseline
from kdlib.studies.task_distill import (
    StudentSpec,
    TaskDistillConfig,
    TeacherMismatchError,
    build_student,
    cli,
    distill_loss,
    distill_task,
    load_task_teacher,
    pareto_front,
    train_student,
)
from kdlib.studies.task_students import STUDENTS, WordVocab, word_tokens

N_TRAIN, N_TEST = 300, 200


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread: on 2 shared cores a second thread mostly spins (measured: 5x the CPU time)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def sapn(data_dir):
    """A fixed SAPN subset (train / validation / test), its tokenizer and word vocabulary."""
    ds = load_task("sapn", data_dir)
    parts = {
        "train": ds["train"].shuffle(seed=0).select(range(N_TRAIN)),
        "validation": ds["validation"].shuffle(seed=0).select(range(N_TEST)),
        "test": ds["test"].shuffle(seed=0).select(range(N_TEST)),
    }
    return parts


@pytest.fixture(scope="module")
def tokenizer(sapn, tmp_path_factory):
    texts = [f"{a} {b}" for a, b in zip(sapn["train"]["text_a"], sapn["train"]["text_b"])]
    return make_tokenizer(texts, tmp_path_factory.mktemp("tok"), lowercase=True, vocab_size=1500)


@pytest.fixture(scope="module")
def agnostic_dir(tokenizer, tmp_path_factory):
    """A task-agnostic student folder as the main chapters save it: a DistilBERT from a tiny teacher."""
    from helpers import tiny_teacher

    from kdlib.engine.students import make_student

    out = tmp_path_factory.mktemp("agnostic")
    make_student(tiny_teacher(tokenizer, hidden=64, layers=2)).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def _teacher_folder(tokenizer, folder: Path, task: str, label_names: list[str], kind: str) -> Path:
    """A tiny TaskModel saved the way finetune(save_model=True) saves it."""
    from kdlib.studies.task_students import small_bert

    small_bert("bert-tiny", kind, len(label_names), tokenizer, max_len=64).save(
        folder, tokenizer, task=task, label_names=label_names
    )
    return folder


# ------------------------------------------------------------------------------------------------ losses
def test_losses_match_hand_computation():
    s = torch.tensor([[1.0, -0.5, 0.2], [0.0, 2.0, -1.0]])
    t = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 0.5]])
    y = torch.tensor([0, -100])
    temp, alpha = 2.0, 0.3

    def softmax(x):
        e = np.exp(x - x.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)

    p, q = softmax(t.numpy() / temp), softmax(s.numpy() / temp)
    kl = temp**2 * float(np.sum(p * (np.log(p) - np.log(q)))) / 2  # batch mean over the 2 units
    mse = float(np.mean((s.numpy() - t.numpy()) ** 2))  # over units and classes
    ce = -math.log(softmax(s.numpy())[0, 0])  # only unit 0 is labelled
    got = {
        loss: distill_loss(s, y, t, loss, temperature=temp, alpha=alpha).item()
        for loss in ("hard", "kl", "mse", "kl+hard", "mse+hard")
    }
    assert got["hard"] == pytest.approx(ce, rel=1e-5)
    assert got["kl"] == pytest.approx(kl, rel=1e-5)
    assert got["mse"] == pytest.approx(mse, rel=1e-5)
    assert got["kl+hard"] == pytest.approx(alpha * kl + (1 - alpha) * ce, rel=1e-5)
    assert got["mse+hard"] == pytest.approx(alpha * mse + (1 - alpha) * ce, rel=1e-5)
    assert distill_loss(s, torch.tensor([-100, -100]), t, "hard").item() == 0.0  # unlabeled batch: no gold term
    with pytest.raises(ValueError, match="teacher logits None"):
        distill_loss(s, y, None, "kl")


def test_pareto_front():
    # (score, latency): b dominates c; a is fastest, d is best
    assert pareto_front([50, 70, 60, 80], [1, 2, 3, 9]) == [True, True, False, True]


# ------------------------------------------------------------------------------------ students learn SAPN
BERT_LR = {"bert-mini": 6e-4, "bert-small": 6e-4}  # wider BERTs from scratch diverge at 2e-3


@pytest.mark.parametrize("student", STUDENTS)
def test_student_learns_sapn_beyond_majority(student, sapn, tokenizer, agnostic_dir):
    # titles and the start of the reviews (32 words / sub-tokens; 16 for the wider BERTs) carry most of the polarity
    config = TaskDistillConfig(
        epochs=3,
        batch_size=32,
        lr=3e-3,
        bert_lr=BERT_LR.get(student, 2e-3),
        max_len=16 if student in BERT_LR else 32,
        embedding_dim=32,
        hidden=32,
        filters=32,
        dropout=0.1,
    )
    rows = {k: v.to_dict() for k, v in sapn.items()}
    vocab = WordVocab.build(
        [word_tokens(a) + word_tokens(b) for a, b in zip(rows["train"]["text_a"], rows["train"]["text_b"])]
    )
    model, inputs, lr = build_student(
        StudentSpec(student, embeddings="random", loss="hard", augment=False),
        "classification",
        2,
        teacher_tokenizer=tokenizer,
        vocab=vocab,
        vectors=None,
        agnostic_dir=agnostic_dir,
        config=config,
    )
    fit = train_student(
        model,
        inputs.encode(rows["train"]),
        inputs.encode(rows["validation"]),
        sapn["validation"],
        task="sapn",
        loss="hard",
        lr=lr,
        config=config,
        pad_id=inputs.pad_id,
        label_names=["negative", "positive"],
    )
    outs = predict(
        model,
        inputs.encode(rows["test"]),
        N_TEST,
        pad_id=inputs.pad_id,
        batch_size=64,
        device=torch.device("cpu"),
        progress=False,
    )
    score = compute_metrics("sapn", sapn["test"]["label"], [int(o.argmax()) for o in outs])["score"]
    base = majority_baseline("sapn", sapn["train"]["label"], sapn["test"]["label"])["score"]
    assert score > base + 0.05, f"{student}: accuracy {score:.3f} vs majority {base:.3f} ({fit})"


# ----------------------------------------------------------------------------- the study, end to end
def test_every_student_gets_score_loyalty_size_and_speed(sapn, tokenizer, agnostic_dir, tmp_path, data_dir):
    teacher = _teacher_folder(tokenizer, tmp_path / "teacher", "sapn", ["negative", "positive"], "classification")
    corpus = [f"{a} . {b}" for a, b in zip(sapn["test"]["text_a"][:40], sapn["test"]["text_b"][:40])]
    config = TaskDistillConfig(
        epochs=1,
        max_len=32,
        max_train_examples=48,
        max_eval_examples=40,
        augment_examples=30,
        embedding_dim=16,
        hidden=16,
        filters=8,
        fasttext_epochs=1,
        bench_budget_s=0.01,
        bench_repeats=1,
    )
    specs = [StudentSpec(s) for s in STUDENTS] + [StudentSpec("cnn", embeddings="random", loss="mse", augment=False)]
    rows = distill_task(
        "sapn",
        teacher,
        tmp_path / "out",
        specs,
        config=config,
        corpus_texts=corpus,
        cache_dir=tmp_path / "ft",
        agnostic_dir=agnostic_dir,
        data_dir=data_dir,
    )
    assert [r["name"] for r in rows] == ["teacher"] + [s.name for s in specs]
    assert len(list((tmp_path / "ft").glob("fasttext-*/vectors.kv"))) == 1
    for r in rows:
        for key in ("latency_ms_t1", "latency_ms_t2", "throughput_t1", "throughput_t2"):
            assert r[key] > 0 and math.isfinite(r[key]), (r["name"], key)
        assert r["ram_mb"] >= 0 and r["parameters"] > 0
        assert r["disk_bytes"] == (tmp_path / "out" / r["name"] / "model.safetensors").stat().st_size
        pred = load_predictions(r["predictions"])
        assert len(pred.ids) == 40 and 0 <= r["loyalty"] <= 100 and 0 <= r["score"] <= 100
    assert rows[0]["loyalty"] == 100.0
    students = {r["name"]: r for r in rows[1:]}
    # 10800 - 48 train reviews are left unused, so the 30 augmentation texts are all reviews
    assert students["bilstm-fasttext-kl+hard-aug"]["augment_examples"] == 30
    assert students["cnn-random-mse-noaug"]["augment_examples"] == 0
    assert all(r["train_seconds"] > 0 for r in students.values())
    assert json.loads((tmp_path / "out" / "results.json").read_text())[1]["name"] == specs[0].name


# ------------------------------------------------------------------------------------- refusing bad input
def test_teacher_of_another_task_is_refused(tokenizer, tmp_path, capsys):
    from kdlib.data.load import UPOS_TAGS

    folder = _teacher_folder(tokenizer, tmp_path / "upos-teacher", "upos", UPOS_TAGS, "tagging")
    with pytest.raises(TeacherMismatchError, match=r"upos-teacher has a head for task 'upos'.*expected task 'sapn'"):
        load_task_teacher(folder, "sapn")
    model, _, names = load_task_teacher(folder, "upos")
    assert isinstance(model, TaskModel) and names == UPOS_TAGS
    assert cli(["--teacher", str(folder), "--task", "sapn", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "'upos'" in err and "'sapn'" in err and str(folder) in err
    assert not (tmp_path / "out").exists()


def test_hugging_face_classifier_folders(tokenizer, tmp_path):
    from transformers import BertConfig, BertForSequenceClassification

    def save(n_labels: int, folder: Path) -> Path:
        cfg = BertConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=64,
            num_labels=n_labels,
        )
        BertForSequenceClassification(cfg).save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        return folder

    model, _, names = load_task_teacher(save(2, tmp_path / "two"), "sapn")
    assert names == ["negative", "positive"] and model.kind == "classification"
    with pytest.raises(TeacherMismatchError, match=r"three is a BertForSequenceClassification.*task 'sapn'"):
        load_task_teacher(save(3, tmp_path / "three"), "sapn")


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["--teacher", "nowhere", "--task", "sapn", "--out", "x"], "teacher folder nowhere has no config.json"),
        (["--teacher", "t", "--task", "sts", "--out", "x"], "regression task"),
        (["--teacher", "t", "--task", "sapn", "--out", "x", "--students", "gru"], "invalid choice: 'gru'"),
        (["--teacher", "t", "--task", "sapn", "--out", "x", "--epochs", "0"], "epochs must be a positive integer"),
        (["--task", "sapn", "--out", "x"], "the following arguments are required: --teacher"),
    ],
)
def test_cli_bad_input_is_one_line(argv, expected, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    try:
        code = cli(argv)
    except SystemExit as exc:  # argparse errors exit
        code = exc.code
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and expected in err, err
    assert err.startswith("kdlib task-distill: ")


# ------------------------------------------------------------------------------------------------ claims
def _rows_for_claims(tmp_path, teacher_correct: float) -> list[dict]:
    """Results rows of one SAPN run (balanced 400 examples, majority baseline 50) with saved predictions."""
    from kdlib.eval.loyalty import Predictions, save_predictions

    gold = np.arange(400) % 2
    specs = {
        "teacher": ("teacher", "teacher", {}, teacher_correct),
        "bilstm-fasttext-kl+hard-aug": ("bilstm", "word", dict(embeddings="fasttext", augment=True), 0.9),
        "bilstm-random-kl+hard-aug": ("bilstm", "word", dict(embeddings="random", augment=True), 0.8),
        "bilstm-fasttext-kl+hard-noaug": ("bilstm", "word", dict(embeddings="fasttext", augment=False), 0.9),
        "bilstm-fasttext-hard-noaug": ("bilstm", "word", dict(embeddings="fasttext", augment=False), 0.7),
        "bert-tiny-kl+hard-aug": ("bert-tiny", "bert", dict(augment=True), 0.9),
    }
    rows = []
    for i, (name, (student, family, extra, correct)) in enumerate(specs.items()):
        pred = np.where(np.arange(400) < correct * 400, gold, 1 - gold)
        probs = np.eye(2, dtype=np.float32)[pred]
        ids = [str(k) for k in range(400)]
        path = save_predictions(
            Predictions("sapn", name, "classification", "test", ["n", "p"], ids, gold, pred, probs=probs),
            tmp_path / name / "predictions.npz",
        )
        loss = "hard" if "-hard-" in name else "kl+hard"
        rows.append(
            {"task": "sapn", "name": name, "student": student, "family": family, "majority": 50.0, "loss": loss,
             "validation": 100 * correct - i * 1e-3, "parameters": 10 if family == "word" else 100,
             "disk_bytes": 40 if family == "word" else 400, "latency_ms_t1": 1.0, "predictions": str(path), **extra}
        )  # fmt: skip
    return rows


def test_claims_read_the_abstract_and_need_a_teacher_that_learned(tmp_path):
    from kdlib.studies.task_distill import paper_claims

    abstract = " ".join((Path("/work/shared/seeds") / "003_e362510aac01c858.txt").read_text(encoding="utf-8").split())
    claims = paper_claims(_rows_for_claims(tmp_path, 0.95))
    assert [c.id for c in claims] == ["td-tradeoff", "td-loss", "td-embeddings", "td-augment"]
    assert all(c.kind == "paper" and c.quote in abstract and len(c.details) == 1 for c in claims)
    got = {c.id: c for c in claims}
    assert got["td-tradeoff"].verdict == "supported"  # 0 points apart, 10x fewer parameters
    assert got["td-loss"].verdict == "supported" and got["td-loss"].interval.estimate == pytest.approx(20.0)
    assert got["td-embeddings"].interval.estimate == pytest.approx(10.0)
    assert got["td-augment"].verdict == "inconclusive" and "no budget settles it" in got["td-augment"].reason
    at_floor = paper_claims(_rows_for_claims(tmp_path, 0.5))  # the teacher scores the majority baseline
    assert {c.verdict for c in at_floor} == {"not testable here"}
    assert "not learned: teacher 50.0" in at_floor[0].reason

"""Fine-tuning on real data with tiny models: beats the trivial baselines, files and metrics agree, heads work
for BERT and DistilBERT, a finished fine-tune is kept (reused as it is, refused with other settings), bad input
refused early."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import pearsonr
from sklearn.metrics import accuracy_score, f1_score

from kdlib.data.load import load_task
from kdlib.eval import finetune as ft
from kdlib.eval.finetune import FinetuneConfig, TaskModel, encode_split, finetune, finetune_seeds
from kdlib.eval.finetune import cli as finetune_cli
from kdlib.eval.loyalty import load_predictions, loyalty_report
from kdlib.eval.metrics import majority_baseline

# small and fast: 2 threads, 64-wide 2-layer encoders, 1,500 train examples, short inputs
CFG = FinetuneConfig(
    epochs=3,
    lr=2e-3,
    batch_size=32,
    eval_batch_size=64,
    max_len=64,
    seed=0,
    max_train_examples=1500,
    max_eval_examples=300,
)
TASK_KIND = {"upos": "tagging", "sapn": "classification", "sts": "regression"}


@pytest.fixture(scope="module")
def tasks(data_dir):
    return {t: load_task(t, data_dir) for t in TASK_KIND}


@pytest.fixture(scope="module")
def models(tmp_path_factory, tasks) -> dict[str, Path]:
    """A WordPiece tokenizer trained on the tasks' real train text; a tiny BERT and a tiny DistilBERT."""
    from transformers import BertConfig, BertForMaskedLM, DistilBertConfig, DistilBertForMaskedLM

    from kdlib.engine.teachers import train_tokenizer

    torch.set_num_threads(2)
    root = tmp_path_factory.mktemp("models")
    texts = [" ".join(t) for t in tasks["upos"]["train"]["tokens"][:3000]]
    texts += [a + " " + b for a, b in zip(tasks["sapn"]["train"]["text_a"][:3000], tasks["sapn"]["train"]["text_b"])]
    texts += tasks["sts"]["train"]["text_a"]
    tok = train_tokenizer(texts, root / "bert", vocab_size=2000, lowercase=False)
    tok.save_pretrained(root / "distil")
    torch.manual_seed(0)
    BertForMaskedLM(
        BertConfig(
            vocab_size=len(tok),
            hidden_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=128,
            max_position_embeddings=128,
        )
    ).save_pretrained(root / "bert")
    DistilBertForMaskedLM(
        DistilBertConfig(
            vocab_size=len(tok), dim=64, n_layers=2, n_heads=2, hidden_dim=128, max_position_embeddings=128
        )
    ).save_pretrained(root / "distil")
    return {"bert": root / "bert", "distil": root / "distil"}


@pytest.fixture(scope="module")
def runs(models, tasks, tmp_path_factory):
    """Every (model, task) fine-tuned once; results and output folders."""
    out = tmp_path_factory.mktemp("runs")
    res = {}
    for m in ("bert", "distil"):
        for t in TASK_KIND:
            res[m, t] = finetune(str(models[m]), t, out / f"{m}-{t}", config=CFG, progress=False)
            res[m, t]["dir"] = out / f"{m}-{t}"
    return res


def _baseline(task, ds, res):
    col = "tags" if task == "upos" else "label"
    test_ids = set(load_predictions(res["dir"]).ids) if task != "upos" else None
    test = ds["test"].shuffle(seed=0).select(range(CFG.max_eval_examples))
    if test_ids is not None:
        assert set(test["id"]) == test_ids  # the scored subset is the documented one
    return majority_baseline(task, ds["train"][col], test[col])


@pytest.mark.parametrize("model", ["bert", "distil"])
def test_beats_trivial_baselines(runs, tasks, model):
    upos, sapn, sts = (runs[model, t] for t in TASK_KIND)
    b_upos, b_sapn, b_sts = (_baseline(t, tasks[t], runs[model, t]) for t in TASK_KIND)
    print(
        model,
        {t: round(runs[model, t]["test"]["score"], 4) for t in TASK_KIND},
        "baselines",
        {"upos": round(b_upos["score"], 4), "sapn": round(b_sapn["score"], 4), "sts": b_sts["score"]},
    )
    assert upos["test"]["macro_f1"] > b_upos["macro_f1"] + 0.3  # majority tag (NOUN): macro-F1 ~0.02
    assert upos["test"]["accuracy"] > b_upos["accuracy"] + 0.3
    assert sapn["test"]["accuracy"] > b_sapn["accuracy"] + 0.2  # majority class: ~0.5
    assert b_sts["pearson"] == 0.0 and sts["test"]["pearson"] > 0.1  # mean predictor: no correlation
    for r in (upos, sapn, sts):
        scores = [e["validation"]["score"] for e in r["epochs"]]
        assert r["best_epoch"] == 1 + int(np.argmax(scores)) and len(scores) == CFG.epochs
        assert r["validation"] == r["epochs"][r["best_epoch"] - 1]["validation"]


def test_saved_predictions_match_sklearn_and_scipy(runs, tasks):
    for (_model, task), r in runs.items():
        written = json.loads((r["dir"] / "metrics.json").read_text())
        assert written["test"] == r["test"]
        p = load_predictions(r["dir"])
        # a local model is named by its folder (a moved run keeps its predictions' bytes)
        assert (p.task, p.kind, p.model) == (task, TASK_KIND[task], os.path.basename(r["model"]))
        if task == "sts":
            assert np.array_equal(p.pred, p.outputs)
            assert r["test"]["pearson"] == pytest.approx(pearsonr(p.gold, p.outputs)[0], abs=1e-5)
            continue
        assert np.allclose(p.probs.sum(1), 1, atol=1e-5) and np.array_equal(p.pred, p.probs.argmax(1))
        if task == "sapn":
            assert r["test"]["accuracy"] == pytest.approx(accuracy_score(p.gold, p.pred), abs=1e-12)
        else:
            assert r["test"]["macro_f1"] == pytest.approx(f1_score(p.gold, p.pred, average="macro"), abs=1e-12)
            # every word of every scored sentence is predicted, ids "<sentence id>:<word index>"
            test = tasks["upos"]["test"].shuffle(seed=0).select(range(CFG.max_eval_examples))
            assert p.ids == [f"{s}:{i}" for s, toks in zip(test["id"], test["tokens"]) for i in range(len(toks))]
            assert p.gold.tolist() == sum(test["tags"], [])
            assert p.sentences(p.gold.tolist()) == test["tags"]


def test_loyalty_between_real_runs(runs):
    """BERT as 'teacher', DistilBERT as 'student': files from two models line up example by example."""
    for task in TASK_KIND:
        rep = loyalty_report([runs["bert", task]["dir"]], runs["distil", task]["dir"])
        vals = [v for k, v in rep["teachers"][0].items() if k.endswith("loyalty")]
        assert vals and all(0.0 < v <= 1.0 for v in vals), rep


def test_long_sentences_are_chunked_not_truncated(models, tasks):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(models["bert"])
    split = tasks["upos"]["validation"].select(range(50))
    feats = encode_split(split, tok, "tagging", max_len=16)
    assert len(feats) > len(split)  # some sentences needed several chunks
    assert max(len(f["input_ids"]) for f in feats) <= 16
    seen: dict[tuple[int, int], int] = {}
    for f in feats:
        for pos, s, w in f["words"]:
            assert (s, w) not in seen
            seen[s, w] = f["labels"][pos]
        assert sum(lab != -100 for lab in f["labels"]) == len(f["words"])
    assert seen == {(s, w): t for s, tags in enumerate(split["tags"]) for w, t in enumerate(tags)}


def test_distilbert_heads_ignore_token_type_ids(models):
    x = {
        "input_ids": torch.tensor([[2, 50, 60, 3, 70, 3]]),
        "attention_mask": torch.ones(1, 6, dtype=torch.long),
        "token_type_ids": torch.tensor([[0, 0, 0, 0, 1, 1]]),
    }
    for kind, shape in (("tagging", (1, 6, 5)), ("classification", (1, 5)), ("regression", (1,))):
        m = TaskModel.from_pretrained(str(models["distil"]), kind, 5).eval()
        assert not hasattr(m.encoder, "pooler")
        assert tuple(m(**x).shape) == shape


def test_seeds_summary_and_cli(models, tmp_path):
    out = tmp_path / "seeds"
    rc = finetune_cli(
        [
            "--model",
            str(models["distil"]),
            "--task",
            "sts",
            "--out",
            str(out),
            "--seeds",
            "1",
            "2",
            "--epochs",
            "1",
            "--max-train-examples",
            "200",
            "--max-eval-examples",
            "100",
            "--max-len",
            "48",
            "--batch-size",
            "32",
            "--lr",
            "0.002",
            "--no-progress",
        ]
    )
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    vals = [json.loads((out / f"seed-{s}" / "metrics.json").read_text())["test"]["pearson"] for s in (1, 2)]
    assert summary["test"]["pearson"]["values"] == vals and vals[0] != vals[1]
    assert summary["test"]["pearson"]["mean"] == pytest.approx(np.mean(vals))
    assert summary["test"]["pearson"]["std"] == pytest.approx(np.std(vals, ddof=1))
    # an identical run is not redone
    before = (out / "seed-1" / "metrics.json").stat().st_mtime_ns
    cfg = FinetuneConfig(**json.loads((out / "seed-1" / "metrics.json").read_text())["config"])
    again = finetune(str(models["distil"]), "sts", out / "seed-1", config=cfg)
    assert again["test"]["pearson"] == vals[0] and (out / "seed-1" / "metrics.json").stat().st_mtime_ns == before


TINY = FinetuneConfig(epochs=1, lr=2e-3, batch_size=32, max_len=48, max_train_examples=64, max_eval_examples=32)


def _files(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {
        str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()
    }


def test_finished_fine_tunes_are_kept_and_other_settings_refused(models, tmp_path, monkeypatch):
    fits = []
    fit = ft._fit
    monkeypatch.setattr(ft, "_fit", lambda *a, **kw: fits.append(1) or fit(*a, **kw))
    out = tmp_path / "sts"
    first = finetune_seeds(str(models["distil"]), "sts", out, seeds=[1, 2], config=TINY, progress=False)
    assert len(fits) == 2
    files = _files(out)
    # a rerun (a disconnected Colab session): nothing trained, every file as it was, the same summary
    again = finetune_seeds(str(models["distil"]), "sts", out, seeds=[1, 2], config=TINY, progress=False)
    assert len(fits) == 2 and again == first
    assert {k: v for k, v in _files(out).items() if k != "summary.json"} == {
        k: v for k, v in files.items() if k != "summary.json"
    }
    assert (out / "summary.json").read_bytes() == files["summary.json"][0]
    # another setting, other weights under the same path, other fine-tuning code: refused in one line
    other = FinetuneConfig(**{**json.loads((out / "seed-1" / "metrics.json").read_text())["config"], "lr": 1e-3})
    with pytest.raises(ValueError, match=r"^\S+ holds a finished fine-tune made with other settings \(config differ\)"):
        finetune(str(models["distil"]), "sts", out / "seed-1", config=other, progress=False)
    changed = tmp_path / "distil"
    shutil.copytree(models["distil"], changed)
    (changed / "config.json").write_text((changed / "config.json").read_text().replace("0.1", "0.2"))
    moved = tmp_path / "moved"
    shutil.copytree(out, moved)
    for path in moved.glob("seed-*/metrics.json"):  # the same folder name, other weights in it
        path.write_text(path.read_text().replace(str(models["distil"]), str(changed)))
    with pytest.raises(ValueError, match=r"model_files differ"):
        finetune(str(changed), "sts", moved / "seed-1", config=dataclasses.replace(TINY, seed=1), progress=False)
    monkeypatch.setattr(ft, "code_fingerprint", lambda: "other-code")
    with pytest.raises(ValueError, match=r"\(code differ\)"):
        finetune(str(models["distil"]), "sts", out / "seed-1", config=dataclasses.replace(TINY, seed=1))
    assert len(fits) == 2 and _files(out / "seed-1") == {k[7:]: v for k, v in files.items() if k.startswith("seed-1/")}
    # overwrite=True redoes it
    finetune(str(models["distil"]), "sts", out / "seed-1", config=other, progress=False, overwrite=True)
    assert len(fits) == 3 and json.loads((out / "seed-1" / "metrics.json").read_text())["config"]["lr"] == 1e-3


def test_bad_input_refused_early(models, tasks, tmp_path):
    with pytest.raises(ValueError, match="unknown task 'pos'"):
        finetune(str(models["bert"]), "pos", tmp_path / "a")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        finetune(str(tmp_path / "no-such-model"), "sts", tmp_path / "b")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no config.json"):
        finetune(str(tmp_path / "empty"), "sts", tmp_path / "c")
    with pytest.raises(ValueError, match="epochs must be a positive integer"):
        FinetuneConfig(epochs=0)
    with pytest.raises(ValueError, match="warmup"):
        FinetuneConfig(warmup=1.5)
    with pytest.raises(ValueError, match="lacks columns \\['text_b'\\]"):
        finetune(str(models["bert"]), "sts", tmp_path / "d", dataset=tasks["sts"].remove_columns("text_b"))
    assert finetune_cli(["--model", str(models["bert"]), "--task", "pos", "--out", str(tmp_path / "e")]) == 2

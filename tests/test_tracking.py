"""Experiment tracking (kdlib.engine.tracking): off by default and importing nothing; a missing package is a
one-line error before any work; TensorBoard event files hold exactly the logged figures, and tracking leaves
what distillation and fine-tuning compute bit-identical."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import make_tokenizer, ro_sentences, tiny_teacher

from kdlib.engine.distill import DistillConfig, distill, read_log
from kdlib.engine.tracking import TENSORBOARD_DIR, Tracker, check_report_to, flatten
from kdlib.eval.finetune import MODEL_DIR, FinetuneConfig, finetune
from kdlib.eval.loyalty import load_predictions

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny(data_dir, tmp_path_factory) -> dict:
    """Real Romanian sentences and a tiny local masked-LM (tokenizer + BertForMaskedLM) saved to disk."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("tracking")
    sents = ro_sentences(data_dir, 120)
    tok = make_tokenizer(sents, root / "tok", lowercase=False, vocab_size=400)
    tiny_teacher(tok, hidden=32, seed=0).save_pretrained(root / "t")
    tok.save_pretrained(root / "t")
    return {"root": root, "sents": sents, "teacher": str(root / "t")}


def _config(tiny: dict, out: Path, **kw) -> DistillConfig:
    base = dict(
        teachers=[{"name": "t", "path": tiny["teacher"]}],
        students=[{"name": "s", "teachers": ["t"]}],
        batch_size=8,
        max_len=32,
        max_steps=3,
        lr=1e-3,
        out_dir=str(out),
        device="cpu",
        amp="off",
        seed=3,
    )
    return DistillConfig.from_dict({**base, **kw})


def _scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """{tag: [(step, value)]} of the TensorBoard event files in `folder`."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_off_by_default_and_nothing_imported():
    assert DistillConfig.from_dict(_config({"teacher": "x"}, Path("o")).to_dict()).report_to == []
    assert FinetuneConfig().report_to == [] and "report_to" in DistillConfig.operational_keys()
    code = (
        "import sys, tempfile; import kdlib.engine.distill, kdlib.eval.finetune\n"
        "from kdlib.engine.tracking import Tracker\n"
        "t = Tracker([], tempfile.mkdtemp(), project='p', name='n'); t.log({'a': 1.0}, 1); t.close()\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorboard', 'trackio')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]"


def test_a_missing_package_or_unknown_tracker_fails_before_any_work(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "trackio", None)  # not importable, whether installed or not
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    with pytest.raises(ValueError, match=r"^report_to='trackio' needs the 'trackio' package: pip install trackio$"):
        check_report_to(["trackio"])
    with pytest.raises(ValueError, match="needs the 'tensorboard' package: pip install tensorboard"):
        check_report_to(["tensorboard"])
    with pytest.raises(ValueError, match="unknown backend 'wandb'"):
        check_report_to(["wandb"])
    with pytest.raises(ValueError, match="must be a list"):
        check_report_to("tensorboard")
    # before the teachers load (their folder does not exist) and before the output folder is made
    cfg = _config({"teacher": str(tmp_path / "none")}, tmp_path / "run", report_to=["trackio"])
    with pytest.raises(ValueError, match="pip install trackio"):
        distill(cfg, ["ein text"] * 8)
    with pytest.raises(ValueError, match="pip install trackio"):
        finetune(str(tmp_path / "none"), "sts", tmp_path / "ft", config=FinetuneConfig(report_to=["trackio"]))
    assert not (tmp_path / "run").exists() and not (tmp_path / "ft").exists()


def test_flatten_keeps_the_numbers_of_a_nested_record():
    rec = {"lr": 1e-3, "epoch": 2, "students": {"s": {"kl": 0.5}}, "name": "x", "ok": True, "none": None}
    assert flatten(rec) == {"lr": 1e-3, "epoch": 2.0, "students/s/kl": 0.5}


def test_tensorboard_holds_the_distillation_log_and_weights_do_not_change(tiny):
    pytest.importorskip("tensorboard")
    plain, tracked = tiny["root"] / "plain", tiny["root"] / "tracked"
    distill(_config(tiny, plain), tiny["sents"])
    distill(_config(tiny, tracked, report_to=["tensorboard"]), tiny["sents"])
    for name in ("model.safetensors", "README.md"):
        assert (plain / "s" / name).read_bytes() == (tracked / "s" / name).read_bytes()
    assert not (plain / TENSORBOARD_DIR).exists()
    scalars, rows = _scalars(tracked / TENSORBOARD_DIR), read_log(tracked / "log.jsonl")
    assert {"lr", "tokens_per_s", "students/s/total", "students/s/kl", "students/s/mlm"} <= set(scalars)
    for key in ("total", "kl", "mlm", "cos"):
        logged = [(r["step"], r["students"]["s"][key]) for r in rows]
        assert [s for s, _ in scalars[f"students/s/{key}"]] == [1, 2, 3]
        np.testing.assert_allclose([v for _, v in scalars[f"students/s/{key}"]], [v for _, v in logged], rtol=1e-6)
    np.testing.assert_allclose([v for _, v in scalars["lr"]], [r["lr"] for r in rows], rtol=1e-6)


def test_tensorboard_holds_the_fine_tuning_epochs_and_results_do_not_change(tiny, tmp_path):
    pytest.importorskip("tensorboard")
    cfg = FinetuneConfig(epochs=2, lr=2e-3, max_len=32, max_train_examples=48, max_eval_examples=24, device="cpu")
    runs = {}
    for name, report_to in (("plain", []), ("tracked", ["tensorboard"])):
        config = FinetuneConfig(**{**cfg.__dict__, "report_to": report_to})
        runs[name] = finetune(tiny["teacher"], "sts", tmp_path / name, config=config, progress=False, save_model=True)
    for name in ("model.safetensors", "head.safetensors"):
        assert (tmp_path / "plain" / MODEL_DIR / name).read_bytes() == (
            tmp_path / "tracked" / MODEL_DIR / name
        ).read_bytes()
    a, b = (load_predictions(tmp_path / n / "predictions.npz") for n in ("plain", "tracked"))
    assert np.array_equal(a.pred, b.pred) and runs["plain"]["test"] == runs["tracked"]["test"]
    assert runs["tracked"]["config"]["report_to"] == ["tensorboard"]
    scalars = _scalars(tmp_path / "tracked" / TENSORBOARD_DIR)
    history = json.loads((tmp_path / "tracked" / "metrics.json").read_text())["epochs"]
    for tag, key in (("train_loss", None), ("validation/pearson", "pearson"), ("validation/score", "score")):
        want = [(h["epoch"], h["train_loss"] if key is None else h["validation"][key]) for h in history]
        assert [s for s, _ in scalars[tag]] == [1, 2]
        np.testing.assert_allclose([v for _, v in scalars[tag]], [v for _, v in want], rtol=1e-6)


def test_tracker_purges_events_after_a_resumed_step(tmp_path):
    pytest.importorskip("tensorboard")
    first = Tracker(["tensorboard"], tmp_path, project="p", name="n")
    for step in (1, 2, 3):
        first.log({"loss": float(step)}, step)
    first.close()
    again = Tracker(["tensorboard"], tmp_path, project="p", name="n", start_step=2)  # resumed from step 2
    for step in (2, 3):
        again.log({"loss": 10.0 * step}, step)
    again.close()
    assert _scalars(tmp_path / TENSORBOARD_DIR)["loss"] == [(1, 1.0), (2, 20.0), (3, 30.0)]


def test_cli_flags_reach_the_config(tmp_path, monkeypatch, capsys):
    from kdlib.engine.distill import cli as distill_cli
    from kdlib.eval.finetune import cli as finetune_cli

    monkeypatch.setitem(sys.modules, "trackio", None)
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps(_config({"teacher": str(tmp_path / "none")}, tmp_path / "run").to_dict()))
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("un text scurt\n" * 20, encoding="utf-8")
    assert distill_cli(["--config", str(cfg), "--corpus", str(corpus), "--report-to", "trackio"]) == 2
    assert (
        finetune_cli(
            ["--model", str(tmp_path), "--task", "sts", "--out", str(tmp_path / "ft"), "--report-to", "trackio"]
        )
        == 2
    )
    err = [line for line in capsys.readouterr().err.splitlines() if "kdlib" in line]
    assert len(err) == 2 and all(line.endswith("needs the 'trackio' package: pip install trackio") for line in err)

"""DDP: `torchrun --nproc_per_node 2` (gloo, CPU) reaches the same weights as one process with the
same global batch (2 x 4 texts vs 1 x 8), within max |diff| < 1e-5."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch
import yaml
from helpers import make_tokenizer, ro_sentences, tiny_teacher
from safetensors.torch import load_file

from kdlib.engine.distill import DistillConfig, distill, load_corpus

ROOT = Path(__file__).resolve().parents[1]
TOL = 1e-5


def test_two_process_ddp_matches_one_process(data_dir, tmp_path):
    torch.set_num_threads(1)
    sents = ro_sentences(data_dir, 400)
    tok = make_tokenizer(sents, tmp_path / "tok", lowercase=False, vocab_size=500)
    teacher = tiny_teacher(tok, seed=0)  # dropout 0: both runs see the same forward passes
    teacher.save_pretrained(tmp_path / "teacher")
    tok.save_pretrained(tmp_path / "teacher")
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(sents) + "\n", encoding="utf-8")
    cfg = {
        "teachers": [{"name": "t", "path": str(tmp_path / "teacher")}],
        "students": [{"name": "s", "teachers": ["t"]}],
        "batch_size": 4,
        "grad_accum": 2,
        "max_len": 32,
        "max_steps": 6,
        "lr": 2e-3,
        "device": "cpu",
        "amp": "off",
        "seed": 7,
    }
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    ddp = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            "-m",
            "kdlib",
            "distill",
            "--config",
            str(cfg_path),
            "--corpus",
            str(corpus),
            "--out",
            str(tmp_path / "ddp"),
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    # meanwhile: one process, same global batch of 8 texts per micro-batch
    single = DistillConfig.from_file(cfg_path, {"batch_size": 8, "out_dir": str(tmp_path / "one")})
    summary = distill(single, load_corpus(str(corpus)))
    out = ddp.communicate(timeout=240)[0].decode()
    assert ddp.returncode == 0, out[-4000:]
    a = load_file(tmp_path / "one" / "s" / "model.safetensors")
    b = load_file(tmp_path / "ddp" / "s" / "model.safetensors")
    init = tiny_teacher(tok, seed=0).state_dict()
    diff = max((a[k] - b[k]).abs().max().item() for k in a)
    moved = (
        (a["distilbert.embeddings.word_embeddings.weight"] - init["bert.embeddings.word_embeddings.weight"]).abs().max()
    )
    print(f"\nDDP (2 x 4) vs one process (1 x 8): max |weight diff| = {diff:.2e}; weights moved by up to {moved:.2e}")
    assert diff < TOL
    assert moved > 100 * TOL  # training really changed the weights
    assert summary["s"]["world_size"] == 1 and '"world_size": 2' in (tmp_path / "ddp" / "summary.json").read_text()

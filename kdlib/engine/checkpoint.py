"""Atomic, resumable training checkpoints (nanoGPT-style: everything needed to continue exactly).

Layout under ``<out_dir>/checkpoints/``::

    step-00000020/state.json            step, data position, elapsed time, config, extra
    step-00000020/rng.json              python / numpy / torch (cpu, cuda) RNG states, one entry per rank
    step-00000020/<student>/model.safetensors
    step-00000020/<student>/train_state.pt   optimizer + scheduler + GradScaler state (tensors and
                                             plain Python values only: loaded with weights_only=True)
    latest                              name of the newest complete checkpoint

A checkpoint is written into a temporary folder and renamed into place (`os.replace`), then `latest`
is rewritten atomically, so a run killed at any moment leaves the previous checkpoint intact.
No pickle is ever loaded from disk: weights use safetensors, the rest JSON or weights_only torch.load.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_model, save_model

from kdlib.io import atomic_path, write_json_atomic  # noqa: F401  (write_json_atomic: kept importable here)


def capture_rng() -> dict:
    """This process's RNG states as JSON-able lists (python, numpy, torch cpu, its current cuda device).

    Only the current device: touching every visible GPU would create a CUDA context on each of them per rank.
    """
    py = random.getstate()
    np_state = np.random.get_state()
    return {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "torch": torch.get_rng_state().tolist(),
        "cuda": [torch.cuda.get_rng_state().tolist()] if torch.cuda.is_available() else [],
    }


def restore_rng(state: dict) -> None:
    """Inverse of `capture_rng`."""
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state((n[0], np.array(n[1], dtype=np.uint32), n[2], n[3], n[4]))
    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state(torch.tensor(state["cuda"][0], dtype=torch.uint8))


def checkpoint_root(out_dir: str | Path) -> Path:
    return Path(out_dir) / "checkpoints"


def latest_checkpoint(out_dir: str | Path) -> Path | None:
    """Folder of the newest complete checkpoint under out_dir, or None."""
    root = checkpoint_root(out_dir)
    marker = root / "latest"
    if not marker.is_file():
        return None
    path = root / marker.read_text(encoding="utf-8").strip()
    if not (path / "state.json").is_file():
        raise FileNotFoundError(f"{marker} points at {path}, which is not a complete checkpoint")
    return path


def save_checkpoint(
    out_dir: str | Path, step: int, students: dict[str, dict], state: dict, rng_states: list[dict], *, keep: int = 2
) -> Path:
    """Write checkpoint `step` atomically; keep the `keep` newest ones. Returns its folder.

    `students` maps name -> {"model", "optimizer", "scheduler", "scaler"} (an unwrapped model).
    `state` is JSON-able (data position, elapsed, config ...); `rng_states` one dict per rank.
    """
    root = checkpoint_root(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    name = f"step-{step:08d}"
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{name}."))
    for sname, parts in students.items():
        sdir = tmp / sname
        sdir.mkdir()
        save_model(parts["model"], str(sdir / "model.safetensors"))
        torch.save(
            {
                "optimizer": parts["optimizer"].state_dict(),
                "scheduler": parts["scheduler"].state_dict(),
                "scaler": parts["scaler"].state_dict(),
            },
            sdir / "train_state.pt",
        )
    with open(tmp / "rng.json", "w", encoding="utf-8") as fh:
        json.dump(rng_states, fh)
    with open(tmp / "state.json", "w", encoding="utf-8") as fh:
        json.dump({"step": step, **state}, fh, indent=2, ensure_ascii=False)
    final = root / name
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    with atomic_path(root / "latest") as tmp_marker:
        tmp_marker.write_text(name, encoding="utf-8")
    older = sorted(p for p in root.glob("step-*") if p.is_dir() and p.name < name)  # never the one just written
    for p in older[: max(len(older) - (keep - 1), 0)]:
        shutil.rmtree(p, ignore_errors=True)
    return final


def clear_checkpoints(out_dir: str | Path) -> None:
    """Remove a previous run's checkpoints before a fresh (non-resumed) run writes into the same folder."""
    root = checkpoint_root(out_dir)
    if root.exists():
        shutil.rmtree(root)


def load_checkpoint(path: str | Path) -> tuple[dict, list[dict]]:
    """Read (state, rng_states) of a checkpoint folder (JSON only)."""
    path = Path(path)
    state = json.loads((path / "state.json").read_text(encoding="utf-8"))
    rng = json.loads((path / "rng.json").read_text(encoding="utf-8"))
    return state, rng


def load_student(path: str | Path, name: str, parts: dict) -> None:
    """Load student `name`'s weights and optimizer/scheduler/scaler state from checkpoint `path`."""
    sdir = Path(path) / name
    if not (sdir / "model.safetensors").is_file():
        raise FileNotFoundError(f"checkpoint {path} has no student {name!r} (expected {sdir}/model.safetensors)")
    missing, unexpected = load_model(parts["model"], str(sdir / "model.safetensors"), strict=True)
    train_state = torch.load(sdir / "train_state.pt", map_location="cpu", weights_only=True)
    parts["optimizer"].load_state_dict(train_state["optimizer"])
    parts["scheduler"].load_state_dict(train_state["scheduler"])
    parts["scaler"].load_state_dict(train_state["scaler"])

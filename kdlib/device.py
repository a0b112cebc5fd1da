"""Device, mixed precision and distributed (DDP) helpers shared by the training loops.

`pick_device` chooses cuda > mps > cpu; `amp_settings` decides bf16 / fp16+GradScaler / off (bf16 only where the
GPU has it natively, compute capability 8.0 or more: torch's `is_bf16_supported()` also says yes for the emulated
bf16 of a T4, which has no bf16 tensor cores);
the DDP helpers read the environment variables that `torchrun` sets (RANK, LOCAL_RANK, WORLD_SIZE)
so the same script runs on one process or many without changes.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

from kdlib.colab import on_colab  # noqa: F401  (the one Colab check; engine.config imports it from here)

DEVICES = ("auto", "cuda", "mps", "cpu")
AMP_MODES = ("auto", "bf16", "fp16", "off")
BF16_CAPABILITY = (8, 0)  # Ampere: the first GPUs with bf16 tensor cores (a T4 is 7.5, a V100 7.0)


def pick_device(name: str = "auto", *, local_rank: int = 0) -> torch.device:
    """Return the torch device for `name` ("auto" picks cuda, then mps, then cpu)."""
    if name not in DEVICES and not name.startswith("cuda:"):
        raise ValueError(f"device={name!r}: expected one of {DEVICES} or 'cuda:N'")
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank)
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise RuntimeError(f"device={name!r} requested but CUDA is not available on this machine")
        return torch.device(name) if ":" in name else torch.device("cuda", local_rank)
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise RuntimeError("device='mps' requested but MPS is not available on this machine")
    return torch.device(name)


@dataclass(frozen=True)
class AmpSettings:
    """What autocast does: `dtype` None means full fp32; `use_scaler` only for fp16 on CUDA."""

    dtype: torch.dtype | None
    use_scaler: bool

    @property
    def name(self) -> str:
        return {None: "off", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.dtype]


def native_bf16(device: torch.device) -> bool:
    """True for a CUDA GPU with bf16 tensor cores (compute capability >= 8.0: A100, L4, H100; not a T4 or V100)."""
    return device.type == "cuda" and tuple(torch.cuda.get_device_capability(device)) >= BF16_CAPABILITY


def amp_settings(device: torch.device, amp: str = "auto") -> AmpSettings:
    """bf16 on a GPU with native bf16, fp16 + GradScaler on older GPUs, off on CPU unless asked."""
    if amp not in AMP_MODES:
        raise ValueError(f"amp={amp!r}: expected one of {AMP_MODES}")
    kind = device.type
    if amp == "off":
        return AmpSettings(None, False)
    if amp == "auto":
        if kind == "cuda":
            return AmpSettings(torch.bfloat16, False) if native_bf16(device) else AmpSettings(torch.float16, True)
        if kind == "mps":
            return AmpSettings(torch.float16, False)
        return AmpSettings(None, False)  # CPU: fp32 by default (bf16 on CPU only if asked)
    if amp == "bf16":
        if kind == "cuda" and not native_bf16(device):
            cap = ".".join(map(str, torch.cuda.get_device_capability(device)))
            raise ValueError(
                f"amp='bf16' requested but this GPU (compute capability {cap}) has no native bf16; use amp='fp16'"
            )
        return AmpSettings(torch.bfloat16, False)
    # fp16
    if kind == "cpu":
        raise ValueError("amp='fp16' is not supported on CPU; use amp='bf16' or 'off'")
    return AmpSettings(torch.float16, kind == "cuda")


def autocast(device: torch.device, amp: AmpSettings) -> contextlib.AbstractContextManager:
    """torch.autocast for `amp`, or a no-op context when amp is off."""
    if amp.dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=amp.dtype)


def grad_scaler(device: torch.device, amp: AmpSettings) -> torch.amp.GradScaler:
    """A GradScaler that is enabled only for fp16 on CUDA (a disabled one is a transparent no-op)."""
    return torch.amp.GradScaler(device.type if device.type == "cuda" else "cpu", enabled=amp.use_scaler)


def half_dtype(device: torch.device) -> torch.dtype | None:
    """The half precision frozen models run in: bf16 on a GPU with native bf16, else fp16; None (fp32) off CUDA."""
    if device.type != "cuda":
        return None
    return torch.bfloat16 if native_bf16(device) else torch.float16


# ------------------------------------------------------------------------------------------ where
def on_drive(path: str | os.PathLike) -> bool:
    """True when `path` lies under Colab's Google Drive mount point (/content/drive)."""
    return Path(path).expanduser().absolute().is_relative_to("/content/drive")


# ---------------------------------------------------------------------------------------------- DDP
@dataclass(frozen=True)
class DistEnv:
    """Where this process sits in a (possibly single-process) job."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device_name: str = "auto") -> tuple[DistEnv, torch.device]:
    """Init the process group from torchrun's env vars (nccl on CUDA, gloo otherwise).

    Without WORLD_SIZE (or with WORLD_SIZE=1) this is a single process and nothing is initialised.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    env = DistEnv(rank=rank, local_rank=local, world_size=world)
    device = pick_device(device_name, local_rank=local)
    if env.distributed and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return env, device


def is_main() -> bool:
    """True on rank 0 (or when not distributed)."""
    return not dist.is_initialized() or dist.get_rank() == 0


def barrier() -> None:
    """Wait for every rank (no-op when not distributed)."""
    if dist.is_initialized():
        dist.barrier()


def cleanup() -> None:
    """Destroy the process group if one was created."""
    if dist.is_initialized():
        dist.destroy_process_group()

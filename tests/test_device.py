"""kdlib.device: bf16 only on GPUs with native bf16, fp16 + GradScaler elsewhere; the CUDA capability is faked."""

from __future__ import annotations

import pytest
import torch

from kdlib import device as dev
from kdlib.engine import cost

CUDA = torch.device("cuda", 0)


@pytest.fixture
def fake_gpu(monkeypatch):
    """A CUDA GPU of a chosen compute capability; torch's emulation-inclusive bf16 check always says yes."""

    def make(capability: tuple[int, int], name: str) -> None:
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)

    return make


def test_t4_gets_fp16_with_a_scaler(fake_gpu):
    fake_gpu((7, 5), "Tesla T4")
    amp = dev.amp_settings(CUDA, "auto")
    assert (amp.dtype, amp.use_scaler, amp.name) == (torch.float16, True, "fp16")
    assert dev.half_dtype(CUDA) == torch.float16  # frozen teachers in fp16 too
    with pytest.raises(ValueError, match=r"compute capability 7\.5\) has no native bf16; use amp='fp16'"):
        dev.amp_settings(CUDA, "bf16")


def test_ampere_gets_bf16_without_a_scaler(fake_gpu):
    fake_gpu((8, 0), "NVIDIA A100-SXM4-40GB")
    amp = dev.amp_settings(CUDA, "auto")
    assert (amp.dtype, amp.use_scaler, amp.name) == (torch.bfloat16, False, "bf16")
    assert dev.half_dtype(CUDA) == torch.bfloat16
    assert dev.amp_settings(CUDA, "fp16").use_scaler  # fp16 when asked, with its scaler


def test_estimate_follows_the_chosen_precision(fake_gpu):
    # the estimate divides by the half-precision peak of the GPU only when autocast runs in half precision
    fake_gpu((7, 5), "Tesla T4")
    amp = dev.amp_settings(CUDA, "auto")
    seconds = cost.expected_seconds(1e15, CUDA, half=amp.dtype is not None)
    assert seconds == pytest.approx(1e15 / (cost.GPU_PEAK_HALF["T4"] * cost.UTILISATION))
    assert cost.expected_seconds(1e15, CUDA, half=dev.amp_settings(CUDA, "off").dtype is not None) is None


def test_cpu_and_bad_modes():
    cpu = torch.device("cpu")
    assert dev.amp_settings(cpu, "auto").dtype is None and dev.half_dtype(cpu) is None
    assert not dev.native_bf16(cpu)
    with pytest.raises(ValueError, match="not supported on CPU"):
        dev.amp_settings(cpu, "fp16")
    with pytest.raises(ValueError, match="expected one of"):
        dev.amp_settings(cpu, "fp8")

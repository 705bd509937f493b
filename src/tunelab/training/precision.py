"""train.precision: the dtype forward passes run in, and whether this device runs bf16 natively.

A `Precision` is one of FP32, BF16, FP16; `resolve_precision` turns the config's name into one
for the device a run trains on, `auto` included: bf16 where this device multiplies bf16
natively (a GPU that torch says has bf16 without emulation; a CPU with avx512_bf16 or AMX),
float32 everywhere else. On a CPU without those instructions bf16 products are emulated and
run several times slower than float32 (benchmarks/precision_speed.py, docs/design/processes-memory.md)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tunelab.core.errors import TunelabError
from tunelab.core.machine import CpuFeatures


def native_bf16(device: torch.device, cpu: CpuFeatures | None = None) -> bool:
    """Whether bf16 matrix products run natively on `device`: a CUDA GPU with bf16 (not
    emulated), a CPU with avx512_bf16 / AMX / Arm BF16 (`cpu`: this machine's unless given)."""
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported(including_emulation=False))
    if device.type == "cpu":
        return (cpu or CpuFeatures.here()).native_bf16
    return False


@dataclass(frozen=True)
class Precision:
    """One train.precision: the autocast dtype of forward passes (None: float32, autocast off)
    and whether gradients need loss scaling. The weights, their gradients and the optimizer
    state stay float32. Autocast per step, not accelerate's global mixed-precision state, so
    runs of different precision can follow each other in one process."""

    name: str
    dtype: torch.dtype | None
    scales_loss: bool = False
    """fp16's small range needs a GradScaler (GPU only); bf16 has float32's range."""

    def autocast(self, device: torch.device) -> torch.autocast:
        return torch.autocast(device.type, dtype=self.dtype, enabled=self.dtype is not None)

    def check(self, device: torch.device, cpu: CpuFeatures | None = None) -> None:
        """Refuse what cannot run here; say so when it runs slowly."""
        if self.scales_loss and device.type != "cuda":
            raise TunelabError(f"train.precision {self.name}: needs a GPU; use bf16 on a CPU "
                               "(or fp32)")
        if self.dtype is torch.bfloat16 and device.type == "cpu" and not native_bf16(device, cpu):
            print("tunelab: train.precision bf16: this CPU has no bf16 matrix instructions "
                  "(avx512_bf16 / AMX), so bf16 matrix products are emulated and run several "
                  "times slower than fp32 (benchmarks/precision_speed.py); fp32 is faster here "
                  "(train.precision: auto picks it)")


FP32 = Precision("fp32", None)
BF16 = Precision("bf16", torch.bfloat16)
FP16 = Precision("fp16", torch.float16, scales_loss=True)
PRECISIONS = {p.name: p for p in (FP32, BF16, FP16)}


def resolve_precision(name: str, device: torch.device, cpu: CpuFeatures | None = None
                      ) -> Precision:
    """train.precision's value as the Precision a run on `device` uses: `auto` is bf16 where
    the device runs it natively, else fp32; the others are themselves."""
    if name == "auto":
        return BF16 if native_bf16(device, cpu) else FP32
    return PRECISIONS[name]

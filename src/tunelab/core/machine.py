"""What this machine's CPU is: the flags that decide bf16 (`train.precision: auto`), and the
words every speed figure is given with (`cpu_summary`).

CPUs differ more than their core counts say: one with AVX-512 and native bf16 (avx512_bf16,
AMX) runs a bf16 step several times faster than an AVX2-only one, where bf16 is emulated and
fp32 training is 3-5x slower. Benchmarks print `cpu_summary()` beside each figure.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from tunelab.core.deferred import torch

CPUINFO = Path("/proc/cpuinfo")
NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16", "bf16"})
"""/proc/cpuinfo flags of bf16 matrix instructions: x86's AVX512-BF16 and AMX-BF16, Arm's
BF16 (its `Features` line)."""


@dataclass(frozen=True)
class CpuFeatures:
    """The instruction-set flags of this machine's CPU, as /proc/cpuinfo lists them (None:
    not readable here, e.g. not Linux: then torch's own oneDNN check decides bf16), and the
    CPU's model name."""

    flags: frozenset[str] | None
    name: str = ""

    @classmethod
    def here(cls) -> CpuFeatures:
        try:
            text = CPUINFO.read_text()
        except OSError:
            return cls(None, platform.processor())
        return cls.of_lines(text.splitlines())

    @classmethod
    def of_lines(cls, lines: Iterable[str]) -> CpuFeatures:
        """From /proc/cpuinfo's lines: the first `flags` (x86) or `Features` (Arm) line."""
        flags, name = None, ""
        for line in lines:
            key, _, value = line.partition(":")
            if key.strip() in ("flags", "Features") and flags is None:
                flags = frozenset(value.split())
            elif key.strip() == "model name" and not name:
                name = value.strip()
        return cls(flags, name)

    @property
    def native_bf16(self) -> bool:
        if self.flags is None:  # oneDNN's check (note: it also says yes to AVX-512 alone)
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        return bool(self.flags & NATIVE_BF16_FLAGS)

    @property
    def kind(self) -> str:
        """'AVX-512 with native bf16', 'AVX-512 (no native bf16)', 'AVX2 only', ..."""
        flags = self.flags or frozenset()
        if "avx512f" in flags:
            return "AVX-512 with native bf16" if self.native_bf16 else "AVX-512 (no native bf16)"
        if "avx2" in flags:
            return "AVX2 only"
        return "native bf16" if self.flags and self.native_bf16 else "no AVX2"


def cpu_summary() -> str:
    """e.g. 'AMD EPYC, 2 cores, AVX2 only'."""
    cpu = CpuFeatures.here()
    return f"{cpu.name or 'unknown CPU'}, {os.cpu_count()} cores, {cpu.kind}"

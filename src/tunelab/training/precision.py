"""train.precision: the dtype forward passes run in, and whether this device runs bf16 natively."""

from __future__ import annotations

import torch

COMPUTE_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
"""train.precision -> the autocast dtype of forward passes (None: float32). The weights, their
gradients and the optimizer state stay float32. Autocast per step, not accelerate's global
mixed-precision state, so runs of different precision can follow each other in one process."""


def native_bf16(device: torch.device) -> bool:
    """Whether bf16 matrix products run natively: a GPU, or a CPU with avx512_bf16 / AMX
    (oneDNN's check)."""
    if device.type != "cpu":
        return True
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())

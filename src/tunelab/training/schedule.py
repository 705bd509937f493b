"""Learning-rate schedules: linear warmup, then cosine, linear or constant."""

from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from tunelab.errors import TunelabError

SCHEDULES = ("cosine", "linear", "constant")


def lr_factor(step: int, total: int, warmup: int, kind: str) -> float:
    """Multiplier of the peak learning rate at optimizer step ``step`` (0-based)."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    if kind == "constant":
        return 1.0
    progress = (step - warmup) / max(1, total - warmup)
    progress = min(max(progress, 0.0), 1.0)
    if kind == "linear":
        return 1.0 - progress
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def make_scheduler(optimizer: Optimizer, total: int, warmup_ratio: float, kind: str) -> LambdaLR:
    if kind not in SCHEDULES:
        raise TunelabError(f"train.schedule '{kind}': use one of {', '.join(SCHEDULES)}")
    warmup = int(round(warmup_ratio * total))
    return LambdaLR(optimizer, lambda step: lr_factor(step, total, warmup, kind))

"""Learning-rate schedules: linear warmup, then cosine, linear or constant."""

from __future__ import annotations

import math
from collections.abc import Callable

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from tunelab.config import Schedule

# The decay after warmup, as a function of progress in [0, 1] (train.schedule).
DECAYS: dict[str, Callable[[float], float]] = {
    "constant": lambda progress: 1.0,
    "linear": lambda progress: 1.0 - progress,
    "cosine": lambda progress: 0.5 * (1.0 + math.cos(math.pi * progress)),
}


def lr_factor(step: int, total: int, warmup: int, schedule: Schedule) -> float:
    """Multiplier of the peak learning rate at optimizer step ``step`` (0-based)."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return DECAYS[schedule](min(max(progress, 0.0), 1.0))


def make_scheduler(optimizer: Optimizer, total: int, warmup_ratio: float,
                   schedule: Schedule) -> LambdaLR:
    warmup = int(round(warmup_ratio * total))
    return LambdaLR(optimizer, lambda step: lr_factor(step, total, warmup, schedule))

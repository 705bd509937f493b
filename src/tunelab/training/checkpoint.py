"""Resumable training checkpoints, written atomically.

A checkpoint is a directory: trainable weights, optimizer and scheduler state, RNG states and
the loop's counters. It is written to a temporary sibling and renamed into place, so a crash
mid-save leaves the previous checkpoint intact and never a half-written one.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file


@dataclass
class LoopState:
    step: int = 0
    """Optimizer steps done."""
    epoch: int = 0
    batch_in_epoch: int = 0
    """Micro-batches of the current epoch already consumed."""
    best_val_loss: float | None = None
    best_step: int | None = None
    evals_without_improvement: int = 0
    tokens_seen: int = 0
    stopped_early: bool = False
    out_of_time: bool = False
    train_seconds: float = 0.0
    """Time spent in optimizer steps so far (survives resume)."""
    task_examples: dict[str, int] = field(default_factory=dict)
    """Training examples drawn from each task so far (multi-task runs)."""
    history: list[dict[str, Any]] = field(default_factory=list)


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone().contiguous() for n, p in model.named_parameters() if p.requires_grad}


def load_trainable_state(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, tensor in state.items():
            params[name].copy_(tensor)


def write_atomically(target: Path, write: Any) -> None:
    """Call write(tmp_dir) then swap tmp_dir into target."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        write(staging)
        old = target.with_name(f".{target.name}.old")
        if target.exists():
            os.replace(target, old)
        os.replace(staging, target)
        if old.exists():
            shutil.rmtree(old)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def save_checkpoint(
    target: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    state: LoopState,
) -> None:
    def write(tmp: Path) -> None:
        save_file(trainable_state(model), str(tmp / "trainable.safetensors"))
        torch.save(
            {
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "rng": {
                    "python": random.getstate(),
                    "numpy": np.random.get_state(),
                    "torch": torch.get_rng_state(),
                },
            },
            tmp / "training_state.pt",
        )
        (tmp / "loop_state.json").write_text(json.dumps(asdict(state), indent=1))

    write_atomically(target, write)


def save_weights_only(target: Path, model: torch.nn.Module) -> None:
    write_atomically(target, lambda tmp: save_file(trainable_state(model), str(tmp / "trainable.safetensors")))


def load_checkpoint(
    source: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
) -> LoopState:
    load_trainable_state(model, load_file(str(source / "trainable.safetensors")))
    extra = torch.load(source / "training_state.pt", weights_only=False)
    optimizer.load_state_dict(extra["optimizer"])
    scheduler.load_state_dict(extra["scheduler"])
    random.setstate(extra["rng"]["python"])
    np.random.set_state(extra["rng"]["numpy"])
    torch.set_rng_state(extra["rng"]["torch"])
    return LoopState(**json.loads((source / "loop_state.json").read_text()))

"""Resumable training checkpoints, written atomically.

A checkpoint is a directory: trainable weights (safetensors), optimizer and scheduler state
and RNG states (training_state.pt, plain tensors, numbers and lists only, read back with
`torch.load(weights_only=True)`, so a crafted pickle in a run directory someone sent cannot run
code) and the loop's counters (JSON). It is written to a temporary sibling and swapped in:

    write .NAME.tmp-XXXX -> rename NAME -> .NAME.old -> rename .NAME.tmp-XXXX -> NAME -> remove .NAME.old

A kill at any point leaves a complete checkpoint under NAME or .NAME.old, and `recover`
(called before every save and load, and when a run starts) puts it back under NAME and
removes what is stale, so no window loses the last good checkpoint or breaks the next save.
"""

from __future__ import annotations

import json
import os
import pickle
import random
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from tunelab.core.errors import TunelabError, first_line
from tunelab.training.parallel import Replicated

if TYPE_CHECKING:
    from torch.optim.lr_scheduler import LRScheduler
    from torch.optim.optimizer import StateDict


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
    computed_tokens: int = 0
    """Positions the model computed for the tokens_seen real tokens: padding included."""
    stopped_early: bool = False
    out_of_time: bool = False
    train_seconds: float = 0.0
    """Time spent in optimizer steps so far (survives resume)."""
    first_loss: float | None = None
    """The first step's training loss (the model before any update): where divergence is
    measured from."""
    smoothed_loss: float | None = None
    """Exponential moving average of the step losses (0.3 on the newest)."""
    skipped_steps: int = 0
    """Steps not applied for a non-finite loss or gradient (train.on_divergence: skip_step)."""
    task_examples: dict[str, int] = field(default_factory=dict)
    """Training examples drawn from each task so far (multi-task runs)."""
    history: list[dict[str, Any]] = field(default_factory=list)  # Any: train_log.jsonl records


def recover(target: Path) -> None:
    """Undo what a kill mid-swap left: the previous checkpoint back under `target` when the
    swap stopped between its renames, and stale temporary and old copies removed."""
    old = target.with_name(f".{target.name}.old")
    if old.exists() and not target.exists():
        os.replace(old, target)
    elif old.exists():
        shutil.rmtree(old)
    for stale in target.parent.glob(f".{target.name}.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)


def write_atomically(target: Path, write: Callable[[Path], None]) -> None:
    """Call write(tmp_dir) then swap tmp_dir into target."""
    target.parent.mkdir(parents=True, exist_ok=True)
    recover(target)
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
    weights: dict[str, torch.Tensor],
    optimizer_state: StateDict,
    scheduler: LRScheduler,
    state: LoopState,
) -> None:
    """Write a checkpoint of the trainable weights and optimizer state (whole tensors: what
    the run's layout gathered, training/parallel.py)."""
    def write(tmp: Path) -> None:
        save_file(weights, str(tmp / "trainable.safetensors"))
        torch.save(
            {
                "optimizer": optimizer_state,
                "scheduler": scheduler.state_dict(),
                "rng": rng_state(),
            },
            tmp / "training_state.pt",
        )
        (tmp / "loop_state.json").write_text(json.dumps(asdict(state), indent=1))

    write_atomically(target, write)


def save_weights_only(target: Path, weights: dict[str, torch.Tensor]) -> None:
    write_atomically(target, lambda tmp: save_file(weights, str(tmp / "trainable.safetensors")))



class RngState(TypedDict):
    """Python's, NumPy's and torch's RNG states, as a checkpoint keeps them."""

    python: list[object]
    """[version, words, gauss] of `random.getstate()`."""
    numpy: list[object]
    """NumPy's MT19937 state, its key words as an int64 tensor."""
    torch: torch.Tensor


def rng_state() -> RngState:
    """Python's, NumPy's and torch's RNG states as tensors, numbers and lists (no pickled
    objects, so `weights_only=True` reads them back)."""
    version, words, gauss = random.getstate()
    numpy_state = np.random.get_state()
    if not isinstance(numpy_state, tuple):  # a dict only if the global generator is no MT19937
        raise TypeError("NumPy's global random generator is not MT19937; cannot save its state")
    kind, keys, pos, has_gauss, cached = numpy_state
    return {"python": [version, list(words), gauss],
            "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
            "torch": torch.get_rng_state()}


def set_rng_state(state: dict[str, Any]) -> None:  # Any: RngState as torch.load reads it
    version, words, gauss = state["python"]
    random.setstate((version, tuple(words), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])


def load_checkpoint(
    source: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: LRScheduler,
    layout: Replicated,
) -> LoopState:
    """Restore a checkpoint into the model as `layout` lays it out; a truncated, corrupt or
    foreign one is a one-line error."""
    recover(source)
    where = f"--resume: {source}"
    try:
        weights = load_file(str(source / "trainable.safetensors"))
    except (OSError, ValueError, RuntimeError, SafetensorError) as err:
        raise TunelabError(f"{where}/trainable.safetensors: unreadable ({first_line(err)}); the "
                           "checkpoint is damaged: start the run again without --resume "
                           "(delete the run directory first)") from None
    params = {n for n, p in model.named_parameters() if p.requires_grad}
    if set(weights) != params:
        raise TunelabError(f"{where}/trainable.safetensors: holds {len(weights)} tensors, the "
                           f"model trains {len(params)}; it is another run's checkpoint")
    try:
        extra = torch.load(source / "training_state.pt", weights_only=True)
    except pickle.UnpicklingError as err:
        raise TunelabError(f"{where}/training_state.pt: refused, it holds objects a plain "
                           f"checkpoint does not ({first_line(err)}); loading it could run "
                           "code: do not resume from a run directory you did not write") from None
    except (OSError, RuntimeError, EOFError, ValueError) as err:
        raise TunelabError(f"{where}/training_state.pt: unreadable ({first_line(err)}); the "
                           "checkpoint is damaged: start the run again without --resume "
                           "(delete the run directory first)") from None
    try:
        loop = LoopState(**json.loads((source / "loop_state.json").read_text()))
        layout.load_trainable_state(model, weights)
        layout.load_optimizer_state(optimizer, extra["optimizer"])
        scheduler.load_state_dict(extra["scheduler"])
        set_rng_state(extra["rng"])
    except (OSError, KeyError, TypeError, ValueError) as err:
        raise TunelabError(f"{where}: not a checkpoint of this run ({first_line(err)}); start "
                           "the run again without --resume") from None
    return loop

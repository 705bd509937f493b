"""Selective fine-tuning: train only chosen blocks and/or modules, everything else frozen.

A parameter trains when it lies in a chosen block (`layers`) OR in a module matching a pattern
(`modules`); the classification head of a classifier always trains. Saved: only the trained
tensors (weights.safetensors) + method.json with the options. The trained tensors are the base's
own weights, so `merge` returns the model itself: it already is a plain model.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from tunelab.core.errors import TunelabError
from tunelab.methods import targets
from tunelab.methods.base import freeze_all, register
from tunelab.models.kinds import ModelKind

if TYPE_CHECKING:
    import torch

OPTION = "method (freeze)"


@dataclass
class FreezeOptions:
    layers: list[int | str] | None = None
    """Blocks that train, in every stack of blocks (an encoder-decoder has two): 'top:K' (the
    last K), 'bottom:K' (the first K), 'A-B' (an inclusive index range) or indices like [0, 3]."""
    modules: list[str] | None = None
    """Modules that train, by name pattern: a dotted suffix ('lm_head'), a glob ('*.mlp.*') or a
    regex; a pattern that matches nothing is an error."""


def block_indices(spec: list[int | str], count: int) -> set[int]:
    """Block indices (0..count-1) that a `layers` spec selects."""
    chosen: set[int] = set()
    for item in spec:
        text = str(item).strip()
        if match := re.fullmatch(r"(top|bottom):(\d+)", text):
            size = min(int(match[2]), count)
            chosen.update(range(count - size, count) if match[1] == "top" else range(size))
        elif match := re.fullmatch(r"(\d+)-(\d+)", text):
            chosen.update(range(int(match[1]), int(match[2]) + 1))
        elif re.fullmatch(r"-?\d+", text):
            chosen.add(int(text) + count if int(text) < 0 else int(text))  # -1: the last
        else:
            raise TunelabError(f"{OPTION}.layers: cannot read '{text}'; use 'top:K', 'bottom:K', "
                               "'A-B' or block indices like [0, 3]")
    outside = sorted(i for i in chosen if not 0 <= i < count)
    if outside:
        raise TunelabError(f"{OPTION}.layers: {spec} names a block that does not exist; the model has "
                           f"{count} blocks per stack (0-{count - 1})")
    if not chosen:
        raise TunelabError(f"{OPTION}.layers: {spec} selects no block; e.g. 'top:1'")
    return chosen


def select(model: torch.nn.Module, options: FreezeOptions, kind: ModelKind) -> None:
    """Make exactly the chosen parameters trainable."""
    if not options.layers and not options.modules:
        raise TunelabError(f"{OPTION}: nothing to train; set layers (e.g. 'top:2') and/or "
                           "modules (e.g. ['lm_head'])")
    freeze_all(model)
    if options.layers:
        stacks = targets.block_stacks(model)
        if not stacks:
            raise TunelabError(f"{OPTION}.layers: found no stack of blocks in "
                               f"{type(model).__name__}; select modules by name with `modules`")
        for _, stack in stacks:
            for index in block_indices(options.layers, len(stack)):
                stack[index].requires_grad_(True)
    if options.modules:
        for module in targets.matching_modules(model, options.modules, f"{OPTION}.modules").values():
            module.requires_grad_(True)
    targets.train_classification_head(model, kind)


@dataclass
class FreezeMethod:
    name: str = "freeze"
    options_type: type[FreezeOptions] = FreezeOptions
    weights_dir: str = "weights"
    sweep_lr: float = 1e-4
    sweep_options: dict[str, object] = field(default_factory=lambda: {"layers": ["top:4"]})
    supports_packing: bool = True
    supports_checkpointing: bool = True
    can_merge: bool = True  # the model itself: the trained tensors are the base's own

    def apply(self, model: torch.nn.Module, options: FreezeOptions, kind: ModelKind
              ) -> torch.nn.Module:
        select(model, options, kind)
        targets.remember(model, targets.MethodRecord(asdict(options)))
        return model

    def save(self, model: torch.nn.Module, out_dir: Path) -> None:
        targets.save_method(self.name, model, out_dir)

    def load(self, base: torch.nn.Module, weights_dir: Path) -> torch.nn.Module:
        tensors, record = targets.read_method(weights_dir, self.name)
        targets.remember(base, record)
        targets.load_tensors(base, tensors, weights_dir)
        return base

    def merge(self, model: torch.nn.Module) -> torch.nn.Module | None:
        """The model itself: the trained tensors are already the base's own weights."""
        return model


METHOD = register(FreezeMethod())

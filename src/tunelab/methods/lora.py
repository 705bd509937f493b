"""LoRA (with rsLoRA and DoRA options), via peft; merges into the base weights."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

from tunelab.config.choices import Range
from tunelab.methods.base import register
from tunelab.methods.peft_backed import PeftMethod
from tunelab.models.kinds import ModelKind

if TYPE_CHECKING:
    import torch
    from peft import PeftConfig


@dataclass
class LoraOptions:
    limits: ClassVar[dict[str, Range]] = {
        "r": Range(1, whole=True, fix="e.g. 8"), "alpha": Range(0, low_open=True, fix="e.g. 16"),
        "dropout": Range(0, 1, high_open=True, fix="e.g. 0.05")}
    """Checked as the config is read, before any model loads."""
    r: int = 8
    """Rank of the update B @ A."""
    alpha: float = 16
    """Scale: the update is multiplied by alpha / r (alpha / sqrt(r) with rslora)."""
    dropout: float = 0.05
    """Dropout on the adapted layers' input, before the low-rank update."""
    target_modules: list[str] | str = field(default_factory=lambda: "all-linear")
    """Module-name suffixes to adapt, or 'all-linear'."""
    rslora: bool = False
    """Rank-stabilised scaling: alpha / sqrt(r) instead of alpha / r."""
    dora: bool = False
    """DoRA: the update split into a learned magnitude and a low-rank direction."""


def build_config(options: LoraOptions, model: torch.nn.Module, kind: ModelKind
                 ) -> PeftConfig:
    from peft import LoraConfig

    targets = options.target_modules
    if isinstance(targets, list) and targets == ["all-linear"]:
        targets = "all-linear"
    return LoraConfig(
        r=options.r,
        lora_alpha=options.alpha,  # type: ignore[arg-type]  # peft annotates int; a float scales alike
        lora_dropout=options.dropout,
        target_modules=targets,
        use_rslora=options.rslora,
        use_dora=options.dora,
        task_type=kind.peft_task_type,
    )


def combine_refusal(options: LoraOptions) -> str | None:
    """Why peft's `add_weighted_adapter` (peft <= 0.21.2) would not combine this adapter
    faithfully, or None. It combines the A and B matrices only: a DoRA adapter's magnitude
    vector is not combined, and the combined adapter keeps use_rslora with lora_alpha = r, so
    it is scaled by sqrt(r) instead of 1 (tests/test_combine.py checks both are still so)."""
    if options.dora:
        return ("method.dora: peft's add_weighted_adapter combines A and B only, not DoRA's "
                "magnitude vectors; combine plain LoRA runs (dora: false)")
    if options.rslora:
        return ("method.rslora: peft's add_weighted_adapter scales the combined adapter by "
                "sqrt(r) instead of 1 under rsLoRA; combine runs trained with rslora: false")
    return None


METHOD = register(PeftMethod("lora", LoraOptions, build_config, sweep_lr=4e-4, can_merge=True,
                             combine_refusal=combine_refusal, training_only=("dropout",)))

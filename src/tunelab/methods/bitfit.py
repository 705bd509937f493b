"""BitFit: only bias terms train (Ben Zaken et al., 2022).

Targeted linear layers that have a bias train it; those without one (Llama, Gemma, T5 have no
biases) get a zero-initialised bias added, so the output is unchanged at initialisation. Only the
linear layers' biases train, not LayerNorm's. Saved: the bias tensors (weights.safetensors) +
method.json listing which biases were added (`added_biases`), so `load` re-adds them before
copying.

Merge: where no bias was added the model is plain already and is returned as is; where biases
were added, the architecture must be able to hold them (e.g. Llama's `attention_bias` and
`mlp_bias` config flags): merge switches on the flags that make the plain architecture's weights
match exactly, or returns None when no choice of flags fits.
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TypeGuard

from tunelab.core.deferred import pytorch_utils, torch
from tunelab.core.errors import TunelabError
from tunelab.methods import targets
from tunelab.methods.base import freeze_all, register
from tunelab.models.kinds import ModelKind

if TYPE_CHECKING:
    from transformers.pytorch_utils import Conv1D

OPTION = "method (bitfit)"
ADDED = "added_biases"
"""The record's key (targets.MethodRecord.modules) for the layers given a zero bias."""
BIAS_FLAGS = ("attention_bias", "mlp_bias")
"""Config flags by which some architectures (Llama, Mistral, Gemma, ...) grow linear biases."""


@dataclass
class BitFitOptions:
    target_modules: list[str] | None = None
    """Linear layers whose biases train, by name pattern (dotted suffix, glob or regex);
    default: every linear layer inside the transformer blocks."""


def is_linear(module: torch.nn.Module) -> TypeGuard[torch.nn.Linear | Conv1D]:
    """nn.Linear, or transformers' Conv1D (GPT-2's transposed linear)."""
    return isinstance(module, torch.nn.Linear | pytorch_utils.Conv1D)


def out_features(module: torch.nn.Linear | Conv1D) -> int:
    return module.out_features if isinstance(module, torch.nn.Linear) else module.nf


def target_layers(model: torch.nn.Module, options: BitFitOptions
                  ) -> dict[str, torch.nn.Linear | Conv1D]:
    """The targeted linear layers: matched modules and the linear layers inside them."""
    if options.target_modules:
        roots = targets.matching_modules(model, options.target_modules, f"{OPTION}.target_modules")
    else:
        roots = dict(targets.block_stacks(model))
    layers = {f"{root}.{name}".rstrip("."): module
              for root, parent in roots.items() for name, module in parent.named_modules()
              if is_linear(module)}
    if not layers:
        raise TunelabError(f"{OPTION}.target_modules: no linear layer in the targeted modules of "
                           f"{type(model).__name__}; name linear layers, e.g. {targets.example_names(model)}")
    return layers


def add_zero_bias(module: torch.nn.Linear | Conv1D) -> None:
    like = targets.parameter_like(module)
    module.bias = torch.nn.Parameter(torch.zeros(out_features(module), dtype=like.dtype, device=like.device))


@dataclass
class BitFitMethod:
    name: str = "bitfit"
    options_type: type[BitFitOptions] = BitFitOptions
    weights_dir: str = "adapter"
    sweep_lr: float = 1e-3
    sweep_options: dict[str, object] = field(default_factory=dict)
    supports_packing: bool = True
    supports_checkpointing: bool = True
    can_merge: bool = True  # the biases are the base's own (added ones grow the config)

    def apply(self, model: torch.nn.Module, options: BitFitOptions, kind: ModelKind
              ) -> torch.nn.Module:
        freeze_all(model)
        added: list[str] = []
        for name, layer in target_layers(model, options).items():
            if layer.bias is None:
                add_zero_bias(layer)
                added.append(name)
            layer.bias.requires_grad_(True)
        targets.train_classification_head(model, kind)
        targets.remember(model, targets.MethodRecord(asdict(options), {ADDED: added}))
        return model

    def save(self, model: torch.nn.Module, out_dir: Path) -> None:
        targets.save_method(self.name, model, out_dir)

    def load(self, base: torch.nn.Module, weights_dir: Path) -> torch.nn.Module:
        tensors, record = targets.read_method(weights_dir, self.name)
        for name in record.modules.get(ADDED, []):
            add_zero_bias(linear_layer(base, name))
        targets.remember(base, record)
        targets.load_tensors(base, tensors, weights_dir)
        return base

    def merge(self, model: torch.nn.Module) -> torch.nn.Module | None:
        record = targets.remembered(model)
        if not record.modules.get(ADDED):
            return model
        config = getattr(model, "config", None)
        if config is None:  # no config to grow the biases in
            return None
        flags = [flag for flag in BIAS_FLAGS if hasattr(config, flag)]
        expected = set(model.state_dict())
        for values in itertools.product((False, True), repeat=len(flags)):
            candidate = copy.deepcopy(config)
            for flag, value in zip(flags, values, strict=True):
                setattr(candidate, flag, value)
            with torch.device("meta"):
                plain = type(model)(candidate)
            if set(plain.state_dict()) == expected:
                model.config = candidate
                # the biases are the architecture's own now: the model is a plain one
                targets.remember(model, targets.MethodRecord(record.options))
                return model
        return None


def added_biases(model: torch.nn.Module) -> list[str]:
    """The layers bitfit gave a zero bias (by name)."""
    return targets.remembered(model).modules.get(ADDED, [])


def linear_layer(model: torch.nn.Module, name: str) -> torch.nn.Linear | Conv1D:
    """The linear layer a saved bias belongs to."""
    layer = model.get_submodule(name)
    if not is_linear(layer):
        raise TunelabError(f"{OPTION}: {name} is not a linear layer of the base model; load the "
                           "weights onto the run's base model")
    return layer


METHOD = register(BitFitMethod())

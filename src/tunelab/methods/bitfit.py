"""BitFit: only bias terms train (Ben Zaken et al., 2022).

Targeted linear layers that have a bias train it; those without one (Llama, Gemma, T5 have no
biases) get a zero-initialised bias added, so the output is unchanged at initialisation. Only the
linear layers' biases train, not LayerNorm's. Saved: the bias tensors (weights.safetensors) +
method.json listing which biases were added, so `load` re-adds them before copying.

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
from typing import Any

import torch

from tunelab.core.errors import TunelabError
from tunelab.methods import targets
from tunelab.methods.base import freeze_all, register

OPTION = "method (bitfit)"
ADDED = "_tunelab_added_biases"
BIAS_FLAGS = ("attention_bias", "mlp_bias")
"""Config flags by which some architectures (Llama, Mistral, Gemma, ...) grow linear biases."""


@dataclass
class BitFitOptions:
    target_modules: list[str] | None = None
    """Linear layers whose biases train, by name pattern (dotted suffix, glob or regex);
    default: every linear layer inside the transformer blocks."""


def is_linear(module: torch.nn.Module) -> bool:
    """nn.Linear, or transformers' Conv1D (GPT-2's transposed linear)."""
    return isinstance(module, torch.nn.Linear) or type(module).__name__ == "Conv1D"


def out_features(module: torch.nn.Module) -> int:
    return module.out_features if isinstance(module, torch.nn.Linear) else module.nf  # type: ignore[return-value]


def target_layers(model: torch.nn.Module, options: BitFitOptions) -> dict[str, torch.nn.Module]:
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


def add_zero_bias(module: torch.nn.Module) -> None:
    like = targets.parameter_like(module)
    module.bias = torch.nn.Parameter(torch.zeros(out_features(module), dtype=like.dtype, device=like.device))


@dataclass
class BitFitMethod:
    name: str = "bitfit"
    options_type: type = BitFitOptions
    weights_dir: str = "adapter"
    sweep_lr: float = 1e-3
    sweep_options: dict[str, Any] = field(default_factory=dict)

    def apply(self, model: torch.nn.Module, options: Any) -> torch.nn.Module:
        freeze_all(model)
        added = []
        for name, layer in target_layers(model, options).items():
            if layer.bias is None:
                add_zero_bias(layer)
                added.append(name)
            layer.bias.requires_grad_(True)
        targets.train_classification_head(model)
        setattr(model, ADDED, added)
        model._tunelab_options = asdict(options)  # type: ignore[assignment]
        return model

    def save(self, model: torch.nn.Module, out_dir: Path) -> None:
        record = {"method": self.name, "options": getattr(model, "_tunelab_options", {}),
                  "added_biases": getattr(model, ADDED, [])}
        targets.save_weights(out_dir, targets.trainable_tensors(model), record)

    def load(self, base: torch.nn.Module, weights_dir: Path) -> torch.nn.Module:
        tensors, record = targets.read_weights(weights_dir, self.name)
        for name in record["added_biases"]:
            add_zero_bias(base.get_submodule(name))
        setattr(base, ADDED, list(record["added_biases"]))
        targets.load_tensors(base, tensors, weights_dir)
        return base

    def merge(self, model: torch.nn.Module) -> torch.nn.Module | None:
        if not getattr(model, ADDED, []):
            return model
        config = getattr(model, "config", None)
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
                delattr(model, ADDED)
                return model
        return None


METHOD = register(BitFitMethod())

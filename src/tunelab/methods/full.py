"""Full fine-tuning: every weight trains; a run saves a complete HF model directory."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from tunelab.core.deferred import safetensors_torch, transformers
from tunelab.core.errors import TunelabError
from tunelab.methods.base import register
from tunelab.models.kinds import ModelKind

if TYPE_CHECKING:
    import torch


@dataclass
class FullOptions:
    pass


@dataclass
class FullMethod:
    name: str = "full"
    options_type: type[FullOptions] = FullOptions
    weights_dir: str = "model"
    sweep_lr: float = 5e-5
    sweep_options: dict[str, object] = field(default_factory=dict)
    supports_packing: bool = True
    supports_checkpointing: bool = True
    can_merge: bool = True  # the model itself: every weight is a plain model's weight

    def apply(self, model: torch.nn.Module, options: FullOptions, kind: ModelKind
              ) -> torch.nn.Module:
        for param in model.parameters():
            param.requires_grad_(True)
        return model

    def save(self, model: torch.nn.Module, out_dir: Path) -> None:
        """A complete transformers model directory."""
        if not isinstance(model, transformers.PreTrainedModel):
            raise TunelabError(f"method (full): saves transformers models only, not "
                               f"{type(model).__name__}")
        model.save_pretrained(str(out_dir))

    def load(self, base: torch.nn.Module, weights_dir: Path) -> torch.nn.Module:
        state = {}
        for shard in sorted(Path(weights_dir).glob("*.safetensors")):
            state.update(safetensors_torch.load_file(str(shard)))
        missing, unexpected = base.load_state_dict(state, strict=False)
        if set(missing) - tied_to(base, set(state)) or unexpected:
            raise RuntimeError(f"{weights_dir}: checkpoint does not fit the base model "
                               f"(missing {sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]})")
        return base

    def merge(self, model: torch.nn.Module) -> torch.nn.Module | None:
        """The model itself: every weight already is a plain model's weight."""
        return model


def tied_to(model: torch.nn.Module, loaded: set[str]) -> set[str]:
    """Names sharing a tensor with a loaded name (tied embeddings: T5 ties three names)."""
    names_by_tensor: dict[int, set[str]] = {}
    for name, tensor in model.state_dict(keep_vars=True).items():
        names_by_tensor.setdefault(id(tensor), set()).add(name)
    return {name for names in names_by_tensor.values() if names & loaded for name in names}


METHOD = register(FullMethod())

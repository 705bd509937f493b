"""The method protocol and registry."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, runtime_checkable

from tunelab.config import from_dict
from tunelab.core.errors import TunelabError
from tunelab.models.kinds import ModelKind

if TYPE_CHECKING:
    import torch
    from _typeshed import DataclassInstance

OptionsT = TypeVar("OptionsT", bound="DataclassInstance")
"""A method's options dataclass."""


class Method(Protocol[OptionsT]):
    """What every fine-tuning method provides. No shared code branches on a method's name."""

    name: str
    options_type: type[OptionsT]
    """Dataclass of the method's options (the keys under `method:` besides `name`)."""
    weights_dir: str
    """Subdirectory of a run directory holding the saved weights."""
    sweep_lr: float
    """A learning rate that suits the method on small models (`tunelab sweep`'s default;
    prompt/prefix tuning need far larger steps than weight updates, full fine-tuning smaller)."""
    sweep_options: dict[str, object]
    """Options a sweep gives the method when the config has none for it (those it needs to
    train anything, e.g. freeze's layers)."""
    supports_packing: bool = True
    """Whether data.packing keeps its examples apart (not where virtual tokens are shared by
    every example of a packed row: prompt, prefix)."""
    supports_checkpointing: bool = True
    """Whether train.gradient_checkpointing works with it."""
    can_merge: bool
    """Whether `merge` folds a trained model into plain weights of the base architecture
    (known before any model loads: `model.init_from` checks it)."""

    def apply(self, model: torch.nn.Module, options: OptionsT, kind: ModelKind) -> torch.nn.Module:
        """Return the model with the method injected and only its parameters trainable.
        `kind` is what the model is (`LoadedModel.kind`): it decides peft's task type and
        whether a classification head trains too. It has no default, so a seq2seq or
        classifier model never passes as causal."""
        ...

    def save(self, model: torch.nn.Module, out_dir: Path) -> None:
        """Write the trainable weights (and whatever is needed to load them) to out_dir."""
        ...

    def load(self, base: torch.nn.Module, weights_dir: Path) -> torch.nn.Module:
        """Return `base` with saved weights from weights_dir applied."""
        ...

    def merge(self, model: torch.nn.Module) -> torch.nn.Module | None:
        """A plain model of the base architecture computing the same function: the method
        folded into the base weights (lora, ia3), or the model itself where the trained weights
        are the base's own (full, freeze); None where the method cannot merge."""
        ...


@runtime_checkable
class Continuable(Protocol):
    """A method whose saved weights a later run of the same method trains on as they are
    (`model.init_from`: a peft adapter loaded as the trainable adapter), instead of starting
    a fresh one on the earlier run merged into the base."""

    def changed_options(self, earlier: object, options: object) -> list[tuple[str, object, object]]:
        """(option, earlier value, new value) for each option that differs and shapes the saved
        weights or what they compute (a LoRA rank or alpha; not a dropout): the earlier run's
        weights cannot continue under those."""
        ...

    def load_trainable(self, base: torch.nn.Module, weights_dir: Path, options: object,
                       kind: ModelKind) -> torch.nn.Module:
        """`base` as `apply(base, options, kind)` makes it, with the saved weights in place of
        the fresh ones: the function `load` gives, the trainable parameters `apply` gives."""
        ...


METHODS: dict[str, Method[Any]] = {}  # Any: each method has its own options type
"""Every method by name; each has its own options type."""

MethodT = TypeVar("MethodT", bound="Method[Any]")  # Any: each method has its own options type


def register(method: MethodT) -> MethodT:
    METHODS[method.name] = method
    return method


def get_method(name: str) -> Method[Any]:  # Any: each method has its own options type
    if name not in METHODS:
        raise TunelabError(f"method.name '{name}': unknown; choose one of {', '.join(sorted(METHODS))}")
    return METHODS[name]


def parse_options(method: Method[OptionsT], raw: Mapping[str, object]) -> OptionsT:
    """The method's options dataclass from the `method:` mapping (minus `name`)."""
    values = {k: v for k, v in raw.items() if k != "name"}
    options: OptionsT = from_dict(method.options_type, values, f"method ({method.name})")
    return options


@dataclass
class ParameterCount:
    trainable: int
    total: int

    @property
    def percent(self) -> float:
        return 100.0 * self.trainable / max(self.total, 1)

    def __str__(self) -> str:
        return f"{self.trainable:,} trainable of {self.total:,} ({self.percent:.3f}%)"


def trainable_parameters(model: torch.nn.Module) -> ParameterCount:
    """Count trainable and total parameters (shared tensors counted once)."""
    seen: set[int] = set()
    trainable = total = 0
    for param in model.parameters():
        if id(param) in seen:
            continue
        seen.add(id(param))
        total += param.numel()
        if param.requires_grad:
            trainable += param.numel()
    return ParameterCount(trainable, total)


def set_plain_attribute(module: torch.nn.Module, name: str, value: object) -> None:
    """`module.<name> = value` for a value that is no tensor or module (a function, a flag, a
    record): nn.Module keeps it as an ordinary attribute, though torch annotates
    `Module.__setattr__` for tensors and modules only."""
    setattr(module, name, value)


def freeze_all(model: torch.nn.Module) -> None:
    for param in model.parameters():
        param.requires_grad_(False)


def directory_size(path: Path) -> int:
    """Bytes on disk under path."""
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def input_logits(logits: torch.Tensor, input_length: int) -> torch.Tensor:
    """The logits of the input's own positions, [batch, input_length, vocab].

    Methods that prepend virtual tokens (prompt tuning) return longer logits than the input;
    the input's positions are always the last `input_length`.
    """
    return logits[:, logits.shape[1] - input_length:]

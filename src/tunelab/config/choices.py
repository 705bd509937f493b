"""The allowed values of every choice option, as `Literal` types, and the check that refuses
anything else in one line (`from_dict` when a file is read, each section's `__post_init__`
when one is made in code), so no module re-checks a choice."""

from __future__ import annotations

import functools
import typing
from typing import Any, Literal, get_args

from tunelab.errors import TunelabError

Dtype = Literal["float32", "bfloat16", "float16"]
ModelKind = Literal["causal", "seq2seq", "classifier"]
DataFormat = Literal["auto", "jsonl", "csv", "parquet", "hf_disk", "bigbench"]
TemplateName = Literal["alpaca", "chat", "format"]
ShotSampler = Literal["random", "first"]
OutputTypeName = Literal["generate", "multiple_choice", "loglikelihood_rolling", "classification"]
Schedule = Literal["cosine", "linear", "constant"]
BuiltinMixture = Literal["natural_instructions"]
Sampling = Literal["proportional", "temperature", "uniform", "weights"]
Order = Literal["random", "easy_to_hard"]
Measure = Literal["length", "loss"]
Tracker = Literal["tensorboard", "mlflow"]

OUTPUT_TYPES: tuple[str, ...] = get_args(OutputTypeName)
MODEL_KINDS: tuple[str, ...] = get_args(ModelKind)
TRACKERS: tuple[str, ...] = get_args(Tracker)
TRACKER_PACKAGES = {"tensorboard": "tensorboard", "mlflow": "mlflow"}
"""The module each tracker needs (mlflow-skinny provides `mlflow` too)."""


def choices_of(hint: Any) -> tuple[str, ...] | None:
    """The allowed strings of a ``Literal[...]`` hint (also inside ``X | None``), else None."""
    if typing.get_origin(hint) is Literal:
        return tuple(get_args(hint))
    for arg in get_args(hint):
        if typing.get_origin(arg) is Literal:
            return tuple(get_args(arg))
    return None


def optional(hint: Any) -> bool:
    """Whether a hint admits None (``X | None``)."""
    return type(None) in get_args(hint)


def check_choice(option: str, value: Any, hint: Any) -> None:
    """One-line error when `value` is not one of a Literal option's values (None only where
    the option is optional)."""
    allowed = choices_of(hint)
    if allowed is None or (value is None and optional(hint)):
        return
    if value not in allowed:
        shown = "null" if value is None else value
        raise TunelabError(f"{option} '{shown}': use one of {', '.join(allowed)}")


class Checked:
    """A config section that checks its choice options on construction (`section` names it
    in errors, e.g. ``mixture.sampling 'mixed': use one of ...``)."""

    section: typing.ClassVar[str] = ""

    def __post_init__(self) -> None:
        for name, hint in _hints(type(self)).items():
            check_choice(f"{self.section}.{name}".lstrip("."), getattr(self, name), hint)


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return {name: hint for name, hint in typing.get_type_hints(cls).items()
            if choices_of(hint) is not None}

"""The allowed values of every choice option, as `Literal` types, and the check that refuses
anything else in one line (`from_dict` when a file is read, each section's `__post_init__`
when one is made in code), so no module re-checks a choice."""

from __future__ import annotations

import dataclasses
import functools
import math
import typing
from pathlib import Path
from typing import Literal, get_args

import yaml

from tunelab.core.errors import TunelabError

Dtype = Literal["float32", "bfloat16", "float16"]
ModelKind = Literal["causal", "seq2seq", "classifier"]
DataFormat = Literal["auto", "jsonl", "csv", "parquet", "hf_disk", "bigbench", "text"]
TemplateName = Literal["alpaca", "chat", "format", "text"]
ShotSampler = Literal["random", "fixed", "first"]
OutputTypeName = Literal["generate", "multiple_choice", "loglikelihood_rolling", "classification"]
Schedule = Literal["cosine", "linear", "constant"]
BuiltinMixture = Literal["natural_instructions"]
Sampling = Literal["proportional", "temperature", "uniform", "weights"]
Order = Literal["random", "easy_to_hard"]
Measure = Literal["length", "loss"]
Tracker = Literal["tensorboard", "mlflow"]
OnDivergence = Literal["stop", "skip_step"]
Precision = Literal["fp32", "bf16", "fp16", "auto"]

OUTPUT_TYPES: tuple[str, ...] = get_args(OutputTypeName)
MODEL_KINDS: tuple[str, ...] = get_args(ModelKind)
TRACKERS: tuple[str, ...] = get_args(Tracker)
TRACKER_PACKAGES = {"tensorboard": "tensorboard", "mlflow": "mlflow"}
"""The module each tracker needs (mlflow-skinny provides `mlflow` too)."""


def choices_of(hint: object) -> tuple[str, ...] | None:
    """The allowed strings of a ``Literal[...]`` hint (also inside ``X | None``), else None."""
    if typing.get_origin(hint) is Literal:
        return tuple(get_args(hint))
    for arg in get_args(hint):
        if typing.get_origin(arg) is Literal:
            return tuple(get_args(arg))
    return None


def optional(hint: object) -> bool:
    """Whether a hint admits None (``X | None``)."""
    return type(None) in get_args(hint)


def check_choice(option: str, value: object, hint: object) -> None:
    """One-line error when `value` is not one of a Literal option's values (None only where
    the option is optional)."""
    allowed = choices_of(hint)
    if allowed is None or (value is None and optional(hint)):
        return
    if value not in allowed:
        shown = "null" if value is None else value
        raise TunelabError(f"{option} '{shown}': use one of {', '.join(allowed)}")


@dataclasses.dataclass(frozen=True)
class Range:
    """The numbers an option allows: [low, high], either end open or absent; `whole` for
    counts. None passes (the option's own default applies)."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    whole: bool = False
    fix: str = ""
    """What a sensible value looks like, for the error (e.g. "e.g. 8")."""

    def check(self, option: str, value: object) -> None:
        if value is None:
            return
        if not (isinstance(value, (int, float)) and not isinstance(value, bool)
                and self.allows(value)):
            shown = f"{value:g}" if isinstance(value, float) else repr(value)
            raise TunelabError(f"{option} {shown}: must be {self.describe()}"
                               f"{'; ' + self.fix if self.fix else ''}")

    def allows(self, value: float) -> bool:
        """Whether a number (not None, not a bool) is in the range."""
        ok = math.isfinite(value) and (not self.whole or float(value).is_integer())
        if ok and self.low is not None:
            ok = value > self.low if self.low_open else value >= self.low
        if ok and self.high is not None:
            ok = value < self.high if self.high_open else value <= self.high
        return ok

    def describe(self) -> str:
        kind = "a whole number" if self.whole else "a number"
        parts = []
        if self.low is not None:
            parts.append(f"{'>' if self.low_open else '>='} {self.low:g}")
        if self.high is not None:
            parts.append(f"{'<' if self.high_open else '<='} {self.high:g}")
        return f"{kind} {' and '.join(parts)}".strip()


COUNT = Range(1, whole=True)
"""At least one (batch sizes, steps between logs, ...)."""
NONNEGATIVE = Range(0, whole=True)
SHARE = Range(0, 1)


class Checked:
    """A config section that checks its choice options and number ranges on construction
    (`section` names it in errors, e.g. ``mixture.sampling 'mixed': use one of ...``,
    ``train.batch_size 0: must be a whole number >= 1``); `limits` maps a field to its
    `Range`."""

    section: typing.ClassVar[str] = ""
    limits: typing.ClassVar[dict[str, Range]] = {}

    def __post_init__(self) -> None:
        for name, hint in _hints(type(self)).items():
            check_choice(f"{self.section}.{name}".lstrip("."), getattr(self, name), hint)
        for name, limit in self.limits.items():
            limit.check(f"{self.section}.{name}".lstrip("."), getattr(self, name))


_HINTS: dict[type, dict[str, object]] = {}


def _hints(cls: type) -> dict[str, object]:
    """The fields of `cls` that have choices, with their type hints (once per class)."""
    if cls not in _HINTS:
        _HINTS[cls] = {name: hint for name, hint in typing.get_type_hints(cls).items()
                       if choices_of(hint) is not None}
    return _HINTS[cls]


@functools.lru_cache(maxsize=16)
def _composed(text: str) -> yaml.Node | None:
    """A YAML text's node tree, composed once per text (`from_dict` asks a line for every
    checked option of a file; nodes are only read)."""
    return yaml.compose(text)


def yaml_line(path: Path, keys: list[str | int]) -> int | None:
    """1-based line of the deepest of `keys` (mapping keys, list indices) found in the file."""
    try:
        node = _composed(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return None
    line = None
    for key in keys:
        if isinstance(key, int) and isinstance(node, yaml.SequenceNode) and key < len(node.value):
            node = node.value[key]
            line = node.start_mark.line + 1
            continue
        if not isinstance(node, yaml.MappingNode):
            break
        match = next(((k, v) for k, v in node.value if getattr(k, "value", None) == key), None)
        if match is None:
            break
        line, node = match[0].start_mark.line + 1, match[1]
    return line

"""Reading configs: YAML files, ``key=value`` overrides, and dataclasses built from mappings
with one-line errors naming the file, line and option."""

from __future__ import annotations

import copy
import dataclasses
import difflib
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import yaml

from tunelab.config.choices import check_choice, choices_of, yaml_line
from tunelab.config.formats import check_format
from tunelab.config.sections import RunConfig
from tunelab.core.errors import TunelabError

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

T = TypeVar("T", bound="DataclassInstance")


@dataclass(frozen=True)
class Origin:
    """Where a config's values came from: its YAML file (None: no file), the options the
    command line's key=value overrides set, and those tunelab set itself (a search's trial
    values; named by the option alone, the caller says where they came from). A section
    replaced whole counts for every option below it."""

    file: Path | None
    overridden: frozenset[tuple[str, ...]] = frozenset()
    elsewhere: frozenset[tuple[str, ...]] = frozenset()

    @classmethod
    def of(cls, file: Path | None, overrides: Sequence[str] | None,
           also: Sequence[str] = ()) -> Origin:
        def paths(texts: Sequence[str]) -> frozenset[tuple[str, ...]]:
            return frozenset(tuple(parse_override(text)[0]) for text in texts)
        return cls(file, paths(overrides or []), paths(also))

    @staticmethod
    def _within(keys: Sequence[str | int], paths: frozenset[tuple[str, ...]]) -> bool:
        path = tuple(str(k) for k in keys)
        return any(path[:n] in paths for n in range(1, len(path) + 1))

    def overrides(self, keys: Sequence[str | int]) -> bool:
        """Whether the command line set this option (or a section above it)."""
        return self._within(keys, self.overridden)

    def name(self, keys: Sequence[str | int], *more: Sequence[str | int]) -> str:
        """`FILE line N: a.b` for a value from the file; `command line: a.b` for one an
        override set (or for the options `more`, where given, that all were); `a.b` for one
        tunelab set, or where there is no file."""
        option = option_name(list(keys))
        every = list(more) or [keys]
        if all(self._within(k, self.elsewhere) for k in every):
            return option or "config"
        if all(self.overrides(k) for k in every):
            return f"command line{f': {option}' if option else ''}"
        if self.file is None:
            return option or "config"
        line = yaml_line(self.file, list(keys))
        return f"{self.file}{f' line {line}' if line else ''}{f': {option}' if option else ''}"


def from_dict(cls: type[T], raw: dict[str, Any], where: str,  # Any: YAML values from disk
              source: Path | Origin | None = None, keys: tuple[str | int, ...] = ()) -> T:
    """Build dataclass ``cls`` from a dict, naming ``where`` (file/option path) on a bad key.

    With ``source`` (the YAML file ``raw`` came from, or its `Origin`; ``keys``: where ``raw``
    sits in it), a value that is not one of its option's choices is named by file, line and
    option, or as set on the command line."""
    if isinstance(source, Path):
        source = Origin(source)
    if not isinstance(raw, dict):
        raise TunelabError(f"{where}: expected a mapping, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in option_fields(cls)}
    unknown = [str(key) for key in raw if key not in known]
    if unknown:  # all of them in one line, so one edit fixes them
        raise TunelabError(_unknown_options(unknown, known, where, source, keys))
    kwargs: dict[str, object] = {}
    for key, value in raw.items():
        hint = hints[key]
        item = dataclass_item(hint)
        if isinstance(hint, type) and dataclasses.is_dataclass(hint):
            kwargs[key] = from_dict(hint, value or {}, f"{where}.{key}", source, (*keys, key))
        elif item is not None:
            if not isinstance(value or [], list):
                raise TunelabError(f"{where}.{key}: expected a list of mappings")
            kwargs[key] = [from_dict(item, v or {}, f"{where}.{key}[{i}]", source, (*keys, key, i))
                           for i, v in enumerate(value or [])]
        else:
            named = f"{where}.{key}" if source is None else source.name([*keys, key])
            limit = getattr(cls, "limits", {}).get(key)
            template = key in getattr(cls, "formats", ())
            kwargs[key] = coerced = _coerce(value, hint, named)
            if coerced is None and limit is not None and type(None) not in typing.get_args(hint):
                raise TunelabError(f"{named}: null is no value for it; leave it out for its "
                                   "default")
            if limit is not None:  # here, so the error names the file and line
                limit.check(named, coerced)
            if template:
                check_format(named, coerced)
    return cls(**kwargs)


def _unknown_options(unknown: list[str], known: set[str], where: str, source: Origin | None,
                     keys: tuple[str | int, ...]) -> str:
    """The one-line message for the options ``cls`` does not have: the first one's file and
    line when the source file is known, the nearest valid option of one, and all of them."""
    valid = ", ".join(sorted(known)) or "none"
    key = unknown[0]
    if source is not None:  # the option, or its section where there are more
        where = source.name([*keys, key]) if len(unknown) == 1 else \
            source.name(keys, *[[*keys, k] for k in unknown])
    if len(unknown) > 1:
        listed = ", ".join(f"'{k}'" for k in unknown)
        return f"{where}: unknown options {listed}; valid options: {valid}"
    close = difflib.get_close_matches(key, sorted(known), n=1)
    if close:
        return f"{where}: unknown option '{key}'; did you mean '{close[0]}'? (valid options: {valid})"
    return f"{where}: unknown option '{key}'; valid options: {valid}"


def option_name(keys: list[str | int]) -> str:
    """['eval', 'metrics', 1] -> 'eval.metrics[1]'."""
    return "".join(f"[{k}]" if isinstance(k, int) else f".{k}" for k in keys).lstrip(".")


def option_fields(cls: type) -> list[dataclasses.Field[Any]]:  # Any: every option's type
    """The fields a config file may set: all but those marked ``internal`` (set by tunelab
    itself, such as a task's `origin`)."""
    return [f for f in dataclasses.fields(cls) if not f.metadata.get("internal")]


def dataclass_item(hint: object) -> type[DataclassInstance] | None:
    """The item type of a ``list[SomeDataclass]`` hint, else None."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) is list and len(args) == 1 and dataclasses.is_dataclass(args[0]):
        return typing.cast("type[DataclassInstance]", args[0])
    return None


def _coerce(value: Any, hint: object, where: str) -> Any:  # Any: YAML in, its option's type out
    """Check (and gently convert) a scalar option against its type hint."""
    allowed = choices_of(hint)
    if allowed is not None:
        check_choice(where, None if value is None else str(value), hint)
        return None if value is None else str(value)
    if value is None:
        return None
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    base = typing.get_origin(hint) or hint
    if base in (typing.Union, getattr(__import__("types"), "UnionType", None)) and args:
        hint, base = args[0], typing.get_origin(args[0]) or args[0]
    try:
        if base is bool and not isinstance(value, bool):  # 2 is no switch
            if str(value).lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(value)
            return str(value).lower() in ("true", "1", "yes")
        if base in (int, float) and not isinstance(value, bool):
            number = float(value)
            if base is int and not number.is_integer():
                raise ValueError(value)  # 2.5 steps is not 2 steps
            return int(number) if base is int else number
        if base is str:
            return str(value)
        if base is list:
            return list(value) if isinstance(value, (list, tuple)) else [
                v.strip() for v in str(value).split(",") if v.strip()
            ]
        if base is dict:
            if not isinstance(value, dict):
                raise ValueError(value)
            return dict(value)
    except (TypeError, ValueError):
        raise TunelabError(
            f"{where}: cannot read {value!r} as {getattr(base, '__name__', base)}"
        ) from None
    return value


def parse_override(text: str) -> tuple[list[str], object]:
    """Split ``a.b=value`` into (['a', 'b'], value parsed as YAML)."""
    if "=" not in text:
        raise TunelabError(f"override '{text}': expected KEY=VALUE, e.g. train.lr=1e-4")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw else ""
    except yaml.YAMLError:
        value = raw
    return key.strip().split("."), value


def merge_overrides(raw: dict[str, Any], overrides: list[str]  # Any: YAML values from disk
                    ) -> dict[str, Any]:  # Any: YAML values from disk
    """Apply ``key=value`` overrides onto a nested dict (returns a new dict)."""
    merged = yaml.safe_load(yaml.safe_dump(raw)) or {}
    for text in overrides:
        path, value = parse_override(text)
        node = merged
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise TunelabError(f"override '{text}': '{part}' is not a section")
        node[path[-1]] = value
    return merged


def load_yaml(path: str | Path) -> dict[str, Any]:  # Any: YAML values from disk
    """Read a YAML mapping, with a one-line error naming the file and line on bad syntax."""
    path = Path(path)
    if not path.is_file():
        raise TunelabError(f"{path}: no such config file")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark else ""
        problem = getattr(err, "problem", None) or "invalid YAML"
        raise TunelabError(f"{path}{line}: {problem}; fix the YAML syntax") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise TunelabError(f"{path}: expected a YAML mapping of options at the top level")
    return raw


def load_run_config(path: str | Path | None, overrides: list[str] | None = None,
                    also: Sequence[str] = ()) -> RunConfig:
    """Read a run config from YAML (or defaults when path is None) plus the command line's
    overrides, then `also`: overrides tunelab makes itself (a search trial's values), whose
    errors name the option alone."""
    raw = load_yaml(path) if path else {}
    raw = merge_overrides(raw, [*(overrides or []), *also])
    source = Origin.of(Path(path) if path else None, overrides, also)
    config = from_dict(RunConfig, raw, str(path or "config"), source)
    if "name" not in (config.method or {}):
        raise TunelabError(f"{path or 'config'}: method.name is missing; e.g. method: {{name: lora}}")
    return config


def to_dict(config: DataclassInstance) -> dict[str, Any]:  # Any: dataclasses.asdict's values
    """Plain-dict form of a config dataclass (for run directories): its options, as a config
    file sets them (no ``internal`` field)."""
    return {f.name: _plain(getattr(config, f.name)) for f in option_fields(type(config))}


def _plain(value: Any) -> Any:  # Any: an option's value, any nesting
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_dict(value)
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return copy.deepcopy(value)

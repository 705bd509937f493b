"""The search space of `tunelab tune`: a YAML mapping of run-config keys to values.

    train.lr: {low: 1.0e-4, high: 1.0e-3, log: true}   # a float range
    train.epochs: {low: 1, high: 3}                    # an int range (optional step)
    method.r: [4, 8, 16]                               # a list: categorical
    method.name: [lora, ia3]

Every key is a `key=value` override of the run config, so a trial is an ordinary run config.
The space is checked before any trial starts: both ends of each range and every listed value
go through the config's own checks (and a method option through its method's), so no trial
fails on a value the config refuses. When `method.name` is searched, a method option applies to
the methods that have it; for the others it is inactive (recorded, not applied).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path

import optuna

from tunelab.config import RunConfig, load_run_config, load_yaml
from tunelab.core.errors import TunelabError
from tunelab.methods import get_method
from tunelab.methods.base import parse_options

Value = str | int | float | bool | None
"""A value a trial gives one key (what Optuna records as a parameter)."""

METHOD = "method."
NOT_SEARCHED = ("name", "output_dir", "data.source", "data.train_file", "data.validation_file",
                "data.test_file", "data.test_size", "data.validation_size", "data.split_seed",
                "data.fields", "data.format", "data.instruction", "data.dedup",
                "data.allow_leakage", "data.near_duplicates")
"""Keys that decide where runs go, which items exist and which are validation and test, or
what the leakage check (run once, before the search) allows: never searched."""
STUDIES = ("retention.", "robustness.", "bias.")
"""Sections that score test data: off in every trial."""


@dataclass(frozen=True)
class Choice:
    """A list of values (categorical)."""

    key: str
    values: tuple[Value, ...]

    def suggest(self, trial: optuna.Trial) -> Value:
        return trial.suggest_categorical(self.key, self.values)

    def candidates(self) -> list[Value]:
        """The values the config must accept."""
        return list(self.values)

    def grid(self) -> list[Value] | None:
        return list(self.values)

    def describe(self) -> object:
        return list(self.values)


@dataclass(frozen=True)
class Range:
    """{low, high} (optional log, step): ints give an int range, else a float range."""

    key: str
    low: float
    high: float
    log: bool = False
    step: float | None = None
    integer: bool = False

    def suggest(self, trial: optuna.Trial) -> Value:
        if self.integer:
            return trial.suggest_int(self.key, int(self.low), int(self.high),
                                     step=int(self.step or 1), log=self.log)
        return trial.suggest_float(self.key, self.low, self.high, step=self.step, log=self.log)

    def candidates(self) -> list[Value]:
        """Both ends: the config must accept them."""
        ends: list[Value] = [int(v) if self.integer else v for v in (self.low, self.high)]
        return ends

    def grid(self) -> list[Value] | None:
        """The values a grid tries; None for a continuous range (no step)."""
        if self.step is None and not self.integer:
            return None
        step = self.step or 1
        count = int(math.floor((self.high - self.low) / step + 1e-9)) + 1
        values: list[Value] = [int(self.low + i * step) if self.integer else self.low + i * step
                               for i in range(count)]
        return values

    def describe(self) -> object:
        return {"low": self.low, "high": self.high, "log": self.log, "step": self.step}


Param = Choice | Range


def read_space(path: str | Path) -> list[Param]:
    """The space file's keys, each a `Choice` or a `Range`; one-line errors name the file
    and the key."""
    where = Path(path)
    if not where.is_file():
        raise TunelabError(f"--space {where}: no such file; give a YAML file of config keys, "
                           "e.g. train.lr: {low: 1.0e-4, high: 1.0e-3, log: true}")
    raw = load_yaml(where)
    if not raw:
        raise TunelabError(f"{where}: the search space is empty; give at least one key, e.g. "
                           "method.r: [4, 8, 16]")
    return [_param(where, str(key), spec) for key, spec in raw.items()]


def _param(where: Path, key: str, spec: object) -> Param:
    def fail(message: str) -> TunelabError:
        return TunelabError(f"{where}: {key}: {message}")

    if key in NOT_SEARCHED or key.startswith(STUDIES):
        raise fail("not searchable (it decides where runs go or which items are validation and "
                   "test, or scores test data); set it in the config instead")
    if isinstance(spec, list):
        if not spec:
            raise fail("an empty list; give the values to try, e.g. [4, 8, 16]")
        if any(isinstance(v, (list, dict)) for v in spec):
            raise fail("list values must be single values (numbers, words, true/false)")
        return Choice(key, tuple(spec))
    if not isinstance(spec, dict):
        raise fail("give a list of values ([4, 8]) or a range ({low: 1, high: 3})")
    unknown = set(spec) - {"low", "high", "log", "step"}
    if unknown or "low" not in spec or "high" not in spec:
        raise fail("a range is {low: X, high: Y} with optional log: true or step: Z"
                   + (f" (unknown: {', '.join(sorted(map(str, unknown)))})" if unknown else ""))
    low, high = _number(spec["low"], fail), _number(spec["high"], fail)
    step = None if spec.get("step") is None else _number(spec["step"], fail)
    log = bool(spec.get("log", False))
    integer = all(isinstance(v, int) for v in (low, high, step) if v is not None)
    if low > high:
        raise fail(f"low {low} is above high {high}; swap them")
    if log and low <= 0:
        raise fail(f"log: true needs low > 0 (low is {low})")
    if step is not None and (step <= 0 or log):
        raise fail("step must be > 0, and cannot be combined with log: true")
    return Range(key, float(low), float(high), log, None if step is None else float(step),
                 integer)


def _number(value: object, fail: Callable[[str], TunelabError]) -> int | float:
    """A range end: a number (YAML reads 1e-4 as text; it is read as a number here)."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            raise fail(f"{value!r} is not a number") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise fail(f"{value!r} is not a number")
    return value


def trial_config(base: RunConfig, config_path: str, overrides: Sequence[str],
                 params: Mapping[str, Value]) -> tuple[RunConfig, list[str]]:
    """The run config of one trial: the config (`base`: as read from `config_path` with
    `overrides`) and the trial's values as `key=value` overrides, checked as `tunelab train`
    checks it (and the method's options). Returns the config and the method options inactive
    for the trial's method."""
    name = str(params.get("method.name", base.method["name"]))
    method = get_method(name)
    extra = []
    if name != base.method["name"]:  # another method: its own defaults, not the config's
        extra.append("method=" + json.dumps({"name": name, **method.sweep_options}))
    options = {f.name for f in fields(method.options_type)}
    inactive = [k for k in params if k.startswith(METHOD) and k != "method.name"
                and k[len(METHOD):] not in options]
    extra += [f"{k}={json.dumps(v)}" for k, v in params.items()
              if k != "method.name" and k not in inactive]
    config = load_run_config(config_path, list(overrides), also=extra)
    parse_options(method, config.method)
    return config, inactive


def check_space(space: list[Param], base: RunConfig, config_path: str,
                overrides: Sequence[str], where: str) -> None:
    """Every value a trial can take goes through the config's checks, before any trial: an
    unknown key, a method option no searched method has, or a value the config refuses is a
    one-line error naming the space file, the key and the value."""
    by_key = {p.key: p for p in space}
    searched = by_key.get("method.name")
    methods = [str(v) for v in searched.candidates()] if searched else [base.method["name"]]
    for name in methods:
        try:
            get_method(name)
        except TunelabError as err:
            raise TunelabError(f"{where}: method.name = {name!r}: {err}") from None
    for param in space:
        owners: list[str | None] = [None]
        if param.key.startswith(METHOD) and param.key != "method.name":
            option = param.key[len(METHOD):]
            owners = [m for m in methods if option in
                      {f.name for f in fields(get_method(m).options_type)}]
            if not owners:
                known = "; ".join(f"{m}: {', '.join(f.name for f in fields(get_method(m).options_type))}"
                                  for m in methods)
                raise TunelabError(f"{where}: {param.key}: unknown option '{option}' of method "
                                   f"{', '.join(methods)}; valid options: {known}")
        for value in param.candidates():
            for owner in owners:
                params = {param.key: value} if owner is None else \
                    {"method.name": owner, param.key: value}
                try:
                    trial_config(base, config_path, overrides, params)
                except TunelabError as err:
                    raise TunelabError(f"{where}: {param.key} = {value!r}: {err}") from None


def grid_of(space: list[Param], where: str) -> dict[str, list[Value]]:
    """The grid sampler's values per key; a continuous range is an error."""
    grid = {}
    for param in space:
        values = param.grid()
        if values is None:
            raise TunelabError(f"{where}: {param.key}: --sampler grid needs a list of values or "
                               "an int range (or a float range with step); use --sampler tpe "
                               "or random for a continuous range")
        grid[param.key] = values
    return grid


def describe(space: list[Param]) -> dict[str, object]:
    """The space as JSON values (tune.json; a resumed study must have the same)."""
    return {p.key: p.describe() for p in space}

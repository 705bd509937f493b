"""Typed configuration: the single source of truth for every option.

A run is described by :class:`RunConfig`, read from YAML and overridden by ``key=value``
pairs (``train.lr=1e-4``). Every field's comment is its help text.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tunelab.errors import TunelabError


@dataclass
class ModelConfig:
    name: str = "smollm2-135m"
    """Built-in alias (smollm2-135m, minilm-l6), a local HF model directory, or a hub id."""
    dtype: str = "float32"
    """Weights dtype: float32, bfloat16 or float16."""
    num_layers: int | None = None
    """Keep only the first N transformer blocks (quick experiments, tests)."""


@dataclass
class DataConfig:
    source: str = "builtin:movie_sentiment"
    """builtin:NAME, a .jsonl/.json/.csv/.parquet file, or a `datasets` directory saved to disk."""
    format: str = "auto"
    """auto (from the file), jsonl, csv, parquet or hf_disk."""
    fields: dict[str, str] = field(default_factory=dict)
    """Map tunelab's field names (instruction, input, output, prompt, completion, messages)
    to the column names in the data, e.g. {output: label}."""
    template: str = "alpaca"
    """alpaca, chat (the tokenizer's chat template) or format (prompt_format below)."""
    prompt_format: str | None = None
    """For template=format: a Python format string over the record's columns."""
    completion_format: str = "{output}"
    """For template=format: the completion's format string."""
    instruction: str | None = None
    """Instruction used for records that have none."""
    system: str | None = None
    """System message for template=chat."""
    validation_size: float = 0.1
    """Fraction (<1) or count (>=1) of examples held out for validation."""
    test_size: float = 0.2
    """Fraction (<1) or count (>=1) of examples held out for testing."""
    split_seed: int = 0
    """Seed of the train/validation/test shuffle."""
    train_file: str | None = None
    """Use given split files instead of a seeded split (source is then ignored)."""
    validation_file: str | None = None
    test_file: str | None = None
    max_length: int = 512
    """Longest tokenised example; longer prompts are cut from the left."""


@dataclass
class GenerationConfig:
    max_new_tokens: int = 32
    do_sample: bool = False
    """Greedy decoding unless true."""
    temperature: float = 1.0
    top_p: float = 1.0
    stop: list[str] = field(default_factory=list)
    """Stop strings: the prediction is cut at the first one."""
    batch_size: int = 16
    seed: int = 0


@dataclass
class EvalConfig:
    metrics: list[str] = field(default_factory=lambda: ["accuracy"])
    """Metrics over the test split: accuracy, exact_match, f1, rouge, bleu, perplexity, ..."""
    labels: list[str] | None = None
    """The label set for label tasks (per-label precision/recall/F1)."""
    primary: str | None = None
    """The score compared between systems (default: the first metric's first score)."""
    shots: int = 0
    """In-context examples from the train split prepended to each prompt."""
    limit: int | None = None
    """Evaluate at most this many test examples."""
    fewshot_seed: int = 1234
    generation: GenerationConfig = field(default_factory=GenerationConfig)


@dataclass
class TaskConfig:
    """An evaluation task: data, template, split and metrics (one YAML file)."""

    name: str = "task"
    description: str = ""
    data: DataConfig = field(default_factory=DataConfig)
    split: str = "test"
    """The split that is scored; few-shot examples come from `fewshot_split`."""
    fewshot_split: str = "train"
    eval: EvalConfig = field(default_factory=EvalConfig)


@dataclass
class TrainConfig:
    epochs: float = 1.0
    max_steps: int = 0
    """Optimizer steps; 0 means run `epochs` epochs."""
    batch_size: int = 8
    grad_accum: int = 1
    """Micro-batches accumulated per optimizer step."""
    lr: float = 2e-4
    weight_decay: float = 0.0
    warmup_ratio: float = 0.1
    schedule: str = "cosine"
    """cosine, linear or constant (all after linear warmup)."""
    max_grad_norm: float = 1.0
    eval_every: int = 0
    """Validation loss every N optimizer steps (0: at the end of each epoch only)."""
    early_stopping_patience: int = 0
    """Stop after N evaluations without a better validation loss (0: never)."""
    save_every: int = 0
    """Write a resumable checkpoint every N steps (0: only at evaluations)."""
    log_every: int = 5
    seed: int = 0


@dataclass
class RunConfig:
    name: str = "run"
    output_dir: str = "runs"
    """The run directory is OUTPUT_DIR/NAME."""
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    method: dict[str, Any] = field(default_factory=lambda: {"name": "lora"})
    """`name` picks the method (full, lora, ...); other keys are that method's options."""
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir) / self.name


def from_dict(cls: type, raw: dict[str, Any], where: str) -> Any:
    """Build dataclass ``cls`` from a dict, naming ``where`` (file/option path) on a bad key."""
    if not isinstance(raw, dict):
        raise TunelabError(f"{where}: expected a mapping, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in known:
            raise TunelabError(
                f"{where}: unknown option '{key}'; valid options are: {', '.join(sorted(known))}"
            )
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            kwargs[key] = from_dict(hint, value or {}, f"{where}.{key}")
        else:
            kwargs[key] = _coerce(value, hint, f"{where}.{key}")
    return cls(**kwargs)


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """Check (and gently convert) a scalar option against its type hint."""
    if value is None:
        return None
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    base = typing.get_origin(hint) or hint
    if base in (typing.Union, getattr(__import__("types"), "UnionType", None)) and args:
        hint, base = args[0], typing.get_origin(args[0]) or args[0]
    try:
        if base is bool and isinstance(value, str):
            if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(value)
            return value.lower() in ("true", "1", "yes")
        if base in (int, float) and not isinstance(value, bool):
            number = float(value)
            return int(number) if base is int and number.is_integer() else base(number)
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


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``a.b=value`` into (['a', 'b'], value parsed as YAML)."""
    if "=" not in text:
        raise TunelabError(f"override '{text}': expected KEY=VALUE, e.g. train.lr=1e-4")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw else ""
    except yaml.YAMLError:
        value = raw
    return key.strip().split("."), value


def merge_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
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


def load_yaml(path: str | Path) -> dict[str, Any]:
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


def load_run_config(path: str | Path | None, overrides: list[str] | None = None) -> RunConfig:
    """Read a run config from YAML (or defaults when path is None) plus overrides."""
    raw = load_yaml(path) if path else {}
    raw = merge_overrides(raw, overrides or [])
    config = from_dict(RunConfig, raw, str(path or "config"))
    if "name" not in (config.method or {}):
        raise TunelabError(f"{path or 'config'}: method.name is missing; e.g. method: {{name: lora}}")
    return config


def to_dict(config: Any) -> dict[str, Any]:
    """Plain-dict form of a config dataclass (for run directories)."""
    return dataclasses.asdict(config)

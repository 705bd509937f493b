"""Per-task LoRA adapters of one base combined into one adapter, through peft's
`LoraModel.add_weighted_adapter` (`tunelab combine`).

    how        what peft computes per adapted layer (w_i: --weights, s_i: alpha_i / r_i)   ranks
    linear     A = sum sqrt(w_i s_i) A_i, B = sum sqrt(w_i s_i) B_i (cross terms: rough)    equal
    ties       TIES merging of the A's and of the B's: keep the `density` largest entries,  equal
               elect each entry's sign, average those that agree
    dare_ties  DARE (drop 1 - density at random, rescale the rest), then TIES            equal
    cat        A's and B's stacked: delta W = sum w_i s_i B_i A_i exactly (rank: the sum)     any

A `Combination` is one of those rows: it says which ranks it needs, the rank it makes, whether
it takes a density and draws at random (seeded). A `SourceAdapter` is one run read back and
checked before anything loads: its method decides whether its adapter can be combined
(`PeftMethod.combine_refusal`), and `check_sources` refuses runs of different bases, ranks a
combination cannot mix, task heads, and task names that two runs share.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from safetensors import safe_open

from tunelab.config import ModelConfig, RunConfig, TrainTaskConfig
from tunelab.core.deferred import torch
from tunelab.core.errors import TunelabError, first_line
from tunelab.data.training_tasks import training_tasks
from tunelab.methods import get_method
from tunelab.methods.base import Method, parse_options
from tunelab.methods.peft_backed import PeftMethod
from tunelab.runs.run_dir import RunDir

if TYPE_CHECKING:
    from peft import PeftModel

PEFT_CONFIG = "adapter_config.json"
"""peft's file beside an adapter's weights (its rank, targets and task heads)."""
DEFAULT_DENSITY = 0.2
"""TIES' and DARE's share of entries kept when --density is not given: the value of peft's
model-merging guide (and the TIES paper's top 20%)."""


@dataclass(frozen=True)
class Combination:
    """One way of combining LoRA adapters (`--how`), as peft's `combination_type` names it."""

    name: str
    description: str
    equal_ranks: bool = True
    """Every adapter must have the same rank (peft refuses otherwise)."""
    takes_density: bool = False
    """Keeps a share of each matrix's entries (`--density`)."""

    def rank(self, ranks: list[int]) -> int:
        """The combined adapter's rank."""
        return ranks[0] if self.equal_ranks else sum(ranks)

    def check(self, sources: list[SourceAdapter], density: float | None) -> float | None:
        """The density peft gets (None where it takes none), after checking the sources' ranks
        and --density against this combination."""
        if self.equal_ranks and len({s.rank for s in sources}) > 1:
            ranks = ", ".join(f"{s.run.root} r={s.rank}" for s in sources)
            raise TunelabError(f"--how {self.name}: needs adapters of one rank, got {ranks}; "
                               "use --how cat (any ranks) or runs trained with the same "
                               "method.r")
        if not self.takes_density:
            if density is not None:
                raise TunelabError(f"--density {density:g}: --how {self.name} keeps every "
                                   "entry; --density is for ties and dare_ties")
            return None
        if density is None:
            return DEFAULT_DENSITY
        if not 0 < density <= 1:
            raise TunelabError(f"--density {density:g}: the share of entries kept, in (0, 1], "
                               f"e.g. {DEFAULT_DENSITY}")
        return density

    def apply(self, model: PeftModel, adapters: list[str], weights: list[float], name: str,
              density: float | None, seed: int) -> None:
        """Add adapter `name` to `model`: peft's own `add_weighted_adapter` of `adapters`
        (DARE's random drops seeded with `seed`, right before the call)."""
        torch.manual_seed(seed)
        try:
            model.add_weighted_adapter(adapters, weights, name, combination_type=self.name,
                                       density=density)
        except ValueError as err:  # peft's own refusal, in one line
            first = first_line(err)
            raise TunelabError(f"--how {self.name}: peft cannot combine these adapters "
                               f"({first})") from None


COMBINATIONS = {c.name: c for c in (
    Combination("linear", "a weighted sum of the A's and of the B's (fast, rough: cross terms)"),
    Combination("ties", "TIES: trim to --density, elect signs, average the agreeing entries",
                takes_density=True),
    Combination("dare_ties", "DARE's random drop to --density (rescaled), then TIES",
                takes_density=True),
    Combination("cat", "the adapters side by side: the exact weighted sum of their updates, "
                "rank = the sum of ranks", equal_ranks=False),
)}


def get_combination(name: str) -> Combination:
    if name not in COMBINATIONS:
        raise TunelabError(f"--how {name}: unknown; choose one of {', '.join(COMBINATIONS)}")
    return COMBINATIONS[name]


@dataclass
class SourceAdapter:
    """One run whose adapter is combined: its config, method, peft adapter and tasks."""

    run: RunDir
    config: RunConfig
    method: Method[Any]  # Any: each method has its own options type
    weights: Path
    peft_config: dict[str, Any]  # Any: adapter_config.json's JSON values
    tasks: list[TrainTaskConfig]

    @classmethod
    def read(cls, run_dir: str | Path) -> SourceAdapter:
        """The run, checked: a finished run whose method's adapter peft can combine."""
        run = RunDir(Path(run_dir))
        if not run.is_run():
            raise TunelabError(f"{run_dir}: not a run directory (no {run.config_file.name}); "
                               "give run directories tunelab train wrote")
        config = run.read_config()
        method = get_method(config.method["name"])
        refusal = (method.combine_refusal(parse_options(method, config.method))
                   if isinstance(method, PeftMethod) and method.combine_refusal is not None else
                   f"method {method.name} makes no LoRA adapter, and peft's "
                   "add_weighted_adapter combines LoRA adapters only; train the runs with "
                   "method.name=lora")
        if refusal:
            raise TunelabError(f"{run.root}: {refusal}")
        weights = run.weights(method)
        peft_file = weights / PEFT_CONFIG
        if not peft_file.is_file():
            raise TunelabError(f"{run.root}: no trained adapter in {weights}; did training "
                               "finish?")
        try:
            peft_config = json.loads(peft_file.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise TunelabError(f"{peft_file}: a damaged file ({err}); train the run again"
                               ) from None
        return cls(run, config, method, weights, peft_config, training_tasks(config))

    @property
    def rank(self) -> int:
        """The adapter's rank as peft counts it (the largest of r and its rank_pattern)."""
        pattern = self.peft_config.get("rank_pattern") or {}
        return max([int(self.peft_config["r"]), *map(int, pattern.values())])

    @property
    def heads(self) -> list[str]:
        """Modules trained whole beside the adapter (a classifier's head): peft cannot
        combine two of them."""
        return list(self.peft_config.get("modules_to_save") or [])


def check_sources(sources: list[SourceAdapter]) -> None:
    """One base for all, no task heads, and every task name once (the combined run's tasks)."""
    first = sources[0]
    for source in sources[1:]:
        if base_of(source.config.model) != base_of(first.config.model):
            raise TunelabError(
                f"{source.run.root}: trained on {describe(source.config.model)}, but "
                f"{first.run.root} on {describe(first.config.model)}; combine adapters of "
                "one base model")
    for source in sources:
        if source.heads:
            raise TunelabError(
                f"{source.run.root}: trains {', '.join(source.heads)} whole beside its "
                "adapter (a task head), and peft cannot combine those; combine LoRA runs of "
                "a language model (model.kind causal)")
    owner: dict[str, Path] = {}
    for source in sources:
        for task in source.tasks:
            if task.name in owner:
                raise TunelabError(
                    f"{source.run.root}: its task '{task.name}' is also a task of "
                    f"{owner[task.name]}; each run's tasks must have their own names (a "
                    "single-task run's task is named after the run)")
            owner[task.name] = source.run.root


def base_of(model: ModelConfig) -> tuple[str, str, int | None, str]:
    """What makes two runs' base the same: the model (a local directory by its real path),
    its dtype, cut and kind."""
    name = str(Path(model.name).resolve()) if Path(model.name).is_dir() else model.name
    return name, model.dtype, model.num_layers, model.kind


def describe(model: ModelConfig) -> str:
    cut = f", first {model.num_layers} layers" if model.num_layers else ""
    return f"{model.name} ({model.dtype}, {model.kind}{cut})"


def adapter_parameters(weights: Path) -> int:
    """The numbers in an adapter's saved weights (peft's safetensors files)."""
    total = 0
    for path in sorted(weights.glob("*.safetensors")):
        with safe_open(str(path), framework="pt") as handle:
            for key in handle.keys():  # noqa: SIM118  (a safetensors handle is no dict)
                total += math.prod(handle.get_slice(key).get_shape())
    return total

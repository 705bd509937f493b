"""Where a run's training starts: the base model, or an earlier run (`model.init_from`).

Intermediate fine-tuning and sequential learning train a run on top of an earlier one. The
methods decide how, by what they can do (`start_for`):

- **continue**: the same method, when it can train its own saved weights on
  (`methods.base.Continuable`: a peft adapter) and the options that shape those weights are
  the same (a LoRA rank, alpha, targets): the earlier run's adapter is loaded as the trainable
  adapter on the earlier run's own base. Why not merge and add a fresh adapter: that would
  stack two adapters' worth of change while training only the second, and the new run's
  weights would need the earlier run to load. Continuing keeps one adapter of the size the
  user chose, it loads onto the base alone (a chain of continued stages is one adapter), and
  the run's first step starts exactly where the earlier run ended.
- **merge**: any other method starts from the earlier run merged into plain weights (its
  method's `merge`: lora, ia3, full, freeze, bitfit) and applies itself on top; the run's saved
  weights load onto that merge, which is rebuilt from the earlier run whenever the run is
  loaded (`RunDir.load_model`). For full, freeze and bitfit after themselves this is
  continuing: their trained weights are the base's own.

A method whose weights can neither be continued by the new method nor merged (bottleneck
adapters; prompt or prefix tuning under another method) is refused in one line, as is the same
adapter method under options that reshape the adapter (another rank), and an earlier run that
is missing, unfinished, the run itself, or of another base model; all of it is read before any
model loads. `lineage` lists the chain of earlier runs, oldest first.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from tunelab.config import ModelConfig, RunConfig
from tunelab.core.errors import TunelabError
from tunelab.data.training_tasks import training_tasks
from tunelab.methods import get_method
from tunelab.methods.base import Continuable, Method, parse_options
from tunelab.models import LoadedModel, load_model
from tunelab.models.kinds import ModelKind, get_kind

if TYPE_CHECKING:
    import torch


class EarlierRun(Protocol):
    """A run directory as a start reads it (`runs/run_dir.py: RunDir`)."""

    @property
    def root(self) -> Path: ...

    def is_run(self) -> bool: ...

    def finished(self) -> bool: ...

    def read_config(self) -> RunConfig: ...

    def weights(self, method: Method[Any]) -> Path: ...  # Any: any method's options

    def load_model(self, base: str | None = None) -> LoadedModel: ...

    def start(self, config: RunConfig | None = None) -> Start: ...


class Start(Protocol):
    """What a run's method is applied to, and how."""

    @property
    def earlier(self) -> EarlierRun | None:
        """The run it starts from (None: the base model)."""
        ...

    @property
    def name(self) -> str:
        """'base', 'continue' or 'merge' (summary.json; nothing compares it)."""
        ...

    @property
    def on_base(self) -> bool:
        """Whether the run's saved weights load onto the base model alone."""
        ...

    def describe(self) -> str:
        """One line for the log and the report: where the run starts and why."""
        ...

    def load(self, config: RunConfig) -> LoadedModel:
        """The model the run trains from, before `apply`: the base, or a model computing what
        the earlier run ended with."""
        ...

    def apply(self, lm: LoadedModel, method: Method[Any],  # Any: any method's options
              options: object, kind: ModelKind) -> torch.nn.Module:
        """The model to train: `lm.model` (from `load`) with only the method's part trainable."""
        ...

    def base(self, config: RunConfig) -> LoadedModel:
        """What a finished run's saved weights load onto."""
        ...


@dataclass(frozen=True)
class FromBase:
    """No model.init_from: the base model, the method applied to it."""

    earlier: EarlierRun | None = None
    name: str = "base"
    on_base: bool = True

    def describe(self) -> str:
        return "starting from the base model"

    def load(self, config: RunConfig) -> LoadedModel:
        return load_model(config.model, labels=config.eval.labels)  # model.kind picks the class

    def apply(self, lm: LoadedModel, method: Method[Any],  # Any: any method's options
              options: object, kind: ModelKind) -> torch.nn.Module:
        return method.apply(lm.model, options, kind)

    def base(self, config: RunConfig) -> LoadedModel:
        return self.load(config)


@dataclass(frozen=True)
class ContinueAdapter:
    """The same method and options: the earlier run's saved weights train on (`Continuable`)."""

    earlier: EarlierRun
    method: Continuable
    method_name: str
    options: object
    """The new run's method options (the same as the earlier run's but for training-only ones)."""
    kind: ModelKind
    name: str = "continue"

    @property
    def on_base(self) -> bool:
        return self.earlier.start().on_base

    def describe(self) -> str:
        return (f"starting from {self.earlier.root}: continuing its {self.method_name} adapter "
                "(same method and options: its weights are the trainable adapter, so training "
                "goes on from where it ended, in one adapter of the size chosen)")

    def load(self, config: RunConfig) -> LoadedModel:
        lm = self.base(config)
        weights = self.earlier.weights(get_method(self.method_name))
        lm.model = self.method.load_trainable(lm.model, weights, self.options, self.kind)
        return lm

    def apply(self, lm: LoadedModel, method: Method[Any],  # Any: any method's options
              options: object, kind: ModelKind) -> torch.nn.Module:
        return lm.model  # `load` made it: the earlier adapter, trainable

    def base(self, config: RunConfig) -> LoadedModel:
        earlier = self.earlier.read_config()
        return self.earlier.start(earlier).base(earlier)


@dataclass(frozen=True)
class FromMerged:
    """Another method (or one whose trained weights are the base's own): the earlier run merged
    into plain weights, the method applied on top."""

    earlier: EarlierRun
    earlier_method: Method[Any]  # Any: any method's options
    why: str
    name: str = "merge"
    on_base: bool = False

    def describe(self) -> str:
        return (f"starting from {self.earlier.root} merged into plain weights (its "
                f"{self.earlier_method.name} folded in: {self.why})")

    def load(self, config: RunConfig) -> LoadedModel:
        lm = self.earlier.load_model()
        merged = self.earlier_method.merge(lm.model)
        if merged is None:  # can_merge promised it (bitfit on a model without a config)
            raise TunelabError(f"model.init_from {self.earlier.root}: its method "
                               f"{self.earlier_method.name} could not merge this model; start "
                               "from the base model")
        lm.model = merged
        return lm

    def apply(self, lm: LoadedModel, method: Method[Any],  # Any: any method's options
              options: object, kind: ModelKind) -> torch.nn.Module:
        return method.apply(lm.model, options, kind)

    def base(self, config: RunConfig) -> LoadedModel:
        return self.load(config)


def start_for(config: RunConfig, earlier: EarlierRun | None, root: Path) -> Start:
    """Where the run of `config` (its directory: `root`) starts, checked before any model
    loads: the base model, or `earlier` continued or merged (module docstring).

    Raises:
        TunelabError: the earlier run is missing, unfinished, the run itself, of another base
            model, or of a method whose weights can neither be continued nor merged.
    """
    if earlier is None:
        return FromBase()
    option = f"model.init_from {config.model.init_from}"
    if not earlier.is_run():
        raise TunelabError(f"{option}: no run there (no config.yaml); name the directory of a "
                           "finished run (its output_dir/name)")
    if earlier.root.resolve() == root.resolve():
        raise TunelabError(f"{option}: is this run's own directory; name an earlier run")
    if not earlier.finished():
        raise TunelabError(f"{option}: that run has not finished (no summary.json); finish it "
                           "first (tunelab train ITS_CONFIG --resume)")
    before = earlier.read_config()
    check_same_model(option, before.model, config.model)
    if get_kind(config.model.kind).has_classification_head \
            and before.eval.labels != config.eval.labels:
        raise TunelabError(f"{option}: its classification head is over eval.labels "
                           f"{before.eval.labels}, this config's over {config.eval.labels}; "
                           "use the same labels")
    earlier_method = get_method(before.method["name"])
    method = get_method(config.method["name"])
    if not earlier.weights(earlier_method).exists():
        raise TunelabError(f"{option}: no trained weights in "
                           f"{earlier.weights(earlier_method)}; train that run again")
    if method is earlier_method and isinstance(method, Continuable):
        options = parse_options(method, config.method)
        changed = method.changed_options(parse_options(method, before.method), options)
        if not changed:
            return ContinueAdapter(earlier, method, method.name, options,
                                   get_kind(config.model.kind))
        what = "; ".join(f"method.{k}: {new} here, {old} there" for k, old, new in changed)
        raise TunelabError(f"{option}: continuing its {method.name} adapter needs the options "
                           f"that shape it unchanged ({what}); set them as that run did, or "
                           f"merge it first (tunelab merge {config.model.init_from} --out DIR) "
                           "and start from model.name: DIR")
    if not earlier_method.can_merge:
        hint = (f"use method {earlier_method.name} with that run's options to continue it, "
                if isinstance(earlier_method, Continuable) else "")
        raise TunelabError(f"{option}: its method {earlier_method.name} can neither be "
                           f"continued by method {method.name} nor merged into the base "
                           f"weights; {hint}or start from the base model")
    why = (f"its weights are plain model weights, so {method.name} trains on from them"
           if method is earlier_method else f"method {method.name} cannot continue "
           f"{earlier_method.name} weights; it is applied on top, as on a base model")
    return FromMerged(earlier, earlier_method, why)


def check_same_model(option: str, earlier: ModelConfig, model: ModelConfig) -> None:
    """The model section must be the earlier run's (init_from aside): the same base."""
    differ = [f.name for f in fields(ModelConfig) if f.name != "init_from"
              and getattr(earlier, f.name) != getattr(model, f.name)]
    if differ:
        what = "; ".join(f"model.{k}: {getattr(model, k)} here, {getattr(earlier, k)} there"
                         for k in differ)
        raise TunelabError(f"{option}: that run was trained on another base model ({what}); "
                           "set model as that run did, or start from the base model")


@dataclass(frozen=True)
class Stage:
    """One earlier run of a lineage."""

    run: Path
    method: str
    tasks: list[str]
    """The tasks it trained (a single-task run: one, named after the run)."""
    start: str
    """How it started: base, continue or merge."""

    def to_json(self) -> dict[str, object]:
        return {"run": str(self.run), "method": self.method, "tasks": self.tasks,
                "start": self.start}


def lineage(start: Start) -> list[tuple[Stage, EarlierRun, RunConfig]]:
    """The earlier runs a run starts from, oldest first: each stage, its directory and config."""
    chain: list[tuple[Stage, EarlierRun, RunConfig]] = []
    earlier, seen = start.earlier, set()
    while earlier is not None:
        where = earlier.root.resolve()
        if where in seen:
            raise TunelabError(f"model.init_from: {where} starts from itself through its "
                               "earlier runs; fix model.init_from in their config.yaml")
        seen.add(where)
        config = earlier.read_config()
        begins = earlier.start(config)
        tasks = [t.name for t in training_tasks(config)]
        chain.append((Stage(where, config.method["name"], tasks, begins.name), earlier, config))
        earlier = begins.earlier
    return chain[::-1]


def start_record(start: Start) -> dict[str, object]:
    """summary.json's record of where a run started: `init_from` (the earlier run, continue or
    merge, and why) and `lineage` (every earlier run, oldest first); nothing for the base."""
    if start.earlier is None:
        return {}
    return {"init_from": {"run": str(start.earlier.root.resolve()), "start": start.name,
                          "how": start.describe()},
            "lineage": [stage.to_json() for stage, _, _ in lineage(start)]}

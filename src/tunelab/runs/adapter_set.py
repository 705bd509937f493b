"""Many trained adapters on one base model: choose the adapter per request, no reloading.

    bank = AdapterSet.from_runs({"sentiment": "runs/a", "qa": "runs/b"})
    with bank.use("qa"):
        ...  # bank.model computes base + the qa adapter
    with bank.use(None):
        ...  # the base alone

`add_combined` adds one more: loaded adapters combined by peft's `add_weighted_adapter`
(`tunelab combine`), and `save` writes one adapter alone in peft's format.

Adapters must be in peft's format and of one peft type (all LoRA, all IA3, ...): peft keeps
them side by side in one wrapped model and switches between them. Methods that edit the base
module itself (bitfit, bottleneck adapters, freeze, full) cannot share a base this way.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tunelab.core.dependencies import check_dependencies
from tunelab.core.errors import TunelabError
from tunelab.methods import get_method
from tunelab.methods.peft_backed import PeftMethod
from tunelab.models import LoadedModel, load_model
from tunelab.runs.adapter_combination import Combination
from tunelab.runs.run_dir import RunDir, read_config

if TYPE_CHECKING:
    import torch


def _adapter_dir(run_dir: Path) -> tuple[Path, str, PeftMethod]:
    """A run's peft adapter: its directory, peft type and the method that trained it."""
    config = read_config(run_dir)
    method = get_method(config.method["name"])
    weights = RunDir(run_dir).weights(method)
    peft_config = weights / "adapter_config.json"
    if not peft_config.is_file() or not isinstance(method, PeftMethod):
        raise TunelabError(
            f"{run_dir}: method '{config.method['name']}' does not save a peft adapter, so it "
            "cannot share a base with others; load it alone (tunelab.runs.run_dir.load_run_model)")
    if not RunDir(run_dir).start(config).on_base:  # model.init_from a run it merged
        raise TunelabError(
            f"{run_dir}: started from {config.model.init_from} merged into the base "
            "(model.init_from), so its adapter needs that merge under it and cannot share the "
            "plain base with others; load it alone (tunelab.runs.run_dir.load_run_model)")
    return weights, json.loads(peft_config.read_text())["peft_type"], method


class AdapterSet:
    """One loaded base model plus named peft adapters, switchable per request."""

    def __init__(self, base: LoadedModel):
        self.base = base
        self.model: Any = base.model  # Any: then a PeftModel, though method.finish says nn.Module
        self.peft_type: str | None = None
        self._names: list[str] = []
        self._base_layers: int | None = None

    @staticmethod
    def can_share(runs: Iterable[str | Path]) -> bool:
        """Whether the runs' weights can share one loaded base: peft adapters of one type,
        each trained on the plain base (not a full fine-tune, not a merged start)."""
        types = set()
        for run_dir in runs:
            try:
                types.add(_adapter_dir(Path(run_dir))[1])
            except TunelabError:
                return False
        return len(types) <= 1

    @classmethod
    def from_runs(cls, runs: dict[str, str | Path], base: str | None = None) -> AdapterSet:
        """Load the runs' common base once and add each run's adapter under its name."""
        if not runs:
            raise TunelabError("AdapterSet.from_runs: give at least one run directory")
        first = read_config(Path(next(iter(runs.values()))))
        model_config = first.model
        if base:
            model_config.name = base
        bank = cls(load_model(model_config, labels=first.eval.labels))
        for name, run_dir in runs.items():
            bank.add(name, run_dir)
        return bank

    @property
    def names(self) -> list[str]:
        return list(self._names)

    def add(self, name: str, run_dir: str | Path) -> None:
        check_dependencies()  # before peft is imported: an old peft fails at import
        from peft import PeftModel

        run_dir = Path(run_dir)
        if name in self._names:
            raise TunelabError(f"adapter name '{name}' is already loaded; pick another name")
        weights, peft_type, method = _adapter_dir(run_dir)
        if self.peft_type and peft_type != self.peft_type:
            raise TunelabError(f"{run_dir}: a {peft_type} adapter cannot share a base with "
                               f"{self.peft_type} adapters; use one AdapterSet per type")
        run_base = read_config(run_dir).model
        if self._names and run_base.num_layers != self._base_layers:
            raise TunelabError(f"{run_dir}: trained on a different cut of the base model")
        if not self._names:
            model = PeftModel.from_pretrained(self.base.model, str(weights), adapter_name=name)
            self.model = method.finish(model)  # the method's fixes of peft (peft_compat, ...)
            self._base_layers = run_base.num_layers
        else:
            self.model.load_adapter(str(weights), adapter_name=name)
        self.model.eval()
        self.peft_type = peft_type
        self._names.append(name)

    def add_combined(self, name: str, sources: list[str], weights: list[float],
                     combination: Combination, density: float | None, seed: int) -> None:
        """Add adapter `name`: the loaded adapters `sources` combined by peft's
        `add_weighted_adapter` (`runs/adapter_combination.py`)."""
        if name in self._names:
            raise TunelabError(f"adapter name '{name}' is already loaded; pick another name")
        missing = [source for source in sources if source not in self._names]
        if missing:
            raise TunelabError(f"adapters {', '.join(missing)} are not loaded; loaded: "
                               f"{', '.join(self._names)}")
        combination.apply(self.model, sources, weights, name, density, seed)
        self.model.eval()
        self._names.append(name)

    def save(self, name: str, out_dir: Path) -> None:
        """Adapter `name` alone, in peft's format, as the folder out_dir (new, or empty):
        `PeftModel.from_pretrained(base, out_dir)` loads it."""
        if name not in self._names:
            raise TunelabError(f"adapter '{name}' is not loaded; loaded: {', '.join(self._names)}")
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=f".{out_dir.name}-", dir=out_dir.parent) as tmp:
            self.model.save_pretrained(tmp, selected_adapters=[name])
            os.replace(Path(tmp) / name, out_dir)  # peft saves a named adapter in a subfolder

    @contextmanager
    def use(self, name: str | None) -> Iterator[torch.nn.Module]:
        """Within the block, `self.model` computes base + adapter `name` (None: the base)."""
        if name is None:
            if not self._names:
                yield self.model
                return
            with self.model.disable_adapter():
                yield self.model
            return
        if name not in self._names:
            raise TunelabError(f"adapter '{name}' is not loaded; loaded: {', '.join(self._names)}")
        self.model.set_adapter(name)
        yield self.model

    def loaded(self) -> LoadedModel:
        """A LoadedModel view for evaluation code (use inside `use(name)`)."""
        return LoadedModel(model=self.model, tokenizer=self.base.tokenizer, path=self.base.path,
                           kind=self.base.kind)

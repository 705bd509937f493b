"""Shared plumbing for methods that peft implements: build a peft config, wrap, save, load."""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Generic, cast

from tunelab.core.dependencies import check_dependencies
from tunelab.core.errors import TunelabError
from tunelab.methods.base import OptionsT
from tunelab.models.fingerprint import forget_digests
from tunelab.models.kinds import ModelKind

ADAPTER_CONFIG = "adapter_config.json"
"""peft's config file of a saved adapter (peft.utils.CONFIG_NAME)."""

if TYPE_CHECKING:  # peft is imported only after check_dependencies (an old peft fails at import)
    import torch
    from peft import PeftConfig, PeftModel


@dataclass
class PeftMethod(Generic[OptionsT]):
    """A method backed by peft; saved in peft's format (adapter_config.json +
    adapter_model.safetensors), so `peft.PeftModel.from_pretrained` and serving stacks load it."""

    name: str
    options_type: type[OptionsT]
    build_config: Callable[[OptionsT, torch.nn.Module, ModelKind], PeftConfig]
    """(options, model, the model's kind) -> peft config."""
    sweep_lr: float = field(kw_only=True)
    """A learning rate that suits the method on small models (`tunelab sweep`'s default)."""
    can_merge: bool = False
    weights_dir: str = "adapter"
    sweep_options: dict[str, object] = field(default_factory=dict)
    after_wrap: Callable[[torch.nn.Module], torch.nn.Module] | None = None
    """Applied to the PeftModel after apply and load (a method's fix of peft behaviour)."""
    supports_checkpointing: bool = True
    """Whether train.gradient_checkpointing works with it."""
    supports_packing: bool = True
    """Whether data.packing keeps its examples apart (not when virtual tokens are shared)."""
    combine_refusal: Callable[[OptionsT], str | None] | None = None
    """Whether peft's `add_weighted_adapter` can combine this method's adapters with others of
    one base (`tunelab combine`): None: never (it combines LoRA adapters only); else, given a
    run's options, why that run's adapter cannot be combined (None: it can)."""
    training_only: tuple[str, ...] = ()
    """Options that shape training alone, not the saved weights or what they compute (LoRA's
    dropout): a run continuing this method's adapter (`model.init_from`) may change them."""

    def apply(self, model: torch.nn.Module, options: OptionsT, kind: ModelKind) -> torch.nn.Module:
        check_dependencies()  # before peft is imported: an old peft fails at import
        from peft import get_peft_model

        try:
            with warnings.catch_warnings():  # peft calls a transformers API deprecated in v5
                warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")
                wrapped = get_peft_model(model, self.build_config(options, model, kind))
        except ValueError as err:
            raise TunelabError(f"method ({self.name}): {err}") from None
        return self.finish(wrapped)

    def save(self, model: torch.nn.Module, out_dir: Path) -> None:
        self.peft_model(model).save_pretrained(str(out_dir))
        sort_target_modules(out_dir)

    def load(self, base: torch.nn.Module, weights_dir: Path) -> torch.nn.Module:
        check_dependencies()
        from peft import PeftModel

        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")
            loaded = PeftModel.from_pretrained(base, str(weights_dir))
        return self.finish(loaded)

    def changed_options(self, earlier: object, options: object
                        ) -> list[tuple[str, object, object]]:
        """(option, earlier value, new value) of every option but `training_only` that differs:
        the earlier adapter's shape or function would change under it (`Continuable`)."""
        return [(f.name, getattr(earlier, f.name), getattr(options, f.name))
                for f in fields(self.options_type) if f.name not in self.training_only
                and getattr(earlier, f.name) != getattr(options, f.name)]

    def load_trainable(self, base: torch.nn.Module, weights_dir: Path, options: object,
                       kind: ModelKind) -> torch.nn.Module:
        """The adapter saved in weights_dir, trainable, under the peft config `apply` builds
        from `options` (so a changed dropout holds): a run continues it (`Continuable`)."""
        check_dependencies()
        from peft import PeftModel

        config = self.build_config(cast(OptionsT, options), base, kind)  # its own options
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")
            loaded = PeftModel.from_pretrained(base, str(weights_dir), config=config,
                                               is_trainable=True)
        return self.finish(loaded)

    def finish(self, peft_model: torch.nn.Module) -> torch.nn.Module:
        """A freshly wrapped or loaded PeftModel with this method's fixes applied."""
        return self.after_wrap(peft_model) if self.after_wrap else peft_model

    def merge(self, model: torch.nn.Module) -> torch.nn.Module | None:
        if not self.can_merge:
            return None
        merged: torch.nn.Module = self.peft_model(model).merge_and_unload()
        forget_digests(merged)  # peft adds the deltas through `.data`: no version counter moves
        return merged

    def peft_model(self, model: torch.nn.Module) -> PeftModel:
        """`model` as the PeftModel this method made of it."""
        from peft import PeftModel

        if not isinstance(model, PeftModel):
            raise TunelabError(f"method ({self.name}): expected the model it wrapped (a "
                               f"PeftModel), got {type(model).__name__}")
        return model


def sort_target_modules(out_dir: Path) -> None:
    """peft writes a set of target modules in the process's hash order, so two saves of one
    adapter differed in adapter_config.json; each list in it is written sorted (peft reads it
    back as a set), in peft's own layout."""
    for path in out_dir.rglob(ADAPTER_CONFIG):
        config = json.loads(path.read_text(encoding="utf-8"))
        for key in ("target_modules", "modules_to_save", "feedforward_modules"):
            if isinstance(config.get(key), list):
                config[key] = sorted(config[key])
        path.write_text(json.dumps(config, indent=2, sort_keys=True), encoding="utf-8")

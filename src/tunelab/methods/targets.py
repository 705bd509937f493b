"""What the hand-written methods share: picking modules by name pattern, finding the stacks of
transformer blocks, the classification head, and the saved-weights format (one save for all).

Targeting works on module names, so it applies to any `nn.Module` without per-architecture
builders (the lesson from peft). Saved weights are one safetensors file plus one JSON record:

    WEIGHTS_DIR/weights.safetensors   only the tensors the method trained (or added)
    WEIGHTS_DIR/method.json           {"method": NAME, "options": {...}, ...method-specific keys}

The method-specific keys list the modules the method changed the base at (adapter: `sublayers`;
bitfit: `added_biases`), so `load` can change a fresh base the same way first. A method keeps
that record on the model it changed (`remember`), and `save_method` writes it.
"""

from __future__ import annotations

import fnmatch
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunelab.core.deferred import safetensors_torch, torch
from tunelab.core.errors import TunelabError
from tunelab.methods.base import set_plain_attribute
from tunelab.models.kinds import ModelKind

WEIGHTS_FILE = "weights.safetensors"
RECORD_FILE = "method.json"
RECORD_ATTRIBUTE = "_tunelab_method_record"
"""Where a model keeps the `MethodRecord` of the method that changed it."""


@dataclass
class MethodRecord:
    """What a hand-written method remembers on the model it changed and saves as method.json."""

    options: dict[str, Any] = field(default_factory=dict)  # Any: method.json's JSON values
    """The method's options, as JSON."""
    modules: dict[str, list[str]] = field(default_factory=dict)
    """Module names the method changed the base at, under the method's own key (adapter:
    `sublayers`, bitfit: `added_biases`)."""


def name_matches(name: str, pattern: str) -> bool:
    """Whether a dotted module/parameter name matches a pattern.

    A pattern matches when it equals the name or its dotted suffix (`lm_head`, `mlp.down_proj`),
    matches it as a glob (`*.mlp.*`), or fully matches it as a regular expression
    (`.*layers\\.[01]\\.mlp`).
    """
    if name == pattern or name.endswith("." + pattern):
        return True
    if fnmatch.fnmatchcase(name, pattern):
        return True
    try:
        return re.fullmatch(pattern, name) is not None
    except re.error:
        return False


def matching_modules(model: torch.nn.Module, patterns: Iterable[str], option: str,
                     ) -> dict[str, torch.nn.Module]:
    """Modules whose name matches any pattern; a pattern that matches nothing is an error."""
    found: dict[str, torch.nn.Module] = {}
    names = [name for name, _ in model.named_modules() if name]
    for pattern in patterns:
        hits = [name for name in names if name_matches(name, pattern)]
        if not hits:
            raise TunelabError(
                f"{option}: '{pattern}' matches no module of {type(model).__name__}; give a "
                f"dotted suffix, glob or regex of a module name such as {example_names(model)}")
        found.update({name: model.get_submodule(name) for name in hits})
    return found


def example_names(model: torch.nn.Module, count: int = 4) -> str:
    """A few module names of the first block, to show in error messages."""
    stacks = block_stacks(model)
    prefix = f"{stacks[0][0]}.0." if stacks else ""
    names = [n for n, _ in model.named_modules() if n.startswith(prefix) and n != prefix[:-1]]
    return ", ".join(names[:count]) or "(none)"


def block_stacks(model: torch.nn.Module) -> list[tuple[str, torch.nn.ModuleList]]:
    """The stacks of transformer blocks: the outermost `ModuleList`s of same-typed modules that
    hold parameters (`model.layers`, `transformer.h`, T5's and BART's encoder and decoder)."""
    stacks: list[tuple[str, torch.nn.ModuleList]] = []
    for name, module in model.named_modules():
        if not isinstance(module, torch.nn.ModuleList) or len(module) == 0:
            continue
        if any(name.startswith(outer + ".") for outer, _ in stacks):
            continue
        same_type = len({type(block) for block in module}) == 1
        if same_type and any(True for _ in module.parameters()):
            stacks.append((name, module))
    return stacks


def train_classification_head(model: torch.nn.Module, kind: ModelKind) -> None:
    """The task head of a classifier trains with every method, as in peft (it is fresh)."""
    for name in kind.classification_head(model):
        model.get_submodule(name).requires_grad_(True)


def remember(model: torch.nn.Module, record: MethodRecord) -> None:
    """Keep the record of how a method changed `model` on it, for `save_method`."""
    set_plain_attribute(model, RECORD_ATTRIBUTE, record)


def remembered(model: torch.nn.Module) -> MethodRecord:
    """The record `remember` kept on the model (an empty one if none was kept)."""
    record = getattr(model, RECORD_ATTRIBUTE, None)
    return record if isinstance(record, MethodRecord) else MethodRecord()


def save_method(method: str, model: torch.nn.Module, out_dir: Path) -> None:
    """Save a hand-written method's trained tensors and its remembered record."""
    record = remembered(model)
    save_weights(out_dir, trainable_tensors(model),
                 {"method": method, "options": record.options, **record.modules})


def read_method(weights_dir: Path, method: str) -> tuple[dict[str, torch.Tensor], MethodRecord]:
    """(tensors, record) that `save_method` wrote."""
    tensors, saved = read_weights(weights_dir, method)
    modules = {key: list(names) for key, names in saved.items() if key not in ("method", "options")}
    return tensors, MethodRecord(dict(saved.get("options", {})), modules)


def trainable_tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every trainable parameter by name (tied parameters once), ready for safetensors."""
    return {name: param.detach().contiguous().cpu()
            for name, param in model.named_parameters() if param.requires_grad}


def save_weights(out_dir: Path, tensors: dict[str, torch.Tensor], record: Mapping[str, object]
                 ) -> None:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    safetensors_torch.save_file(tensors, str(out_dir / WEIGHTS_FILE))
    (out_dir / RECORD_FILE).write_text(json.dumps(record, indent=1))


def read_weights(weights_dir: Path, method: str
                 ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:  # Any: method.json's JSON
    """(tensors, record) saved by `save_weights`; errors name the directory and the fix."""
    weights_dir = Path(weights_dir)
    record_path, weights_path = weights_dir / RECORD_FILE, weights_dir / WEIGHTS_FILE
    if not record_path.is_file() or not weights_path.is_file():
        raise TunelabError(f"{weights_dir}: no {RECORD_FILE} + {WEIGHTS_FILE}; "
                           f"give the weights directory of a '{method}' run")
    record = json.loads(record_path.read_text())
    if record.get("method") != method:
        raise TunelabError(f"{record_path}: saved by method '{record.get('method')}', "
                           f"not '{method}'; load it with that method")
    return safetensors_torch.load_file(str(weights_path)), record


def load_tensors(model: torch.nn.Module, tensors: dict[str, torch.Tensor], where: Path) -> None:
    """Copy saved tensors into the model; every saved name must exist in it."""
    params = dict(model.named_parameters(remove_duplicate=False))
    unknown = sorted(set(tensors) - set(params))
    if unknown:
        raise TunelabError(f"{where}: weights do not fit {type(model).__name__} (unknown "
                           f"{', '.join(unknown[:3])}); load them onto the run's base model")
    with torch.no_grad():
        for name, tensor in tensors.items():
            params[name].copy_(tensor.to(params[name].dtype))


def parameter_like(module: torch.nn.Module) -> torch.Tensor:
    """A parameter of the module: new tensors added to it follow its dtype and device."""
    for param in module.parameters():
        return param
    raise TunelabError(f"{type(module).__name__} has no parameters to take a dtype from")

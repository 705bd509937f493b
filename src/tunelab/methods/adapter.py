"""Bottleneck adapters (Houlsby et al., 2019; Pfeiffer et al., 2021), written by hand (peft has
none).

An adapter is a residual bottleneck on a sublayer's output, before the block's own residual add:

    h -> h + up(act(down(h)))      down: [hidden -> bottleneck], up: [bottleneck -> hidden]

`up` starts at zero, so the model's output is unchanged at initialisation. Houlsby puts one
after the attention sublayer and one after the feed-forward; Pfeiffer only after the
feed-forward. Adapters are child modules (`<sublayer>.bottleneck_adapter`) run by a forward hook
on the sublayer, so the base's parameter names stay intact; a tuple output (attention returns
(output, weights, ...)) gets the adapter on element 0.

Saved: only the adapter (and classification-head) tensors in weights.safetensors + method.json
with the options and the hooked sublayers (`sublayers`). No merge: the nonlinearity cannot fold
into weights.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Literal

from tunelab.config.choices import COUNT, Range
from tunelab.core.deferred import deferred, torch
from tunelab.core.errors import TunelabError
from tunelab.methods import targets
from tunelab.methods.base import freeze_all, register
from tunelab.models.kinds import ModelKind

if TYPE_CHECKING:
    from tunelab.methods import bottleneck
else:
    bottleneck = deferred("tunelab.methods.bottleneck")  # an nn.Module subclass: torch at import

OPTION = "method (adapter)"
CHILD = "bottleneck_adapter"
SUBLAYERS_KEY = "sublayers"
"""The record's key (targets.MethodRecord.modules) for the sublayers given an adapter."""

SUBLAYERS: dict[str, tuple[list[str], list[str]]] = {
    # model_type: (attention sublayers, feed-forward sublayers), as name patterns. Each is the
    # module whose output feeds the residual add, so the adapter sits where Houlsby put it.
    **dict.fromkeys(("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text",
                     "phi3", "olmo", "olmo2", "smollm3"), (["self_attn"], ["mlp"])),
    **dict.fromkeys(("gpt2", "gpt_neo"), (["attn"], ["mlp"])),
    **dict.fromkeys(("t5", "mt5"), (["SelfAttention"], ["DenseReluDense"])),
    **dict.fromkeys(("bart", "mbart", "marian"), (["self_attn"], ["fc2"])),
    # BERT's `attention.output` and `output` add the residual inside; adapt their dense layer.
    **dict.fromkeys(("bert", "roberta"), (["attention.output.dense"], [r".*layer\.\d+\.output\.dense"])),
}
NONLINEARITIES = {"relu": "ReLU", "gelu": "GELU", "silu": "SiLU"}
"""An adapter's nonlinearity option -> its torch.nn class."""


@dataclass
class AdapterOptions:
    limits: ClassVar[dict[str, Range]] = {"bottleneck": COUNT}
    """Checked as the config is read, before any model loads (as the choices below)."""
    kind: Literal["houlsby", "pfeiffer"] = "houlsby"
    """houlsby (after attention and after the feed-forward) or pfeiffer (after the feed-forward)."""
    bottleneck: int = 16
    """Width of the bottleneck (the down-projection's output size)."""
    nonlinearity: Literal["relu", "gelu", "silu"] = "relu"
    """relu, gelu or silu."""
    attention_modules: list[str] | None = None
    """Attention sublayers to adapt (houlsby), by name pattern; default per architecture."""
    feedforward_modules: list[str] | None = None
    """Feed-forward sublayers to adapt, by name pattern; default per architecture."""


def run_adapter(module: torch.nn.Module, args: tuple[object, ...], output: object
                ) -> torch.Tensor | tuple[object, ...]:
    """Forward hook: the sublayer's output through its adapter (element 0 of a tuple)."""
    adapter = module.get_submodule(CHILD)
    if isinstance(output, torch.Tensor):
        return adapter(output)
    if isinstance(output, tuple):
        return (adapter(output[0]), *output[1:])
    raise TypeError(f"{type(module).__name__} returns {type(output).__name__}; an adapter "
                    "needs a tensor or a tuple whose first element is the hidden states")


def sublayer_patterns(model: torch.nn.Module, options: AdapterOptions) -> list[str]:
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    attention, feedforward = SUBLAYERS.get(str(model_type), ([], []))
    attention = options.attention_modules or attention
    feedforward = options.feedforward_modules or feedforward
    if not feedforward or (options.kind == "houlsby" and not attention):
        raise TunelabError(f"{OPTION}: no default sublayers for model type '{model_type}'; set "
                           "attention_modules and feedforward_modules (e.g. [self_attn], [mlp])")
    return list(feedforward) + (list(attention) if options.kind == "houlsby" else [])


def hidden_size(model: torch.nn.Module, sublayer: torch.nn.Module) -> int:
    """Width of the sublayer's output: a linear layer's out_features, else the model's hidden size."""
    if isinstance(sublayer, torch.nn.Linear):
        return sublayer.out_features
    config = getattr(model, "config", None)
    if config is None:
        raise TunelabError(f"{OPTION}: the model has no config to read its hidden size from; "
                           "name linear sublayers in attention_modules and feedforward_modules")
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    return int(text_config.hidden_size)


def insert_adapters(model: torch.nn.Module, names: list[str], options: AdapterOptions) -> None:
    for name in names:
        sublayer = model.get_submodule(name)
        like = targets.parameter_like(sublayer)
        activation = getattr(torch.nn, NONLINEARITIES[options.nonlinearity])()
        adapter = bottleneck.BottleneckAdapter(hidden_size(model, sublayer), options.bottleneck,
                                               activation)
        sublayer.add_module(CHILD, adapter.to(dtype=like.dtype, device=like.device))
        sublayer.register_forward_hook(run_adapter)


@dataclass
class AdapterMethod:
    name: str = "adapter"
    options_type: type[AdapterOptions] = AdapterOptions
    weights_dir: str = "adapter"
    sweep_lr: float = 1e-3
    sweep_options: dict[str, object] = field(default_factory=dict)
    supports_packing: bool = True
    supports_checkpointing: bool = True
    can_merge: bool = False  # a nonlinear bottleneck does not fold into weights

    def apply(self, model: torch.nn.Module, options: AdapterOptions, kind: ModelKind
              ) -> torch.nn.Module:
        if options.bottleneck < 1:
            raise TunelabError(f"{OPTION}.bottleneck: must be at least 1")
        patterns = sublayer_patterns(model, options)
        names = list(targets.matching_modules(model, patterns, f"{OPTION} sublayers"))
        freeze_all(model)
        insert_adapters(model, names, options)
        targets.train_classification_head(model, kind)
        targets.remember(model, targets.MethodRecord(asdict(options), {SUBLAYERS_KEY: names}))
        return model

    def save(self, model: torch.nn.Module, out_dir: Path) -> None:
        targets.save_method(self.name, model, out_dir)

    def load(self, base: torch.nn.Module, weights_dir: Path) -> torch.nn.Module:
        tensors, record = targets.read_method(weights_dir, self.name)
        insert_adapters(base, record.modules.get(SUBLAYERS_KEY, []), AdapterOptions(**record.options))
        targets.remember(base, record)
        targets.load_tensors(base, tensors, weights_dir)
        return base

    def merge(self, model: torch.nn.Module) -> torch.nn.Module | None:
        return None


METHOD = register(AdapterMethod())

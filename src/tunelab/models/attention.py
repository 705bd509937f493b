"""Attention per packed example: a packed micro-batch in as few rows as fit, almost no padding.

A packed row (data.packing) lays examples end to end; their position ids restart at each one.
Through plain sdpa, transformers turns those positions into a block-diagonal mask and the kernel
computes every (query, key) pair of the row, masked ones included, so rows are kept short
(data.max_length) and padded to the longest; attended per example, rows can be longer
(`ROW_TOKENS`) and so fewer and less padded. Where a model takes its attention function from
transformers' registry (`_supports_attention_backend`) and runs sdpa, tunelab registers
`sdpa_documents` in its place for training: given the examples' boundaries in the row
(`cu_seq_lens_q`, the keyword transformers' own flash-attention kernels read for packed
batches) it runs sdpa's causal kernel on each example alone (the same numbers, only the pairs
the mask would keep), and is plain sdpa without them (generation, padded batches, scoring).
The collator then packs a micro-batch into rows of up to `ROW_TOKENS` (`data.tokenize.Packed`
with `per_example`, `CausalKind.pack`): the quickstart's whole micro-batch is one row.

The implementation is switched on for a training run's loop only (`attends_per_example`), and
transformers never writes it into a saved config. Without it, a one-row packed batch is
still scored right, by sdpa's block-diagonal mask.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from tunelab.core.deferred import deferred, torch, transformers

if TYPE_CHECKING:
    from transformers import PretrainedConfig, masking_utils
    from transformers.integrations import sdpa_attention
else:
    masking_utils = deferred("transformers.masking_utils")
    sdpa_attention = deferred("transformers.integrations.sdpa_attention")

NAME = "sdpa_documents"
"""The attention implementation's name in transformers' registries."""

BOUNDS = "cu_seq_lens_q"
"""The batch key holding where each example (and each row's padding) starts in the batch's
rows laid end to end, and where the last ends, int32 (flash-attention's varlen layout)."""

ROW_TOKENS = 2048
"""Rows attended per example hold up to this many tokens (or data.max_length, if longer):
transformers still builds sdpa's (row x row) mask from the position ids for every forward, so
rows are not unbounded."""
_PACKED_KEYS = (BOUNDS, "cu_seq_lens_k", "max_length_q", "max_length_k")

FLOAT32_BELOW = 512
"""On a CPU, an example shorter than this that sdpa would attend in bf16 (train.precision bf16,
under autocast) is attended in float32 and its output cast back: torch's CPU flash-attention
kernel runs short bf16 sequences slower than float32 ones, forward and backward together (bf16's
time over float32's: 2.4x at 64 tokens, 1.2x at 256, 0.94x at 512, 0.81x at 1,024 on an
AVX-512 CPU with native bf16: benchmarks/attention_dtype.py). The loss stays float32's to
bf16's precision either way (the matrix products set it: on news text both differ from
float32's by 0.0002-0.005, `--losses`)."""


def documents_attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor,
                        value: torch.Tensor, attention_mask: torch.Tensor | None,
                        **kwargs: Any) -> tuple[torch.Tensor, None]:  # Any: transformers' attention keywords
    """sdpa on each example of the row alone (causal within it), or plain sdpa."""
    sdpa_attention_forward = sdpa_attention.sdpa_attention_forward
    bounds = kwargs.get(BOUNDS)
    rest = {k: v for k, v in kwargs.items() if k not in _PACKED_KEYS}
    if bounds is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, **rest)
    if query.shape[2] != key.shape[2]:
        raise ValueError(f"{NAME}: packed rows without a cache expected, got queries "
                         f"{tuple(query.shape)} and keys {tuple(key.shape)}")
    width = query.shape[2]
    rows: list[list[torch.Tensor]] = [[] for _ in range(query.shape[0])]
    for a, b in itertools.pairwise(bounds.tolist()):
        if b > a:  # a segment never crosses a row
            r, start = divmod(a, width)
            end = b - r * width
            rows[r].append(_example(module, query[r:r + 1, :, start:end],
                                    key[r:r + 1, :, start:end], value[r:r + 1, :, start:end],
                                    rest))
    return torch.cat([torch.cat(parts, dim=1) for parts in rows], dim=0), None


def _example(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor,
             value: torch.Tensor, rest: dict[str, Any]) -> torch.Tensor:  # Any: as above
    """sdpa over one example, causal: in float32 where it is short and bf16 on a CPU
    (`FLOAT32_BELOW`)."""
    forward = sdpa_attention.sdpa_attention_forward
    if query.device.type == "cpu" and query.shape[2] < FLOAT32_BELOW and (
            half := _bf16(query, key, value)) is not None:
        with torch.autocast("cpu", enabled=False):
            out = forward(module, query.float(), key.float(), value.float(), None, **rest)[0]
        return out.to(half)
    return forward(module, query, key, value, None, **rest)[0]


def _bf16(*tensors: torch.Tensor) -> torch.dtype | None:
    """bf16 where sdpa would run these in bf16 on a CPU: under bf16 autocast (its rotary
    embedding leaves queries and keys float32, autocast casts them down for sdpa), or bf16
    tensors; else None (fp16, the other 16-bit type, does not train on a CPU)."""
    if torch.is_autocast_enabled("cpu"):
        return torch.bfloat16 if torch.get_autocast_dtype("cpu") == torch.bfloat16 else None
    return torch.bfloat16 if any(t.dtype == torch.bfloat16 for t in tensors) else None


def _register() -> None:
    if NAME not in transformers.AttentionInterface._global_mapping:
        transformers.AttentionInterface.register(NAME, documents_attention)
        # padded batches and generation: sdpa's own masks
        masking_utils.AttentionMaskInterface.register(NAME, masking_utils.sdpa_mask)


def _config(model: torch.nn.Module) -> PretrainedConfig | None:
    """The transformers config of the model, through DDP's and peft's wrappers (one object
    that every layer reads its attention implementation from)."""
    inner = getattr(model, "module", model)
    return getattr(inner, "config", None)


def takes_per_example(model: torch.nn.Module) -> bool:
    """Whether the model's attention can run per example: `attention_implementation` is sdpa
    (or already this one)."""
    return attention_implementation(model) in ("sdpa", NAME)


def attention_implementation(model: torch.nn.Module) -> str | None:
    """The attention implementation the model's layers read from transformers' registry
    (through DDP's and peft's wrappers), where every layer attends causally to the whole
    sequence through it (no sliding window, no soft-capping) in a model of one config (a
    composite model's text layers keep theirs in a sub-config); None for any other model (one
    that builds its own position bias from a 2-D mask, as ALiBi models do)."""
    inner = getattr(model, "module", model)
    get_base = getattr(inner, "get_base_model", None)
    base = get_base() if callable(get_base) else inner
    config = getattr(base, "config", None)
    if (config is None or not getattr(base, "_supports_attention_backend", False)
            or getattr(config, "sub_configs", None)  # composite (vision + text): as loaded
            or not attends_whole_sequence(config)):
        return None
    return getattr(config, "_attn_implementation", None)


def attends_whole_sequence(config: PretrainedConfig) -> bool:
    """Whether every layer of a model of `config` attends causally to the whole sequence: no
    sliding window (which a plain causal or a caller's mask would not apply) and no
    soft-capped attention logits."""
    return (getattr(config, "sliding_window", None) is None
            and not getattr(config, "attn_logit_softcapping", None)
            and set(getattr(config, "layer_types", None) or ["full_attention"]) == {"full_attention"})


@contextmanager
def attends_per_example(model: torch.nn.Module, wanted: bool) -> Iterator[None]:
    """The model's attention as `documents_attention` while the block runs (when `wanted`;
    `takes_per_example` said it can), then as it was. Without it a one-row packed batch is still right (sdpa's block-diagonal
    mask from the restarted position ids), only slower."""
    config = _config(model)
    if not wanted or config is None:
        yield
        return
    _register()
    before = config._attn_implementation
    config._attn_implementation = NAME
    try:
        yield
    finally:
        config._attn_implementation = before

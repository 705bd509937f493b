"""What a model computes, as a short digest: the key under which its evaluation results are
kept (eval/result_cache.py), so a cached answer can only come from the same function.

The digest covers every parameter and buffer (names, dtypes, shapes, devices and bytes), the
model's config and generation config (what the tensors do not say: a norm's epsilon, a
repetition penalty `generate` applies), and the state a peft wrapper keeps outside its tensors:
which adapters are active, whether adapters are disabled or merged, and each LoRA layer's
scaling. Two adapters on one base, the same adapter with its layers disabled, or a run's
weights after one more optimizer step all give different digests.

Hashing 135M float32 parameters takes about half a second, so each tensor's digest is kept with
the tensor's version counter and storage address: an in-place update (an optimizer step,
`load_state_dict`) bumps the version, a replaced `.data` moves the storage, and either
recomputes that tensor's digest. After training a LoRA run only the adapter's tensors are
hashed again. A write through `.data` in place (`weight.data += delta`, as peft merges an
adapter) bumps no counter: whatever writes weights that way calls `forget_digests` after it
(`methods/peft_backed.py: merge` does).
"""

from __future__ import annotations

import hashlib
import json
from itertools import chain

from tunelab.core.deferred import torch  # imported when a model is fingerprinted

SETTINGS_NOT_COMPUTED = frozenset({"transformers_version", "use_cache", "dtype", "torch_dtype",
                                   "output_attentions", "output_hidden_states", "return_dict"})
"""Config keys that change no output (the tensors carry the dtype)."""

DIGEST_ATTRIBUTE = "_tunelab_digest"
"""Where a tensor keeps its last digest and the state it was taken in (it lives and dies with
the tensor; tensors compare element-wise, so they cannot key a dictionary)."""


def _state(tensor: torch.Tensor) -> tuple[object, ...]:
    """What must be unchanged for a tensor's remembered digest to hold."""
    return (tensor._version, tensor.data_ptr(), tuple(tensor.shape), tensor.dtype,
            str(tensor.device))


def tensor_digest(tensor: torch.Tensor) -> bytes:
    """The digest of a tensor's dtype, shape and bytes (remembered until it changes)."""
    state = _state(tensor)
    known = getattr(tensor, DIGEST_ATTRIBUTE, None)
    if known is not None and known[0] == state:
        return known[1]
    flat = tensor.detach().to("cpu").contiguous().reshape(-1)
    digest = hashlib.blake2b(flat.view(torch.uint8).numpy().data if flat.numel() else b"",
                             digest_size=16)
    digest.update(repr(state[2:4]).encode())
    setattr(tensor, DIGEST_ATTRIBUTE, (state, digest.digest()))
    return digest.digest()


def forget_digests(model: torch.nn.Module) -> None:
    """Drop every remembered tensor digest of `model`: the next fingerprint hashes each tensor
    again (after an in-place write through `.data`, which no version counter sees)."""
    for tensor in chain(model.parameters(), model.buffers()):
        if hasattr(tensor, DIGEST_ATTRIBUTE):
            delattr(tensor, DIGEST_ATTRIBUTE)


def _adapter_state(model: torch.nn.Module) -> list[tuple[object, ...]]:
    """The peft state outside the tensors: for each tuner layer, its active adapters, whether
    adapters are disabled or merged, and its scaling (LoRA's alpha / r)."""
    state: list[tuple[object, ...]] = []
    for name, module in model.named_modules():
        active = getattr(module, "active_adapters", None)
        if active is None or callable(active):  # not a peft model or tuner layer (a plain
            continue  # transformers model has a method of that name)
        scaling = getattr(module, "scaling", None)
        state.append((name, repr(active), repr(getattr(module, "disable_adapters", None)),
                      repr(getattr(module, "merged_adapters", None)),
                      repr(sorted(scaling.items())) if isinstance(scaling, dict) else ""))
    return state


def _settings(config: object) -> str:
    """A transformers config's settings as JSON (a model's: norms' epsilon, rope, ...; a
    generation config's: repetition penalty, ...), without what names or dates it (its
    folder, the transformers version) or what only training switches (`use_cache`)."""
    to_dict = getattr(config, "to_dict", None)
    if to_dict is None:
        return ""
    settings = {key: value for key, value in to_dict().items()
                if not key.startswith("_") and key not in SETTINGS_NOT_COMPUTED}
    return json.dumps(settings, sort_keys=True, default=repr)


def model_fingerprint(model: torch.nn.Module) -> str:
    """A hex digest of everything that decides what `model` computes (see module doc)."""
    digest = hashlib.blake2b(digest_size=20)
    digest.update(type(model).__name__.encode())
    config = getattr(model, "config", None)
    digest.update(repr(getattr(config, "_attn_implementation", None)).encode())
    digest.update(_settings(config).encode())
    digest.update(_settings(getattr(model, "generation_config", None)).encode())
    for name, tensor in chain(model.named_parameters(), model.named_buffers()):
        digest.update(name.encode())
        digest.update(tensor_digest(tensor))
    digest.update(repr(_adapter_state(model)).encode())
    return digest.hexdigest()

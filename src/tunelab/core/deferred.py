"""Slow libraries, bound at a module's top and imported when first used.

torch and transformers take 6 s to import on the 2-core machine, scikit-learn and cleanlab 3 s,
scipy.stats, rouge-score (nltk) and alt-profanity-check 1.5 to 2.5 s each, datasketch 0.7 s.
A command that loads
no model (`tunelab tasks list`, a bad config key or data row of `tunelab train`) answers before
any of them loads, so `import tunelab.api` imports none of them (tests/test_startup.py).

A module that uses one of them imports it from here: `from tunelab.core.deferred import torch`
reads as `import torch` (mypy sees the real module), and torch is imported at the first
attribute read (`torch.tensor(...)`), which is where a tensor is made anyway. One of tunelab's
own modules that uses tensors as it is imported (a `@torch.no_grad()` on a function, an
`nn.Module` subclass) or imports a slow library itself (data/checks/label_errors.py: cleanlab
and scikit-learn) is bound the same way by the module that needs it, beside its TYPE_CHECKING
import:

    if TYPE_CHECKING:
        from tunelab.eval import generation
    else:
        generation = deferred("tunelab.eval.generation")

This is `lazy import` (PEP 810, Python 3.15) by hand. Nothing module-level may read a deferred
module (a base class, a decorator, a default): that would import it after all, which
tests/test_startup.py notices.
"""

from __future__ import annotations

import importlib
import sys
from types import ModuleType
from typing import TYPE_CHECKING

__all__ = ["deferred", "DeferredModule", "torch", "F", "dist", "transformers",
           "pytorch_utils", "safetensors_torch", "stats", "rouge_scorer", "profanity_check",
           "datasketch"]


class DeferredModule(ModuleType):
    """Stands for the module of its name; the first attribute read imports it, and every read
    is the module's own attribute (so a test's monkeypatch of the module is seen here too)."""

    def __getattr__(self, attribute: str) -> object:
        module = sys.modules.get(self.__name__) or importlib.import_module(self.__name__)
        return getattr(module, attribute)

    def __repr__(self) -> str:
        loaded = "imported" if self.__name__ in sys.modules else "not imported yet"
        return f"<deferred module {self.__name__!r} ({loaded})>"


def deferred(name: str) -> ModuleType:
    """The module `name`, imported when an attribute of it is first read."""
    return DeferredModule(name)


if TYPE_CHECKING:
    import datasketch
    import profanity_check
    import safetensors.torch as safetensors_torch
    import torch
    import torch.distributed as dist
    import torch.nn.functional as F
    import transformers
    import transformers.pytorch_utils as pytorch_utils
    from rouge_score import rouge_scorer
    from scipy import stats
else:
    torch = deferred("torch")
    F = deferred("torch.nn.functional")
    dist = deferred("torch.distributed")
    transformers = deferred("transformers")
    pytorch_utils = deferred("transformers.pytorch_utils")
    safetensors_torch = deferred("safetensors.torch")
    stats = deferred("scipy.stats")
    rouge_scorer = deferred("rouge_score.rouge_scorer")
    profanity_check = deferred("profanity_check")
    datasketch = deferred("datasketch")

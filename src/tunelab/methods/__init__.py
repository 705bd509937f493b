"""Fine-tuning methods: one file each, registered by name.

A method turns a loaded base model into one whose trainable parameters are exactly the
method's, saves and loads those parameters, and merges them into the base where it can.
"""

from tunelab.methods.base import METHODS, Method, get_method, trainable_parameters

# Importing the modules registers the methods.
from tunelab.methods import (  # noqa: E402,F401  isort: skip
    adapter, bitfit, freeze, full, ia3, lora, prefix, prompt,
)

__all__ = ["METHODS", "Method", "get_method", "trainable_parameters"]

"""Fine-tuning methods: one file each, registered by name.

A method turns a loaded base model into one whose trainable parameters are exactly the
method's, saves and loads those parameters, and merges them into the base where it can.
"""

from tunelab.methods.base import METHODS, Method, get_method, trainable_parameters

# Importing the modules registers the methods.
from tunelab.methods import full, lora  # noqa: E402,F401  isort: skip

__all__ = ["METHODS", "Method", "get_method", "trainable_parameters"]

"""Resolve a model spec (built-in alias, local directory, hub id) into a model and tokenizer."""

from tunelab.models.loader import LoadedModel, load_model, resolve_model_dir

__all__ = ["LoadedModel", "load_model", "resolve_model_dir"]

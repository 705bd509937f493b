"""Resolve a model spec (built-in alias, local directory, hub id) into a model and tokenizer,
loaded as its kind (models/kinds.py: causal, seq2seq, classifier) says."""

from tunelab.models.kinds import LoadedModel, ModelKind, get_kind
from tunelab.models.loader import load_model, resolve_model_dir

__all__ = ["LoadedModel", "ModelKind", "get_kind", "load_model", "resolve_model_dir"]

"""Data: sources -> records -> splits -> templates -> tokens with completion-only labels."""

from tunelab.data.records import Record
from tunelab.data.splits import Splits, load_splits
from tunelab.data.templates import Rendered, Template, get_template
from tunelab.data.tokenize import TokenizedExample, encode_prompt, tokenize_example

__all__ = [
    "Record",
    "Rendered",
    "Splits",
    "Template",
    "TokenizedExample",
    "encode_prompt",
    "get_template",
    "load_splits",
    "tokenize_example",
]

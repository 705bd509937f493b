"""Data: sources -> records -> splits -> templates -> tokens with completion-only labels."""

from tunelab.data.records import Record
from tunelab.data.sources import SourceScheme, load_splits, read_source, source_scheme
from tunelab.data.splits import Splits, TaskData
from tunelab.data.templates import Rendered, Template, TemplateKind, get_template, get_template_kind
from tunelab.data.tokenize import TokenizedExample, encode_prompt, tokenize_example

__all__ = [
    "Record",
    "Rendered",
    "SourceScheme",
    "Splits",
    "TaskData",
    "Template",
    "TemplateKind",
    "TokenizedExample",
    "encode_prompt",
    "get_template",
    "get_template_kind",
    "load_splits",
    "read_source",
    "source_scheme",
    "tokenize_example",
]

"""Records tokenised for training, as the model kind says (models/kinds.py).

A record and its template become a `RecordText`, which the kind reads: causal models and
seq2seq models the rendered prompt and completion (completion-only labels), a classifier the
text a classification head reads and the record's output as its label. A raw document (a
template whose kind `trains_documents`: text) becomes the kind's document windows instead,
labels on every token (`record_examples`). The token-level
helpers live below the data layer (models/kinds.py, models/tokens.py) and are re-exported here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

from tunelab.config import DataConfig
from tunelab.data.records import Record
from tunelab.data.templates import Rendered, Template, classifier_text, get_template_kind
from tunelab.models import attention
from tunelab.models.kinds import (
    ModelKind,
    TokenizedExample,
    tokenize_classification,
    tokenize_example,
    tokenize_seq2seq,
)
from tunelab.models.tokens import IGNORE_INDEX, encode_completion, encode_prompt, label_index

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedTokenizerBase

__all__ = ["IGNORE_INDEX", "Collator", "Packed", "Padded", "RecordText", "TokenizedExample", "collate", "encode_completion",
           "encode_prompt", "label_index", "record_examples", "tokenize_classification",
           "tokenize_example", "tokenize_record", "tokenize_records", "tokenize_seq2seq"]


@dataclass
class RecordText:
    """A record as a model kind reads it (models/tokens.py `TrainingText`). The template is
    rendered only when the kind reads the prompt or completion."""

    record: Record
    template: Template

    @cached_property
    def rendered(self) -> Rendered:
        return self.template.render(self.record)

    @property
    def prompt(self) -> str:
        return self.rendered.prompt

    @property
    def completion(self) -> str:
        return self.rendered.completion

    @property
    def special_in_text(self) -> bool:
        return self.rendered.special_in_text

    @property
    def input_text(self) -> str:
        return classifier_text(self.record, self.template)

    @property
    def answer(self) -> str:
        record = self.record
        return record.messages[-1]["content"] if record.messages else record.output

    @property
    def origin(self) -> str:
        return self.record.origin


def record_examples(record: Record, template: Template, tokenizer: PreTrainedTokenizerBase,
                    kind: ModelKind, max_length: int, labels: Sequence[str] | None = None
                    ) -> list[TokenizedExample]:
    """A record as the model kind trains on it: one example (a classifier's label is the index
    of the record's output in `labels`, eval.labels), or a raw document's windows of at most
    max_length tokens when the template's kind says its records are documents."""
    text = RecordText(record, template)
    if template.kind.trains_documents:
        return kind.tokenize_document(text.completion, tokenizer, max_length)
    return [kind.tokenize(text, tokenizer, max_length, labels)]


def tokenize_records(records: Sequence[Record], template: Template,
                     tokenizer: PreTrainedTokenizerBase, kind: ModelKind, max_length: int,
                     labels: Sequence[str] | None = None) -> list[TokenizedExample]:
    """Every record's training examples, in order (`record_examples`)."""
    return [example for record in records
            for example in record_examples(record, template, tokenizer, kind, max_length, labels)]


def tokenize_record(record: Record, template: Template, tokenizer: PreTrainedTokenizerBase,
                    kind: ModelKind, max_length: int, labels: Sequence[str] | None = None
                    ) -> TokenizedExample:
    """A record's (first) training example, as `tunelab data inspect` shows one."""
    return record_examples(record, template, tokenizer, kind, max_length, labels)[0]


def collate(batch: Sequence[TokenizedExample], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a batch for training as its examples' kind collates it: ids with pad_id,
    labels with -100, mask with 0 (seq2seq labels padded to the longest label sequence,
    classifier labels one class index per example)."""
    kinds = {ex.kind.name for ex in batch}
    if len(kinds) != 1:
        raise ValueError(f"a batch mixes example kinds {sorted(kinds)}")
    return batch[0].kind.collate(batch, pad_id)


class Padded:
    """Micro-batches as right-padded rows, one example each (every model kind)."""

    per_example = False
    """Its rows hold one example each: the model's attention as loaded does."""

    def __call__(self, examples: Sequence[TokenizedExample], pad_id: int) -> dict[str, torch.Tensor]:
        return collate(examples, pad_id)


@dataclass(frozen=True)
class Packed:
    """Micro-batches packed: examples end to end in rows of up to `row_length` tokens, the
    attention block-diagonal (data.packing; the kind packs, models/kinds.py `pack`); for a
    model that attends per example, rows of up to `attention.ROW_TOKENS` (the quickstart's
    whole micro-batch in one row)."""

    row_length: int
    per_example: bool = False
    """The model runs each example's attention alone (models/attention.py): longer rows."""

    def __call__(self, examples: Sequence[TokenizedExample], pad_id: int) -> dict[str, torch.Tensor]:
        kinds = {ex.kind.name for ex in examples}
        if len(kinds) != 1:
            raise ValueError(f"a batch mixes example kinds {sorted(kinds)}")
        if self.per_example:  # longer rows: fewer, less padded, no masked pairs computed
            return examples[0].kind.pack(examples, pad_id,
                                         max(self.row_length, attention.ROW_TOKENS), True)
        return examples[0].kind.pack(examples, pad_id, self.row_length)


Collator = Padded | Packed


def collator(data: DataConfig, per_example: bool = False) -> Collator:
    """How a task's micro-batches are collated, as its data section says (data.packing unset:
    the template kind's default; `plan_run` settles it first where the method cannot pack);
    `per_example`: the model can attend per example (packed rows of up to
    `attention.ROW_TOKENS`)."""
    packing = data.packing
    if packing is None:
        packing = get_template_kind(data.template).packs_by_default
    return Packed(data.max_length, per_example) if packing else Padded()

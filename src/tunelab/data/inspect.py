"""`tunelab data inspect`: templated examples with the trained tokens marked, and split stats."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tunelab.config import DataConfig, RunConfig
from tunelab.data.checks import CheckOptions, check_sets, split_sets
from tunelab.data.records import Record
from tunelab.data.sources import load_splits
from tunelab.data.splits import Splits
from tunelab.data.templates import get_template
from tunelab.data.tokenize import TokenizedExample, tokenize_record, tokenize_records
from tunelab.data.training_tasks import augmented, training_tasks
from tunelab.models.kinds import CAUSAL, ModelKind, get_kind
from tunelab.models.loader import load_tokenizer

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


def inspect_data(config: RunConfig, count: int = 3, split: str = "train") -> str:
    """A printable report: split sizes, token statistics, and `count` marked examples; for a
    multi-task run (`tasks:` or a built-in mixture) one such section per task."""
    tokenizer = load_tokenizer(config.model)
    if not config.is_mixture:
        return _inspect_split(config.data, tokenizer, count, split, get_kind(config.model.kind),
                              config.eval.labels)
    sections = []
    for task in training_tasks(config):
        role = "held out: evaluated, never trained" if task.held_out else \
            f"loss weight {task.loss_weight:g}"
        sections.append(f"=== task {task.name} ({role}) ===\n"
                        + _inspect_split(task.data, tokenizer, count, split))
    return "\n\n".join(sections)


def _inspect_split(data: DataConfig, tokenizer: PreTrainedTokenizerBase, count: int, split: str,
                   kind: ModelKind = CAUSAL, labels: list[str] | None = None) -> str:
    splits = load_splits(data)
    template = get_template(data, tokenizer)

    def tokenize(record: Record) -> TokenizedExample:
        return tokenize_record(record, template, tokenizer, kind, data.max_length, labels)

    lines = [f"model kind: {kind.name}   template: {data.template}   max_length: {data.max_length}",
             kind.trained_view, overlap_line(splits, data.near_duplicates), ""]
    shown = {name: splits.get(name) for name in ("train", "validation", "test")}
    shown["train"] = augmented(shown["train"], data.augment)  # as training will see them
    for name, records in shown.items():
        examples = tokenize_records(records, template, tokenizer, kind, data.max_length, labels)
        if not examples:
            lines.append(f"{name:>10}: 0 examples")
            continue
        tokens = sum(len(e.input_ids) for e in examples)
        truncated = sum(e.truncated for e in examples)
        lines.append(
            f"{name:>10}: {len(examples)} examples, {tokens / len(examples):.1f} tokens each, "
            f"{kind.split_share(examples, labels)}, {truncated} truncated")
    records = (shown[split] if split in shown else splits.get(split))[:count]
    for i, record in enumerate(records):
        example = tokenize(record)
        lines += ["", f"--- {split} example {i} ({record.origin}) ---"]
        lines += kind.example_view(example, tokenizer, labels, first=i == 0)
    return "\n".join(lines)


def overlap_line(splits: Splits, threshold: float) -> str:
    """One line of what `tunelab data check` would find: repeats, and items of the validation
    and test splits that are also in train (exact, near duplicate or a shared 13-gram)."""
    check = check_sets(split_sets(splits), CheckOptions(threshold=threshold, overlap_only=True))
    leaks = ", ".join(f"{c.total} {c.later.name} items in {c.earlier.name}" for c in check.leaks)
    leaks = leaks or "no test or validation item in train"
    repeats = sum(check.duplicates.values())
    return (f"data check: {repeats} duplicate examples, {leaks}, {len(check.conflicts)} inputs "
            "with conflicting outputs (tunelab data check: the details)")

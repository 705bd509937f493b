"""`tunelab data inspect`: templated examples with the trained tokens marked, and split stats."""

from __future__ import annotations

from typing import Any

from tunelab.config import DataConfig, RunConfig
from tunelab.data.splits import load_splits
from tunelab.data.templates import get_template
from tunelab.data.tokenize import IGNORE_INDEX, TokenizedExample, tokenize_record
from tunelab.data.training_tasks import training_tasks

OPEN, CLOSE = "\u27e6", "\u27e7"  # ⟦ trained tokens ⟧


def mark_trained(example: TokenizedExample, tokenizer: Any) -> str:
    """The example's text with each run of trained (label != -100) tokens wrapped in ⟦ ⟧."""
    out, run, trained = [], [], None
    for token, label in zip(example.input_ids, example.labels, strict=True):
        is_trained = label != IGNORE_INDEX
        if trained is not None and is_trained != trained:
            out.append(_span(run, trained, tokenizer))
            run = []
        run.append(token)
        trained = is_trained
    if run:
        out.append(_span(run, bool(trained), tokenizer))
    return "".join(out)


def _span(tokens: list[int], trained: bool, tokenizer: Any) -> str:
    text = tokenizer.decode(tokens, skip_special_tokens=False)
    return f"{OPEN}{text}{CLOSE}" if trained else text


def boundary_table(example: TokenizedExample, tokenizer: Any, before: int = 4) -> str:
    """Token-level view around the prompt/completion boundary: position, id, token, label."""
    start = max(0, example.prompt_length - before)
    lines = ["  pos     id  label  token"]
    for pos in range(start, len(example.input_ids)):
        token = example.input_ids[pos]
        label = example.labels[pos]
        shown = "-100" if label == IGNORE_INDEX else "train"
        lines.append(f"  {pos:>3} {token:>6}  {shown:>5}  {tokenizer.decode([token])!r}")
    return "\n".join(lines)


def inspect_data(config: RunConfig, count: int = 3, split: str = "train") -> str:
    """A printable report: split sizes, token statistics, and `count` marked examples; for a
    multi-task run (`tasks:` or a built-in mixture) one such section per task."""
    from tunelab.models.loader import load_tokenizer

    tokenizer = load_tokenizer(config.model)
    if not config.is_mixture:
        return _inspect_split(config.data, tokenizer, count, split, config.model.kind,
                              config.eval.labels)
    sections = []
    for task in training_tasks(config):
        role = "held out: evaluated, never trained" if task.held_out else \
            f"loss weight {task.loss_weight:g}"
        sections.append(f"=== task {task.name} ({role}) ===\n"
                        + _inspect_split(task.data, tokenizer, count, split))
    return "\n\n".join(sections)


def _inspect_split(data: DataConfig, tokenizer: Any, count: int, split: str,
                   kind: str = "causal", labels: list[str] | None = None) -> str:
    splits = load_splits(data)
    template = get_template(data, tokenizer)

    def tokenize(record: Any) -> TokenizedExample:
        return tokenize_record(record, template, tokenizer, kind, data.max_length, labels)

    lines = [f"model kind: {kind}   template: {data.template}   max_length: {data.max_length}",
             {"causal": "trained tokens are shown between ⟦ and ⟧",
              "seq2seq": "the encoder reads the input; the decoder is trained on ⟦ the target ⟧",
              "classifier": "the encoder reads the input; the head is trained on the label"}[kind],
             ""]
    for name in ("train", "validation", "test"):
        examples = [tokenize(r) for r in splits.get(name)]
        if not examples:
            lines.append(f"{name:>10}: 0 examples")
            continue
        tokens = sum(len(e.input_ids) for e in examples)
        truncated = sum(e.truncated for e in examples)
        if kind == "causal":
            trained = sum(sum(label != IGNORE_INDEX for label in e.labels) for e in examples)
            share = f"{100 * trained / tokens:.1f}% trained"
        elif kind == "seq2seq":
            share = f"{sum(len(e.labels) for e in examples) / len(examples):.1f} target tokens each"
        else:
            counts = [sum(e.labels[0] == i for e in examples) for i in range(len(labels or []))]
            share = "labels " + ", ".join(f"{n} {label}" for n, label in zip(counts, labels or [],
                                                                             strict=True))
        lines.append(
            f"{name:>10}: {len(examples)} examples, {tokens / len(examples):.1f} tokens each, "
            f"{share}, {truncated} truncated")
    records = splits.get(split)[:count]
    for i, record in enumerate(records):
        example = tokenize(record)
        lines += ["", f"--- {split} example {i} ({record.origin}) ---"]
        if kind == "seq2seq":
            lines += ["encoder: " + tokenizer.decode(example.input_ids, skip_special_tokens=False),
                      f"decoder: {OPEN}{tokenizer.decode(example.labels, skip_special_tokens=False)}"
                      f"{CLOSE}"]
            continue
        if kind == "classifier":
            lines += ["encoder: " + tokenizer.decode(example.input_ids, skip_special_tokens=False),
                      f"label: {example.labels[0]} ({(labels or [])[example.labels[0]]})"]
            continue
        lines.append(mark_trained(example, tokenizer))
        if i == 0:
            lines += ["", "token view at the prompt/completion boundary:",
                      boundary_table(example, tokenizer)]
    return "\n".join(lines)

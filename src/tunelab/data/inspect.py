"""`tunelab data inspect`: templated examples with the trained tokens marked, and split stats."""

from __future__ import annotations

from typing import Any

from tunelab.config import RunConfig
from tunelab.data.splits import load_splits
from tunelab.data.templates import get_template
from tunelab.data.tokenize import IGNORE_INDEX, TokenizedExample, tokenize_example

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
    """A printable report: split sizes, token statistics, and `count` marked examples."""
    from tunelab.models.loader import load_tokenizer

    tokenizer = load_tokenizer(config.model)
    splits = load_splits(config.data)
    template = get_template(config.data, tokenizer)
    lines = [f"template: {config.data.template}   max_length: {config.data.max_length}",
             "trained tokens are shown between ⟦ and ⟧", ""]
    for name in ("train", "validation", "test"):
        examples = [tokenize_example(template.render(r), tokenizer, config.data.max_length)
                    for r in splits.get(name)]
        if not examples:
            lines.append(f"{name:>10}: 0 examples")
            continue
        tokens = sum(len(e.input_ids) for e in examples)
        trained = sum(sum(label != IGNORE_INDEX for label in e.labels) for e in examples)
        truncated = sum(e.truncated for e in examples)
        lines.append(
            f"{name:>10}: {len(examples)} examples, {tokens / len(examples):.1f} tokens each, "
            f"{100 * trained / tokens:.1f}% trained, {truncated} truncated")
    records = splits.get(split)[:count]
    for i, record in enumerate(records):
        example = tokenize_example(template.render(record), tokenizer, config.data.max_length)
        lines += ["", f"--- {split} example {i} ({record.origin}) ---", mark_trained(example, tokenizer)]
        if i == 0:
            lines += ["", "token view at the prompt/completion boundary:",
                      boundary_table(example, tokenizer)]
    return "\n".join(lines)

"""Token-level pieces every model kind shares.

The label that is not trained (-100); the prompt and completion ids exactly as training and
generation see them; a label text's class index; the marked views `tunelab data inspect`
prints. The texts come from the data layer (a rendered template, a record), which the models
layer may not import, so they are described here as protocols: `data.templates.Rendered` is a
`PromptText`, `data.tokenize.RecordText` a `TrainingText`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol, cast

from tunelab.core.errors import TunelabError
from tunelab.core.labels import normalize_label

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedTokenizerBase

IGNORE_INDEX = -100
"""The label of a position that is not trained (the loss ignores it)."""
OPEN, CLOSE = "\u27e6", "\u27e7"  # ⟦ trained tokens ⟧


class PromptText(Protocol):
    """A prompt and the completion trained after it."""

    @property
    def prompt(self) -> str: ...

    @property
    def completion(self) -> str: ...

    @property
    def special_in_text(self) -> bool:
        """True when the text already holds the model's special tokens (chat templates)."""
        ...


class TrainingText(PromptText, Protocol):
    """Everything any model kind tokenises one training example from. Each kind reads only
    what it needs (a classifier never renders the prompt template), so an implementation may
    compute the fields lazily."""

    @property
    def input_text(self) -> str:
        """What a classification head reads (the classification output type reads the same)."""
        ...

    @property
    def answer(self) -> str:
        """The example's output as written (a classifier's label text)."""
        ...

    @property
    def origin(self) -> str:
        """Where the example came from ('train.jsonl:12'), for error messages."""
        ...


class TokenRows(Protocol):
    """Token ids with a label per position (a causal `TokenizedExample`)."""

    input_ids: list[int]
    labels: list[int]
    prompt_length: int


def encode_prompt(rendered: PromptText, tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """Token ids of the prompt exactly as training saw them."""
    return list(tokenizer(rendered.prompt, add_special_tokens=not rendered.special_in_text).input_ids)


def encode_completion(rendered: PromptText, tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """Token ids of the completion, ending in EOS (added unless the text already ends with it)."""
    ids = list(tokenizer(rendered.completion, add_special_tokens=False).input_ids)
    eos = tokenizer.eos_token_id
    if eos is not None and (not ids or ids[-1] != eos):
        ids.append(eos)
    return ids


def prefix_token_id(tokenizer: PreTrainedTokenizerBase) -> int:
    """The token that stands in for an empty context: BOS, else EOS (lm-evaluation-harness).
    A rolling evaluation and a raw-text document both start with it, so their first token is
    predicted too."""
    bos = tokenizer.bos_token_id
    return int(bos if bos is not None else tokenizer.eos_token_id)


def document_windows(text: str, tokenizer: PreTrainedTokenizerBase, max_length: int
                     ) -> list[list[int]]:
    """A raw document as training windows: [prefix] + its tokens + EOS, cut into windows of
    at most max_length ids, each starting at the last id of the one before, so every token
    after the prefix is predicted exactly once (a window's first id is its context only):

        max_length 4:  [P a b c d e EOS] -> [P a b c] [c d e EOS]
    """
    ids = [prefix_token_id(tokenizer), *tokenizer(text, add_special_tokens=False).input_ids]
    if tokenizer.eos_token_id is not None:
        ids.append(int(tokenizer.eos_token_id))
    step = max(max_length - 1, 1)
    return [ids[start:start + max_length] for start in range(0, max(len(ids) - 1, 1), step)]


def label_index(text: str, labels: Sequence[str], origin: str) -> int:
    """The class of a label text (compared as the label metrics compare: stripped, lowercased,
    trailing punctuation dropped); a text that is no label is an error naming the record."""
    wanted = normalize_label(text)
    for i, label in enumerate(labels):
        if normalize_label(str(label)) == wanted:
            return i
    raise TunelabError(f"{origin or 'a record'}: output {text!r} is not one of eval.labels "
                       f"{list(labels)}; fix the record or add its label to eval.labels")


def mark_trained(example: TokenRows, tokenizer: PreTrainedTokenizerBase) -> str:
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


def decode(tokenizer: PreTrainedTokenizerBase, ids: list[int] | torch.Tensor,
           skip_special_tokens: bool = False) -> str:
    """The text of one sequence of token ids (transformers annotates `decode` for a batch of
    sequences too, which gives a list)."""
    return cast(str, tokenizer.decode(ids, skip_special_tokens=skip_special_tokens))


def _span(tokens: list[int], trained: bool, tokenizer: PreTrainedTokenizerBase) -> str:
    text = decode(tokenizer, tokens)
    return f"{OPEN}{text}{CLOSE}" if trained else text


def boundary_table(example: TokenRows, tokenizer: PreTrainedTokenizerBase, before: int = 4) -> str:
    """Token-level view around the prompt/completion boundary: position, id, token, label."""
    start = max(0, example.prompt_length - before)
    lines = ["  pos     id  label  token"]
    for pos in range(start, len(example.input_ids)):
        token = example.input_ids[pos]
        label = example.labels[pos]
        shown = "-100" if label == IGNORE_INDEX else "train"
        lines.append(f"  {pos:>3} {token:>6}  {shown:>5}  {tokenizer.decode([token])!r}")
    return "\n".join(lines)

"""In-context examples: which shots each item gets, and prompts that fit the context window.

Shots are rendered by the task's own template, so zero-, one- and few-shot prompts differ only
by the examples in front: preamble + (shot prompt + shot answer + separator) x k + prompt. Chat
templates put shots in as earlier user/assistant turns instead. A prompt that would overflow
the context window loses whole shots from the end until it fits; a shot is never cut.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from tunelab.core.errors import TunelabError
from tunelab.data import Record, Rendered, Template, encode_prompt

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


def choose_shots(pool: Sequence[Record], k: int, seed: int, index: int, sampler: str = "random",
                 exclude: Record | None = None) -> list[Record]:
    """k shots for item `index`: seeded per item (random) or the pool's first k (first).

    `exclude` (the item itself, when shots come from the scored split) is never its own shot.
    """
    if k <= 0:
        return []
    candidates = [r for r in pool if r is not exclude]
    if k > len(candidates):
        raise TunelabError(f"--shots {k}: the few-shot split has only {len(candidates)} examples "
                           "to draw from; lower the shots or pick a bigger fewshot.split")
    if sampler == "first":
        return list(candidates[:k])
    return random.Random(f"{seed}-{index}").sample(candidates, k)


def with_output(record: Record, output: str) -> Record:
    """The record with its answer replaced (the last assistant turn for chat records)."""
    if record.messages is not None:
        messages = [dict(m) for m in record.messages]
        messages[-1]["content"] = output
        return replace(record, messages=messages, output=output)
    return replace(record, output=output)


@dataclass
class Prompt:
    ids: list[int]
    rendered: Rendered
    """prompt: the full prompt text (preamble and shots included); completion: the answer."""
    shots: int
    """Shots in the prompt."""
    dropped: int
    """Shots dropped because the prompt would not fit."""
    shot_tokens: int
    """Tokens the shots add to the prompt (the preamble, present at any k, is not counted)."""


@dataclass
class PromptBuilder:
    template: Template
    tokenizer: PreTrainedTokenizerBase | None
    """None: it renders (a preview without a model) but cannot `build`, which counts tokens."""
    preamble: str = ""
    separator: str = "\n\n"

    def render(self, record: Record, shots: Sequence[Record] = ()) -> Rendered:
        if self.template.kind.shots_as_turns:  # chat: shots are earlier turns, no preamble
            return self.template.render(record, shots)
        own = self.template.render(record)
        context = "".join(s.prompt + s.completion + self.separator
                          for s in (self.template.render(shot) for shot in shots))
        return Rendered(self.preamble + context + own.prompt, own.completion, own.special_in_text)

    def completion(self, record: Record) -> str:
        """The answer text exactly as the template appends it to the prompt."""
        return self.template.render(record).completion

    def build(self, record: Record, shots: Sequence[Record], budget: int) -> Prompt:
        """The prompt with as many of `shots` as fit in `budget` tokens (whole shots only)."""
        tokenizer = self.tokenizer
        if tokenizer is None:
            raise TypeError("PromptBuilder.build counts tokens: give it the tokenizer")
        shots = list(shots)
        dropped = 0
        while True:
            rendered = self.render(record, shots)
            ids = encode_prompt(rendered, tokenizer)
            if len(ids) <= budget or not shots:
                break
            shots.pop()
            dropped += 1
        bare = len(encode_prompt(self.render(record), tokenizer)) if shots else len(ids)
        return Prompt(ids, rendered, len(shots), dropped, max(0, len(ids) - bare))

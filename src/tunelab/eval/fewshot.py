"""In-context examples: which shots each item gets, and prompts that fit the context window.

Shots are rendered by the task's own template, so zero-, one- and few-shot prompts differ only
by the examples in front: preamble + (shot prompt + shot answer + separator) x k + prompt. Chat
templates put shots in as earlier user/assistant turns instead. A prompt that would overflow
the context window loses whole shots from the end until it fits; a shot is never cut.
"""

from __future__ import annotations

import functools
import itertools
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from tunelab.config.choices import ShotSampler
from tunelab.core.errors import TunelabError
from tunelab.data import Record, Rendered, Template, encode_prompt

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


def choose_shots(pool: Sequence[Record], k: int, seed: int, index: int,
                 sampler: ShotSampler = "random", exclude: Record | None = None,
                 labels: Sequence[str] | None = None,
                 label_of: Callable[[Record], str] = lambda record: record.output) -> list[Record]:
    """k shots for item `index`, drawn by `sampler` (see SHOT_SAMPLERS).

    `exclude` (the item itself, when shots come from the scored split) is never its own shot;
    `labels` (a label task's eval.labels) balance the fixed draw over the labels, each
    record's label read by `label_of` (the task's gold answer; default its output).
    """
    if k <= 0:
        return []
    available = len(pool) - (exclude is not None and any(r is exclude for r in pool))
    if k > available:
        raise TunelabError(f"--shots {k}: the few-shot split has only {available} examples "
                           "to draw from; lower the shots or pick a bigger fewshot.split")
    return SHOT_SAMPLERS[sampler](ShotDraw(pool, k, seed, exclude, labels, label_of), index)


@dataclass(frozen=True)
class ShotDraw:
    """What a sampler draws from: the pool, how many, its seed, the item left out, the labels."""

    pool: Sequence[Record]
    k: int
    seed: int
    exclude: Record | None
    labels: Sequence[str] | None
    label_of: Callable[[Record], str]


def _random_shots(draw: ShotDraw, index: int) -> list[Record]:
    """Seeded per item: every item its own k."""
    return random.Random(f"{draw.seed}-{index}").sample(
        [r for r in draw.pool if r is not draw.exclude], draw.k)


def _fixed_shots(draw: ShotDraw, index: int) -> list[Record]:
    """One seeded draw shared by every item (HELM's in-context examples, MMLU's dev shots): the
    pool visited in one seeded order, the item itself skipped (the next in that order takes
    its place). With labels, the k shots cover them evenly (k // labels each, the remainder to
    labels in a seeded order) and alternate label by label, so no label's run ends the
    prompt; a label without enough examples leaves its place to the others."""
    order = (i for i in _visit_order(len(draw.pool), draw.seed) if draw.pool[i] is not draw.exclude)
    if not draw.labels:
        return [draw.pool[i] for i in itertools.islice(order, draw.k)]
    labels = random.Random(f"{draw.seed}-labels").sample(
        [label.strip().casefold() for label in draw.labels], len(draw.labels))
    quota = {label: draw.k // len(labels) + (n < draw.k % len(labels))
             for n, label in enumerate(labels)}
    by_label: dict[str, list[Record]] = {label: [] for label in labels}
    rest: list[Record] = []
    missing = draw.k
    for i in order:
        record = draw.pool[i]
        label = draw.label_of(record).strip().casefold()
        if quota.get(label, 0) > len(by_label.get(label, ())):
            by_label[label].append(record)
            missing -= 1
            if not missing:
                break
        elif len(rest) < draw.k:
            rest.append(record)
    rounds = itertools.zip_longest(*by_label.values())
    shots = [r for turn in rounds for r in turn if r is not None]
    return shots + rest[:draw.k - len(shots)]


@functools.lru_cache(maxsize=8)
def _visit_order(size: int, seed: int) -> tuple[int, ...]:
    """The fixed draw's seeded order of a pool of `size` (computed once, not per item)."""
    return tuple(random.Random(f"{seed}-fixed").sample(range(size), size))


def _first_shots(draw: ShotDraw, index: int) -> list[Record]:
    """The split's first k, for every item."""
    return [r for r in draw.pool[:draw.k + 1] if r is not draw.exclude][:draw.k]


SHOT_SAMPLERS: dict[str, Callable[[ShotDraw, int], list[Record]]] = {
    "random": _random_shots, "fixed": _fixed_shots, "first": _first_shots}
"""Each `fewshot.sampler` value's draw for item `index`."""


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

"""Batch plans: which examples make each micro-batch of each epoch, deterministic from the seed.

A plan is a pure function of (seed, epoch), so a run resumed from (epoch, micro-batch) sees
exactly the batches the uninterrupted run would have seen. The single-task plan is a seeded
permutation per epoch; the multi-task plan lives in mixture.py.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from tunelab.core.deferred import torch


@dataclass
class MicroBatch:
    """One micro-batch: examples of one task (batches are never mixed across tasks)."""

    task: int
    """Index of the task whose training examples `indices` point into."""
    indices: list[int]
    """This process's examples."""
    size: int
    """Examples in the micro-batch across all processes (for the realised proportions)."""


class BatchPlan(Protocol):
    @property
    def micro_batches_per_epoch(self) -> int:
        """Micro-batches of one full epoch (over all trained tasks)."""
        ...

    def epoch_batches(self, epoch: int) -> list[MicroBatch]:
        """This process's micro-batches of an epoch, in training order."""
        ...

    def default_total_steps(self, epochs: float, grad_accum: int) -> int:
        """Optimizer steps of a run that trains `epochs` epochs (train.max_steps=0)."""
        ...

    def log_fields(self, epoch: int) -> dict[str, int]:
        """What the plan adds to a training log line at `epoch` (a curriculum's stage)."""
        ...


GROUP_WINDOW = 50
"""Micro-batches per window that train.group_by_length sorts by length."""


def length_grouped(order: list[int], lengths: Sequence[int], width: int,
                   generator: torch.Generator) -> list[list[int]]:
    """`order` (a seeded permutation) cut into windows of GROUP_WINDOW micro-batches, each
    window sorted longest first and cut into micro-batches of `width`; the micro-batches are
    then shuffled with `generator`, except that the one holding the longest example comes
    first (a run that runs out of memory does so at its first step)."""
    window = width * GROUP_WINDOW
    batches = []
    for start in range(0, len(order), window):
        part = sorted(order[start:start + window], key=lambda i: -lengths[i])
        batches += [part[i:i + width] for i in range(0, len(part), width)]
    shuffled = [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]
    longest = max(range(len(shuffled)), key=lambda b: max(lengths[i] for i in shuffled[b]))
    return [shuffled[longest]] + shuffled[:longest] + shuffled[longest + 1:]


def split_for_process(batch: list[int], world: int, rank: int) -> list[int]:
    """This process's share of a global micro-batch (never empty: a short batch repeats one)."""
    return batch[rank::world] or batch[:1]


@dataclass
class ShuffledPlan:
    """One task: every epoch is a fresh seeded permutation cut into micro-batches."""

    size: int
    batch_size: int
    """Examples per micro-batch on one process."""
    seed: int
    world: int = 1
    rank: int = 0
    lengths: Sequence[int] | None = None
    """Tokens of each example: micro-batches of similar length (train.group_by_length)."""

    @property
    def micro_batches_per_epoch(self) -> int:
        return math.ceil(self.size / (self.batch_size * self.world))

    def epoch_batches(self, epoch: int) -> list[MicroBatch]:
        generator = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        order = torch.randperm(self.size, generator=generator).tolist()
        width = self.batch_size * self.world
        if self.lengths is None:
            batches = [order[i:i + width] for i in range(0, len(order), width)]
        else:
            batches = length_grouped(order, self.lengths, width, generator)
        return [MicroBatch(0, split_for_process(b, self.world, self.rank), len(b)) for b in batches]

    def default_total_steps(self, epochs: float, grad_accum: int) -> int:
        steps_per_epoch = math.ceil(self.micro_batches_per_epoch / grad_accum)
        return max(1, math.ceil(epochs * steps_per_epoch))

    def log_fields(self, epoch: int) -> dict[str, int]:
        return {}

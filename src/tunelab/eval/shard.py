"""One evaluation split between the processes of a distributed run.

Each process scores a contiguous share of the items (item i keeps its index, so its shots
and its row are what one process would give it); the shares' outputs are gathered on rank 0
in item order, and rank 0 alone computes the metrics and writes. Every process must call the
same evaluations in the same order (the gather is a collective).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, TypeVar

from tunelab.core.deferred import dist
from tunelab.eval.output_types.base import Outputs

if TYPE_CHECKING:
    from accelerate import Accelerator

T = TypeVar("T")


@dataclass(frozen=True)
class Shard:
    world: int
    rank: int

    @classmethod
    def of(cls, accelerator: Accelerator) -> Shard | None:
        """This process's shard under accelerate, or None for a single process."""
        if accelerator.num_processes == 1:
            return None
        return cls(accelerator.num_processes, accelerator.process_index)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def bounds(self, count: int) -> tuple[int, int]:
        """[start, end) of this process's items among `count` (the first shares one longer)."""
        size, extra = divmod(count, self.world)
        start = self.rank * size + min(self.rank, extra)
        return start, start + size + (1 if self.rank < extra else 0)

    def part(self, items: list[T]) -> tuple[int, list[T]]:
        """(index of this share's first item, this process's items)."""
        start, end = self.bounds(len(items))
        return start, items[start:end]

    def gather(self, outputs: Outputs) -> Outputs | None:
        """Rank 0: every share's outputs in item order; the other ranks: None."""
        shares: list[Any] | None = (  # Any: None until gather_object puts each Outputs there
            [None] * self.world if self.is_main else None)
        dist.gather_object(outputs, shares, dst=0)
        if shares is None:
            return None
        return merged(shares)


def merged(shares: list[Outputs]) -> Outputs:
    """Outputs of consecutive shares as one: lists concatenated, counts summed."""
    first = shares[0]
    values: dict[str, Any] = {}  # Any: each field of Outputs, by name
    for f in fields(first):
        parts = [getattr(s, f.name) for s in shares]
        if isinstance(parts[0], list):
            values[f.name] = [x for part in parts for x in part]
        elif isinstance(parts[0], dict):
            values[f.name] = {key: [x for part in parts for x in part.get(key, [])]
                              for key in parts[0]}
        else:
            values[f.name] = sum(parts)
    return type(first)(**values)

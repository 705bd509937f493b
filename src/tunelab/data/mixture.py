"""Multi-task mixtures: sampling rates, curriculum stages, and a deterministic, resumable plan
of homogeneous micro-batches (every micro-batch holds examples of one task).

Rates. Task i has n_i training examples, counted as s_i = min(n_i, cap) with an examples cap.
sampling=proportional: r_i ∝ s_i; temperature: r_i ∝ s_i^(1/T); uniform: r_i ∝ 1;
weights: r_i ∝ the task's `weight`. Held-out tasks are never sampled.

Mixture epochs. An epoch of the tasks T has M = Σ_{i∈T} ceil(s_i / B) micro-batches of B
examples (B: the micro-batch over all processes).
  oversample=false  task i gives its next s_i examples, so a full epoch sees every (capped)
                    example once and the epoch's proportions are s_i / Σ s.
  oversample=true   task i gives round(r_i·M) full micro-batches (largest remainder), so the
                    epoch's proportions are the rates; small tasks repeat (several task epochs).
The order is drawn micro-batch by micro-batch: task i with probability ∝ r_i among the tasks
whose share of the epoch is not used up, so a used-up task drops out and the rest renormalise.

Streams. A task's examples come from an endless stream of passes over its data; each pass is
a seeded permutation (order=random) or sorted easy to hard (order=easy_to_hard, ties broken
by the seed). Epochs continue the stream, so a task down-sampled in one epoch shows new
examples in the next, and curriculum stages pick up where the previous stage left off.

Curriculum. Stages are ordered task subsets with a step budget each; the last stage runs to
the end. The plan's "epochs" are segments: mixture epochs of the stage's tasks, the stage's
last segment cut short so that the stage ends exactly at its step boundary.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

from tunelab.config import CurriculumStage, MixtureConfig
from tunelab.core.errors import TunelabError
from tunelab.data.batching import (
    GROUP_WINDOW,
    BatchPlan,
    MicroBatch,
    ShuffledPlan,
    split_for_process,
)
from tunelab.data.tokenize import Collator, Padded, TokenizedExample


@dataclass
class TaskExamples:
    """One task's tokenised examples and its options, as the training loop sees them."""

    name: str
    train: Sequence[TokenizedExample]
    validation: Sequence[TokenizedExample]
    loss_weight: float = 1.0
    weight: float | None = None
    """Sampling weight (sampling=weights)."""
    held_out: bool = False
    difficulty: Sequence[float] | None = None
    """Per training example, for order=easy_to_hard (smaller is easier)."""
    collate: Collator = field(default_factory=Padded)
    """How its micro-batches become tensors: padded rows, or packed ones (data.packing)."""


@dataclass
class TrainingData:
    """Everything the loop trains on: one or more tasks' examples and how they are batched.

    A single-task run is a one-task list without a mixture: every epoch is a seeded
    permutation of its examples (`ShuffledPlan`). A multi-task run has a mixture: rates,
    curriculum and per-task logs (`MixturePlan`)."""

    tasks: list[TaskExamples]
    pad_id: int
    mixture: MixtureConfig | None = None

    @property
    def per_task(self) -> bool:
        """Whether the logs break losses and examples down by task (multi-task runs)."""
        return self.mixture is not None

    def plan(self, batch_size: int, seed: int, grad_accum: int = 1, world: int = 1,
             rank: int = 0, group_by_length: bool = False) -> BatchPlan:
        """The deterministic batch plan of this data (see the module docstrings);
        `group_by_length`: micro-batches of examples of similar length."""
        if self.mixture is None:
            train = self.tasks[0].train
            if not train:
                raise TunelabError("the train split is empty; check data.source and the split sizes")
            lengths = [len(ex.input_ids) for ex in train] if group_by_length else None
            return ShuffledPlan(len(train), batch_size, seed, world, rank, lengths)
        return MixturePlan(self.tasks, self.mixture, batch_size, seed, grad_accum, world, rank,
                           group_by_length)


class Order:
    """mixture.order: how one pass over a task's training examples is ordered (one instance
    each, `get_order(name)`)."""

    name: ClassVar[str]
    needs_difficulty: ClassVar[bool] = False
    """Whether every trained task needs a difficulty per example (mixture.measure)."""

    def arrange(self, size: int, rng: random.Random, difficulty: Sequence[float] | None,
                lengths: Sequence[int] | None, window: int) -> list[int]:
        """The example indices of one pass, drawn from the pass's own seeded `rng`;
        `lengths` (group_by_length): neighbours of similar length, in windows of `window`."""
        raise NotImplementedError


class RandomOrder(Order):
    """A seeded shuffle per pass (sorted by length inside windows with group_by_length)."""

    name = "random"

    def arrange(self, size: int, rng: random.Random, difficulty: Sequence[float] | None,
                lengths: Sequence[int] | None, window: int) -> list[int]:
        order = list(range(size))
        rng.shuffle(order)
        if lengths is not None:
            order = [i for start in range(0, len(order), window)
                     for i in sorted(order[start:start + window], key=lambda j: -lengths[j])]
        return order


class EasyToHard(Order):
    """Every pass from easy to hard by the task's difficulty measure, ties broken by the seed."""

    name = "easy_to_hard"
    needs_difficulty = True

    def arrange(self, size: int, rng: random.Random, difficulty: Sequence[float] | None,
                lengths: Sequence[int] | None, window: int) -> list[int]:
        assert difficulty is not None and len(difficulty) == size, "one value per example"
        tie = [rng.random() for _ in range(size)]
        return sorted(range(size), key=lambda j: (difficulty[j], tie[j]))


ORDERS: dict[str, Order] = {order.name: order for order in (RandomOrder(), EasyToHard())}
"""mixture.order -> the order (the names are config.choices.Order)."""


def get_order(name: str) -> Order:
    """The order named by a mixture.order value."""
    if name not in ORDERS:
        raise TunelabError(f"mixture.order '{name}': use {', '.join(ORDERS)}")
    return ORDERS[name]


def check_tasks(names: Sequence[str], held_out: Sequence[bool], weights: Sequence[float | None],
                config: MixtureConfig) -> None:
    """The mixture options that the config cannot check alone (its choices check themselves,
    config/choices.py): at least one trained task, rates that can be computed (cap, temperature,
    weights), stages naming trained tasks. `MixturePlan` runs the same checks."""
    trained = [i for i, out in enumerate(held_out) if not out]
    if not trained:
        raise TunelabError("tasks: every task is held out; train on at least one")
    sampling_rates([1] * len(trained), [weights[i] for i in trained], [names[i] for i in trained],
                   config)
    resolve_stages(config.stages, list(names), trained)


def length_difficulty(examples: Sequence[TokenizedExample]) -> list[float]:
    """Difficulty by length: tokens of prompt + completion."""
    return [float(len(ex.input_ids)) for ex in examples]


def _weights(capped: Sequence[int], weights: Sequence[float | None], names: Sequence[str],
             config: MixtureConfig) -> list[float]:
    given: list[float] = []
    for name, weight in zip(names, weights, strict=True):
        if weight is None or weight <= 0:
            raise TunelabError(
                f"task '{name}': mixture.sampling=weights needs a positive `weight` on every "
                "trained task (use held_out: true for a task that is only evaluated)")
        given.append(float(weight))
    return given


# mixture.sampling -> the unnormalised rate of every trained task from its capped size.
RATES: dict[str, Callable[[Sequence[int], Sequence[float | None], Sequence[str], MixtureConfig],
                          list[float]]] = {
    "proportional": lambda capped, weights, names, config: [float(s) for s in capped],
    "temperature": lambda capped, weights, names, config: [
        s ** (1.0 / config.temperature) for s in capped],
    "uniform": lambda capped, weights, names, config: [1.0] * len(capped),
    "weights": _weights,
}


def sampling_rates(sizes: Sequence[int], weights: Sequence[float | None], names: Sequence[str],
                   config: MixtureConfig) -> list[float]:
    """Normalised sampling rates of the trained tasks (see the module docstring)."""
    if config.cap is not None and config.cap < 1:
        raise TunelabError(f"mixture.cap={config.cap}: must be >= 1 (or null for no cap)")
    if config.sampling == "temperature" and config.temperature <= 0:
        raise TunelabError(f"mixture.temperature={config.temperature}: must be > 0")
    capped = [min(n, config.cap) if config.cap else n for n in sizes]
    raw = RATES[config.sampling](capped, weights, names, config)
    total = sum(raw)
    return [r / total for r in raw]


def largest_remainder(shares: Sequence[float], total: int) -> list[int]:
    """Integers summing to `total`, proportional to `shares` (Hamilton's method)."""
    exact = [total * s / sum(shares) for s in shares]
    counts = [math.floor(x) for x in exact]
    by_remainder = sorted(range(len(shares)), key=lambda i: (counts[i] - exact[i], i))
    for i in by_remainder[:total - sum(counts)]:
        counts[i] += 1
    return counts


def resolve_stages(stages: Sequence[CurriculumStage], names: Sequence[str],
                   trained: Sequence[int]) -> list[tuple[list[int], int]]:
    """Curriculum stages as (task indices, steps); no stages: all trained tasks throughout."""
    if not stages:
        return [(list(trained), 0)]
    index = {name: i for i, name in enumerate(names)}
    resolved = []
    for k, stage in enumerate(stages):
        where = f"mixture.stages[{k}]"
        if not stage.tasks:
            raise TunelabError(f"{where}.tasks: empty; list the task names of this stage")
        for name in stage.tasks:
            if name not in index:
                raise TunelabError(f"{where}.tasks: unknown task '{name}'; tasks are: "
                                   f"{', '.join(names)}")
            if index[name] not in trained:
                raise TunelabError(f"{where}.tasks: '{name}' is held out and is never trained")
        if stage.steps < 0 or (stage.steps == 0 and k < len(stages) - 1):
            raise TunelabError(f"{where}.steps={stage.steps}: every stage but the last needs "
                               "a positive number of optimizer steps")
        resolved.append((sorted({index[n] for n in stage.tasks}), stage.steps))
    return resolved


class MixturePlan:
    """The micro-batches of a multi-task run, a pure function of (seed, segment)."""

    def __init__(self, tasks: Sequence[TaskExamples], config: MixtureConfig, batch_size: int,
                 seed: int, grad_accum: int = 1, world: int = 1, rank: int = 0,
                 group_by_length: bool = False):
        """batch_size is per process; `grad_accum` aligns curriculum stages with steps;
        `group_by_length`: each shuffled pass is sorted by length in windows of GROUP_WINDOW
        micro-batches, so neighbouring examples (one micro-batch) are of similar length."""
        self.names = [t.name for t in tasks]
        self.trained = [i for i, t in enumerate(tasks) if not t.held_out]
        if not self.trained:
            raise TunelabError("tasks: every task is held out; train on at least one")
        for i in self.trained:
            if not tasks[i].train:
                raise TunelabError(f"task '{tasks[i].name}': the train split is empty; check "
                                   "its data source and split sizes")
        self.config, self.seed, self.grad_accum = config, seed, grad_accum
        self.world, self.rank = world, rank
        self.width = batch_size * world
        self.sizes = [len(t.train) for t in tasks]
        self.counted = [min(n, config.cap) if config.cap else n for n in self.sizes]
        rates = sampling_rates([self.sizes[i] for i in self.trained],
                               [tasks[i].weight for i in self.trained],
                               [self.names[i] for i in self.trained], config)
        self.rates: dict[int, float] = dict(zip(self.trained, rates, strict=True))
        self.difficulty = [t.difficulty for t in tasks]
        self.lengths = [[len(ex.input_ids) for ex in t.train] for t in tasks] \
            if group_by_length else None
        self.order = get_order(config.order)
        if self.order.needs_difficulty and any(self.difficulty[i] is None for i in self.trained):
            raise TunelabError(f"mixture.order={self.order.name}: a task has no difficulty "
                               "measure")
        self.stages = resolve_stages(config.stages, self.names, self.trained)
        self._segments = self._bounded_segments()
        self._starts: list[list[int]] = [[0] * len(tasks)]  # stream offsets per segment start
        self._orders: dict[int, tuple[int, list[int]]] = {}  # task -> (pass, its order)

    # --- sizes and steps ------------------------------------------------------------------
    def epoch_length(self, tasks: Sequence[int]) -> int:
        """Micro-batches of one mixture epoch over `tasks`."""
        return sum(math.ceil(self.counted[i] / self.width) for i in tasks)

    def steps_per_epoch(self, tasks: Sequence[int]) -> int:
        return math.ceil(self.epoch_length(tasks) / self.grad_accum)

    @property
    def micro_batches_per_epoch(self) -> int:
        return self.epoch_length(self.trained)

    def default_total_steps(self, epochs: float, grad_accum: int) -> int:
        """Σ stage steps when every stage has a budget, else `epochs` full mixture epochs."""
        if self.config.stages and all(steps > 0 for _, steps in self.stages):
            return sum(steps for _, steps in self.stages)
        return max(1, math.ceil(epochs * self.steps_per_epoch(self.trained)))

    def _bounded_segments(self) -> list[tuple[int, int | None]]:
        """(stage, micro-batch cut or None) of every segment before the last stage."""
        segments: list[tuple[int, int | None]] = []
        for k, (tasks, steps) in enumerate(self.stages[:-1]):
            full, rest = divmod(steps, self.steps_per_epoch(tasks))
            segments += [(k, None)] * full + ([(k, rest * self.grad_accum)] if rest else [])
        return segments

    def stage_of(self, segment: int) -> int:
        return self._segments[segment][0] if segment < len(self._segments) else len(self.stages) - 1

    def log_fields(self, epoch: int) -> dict[str, int]:
        return {"stage": self.stage_of(epoch)} if self.config.stages else {}

    # --- the plan -------------------------------------------------------------------------
    def draws(self, segment: int) -> list[tuple[int, int]]:
        """(task, examples) of each global micro-batch of a segment, in training order."""
        stage, cut = self._segments[segment] if segment < len(self._segments) else (
            len(self.stages) - 1, None)
        tasks = self.stages[stage][0]
        length = self.epoch_length(tasks)
        if self.config.oversample:
            quotas = largest_remainder([self.rates[i] for i in tasks], length)
            left = {i: q * self.width for i, q in zip(tasks, quotas, strict=True)}
        else:
            left = {i: self.counted[i] for i in tasks}
        rng = random.Random(f"{self.seed}:mixture:{segment}")
        out: list[tuple[int, int]] = []
        limit = length if cut is None else min(cut, length)
        while len(out) < limit:
            active = [i for i in tasks if left[i] > 0]
            task = rng.choices(active, weights=[self.rates[i] for i in active])[0]
            take = min(self.width, left[task])
            left[task] -= take
            out.append((task, take))
        return out

    def segment_start(self, segment: int) -> list[int]:
        """Each task's stream offset when `segment` begins (memoised, computed forward)."""
        while len(self._starts) <= segment:
            offsets = list(self._starts[-1])
            for task, count in self.draws(len(self._starts) - 1):
                offsets[task] += count
            self._starts.append(offsets)
        return self._starts[segment]

    def epoch_batches(self, epoch: int) -> list[MicroBatch]:
        """This process's micro-batches of segment `epoch`."""
        offsets = list(self.segment_start(epoch))
        batches = []
        for task, count in self.draws(epoch):
            indices = self.stream(task, offsets[task], count)
            offsets[task] += count
            batches.append(MicroBatch(task, split_for_process(indices, self.world, self.rank), count))
        return batches

    def stream(self, task: int, start: int, count: int) -> list[int]:
        """Examples start..start+count-1 of the task's endless stream of passes."""
        n, position = self.sizes[task], start
        out: list[int] = []
        while len(out) < count:
            pass_index, at = divmod(position, n)
            take = min(count - len(out), n - at)
            out += self.pass_order(task, pass_index)[at:at + take]
            position += take
        return out

    def pass_order(self, task: int, pass_index: int) -> list[int]:
        """The order of one pass over a task, as mixture.order arranges it (`Order`)."""
        cached = self._orders.get(task)
        if cached and cached[0] == pass_index:
            return cached[1]
        rng = random.Random(f"{self.seed}:task:{self.names[task]}:pass:{pass_index}")
        order = self.order.arrange(self.sizes[task], rng, self.difficulty[task],
                                   self.lengths[task] if self.lengths is not None else None,
                                   self.width * GROUP_WINDOW)
        self._orders[task] = (pass_index, order)
        return order

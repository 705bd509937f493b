"""train.threads: how many threads a training step on a CPU runs on.

torch runs its operators on an OpenMP team that spins at every barrier. When another process
holds one of the cores, the thread that shares that core is descheduled for whole time
slices while its partner spins, and each of a step's thousands of operators waits for it: on
2 cores with one of them busy, the quickstart's LoRA step measured 20-53 s (median 35) at 2
threads against 6-9.5 s (median 6.8) at 1, and 4.4 s at 2 on quiet cores
(benchmarks/step_profile.py; benchmarks/README.md).

`FreeCores` (train.threads 0, the default on a CPU) chooses before every step: the threads
torch had at the start, less the cores other processes kept busy during the step before
(their CPU time over that step's wall time, from /proc/stat and this process's own CPU
time), at least one. `Fixed(n)` sets n threads once. Either restores torch's count when
training ends. Threads change no result: the built-in model's losses were the same to the
bit at 1 and 2 threads over 6 steps (benchmarks/step_profile.py), and runs at 1, 2 and 0
train the same weights (tests/test_train_threads.py)."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

PROC_STAT = Path("/proc/stat")
SLACK = 0.5
"""Other processes' cores (on average over a step) that still leave a core free: a short
burst (a shell command, a test collection) should not halve the team for the next step,
while a process that holds a core measures 0.6 to 1.2 beside a spinning team."""


def cpu_seconds() -> tuple[float, float] | None:
    """(CPU seconds every process has used on the cores this process may run on, CPU seconds
    this process has used) so far; None where /proc/stat is not readable (not Linux). Only
    this process's cores count, so a container pinned to some cores of a busy host sees its
    own."""
    try:
        lines = PROC_STAT.read_text().splitlines()
    except OSError:
        return None
    allowed = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    busy = 0
    for line in lines:
        name, *fields = line.split()
        if not (name.startswith("cpu") and name[3:].isdigit()):
            continue  # the "cpu" total line, interrupts, ...
        if allowed is not None and int(name[3:]) not in allowed:
            continue
        # user nice system idle iowait irq softirq steal [guest guest_nice: inside user]
        ticks = [int(x) for x in fields[:8]]
        busy += ticks[0] + ticks[1] + ticks[2] + ticks[5] + ticks[6] + ticks[7]
    mine = os.times()
    return busy / os.sysconf("SC_CLK_TCK"), mine.user + mine.system


def threads_for(others: float, most: int) -> int:
    """Threads for a step after one in which other processes kept `others` cores busy, with
    `most` threads when nothing else runs."""
    return max(1, min(most, most - math.ceil(others - SLACK)))


@dataclass
class Fixed:
    """A fixed number of threads (train.threads N)."""

    threads: int
    before: int = field(default_factory=torch.get_num_threads)

    def start(self) -> None:
        torch.set_num_threads(self.threads)

    def before_step(self) -> None:
        pass

    def after_step(self) -> None:
        pass

    def log_fields(self) -> dict[str, float]:
        """What train_log.jsonl records of the last step: its threads."""
        return {"threads": self.threads}

    def end(self) -> None:
        torch.set_num_threads(self.before)


@dataclass
class FreeCores:
    """Before every step, torch's threads at the start less the cores other processes kept
    busy during the previous step (train.threads 0 on a CPU)."""

    most: int = field(default_factory=torch.get_num_threads)
    clock: Callable[[], tuple[float, float] | None] = cpu_seconds
    """(every process's CPU seconds, this process's) or None; a test injects its own."""
    threads: int = 0
    """The threads of the next step."""
    ran: int = 0
    """The threads the last step ran on."""
    others: float | None = None
    """Cores other processes kept busy during the last step (None: not measured yet)."""
    _mark: tuple[float, float, float] | None = None

    def start(self) -> None:
        self.threads = self.most

    def before_step(self) -> None:
        if torch.get_num_threads() != self.threads:
            torch.set_num_threads(self.threads)
        self.ran = self.threads
        now = self.clock()
        self._mark = None if now is None else (time.perf_counter(), *now)

    def after_step(self) -> None:
        now = self.clock()
        if self._mark is None or now is None:
            return
        start, every, mine = self._mark
        wall = time.perf_counter() - start
        if wall <= 0:
            return
        self.others = max(0.0, (now[0] - every) - (now[1] - mine)) / wall
        self.threads = threads_for(self.others, self.most)

    def log_fields(self) -> dict[str, float]:
        """What train_log.jsonl records of the last step: its threads and the cores other
        processes kept busy meanwhile (why the next step runs on fewer or more)."""
        fields: dict[str, float] = {"threads": self.ran}
        if self.others is not None:
            fields["other_cores"] = round(self.others, 2)
        return fields

    def end(self) -> None:
        torch.set_num_threads(self.most)


ThreadPolicy = Fixed | FreeCores


def thread_policy(threads: int, device: torch.device) -> ThreadPolicy:
    """train.threads on `device`: N fixes N threads; 0 follows the free cores on a CPU and
    leaves torch's count alone elsewhere (a GPU step's work is not on the CPU's threads)."""
    if threads:
        return Fixed(threads)
    if device.type != "cpu":
        return Fixed(torch.get_num_threads())
    return FreeCores()

"""train.threads: a CPU step runs on the cores other processes leave free (0, the default), or
on N threads; the thread count changes no number a run computes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers import tiny_run_config
from safetensors.torch import load_file

import tunelab
from tunelab.config import TrainConfig
from tunelab.core.errors import TunelabError
from tunelab.training import threads
from tunelab.training.threads import Fixed, FreeCores, thread_policy, threads_for


@pytest.mark.parametrize(("others", "most", "expected"), [
    (0.0, 2, 2), (0.3, 2, 2), (0.5, 2, 2), (0.6, 2, 1), (1.0, 2, 1), (1.9, 2, 1),
    (0.0, 8, 8), (1.0, 8, 7), (3.6, 8, 4), (0.0, 1, 1), (1.0, 1, 1)])
def test_threads_are_the_cores_others_leave_free(others: float, most: int, expected: int) -> None:
    assert threads_for(others, most) == expected


class FakeClock:
    """/proc/stat's busy seconds and this process's: `others` cores busy per wall second."""

    def __init__(self) -> None:
        self.others = 0.0
        self.every = self.mine = 0.0

    def __call__(self) -> tuple[float, float]:
        return self.every, self.mine

    def step(self, seconds: float, mine: float) -> None:
        self.every += mine + self.others * seconds
        self.mine += mine


def test_free_cores_follows_the_other_processes_step_by_step(monkeypatch: pytest.MonkeyPatch
                                                             ) -> None:
    before = torch.get_num_threads()
    clock = FakeClock()
    now = [0.0]
    monkeypatch.setattr(threads.time, "perf_counter", lambda: now[0])
    policy = FreeCores(most=2, clock=clock)
    seen = []
    try:
        policy.start()
        for others in (0.0, 1.0, 1.0, 0.3, 0.0):
            clock.others = others
            policy.before_step()
            seen.append(torch.get_num_threads())
            now[0] += 4.0
            clock.step(4.0, mine=4.0 * policy.ran)
            policy.after_step()
            assert policy.log_fields() == {"threads": seen[-1],
                                           "other_cores": pytest.approx(others)}
        assert seen == [2, 2, 1, 1, 2]  # each step runs on what the one before left free
    finally:
        policy.end()
    assert torch.get_num_threads() == 2  # torch's count at the start (most) is restored
    torch.set_num_threads(before)


def test_busy_seconds_count_only_this_processs_cores(monkeypatch: pytest.MonkeyPatch,
                                                      tmp_path: Path) -> None:
    """A container pinned to cores 0 and 1 of a busy host: the other cores' work is not
    its neighbours'. Busy = user nice system irq softirq steal (guest is inside user)."""
    stat = tmp_path / "stat"
    stat.write_text("cpu  900 0 0 100 0 0 0 0 0 0\n"
                    "cpu0 100 10 20 5000 7 1 2 3 50 0\n"
                    "cpu1 200 0 10 5000 0 0 0 0 0 0\n"
                    "cpu2 9000 0 0 0 0 0 0 0 0 0\n"
                    "intr 5 6 7\n")
    monkeypatch.setattr(threads, "PROC_STAT", stat)
    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: {0, 1})
    monkeypatch.setattr(threads.os, "sysconf", lambda name: 100)
    every, _ = threads.cpu_seconds() or (None, None)
    assert every == pytest.approx((100 + 10 + 20 + 1 + 2 + 3 + 200 + 10) / 100)


def test_without_proc_stat_the_threads_stay(monkeypatch: pytest.MonkeyPatch, tmp_path: Path
                                            ) -> None:
    monkeypatch.setattr(threads, "PROC_STAT", tmp_path / "absent")
    assert threads.cpu_seconds() is None
    policy = FreeCores(most=2)
    policy.start()
    policy.before_step()
    policy.after_step()
    assert policy.log_fields() == {"threads": 2} and policy.others is None
    policy.end()


def test_the_policy_of_each_setting() -> None:
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    assert isinstance(thread_policy(0, cpu), FreeCores)
    assert thread_policy(3, cpu) == Fixed(3, torch.get_num_threads())
    assert thread_policy(0, gpu) == Fixed(torch.get_num_threads(), torch.get_num_threads())
    with pytest.raises(TunelabError, match="train.threads"):
        TrainConfig(threads=-1)


def test_thread_counts_train_the_same_weights(tiny_llama: Path, tmp_path: Path) -> None:
    """train.threads 1, 2 and 0 (following the free cores): the same losses and weights, and
    the weights moved; the log says how many threads each step ran on."""
    before = torch.get_num_threads()
    runs = {}
    for n in (1, 2, 0):
        config = tiny_run_config(tiny_llama, tmp_path, f"threads-{n}", max_steps=4,
                                 eval_every=0, method={"name": "full"})
        config.train.threads = n
        runs[n] = tunelab.train(config, evaluate_after=False).run_dir
        assert torch.get_num_threads() == before  # restored after training
    logs = {n: [s for s in map(json.loads, (r / "train_log.jsonl").read_text().splitlines())
                if "loss" in s] for n, r in runs.items()}
    weights = {n: load_file(str(r / "model" / "model.safetensors")) for n, r in runs.items()}
    start = load_file(str(tiny_llama / "model.safetensors"))
    assert [r["threads"] for r in logs[1]] == [1] * 4
    assert [r["threads"] for r in logs[2]] == [2] * 4
    assert all(1 <= r["threads"] <= before for r in logs[0])
    losses = {n: [r["loss"] for r in log] for n, log in logs.items()}
    assert losses[1] == pytest.approx(losses[2], rel=1e-6) == losses[0]
    moved = [k for k in start if k in weights[1] and not torch.equal(start[k], weights[1][k])]
    assert moved  # the weights moved, so equal weights below mean something
    for n in (2, 0):
        for name, tensor in weights[1].items():
            torch.testing.assert_close(weights[n][name], tensor, rtol=1e-5, atol=1e-7)

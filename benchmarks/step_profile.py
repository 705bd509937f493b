"""Where a float32 training step on a CPU spends its time, and how far it is from the compute
limit: the step's matmul FLOPs at the throughput the same CPU reaches in a bare product.

    python benchmarks/step_profile.py [--methods lora,full] [--steps 4] [--threads N]
        [--packing on|rows|off] [--optimizer fused|foreach|forloop] [--compile] [--no-profile]
        [--json OUT] [key=value ...]

The quickstart's run (src/tunelab/configs/quickstart.yaml: the built-in SmolLM2-135M, LoRA
r16 on every linear layer, packing, batch 8), float32, built in this process by tunelab's own
code (`plan_run`, the start's load and apply, `prepare_data`, `Trainer`): its micro-batches in
the plan's order, each step `Trainer._optimizer_step` (collate, forward, the loss projected at
the completion's positions only, backward, clipping, AdamW, scheduler). Per method:

- seconds per step, step 1 (warm-up; with --compile: the compilation) left out;
- the step's FLOPs, counted by torch.utils.flop_counter.FlopCounterMode over a forward and
  backward pass of each timed micro-batch (matmuls and attention; for LoRA the frozen weights
  get no weight gradient, so the count has none), and the achieved GFLOP/s;
- the bare GFLOP/s: torch.mm of one transformer block's products at the step's positions
  (forward, input gradient and, for full fine-tuning, weight gradient), on the same threads,
  and the compute limit: the step's FLOPs at that rate;
- torch.profiler's table of the top ops by self CPU time over one step, and the shares of
  matmuls, attention, the optimizer and everything else.

Trailing key=value arguments override the config (e.g. `method.dropout=0`). --optimizer swaps
the Trainer's AdamW for torch's fused, foreach or per-tensor one; --compile runs the model
through torch.compile (mode default).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from tunelab.data.batching import MicroBatch
    from tunelab.training.loop import Trainer

QUICKSTART = Path(__file__).resolve().parent.parent / "src" / "tunelab" / "configs" / "quickstart.yaml"
METHODS = {"lora": [], "full": ["method={name: full}", "train.lr=5e-5"]}
COMMON = ["train.precision=fp32"]


def build(method: str, packing: str, extra: list[str], out: Path) -> Trainer:
    """tunelab's Trainer for the quickstart's run with `method`, as `tunelab train` makes it.
    packing rows: packed rows of data.max_length through sdpa's block-diagonal mask, not one
    row attended per example (models/attention.py)."""
    import dataclasses

    import transformers

    from tunelab.config import load_run_config
    from tunelab.runs import RunDir
    from tunelab.training.data import prepare_data
    from tunelab.training.loop import Trainer
    from tunelab.workflows.train import plan_run

    config = load_run_config(QUICKSTART, [*COMMON, *METHODS[method],
                                          f"data.packing={str(packing != 'off').lower()}",
                                          f"output_dir={out}", f"name={method}", *extra])
    with contextlib.redirect_stdout(io.StringIO()):
        plan = plan_run(config, with_test=False)
        transformers.set_seed(config.train.seed)
        lm = plan.start.load(config)
        prepared = prepare_data(config, lm, plan.tasks, plan.splits)
        model = plan.start.apply(lm, plan.method, plan.options, plan.kind)
    if packing == "rows":
        for task in prepared.data.tasks:
            task.collate = dataclasses.replace(task.collate, per_example=False)
    run = RunDir(config.run_dir)
    run.root.mkdir(parents=True, exist_ok=True)
    return Trainer(model, config.train, prepared.data, run)


def swap_optimizer(trainer: Trainer, how: str) -> None:
    """The Trainer's AdamW (same groups and hyperparameters) as torch's `how` implementation."""
    from tunelab.training.schedule import make_scheduler

    old = trainer.optimizer
    groups = [{k: v for k, v in g.items() if k not in ("fused", "foreach")}
              for g in old.param_groups]
    fused = how == "fused"
    foreach = None if fused else how == "foreach"
    new = torch.optim.AdamW(groups, fused=fused, foreach=foreach)
    config = trainer.config
    trainer.optimizer = trainer.accelerator.prepare(new)
    trainer.scheduler = make_scheduler(new, trainer.total_steps,
                                       config.warmup_ratio, config.schedule)


def busy_seconds() -> tuple[float, float]:
    """(CPU seconds every process has used, CPU seconds this process has used) so far, from
    /proc: their difference over a step is what other jobs took from the cores meanwhile."""
    tick = os.sysconf("SC_CLK_TCK")
    with open("/proc/stat") as handle:
        fields = [int(x) for x in handle.readline().split()[1:]]
    every = (sum(fields) - fields[3] - fields[4]) / tick  # all but idle and iowait
    mine = os.times()
    return every, mine.user + mine.system


def compile_model(trainer: Trainer, how: str) -> None:
    """torch.compile (mode default) of the whole model, or of each transformer block (the
    model's `_no_split_modules`, as FSDP's units: one compiled graph that every block
    reuses). Random ops stay eager (inductor's fallback_random), so dropout draws the same
    masks as without compiling."""
    import torch._inductor.config as inductor

    inductor.fallback_random = True
    if how == "model":
        trainer.model = torch.compile(trainer.model)
        return
    model = trainer.model
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    blocks = set(getattr(base, "_no_split_modules", None) or [])
    for module in base.modules():
        if type(module).__name__ in blocks:
            module.compile()


def timed_steps(trainer: Trainer, steps: int
                ) -> tuple[list[float], list[MicroBatch], list[float], list[float]]:
    """(seconds of each step, its micro-batch, its loss, the cores other processes kept busy
    during it) for `steps` optimizer steps."""
    batches = trainer.epoch_batches(0)[:steps]
    seconds, losses, others = [], [], []
    for micro in batches:
        every, mine = busy_seconds()
        start = time.perf_counter()
        loss, _ = trainer._optimizer_step([micro])
        seconds.append(time.perf_counter() - start)
        every_after, mine_after = busy_seconds()
        others.append(max(0.0, (every_after - every) - (mine_after - mine)) / seconds[-1])
        losses.append(loss)
    return seconds, batches, losses, others


def step_flops(trainer: Trainer, micro: MicroBatch) -> tuple[int, int, dict[str, int]]:
    """(FLOPs of a forward and backward pass of `micro`, positions computed, FLOPs by op)."""
    from torch.utils.flop_counter import (
        FlopCounterMode,
        sdpa_backward_flop_count,
        sdpa_flop_count,
    )

    aten = torch.ops.aten
    cpu_attention = {  # torch's counter knows the GPU kernels of sdpa, not the CPU ones
        aten._scaled_dot_product_flash_attention_for_cpu:
            lambda q, k, v, *args, out_shape=None, **kwargs: sdpa_flop_count(q, k, v),
        aten._scaled_dot_product_flash_attention_for_cpu_backward:
            lambda grad, q, k, v, *args, out_shape=None, **kwargs:
                sdpa_backward_flop_count(grad, q, k, v)}
    task = trainer.tasks[micro.task]
    batch = trainer.to_device(micro.indices, task.train, task)
    kind = trainer.kind_of(micro.indices, task.train)
    counter = FlopCounterMode(display=False, custom_mapping=cpu_attention)
    with counter:
        loss = kind.loss(trainer.model, batch, torch.tensor(max(kind.loss_targets(batch), 1)))
        loss.backward()
    trainer.optimizer.zero_grad(set_to_none=True)
    by_op = {str(op): int(n) for op, n in counter.get_flop_counts().get("Global", {}).items()}
    return int(counter.get_total_flops()), int(batch["input_ids"].numel()), by_op


def block_products(positions: int, hidden: int, inner: int, kv: int, weight_grads: bool
                   ) -> list[tuple[int, int, int]]:
    """(m, k, n) of one transformer block's products at `positions` rows: forward, input
    gradient, and with `weight_grads` the weight gradient (full fine-tuning)."""
    linears = [(hidden, hidden), (hidden, kv), (hidden, kv), (hidden, hidden),  # q k v o
               (hidden, inner), (hidden, inner), (inner, hidden)]  # gate up down
    shapes = [(positions, i, o) for i, o in linears]  # forward: x @ W.T
    shapes += [(positions, o, i) for i, o in linears]  # input gradient: dy @ W
    if weight_grads:
        shapes += [(o, positions, i) for i, o in linears]  # weight gradient: dy.T @ x
    return shapes


def bare_gflops(shapes: list[tuple[int, int, int]], seconds: float = 0.4
                ) -> tuple[float, list[tuple[tuple[int, int, int], float]]]:
    """torch.mm throughput over `shapes` (FLOP-weighted: all FLOPs / all time), and each
    shape's GFLOP/s; each product repeated for about `seconds`, best of 3 rounds."""
    rows, flops, total = [], 0.0, 0.0
    for m, k, n in shapes:
        a, b = torch.randn(m, k), torch.randn(k, n)
        out = torch.empty(m, n)
        for _ in range(3):
            torch.mm(a, b, out=out)
        best = float("inf")
        for _ in range(3):
            repeats, start = 0, time.perf_counter()
            while time.perf_counter() - start < seconds / 3:
                torch.mm(a, b, out=out)
                repeats += 1
            best = min(best, (time.perf_counter() - start) / repeats)
        rows.append(((m, k, n), 2 * m * k * n / best / 1e9))
        flops += 2 * m * k * n
        total += best
    return flops / total / 1e9, rows


CATEGORIES: dict[str, Callable[[str], bool]] = {
    "matmul": lambda name: name in ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm",
                                    "aten::_mkl_linear", "aten::mkldnn_linear"),
    "attention": lambda name: "attention" in name or "flash" in name,
    "optimizer": lambda name: "adam" in name.lower() or "_foreach" in name,
}


def profile_step(trainer: Trainer, micro: MicroBatch, rows: int) -> dict[str, Any]:  # Any: JSON
    """torch.profiler over one optimizer step: the top ops by self CPU time and the shares of
    matmuls, attention, the optimizer and the rest."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        trainer._optimizer_step([micro])
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    shares = dict.fromkeys([*CATEGORIES, "other"], 0.0)
    for e in events:
        name = next((c for c, test in CATEGORIES.items() if test(e.key)), "other")
        shares[name] += e.self_cpu_time_total / total
    top = sorted(events, key=lambda e: -e.self_cpu_time_total)[:rows]
    return {"table": events.table(sort_by="self_cpu_time_total", row_limit=rows),
            "shares": shares, "self_cpu_s": total / 1e6,
            "top": [{"op": e.key, "self_s": e.self_cpu_time_total / 1e6, "calls": e.count,
                     "share": e.self_cpu_time_total / total} for e in top]}


def measure(method: str, args: argparse.Namespace, out: Path) -> dict[str, Any]:  # Any: JSON
    start = time.perf_counter()
    trainer = build(method, args.packing, args.overrides, out)
    with trainer.attention():  # as in `Trainer.fit`
        return _measure(trainer, method, args, start)


def _measure(trainer: Trainer, method: str, args: argparse.Namespace, start: float
             ) -> dict[str, Any]:  # Any: JSON
    load_s = time.perf_counter() - start
    if args.optimizer:
        swap_optimizer(trainer, args.optimizer)
    if args.compile:
        compile_model(trainer, args.compile)
    optimizer = trainer.optimizer.optimizer  # accelerate's wrapper
    implementation = ("fused" if optimizer.defaults.get("fused") else
                      "foreach" if optimizer.defaults.get("foreach") else "default")
    seconds, batches, losses, others = timed_steps(trainer, args.steps + 1)
    timed = seconds[1:]
    step_s = sum(timed) / len(timed)
    result: dict[str, Any] = {  # Any: JSON values
        "method": method, "load_s": load_s, "optimizer": implementation,
        "compiled": args.compile, "packing": args.packing, "first_step_s": seconds[0],
        "step_s": timed, "mean_step_s": step_s, "losses": losses, "other_load": others[1:]}
    if not args.flops:
        return result
    counts = [step_flops(trainer, m) for m in batches[1:]]
    flops = sum(c[0] for c in counts) / len(counts)
    positions = sum(c[1] for c in counts) / len(counts)
    by_op: dict[str, int] = {}
    for c in counts:
        for op, n in c[2].items():
            by_op[op] = by_op.get(op, 0) + n // len(counts)
    model_config = trainer.model.config
    kv = model_config.num_key_value_heads * model_config.hidden_size // model_config.num_attention_heads
    shapes = block_products(round(positions), model_config.hidden_size,
                            model_config.intermediate_size, kv, weight_grads=method == "full")
    bare, per_shape = bare_gflops(shapes)
    result.update({
        "positions_per_step": positions, "gflop_per_step": flops / 1e9,
        "flops_by_op": by_op, "achieved_gflops": flops / step_s / 1e9,
        "bare_gflops": bare, "compute_limit_s": flops / bare / 1e9,
        "bare_by_shape": [{"mnk": list(s), "gflops": g} for s, g in per_shape]})
    if args.profile:
        result["profile"] = profile_step(trainer, trainer.epoch_batches(0)[args.steps + 1],
                                         args.rows)
    return result


def report(r: dict[str, Any]) -> None:  # Any: measure's JSON values
    print(f"\n== {r['method']} (optimizer {r['optimizer']}, packing {r['packing']}"
          f"{', compiled: ' + str(r['compiled']) if r['compiled'] else ''}) ==")
    print(f"step 1 (warm-up{', compilation' if r['compiled'] else ''}): {r['first_step_s']:.2f} s; "
          f"steps 2..: {', '.join(f'{s:.2f}' for s in r['step_s'])} s "
          f"(mean {r['mean_step_s']:.2f} s); other processes kept "
          f"{', '.join(f'{x:.2f}' for x in r['other_load'])} cores busy meanwhile")
    print(f"losses: {', '.join(f'{x:.5f}' for x in r['losses'])}")
    if "gflop_per_step" not in r:
        return
    print(f"positions per step {r['positions_per_step']:.0f}; FLOPs per step "
          f"{r['gflop_per_step']:.1f} GFLOP (forward + backward, FlopCounterMode)")
    top = sorted(r["flops_by_op"].items(), key=lambda kv: -kv[1])
    print("  by op: " + ", ".join(f"{op} {n / 1e9:.1f}" for op, n in top))
    print(f"achieved {r['achieved_gflops']:.1f} GFLOP/s; bare torch.mm of a block's products "
          f"{r['bare_gflops']:.1f} GFLOP/s -> compute limit {r['compute_limit_s']:.2f} s/step, "
          f"the step at {r['compute_limit_s'] / r['mean_step_s']:.0%} of it")
    print("  bare by shape (m,k,n: GFLOP/s): " + ", ".join(
        f"{tuple(s['mnk'])}: {s['gflops']:.0f}" for s in r["bare_by_shape"]))
    if "profile" in r:
        p = r["profile"]
        print(f"profile of one step ({p['self_cpu_s']:.2f} s self CPU): " + ", ".join(
            f"{k} {v:.0%}" for k, v in p["shares"].items()))
        print(p["table"])


def cpu_name() -> str:
    """/proc/cpuinfo's model name (e.g. "AMD EPYC"), else the architecture."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", default="lora,full")
    parser.add_argument("--steps", type=int, default=4, help="timed steps after the warm-up")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--packing", choices=["on", "rows", "off"], default="on",
                        help="on: the config's packing (one row attended per example where the "
                        "model can); rows: rows of data.max_length, sdpa's mask; off: padded")
    parser.add_argument("--optimizer", choices=["fused", "foreach", "forloop"],
                        help="replace the Trainer's AdamW (default: the Trainer's own)")
    parser.add_argument("--compile", choices=["model", "blocks"],
                        help="torch.compile the whole model or each transformer block")
    parser.add_argument("--no-profile", dest="profile", action="store_false")
    parser.add_argument("--no-flops", dest="flops", action="store_false",
                        help="step times only: no FLOP count, bare products or profile")
    parser.add_argument("--rows", type=int, default=15, help="profiler table rows")
    parser.add_argument("--json", metavar="OUT")
    parser.add_argument("overrides", nargs="*", help="config key=value")
    args = parser.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if args.threads:
        torch.set_num_threads(args.threads)
    from tunelab.core.machine import CpuFeatures

    info = {"torch": torch.__version__, "threads": torch.get_num_threads(),
            "cpu": cpu_name(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "native_bf16": CpuFeatures.here().native_bf16,
            "cpus": os.cpu_count(), "python": platform.python_version(),
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
            "load_average": os.getloadavg(), "argv": sys.argv[1:]}
    print(json.dumps(info))
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for method in args.methods.split(","):
            results.append(measure(method, args, Path(tmp)))
            report(results[-1])
    if args.json:
        Path(args.json).write_text(json.dumps({"info": info, "results": results}, indent=1,
                                              default=str))


if __name__ == "__main__":
    main()

"""`tunelab sweep`: every method on the same data and budget, one comparison table.

Each method trains in its own process (so peak memory is that method's own), with the same
data, steps or wall-clock budget and seed. The table reports trainable parameters, size on
disk, peak memory, training tokens/s, validation loss, the task metric, and the change of
score on a second, untouched task (a first measure of forgetting).

Every method's run is planned before the first one trains (`plan_run`: options, data, config),
so a config or data error stops the sweep with one line (exit 2) and nothing written. What a
method cannot do with the config is turned off for that method alone and said under the table
(data.packing for prompt and prefix tuning, whose virtual tokens a packed row would share). A
method whose training fails keeps its row ("failed"), its reason is printed under the table,
and the sweep exits 1.
"""

from __future__ import annotations

import copy
import json
import math
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from tunelab.config import RunConfig, load_run_config, to_dict
from tunelab.core.errors import TunelabError
from tunelab.methods import METHODS, get_method
from tunelab.report.sweep_table import SweepRow, plot_score_vs_params, sweep_table
from tunelab.runs import RunDir, SweepDir, System
from tunelab.workflows.train import plan_run


@dataclass
class SweepOptions:
    methods: list[str]
    max_steps: int = 0
    """Same optimizer steps for every method (0: the config's own)."""
    max_seconds: float = 0
    """Same wall-clock training budget for every method (0: none)."""
    lr: dict[str, float] = field(default_factory=dict)
    """Per-method learning rates (default: each method's `sweep_lr`)."""
    resume: bool = False
    """Continue an existing sweep directory: finished methods are kept, the rest run again."""
    retention: list[str] | None = None
    """Untouched tasks or suites (default: the config's retention.tasks); every run scores them
    before (cached once per base model) and after training; the table shows the worst change."""


def check_options(options: SweepOptions) -> None:
    """--methods, --steps, --seconds and --lr, before anything runs."""
    unknown = [m for m in options.methods if m not in METHODS]
    if unknown:
        raise TunelabError(f"--methods: unknown {', '.join(unknown)}; known: {', '.join(sorted(METHODS))}")
    if not options.methods:
        raise TunelabError("--methods: none given; e.g. --methods lora,ia3,full")
    if options.max_steps < 0 or not (math.isfinite(options.max_seconds) and options.max_seconds >= 0):
        raise TunelabError("--steps/--seconds: must be 0 (the config's own) or more, e.g. --steps 45")
    for method, lr in options.lr.items():
        if method not in options.methods:
            raise TunelabError(f"--lr {method}={lr:g}: {method} is not in --methods "
                               f"({','.join(options.methods)})")
        if not (math.isfinite(lr) and lr >= 0):
            raise TunelabError(f"--lr {method}={lr:g}: must be a number >= 0, e.g. "
                               f"--lr {method}={get_method(method).sweep_lr:g}")


def turned_off(config: RunConfig, method: str) -> list[str]:
    """What the method cannot train with, turned off in `config` for it alone: packing, where
    the method cannot keep the examples of a packed row apart (its reason, for the table's
    notes)."""
    if get_method(method).supports_packing:
        return []
    sections = [config.data, *(task.data for task in config.tasks)]
    packed = [data for data in sections if data.packing]
    for data in packed:
        data.packing = False
    return ["data.packing off (its virtual tokens would be shared by every example of a packed "
            "row; tokens/s of padded batches)"] if packed else []


def method_config(base: RunConfig, method: str, options: SweepOptions, sweep_dir: Path) -> RunConfig:
    config = copy.deepcopy(base)
    spec = get_method(method)
    config.method = dict(base.method) if base.method.get("name") == method else \
        {"name": method, **spec.sweep_options}
    config.name = method
    config.output_dir = str(sweep_dir)
    config.train.lr = options.lr.get(method, spec.sweep_lr)
    if options.max_steps:
        config.train.max_steps = options.max_steps
    if options.max_seconds:
        config.train.max_seconds = options.max_seconds
    if options.retention is not None:
        config.retention.tasks = list(options.retention)
    config.retention.max_forgetting = None  # a sweep compares methods; it fails none of them
    return config


def set_aside(run_dir: Path) -> None:
    """An unfinished run directory (and its log) is renamed, never deleted."""
    for path in (run_dir, run_dir.with_suffix(".log")):
        if path.exists():
            n = 1
            while path.with_name(f"{path.name}.unfinished-{n}").exists():
                n += 1
            path.rename(path.with_name(f"{path.name}.unfinished-{n}"))


def _run(argv: list[str], log: Path) -> bool:
    with log.open("w") as handle:
        done = subprocess.run([sys.executable, "-m", "tunelab.cli", *argv], stdout=handle,
                              stderr=subprocess.STDOUT)
    return done.returncode == 0


def run_sweep(config_path: str, overrides: list[str], options: SweepOptions) -> Path:
    """Train every method, collect one row each, write sweep.json, sweep.md and a plot."""
    base = load_run_config(config_path, overrides)
    check_options(options)
    sweep_dir = base.run_dir.with_name(base.run_dir.name + "-sweep")
    if sweep_dir.exists() and not options.resume:
        raise TunelabError(f"{sweep_dir} exists; add --resume to finish it, or choose another "
                           "name (name=...)")
    configs = {m: method_config(base, m, options, sweep_dir) for m in options.methods}
    notes = {m: turned_off(config, m) for m, config in configs.items()}
    left = [c for c in configs.values() if not (options.resume and RunDir(c.run_dir).finished())]
    for i, config in enumerate(left):  # every run left to train planned before any trains;
        plan_run(config, with_test=i == 0)  # leakage into test once: the same data for all
    sweep_dir.mkdir(parents=True, exist_ok=True)
    rows: list[SweepRow] = []
    for method, config in configs.items():
        if RunDir(config.run_dir).finished() and options.resume:
            print(f"sweep: {method} finished before, kept ({config.run_dir})")
            rows.append(_row(method, config, True, sweep_dir, notes[method]))
            continue
        set_aside(config.run_dir)
        config_file = SweepDir(sweep_dir).method_config(method)
        config_file.write_text(yaml.safe_dump(to_dict(config), sort_keys=False))
        print(f"sweep: training {method} (lr {config.train.lr:g}) -> {config.run_dir}")
        ok = _run(["train", str(config_file)], SweepDir(sweep_dir).method_log(method))
        rows.append(_row(method, config, ok, sweep_dir, notes[method]))
    SweepDir(sweep_dir).results.write_text(json.dumps(
        {"rows": rows, "retention_tasks": options.retention if options.retention is not None
         else base.retention.tasks},
        indent=1))
    table = sweep_table(rows)
    SweepDir(sweep_dir).table.write_text(table + "\n")
    plot_score_vs_params(rows, SweepDir(sweep_dir).plot)
    print(table)
    return sweep_dir


def failure_reason(log: str) -> str:
    """The one line that says why a method's run failed: its last `tunelab: error:` line,
    else the log's last line (a traceback's exception)."""
    lines = [line.strip() for line in log.splitlines() if line.strip()]
    said = [line for line in lines if line.startswith("tunelab: error:")]
    return (said or lines or ["no output"])[-1]


def _row(method: str, config: RunConfig, ok: bool, sweep_dir: Path, notes: list[str]) -> SweepRow:
    row = SweepRow(method=method, lr=config.train.lr, ok=ok)
    if notes:
        row["notes"] = notes
    if not ok:
        log = SweepDir(sweep_dir).method_log(method).read_text()
        row["error"], row["reason"] = log[-500:], failure_reason(log)
        return row
    run = RunDir(config.run_dir)
    summary = json.loads(run.summary.read_text())
    row["trainable_parameters"] = summary.get("trainable_parameters")
    row["trainable_percent"] = summary.get("trainable_percent")
    row["size_on_disk_bytes"] = summary.get("size_on_disk_bytes")
    row["peak_memory_mb"] = summary.get("peak_memory_mb")
    row["tokens_per_s"] = summary.get("tokens_per_s")
    row["best_val_loss"] = summary.get("best_val_loss")
    row["steps"] = summary.get("steps")
    row["train_seconds"] = summary.get("train_seconds")
    metrics_file = run.eval_dir(System.tuned()).metrics
    if metrics_file.is_file():
        scores = json.loads(metrics_file.read_text())["scores"]
        key = config.eval.primary or next(iter(scores))
        row["metric"], row["score"] = key, scores[key]
    retention_file = run.retention.json
    if retention_file.is_file():
        kept = json.loads(retention_file.read_text())
        row["retention"] = {r["task"]: r["delta"] for r in kept["rows"]}
        row["worst_forgetting"] = kept["worst_forgetting"]
    return row

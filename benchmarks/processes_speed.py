"""How to use a CPU's cores for evaluation: 1 process x N threads against N processes x 1 thread.

The same evaluation (the built-in model on the quickstart's task: generation at 0 and 4 shots;
the multiple-choice form of the task at 4 shots), the result cache off, scored:

  threads    one process, torch intra-op threads = cores
  processes  `EvalProcesses(cores, threads=1)` (`--nproc`): this process and cores - 1 workers,
             each scoring a share of the items on one thread

Each is timed twice in a row; the first run of `processes` includes the workers' start (a fresh
interpreter each, importing torch and loading the model), the second is what every later
evaluation of a command costs (robustness scores dozens). Predictions must be identical.

    TUNELAB_EVAL_CACHE=off python benchmarks/processes_speed.py --limit 48
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
from printed import add_out_option, tee_stdout

from tunelab.core.machine import cpu_summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--limit", type=int, default=48)
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--cases", default="0,4,mc",
                        help="comma-separated: 0 (generate, 0 shots), 4 (generate, 4 shots), mc")
    parser.add_argument("--json", help="write the figures to this file")
    add_out_option(parser)
    args = parser.parse_args()
    tee_stdout(args.out)
    os.environ["TUNELAB_EVAL_CACHE"] = "off"
    from tunelab.data.training_tasks import run_task
    from tunelab.eval.processes import EvalProcesses
    from tunelab.eval.runner import evaluate_loaded
    from tunelab.eval.tasks import load_task
    from tunelab.models import load_model
    from tunelab.runs import System
    from tunelab.workflows.quickstart import quickstart_config

    config = quickstart_config(Path(tempfile.mkdtemp()))
    generate = run_task(config)
    choice = load_task("movie_sentiment_mc")
    lm = load_model(config.model)
    every = {"0": ("generate, 0 shots", generate, 0), "4": ("generate, 4 shots", generate, 4),
             "mc": ("multiple choice, 4 shots", choice, 4)}
    cases = [every[c.strip()] for c in args.cases.split(",") if c.strip()]
    print(f"{cpu_summary()}, using {args.cores} cores, torch {torch.__version__}, {args.limit} items")
    rows = []
    for name, task, shots in cases:
        times: dict[str, list[float]] = {"threads": [], "processes": []}
        predictions = {}
        torch.set_num_threads(args.cores)
        for _ in range(2):
            start = time.perf_counter()
            result = evaluate_loaded(lm, task, System.base(shots), shots=shots, limit=args.limit)
            times["threads"].append(time.perf_counter() - start)
        predictions["threads"] = [r["prediction"] for r in result.predictions]
        start = time.perf_counter()
        with EvalProcesses(args.cores, threads=1):
            for _ in range(2):
                result = evaluate_loaded(lm, task, System.base(shots), shots=shots,
                                         limit=args.limit)
                times["processes"].append(time.perf_counter() - start)
                start = time.perf_counter()
        predictions["processes"] = [r["prediction"] for r in result.predictions]
        row = {"case": name, "threads_s": times["threads"][1],
               "processes_first_s": times["processes"][0], "processes_s": times["processes"][1],
               "ratio": times["threads"][1] / times["processes"][1],
               "identical": predictions["threads"] == predictions["processes"]}
        rows.append(row)
        print(f"{name:>26}: 1x{args.cores} threads {row['threads_s']:.1f} s, {args.cores}x1 "
              f"processes {row['processes_s']:.1f} s (first, with start-up "
              f"{row['processes_first_s']:.1f} s): {row['ratio']:.2f}x, identical "
              f"{row['identical']}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"cpu": cpu_summary(), "rows": rows}, indent=1))
    return 0 if all(r["identical"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())

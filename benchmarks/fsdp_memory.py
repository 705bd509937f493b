"""DDP vs FSDP (train.fsdp) on two processes: what each process holds and how fast it trains.

    python benchmarks/fsdp_memory.py [--steps 4] [--methods full,lora]

The built-in model on the quickstart's data, two processes of batch 4 (`tunelab train
--nproc 2`, gloo on a CPU) for each layout and method, one run at a time; prints the
parameters each process holds (summary.json's placement), rank 0's peak RSS, seconds per step
and the step losses (the same for both layouts), then the FSDP / DDP ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

QUICKSTART = Path(__file__).resolve().parent.parent / "src" / "tunelab" / "configs" / "quickstart.yaml"


METHODS = {"full": "method={name: full}", "lora": "method.name=lora"}
"""Full fine-tuning, or the quickstart's LoRA."""


def run(method: str, fsdp: bool, steps: int, out: Path) -> dict:
    name = f"{method}-{'fsdp' if fsdp else 'ddp'}"
    args = [sys.executable, "-m", "tunelab.cli", "train", str(QUICKSTART), METHODS[method], f"train.fsdp={str(fsdp).lower()}", f"train.max_steps={steps}",
            "train.batch_size=4", "train.log_every=1", "train.eval_every=0",
            "data.validation_size=0", "data.packing=false", f"output_dir={out}",
            f"name={name}", "--no-eval", "--nproc", "2"]
    # one thread per process: two processes on two cores
    subprocess.run(args, check=True, capture_output=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    summary = json.loads((out / name / "summary.json").read_text())
    log = [json.loads(x) for x in (out / name / "train_log.jsonl").read_text().splitlines()]
    return {"held": summary["placement"]["parameters_per_process"],
            "total": summary["total_parameters"], "peak_mb": summary["peak_memory_mb"],
            "s_per_step": summary["train_seconds"] / steps,
            "losses": [r["loss"] for r in log if "loss" in r]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--methods", default="full,lora")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for method in args.methods.split(","):
            ddp, fsdp = (run(method, flag, args.steps, Path(tmp)) for flag in (False, True))
            rows.append((method, ddp, fsdp))
            for layout, r in (("ddp", ddp), ("fsdp", fsdp)):
                print(f"{method} {layout}: {r['held'] / 1e6:.1f}M of {r['total'] / 1e6:.1f}M "
                      f"parameters per process, peak RSS {r['peak_mb']:.0f} MiB (rank 0), "
                      f"{r['s_per_step']:.2f} s/step, losses "
                      + ", ".join(f"{x:.5f}" for x in r["losses"]), flush=True)
    for method, ddp, fsdp in rows:
        worst = max(abs(a - b) / abs(a) for a, b in zip(ddp["losses"], fsdp["losses"], strict=True))
        print(f"{method} fsdp / ddp: parameters per process x{fsdp['held'] / ddp['held']:.2f}, "
              f"peak RSS x{fsdp['peak_mb'] / ddp['peak_mb']:.2f}, s/step "
              f"x{fsdp['s_per_step'] / ddp['s_per_step']:.2f}, largest relative loss "
              f"difference {worst:.1e}")


if __name__ == "__main__":
    main()

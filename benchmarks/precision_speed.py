"""fp32 vs bf16 autocast (train.precision) on the built-in model, the quickstart's LoRA run.

    python benchmarks/precision_speed.py [--steps 8] [--method lora]

Each precision trains in its own process (same data, seed and steps); prints training
tokens/s, seconds per step, peak RSS and the per-step losses, then the ratios.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

QUICKSTART = Path(__file__).resolve().parent.parent / "src" / "tunelab" / "configs" / "quickstart.yaml"


def run(precision: str, steps: int, method: str, out: Path) -> dict:
    args = [sys.executable, "-m", "tunelab.cli", "train", str(QUICKSTART),
            f"train.max_steps={steps}", f"train.precision={precision}", "train.log_every=1",
            "data.packing=false",  # as measured in the README (the quickstart now packs)
            f"method.name={method}", f"output_dir={out}", f"name={precision}", "--no-eval"]
    subprocess.run(args, check=True, capture_output=True)
    summary = json.loads((out / precision / "summary.json").read_text())
    log = [json.loads(x) for x in (out / precision / "train_log.jsonl").read_text().splitlines()]
    return {"tokens_per_s": summary["tokens_per_s"], "s_per_step": summary["train_seconds"] / steps,
            "peak_mb": summary["peak_memory_mb"], "losses": [r["loss"] for r in log if "loss" in r]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--method", default="lora")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        results = {p: run(p, args.steps, args.method, Path(tmp)) for p in ("fp32", "bf16")}
    for name, r in results.items():
        print(f"{name}: {r['tokens_per_s']:.0f} tokens/s, {r['s_per_step']:.2f} s/step, "
              f"peak {r['peak_mb']:.0f} MiB, losses {', '.join(f'{x:.4f}' for x in r['losses'])}")
    fp32, bf16 = results["fp32"], results["bf16"]
    worst = max(abs(a - b) / a for a, b in zip(fp32["losses"], bf16["losses"], strict=True))
    print(f"bf16 / fp32: tokens/s x{bf16['tokens_per_s'] / fp32['tokens_per_s']:.2f}, "
          f"peak memory x{bf16['peak_mb'] / fp32['peak_mb']:.2f}, "
          f"largest relative loss difference {worst:.2%}")


if __name__ == "__main__":
    main()

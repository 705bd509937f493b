"""Compare two or more runs of the same config trained on different numbers of processes:
the largest difference between their trained weights, their losses, and their speed.

    python examples/processes-gpus/compare_runs.py RUN_A RUN_B [RUN_C ...]

The first run is the reference; each other run's adapter weights (adapter/
adapter_model.safetensors, or model/ for full fine-tuning) are compared with it tensor by
tensor. Loss and timing come from each run's train_log.jsonl and summary.json.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file


def weights(run: Path) -> dict[str, torch.Tensor]:
    files = sorted((run / "adapter").glob("*.safetensors")) or sorted((run / "model").glob("*.safetensors"))
    tensors: dict[str, torch.Tensor] = {}
    for file in files:
        tensors.update(load_file(file))
    return tensors


def last(log: list[dict], key: str) -> float | None:
    values = [row[key] for row in log if key in row]
    return values[-1] if values else None


def main() -> None:
    runs = [Path(a) for a in sys.argv[1:]]
    reference = weights(runs[0])
    print(f"{'run':<10} {'processes':>9} {'layout':<10} {'params/process':>14} {'precision':<9} "
          f"{'steps':>5} {'train s':>7} {'tokens/s':>8} {'last loss':>9} {'val loss':>8} "
          f"{'max |w - w_ref|':>15}")
    for run in runs:
        summary = json.loads((run / "summary.json").read_text())
        log = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
        tensors = weights(run)
        if set(tensors) != set(reference):
            raise SystemExit(f"{run}: not the same tensors as {runs[0]}")
        diff = max(float((tensors[k].float() - reference[k].float()).abs().max()) for k in tensors)
        placement = summary.get("placement") or {}
        print(f"{run.name:<10} {placement.get('processes', 1):>9} "
              f"{placement.get('layout', '-'):<10} {placement.get('parameters_per_process', 0):>14,} "
              f"{summary.get('precision', '-'):<9} {summary['steps']:>5} "
              f"{summary['train_seconds']:>7.1f} {summary['tokens_per_s']:>8.1f} "
              f"{last(log, 'loss'):>9.6f} {last(log, 'val_loss'):>8.6f} {diff:>15.2e}")
    print(f"\n{len(reference)} trained tensors, {sum(t.numel() for t in reference.values()):,} "
          f"weights compared with {runs[0].name}")


if __name__ == "__main__":
    main()

#!/usr/bin/env bash
# The full robustness measurement in docs/results/robustness.{md,json,png},
# robustness_severity.png and robustness_augmented.{md,json} (docs/guides/robustness.md):
# the quickstart's base model and LoRA run under every perturbation at severities 0.05, 0.1 and
# 0.2, then the LoRA run against the same config trained with noisy inputs
# (quickstart_augmented.yaml). About 10 + 7 minutes of scoring on 2 AVX2 cores, plus two
# quickstart trainings (about 7 minutes each) when runs/ lacks them. Not rerun for the guide:
# the files in docs/results are what these commands wrote on 2026-12-03, before the quickstart's
# batches were packed (its fine-tune then scored 75.00 on the clean test items; 76.67 since).
source "$(dirname "$0")/../lib.sh"
[[ -d runs/quickstart/adapter ]] || record quickstart tunelab quickstart
[[ -d runs/quickstart-augmented/adapter ]] ||
  record train_augmented tunelab train examples/robustness/quickstart_augmented.yaml
record sweep tunelab robustness --adapter runs/quickstart --baselines zero \
  --severity 0.05,0.1,0.2 --out "$RUNS/sweep"
record augmented tunelab robustness --adapter runs/quickstart --adapter runs/quickstart-augmented \
  --baselines none --severity 0.1,0.2 --out "$RUNS/augmented"
cp "$RUNS/sweep/robustness.md" "$RUNS/sweep/robustness.json" "$RUNS/sweep/robustness.png" docs/results/
cp "$RUNS/sweep/severity.png" docs/results/robustness_severity.png
cp "$RUNS/augmented/robustness.md" docs/results/robustness_augmented.md
cp "$RUNS/augmented/robustness.json" docs/results/robustness_augmented.json
finish

#!/usr/bin/env bash
# A tiny `tunelab tune` on the quickstart config (2 trials of 6 steps, scored on validation;
# the best scored on test once) and a refused search space: docs/guides/tune-hyperparameters.md.
# About 3 min on 2 AVX2 cores.
source "$(dirname "$0")/../lib.sh"
rm -rf "$RUNS/quickstart-tune"

record_exit 2 bad_space tunelab tune src/tunelab/configs/quickstart.yaml \
  --space examples/tune-hyperparameters/bad_space.yaml --trials 2
record tune tunelab tune src/tunelab/configs/quickstart.yaml "output_dir=$RUNS" \
  train.max_steps=6 train.eval_every=3 \
  --space examples/tune-hyperparameters/space.yaml --trials 2 --objective loss --baselines zero
finish

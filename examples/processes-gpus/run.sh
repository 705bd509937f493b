#!/usr/bin/env bash
# Reproduces every figure of the guide on several processes (docs/guides/processes-gpus.md):
# a 4-step LoRA run trained in one process (batch 8), in two DDP processes (batch 4 each) and
# in two FSDP processes, then their weights, losses and times compared. About 3 minutes on 2
# AVX2 cores (no GPU).
source "$(dirname "$0")/../lib.sh"
rm -rf "$RUNS/one" "$RUNS/two" "$RUNS/two-fsdp"

record one tunelab train examples/processes-gpus/tiny.yaml output_dir=$RUNS name=one --nproc 1 --no-eval
record two tunelab train examples/processes-gpus/tiny.yaml output_dir=$RUNS name=two train.batch_size=4 --nproc 2 --no-eval
record fsdp tunelab train examples/processes-gpus/tiny.yaml output_dir=$RUNS name=two-fsdp train.batch_size=4 train.fsdp=true --nproc 2 --no-eval
record compare python examples/processes-gpus/compare_runs.py $RUNS/one $RUNS/two $RUNS/two-fsdp
finish

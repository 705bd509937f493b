#!/usr/bin/env bash
# Bias in what the model picks and in what it writes (docs/guides/bias.md), a small live run
# offline: the counterfactual probes on the quickstart's test split (base 0-shot vs its LoRA),
# then what both write about four racial groups (52 prompts, greedy only, 24 new tokens).
# About 3 minutes on 2 AVX2 cores when runs/quickstart exists; `tunelab quickstart` first adds
# about 4 minutes. BBQ-lite needs BIG-bench data (tunelab data fetch bigbench --task bbq_lite_json).
# The full measurements in docs/results/bias.md and generation_bias.md: examples/bias/results.sh
# and examples/bias/generation_bias_demo.
source "$(dirname "$0")/../lib.sh"
[[ -d runs/quickstart/adapter ]] || record quickstart tunelab quickstart
record list tunelab bias --list
record probes tunelab bias --adapter runs/quickstart --baselines zero --out "$RUNS/probes"
record generation tunelab bias --generation --adapter runs/quickstart --groups race --samples 1 \
  --out "$RUNS/generation"
finish

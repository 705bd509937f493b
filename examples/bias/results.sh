#!/usr/bin/env bash
# The counterfactual probes and BBQ-lite measurement in docs/results/bias.{md,json}
# (docs/guides/bias.md): the quickstart's base model and LoRA run, 20 BBQ items per category and
# context. Needs BIG-bench's BBQ-lite (bigbench==1.0.0 from PyPI:
# `tunelab data fetch bigbench --task bbq_lite_json`, once). About 4 minutes on 2 cores, plus
# the quickstart (about 7 minutes) when runs/quickstart is missing. Not rerun for the guide
# (this machine has no BIG-bench data): docs/results/bias.* are what this command wrote on
# 2026-12-03. What the models write (docs/results/generation_bias.*): generation_bias_demo.
source "$(dirname "$0")/../lib.sh"
[[ -d runs/quickstart/adapter ]] || record quickstart tunelab quickstart
record bbq tunelab bias --adapter runs/quickstart --baselines zero --bbq --bbq-limit 20 --out "$RUNS/bbq"
cp "$RUNS/bbq/bias.md" "$RUNS/bbq/bias.json" docs/results/
finish

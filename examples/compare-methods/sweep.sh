#!/usr/bin/env bash
# The eight-method sweep of docs/guides/compare-methods.md: every method on the built-in model
# and task, 30 optimizer steps each, the `general` retention suite; writes
# docs/results/sweep.{md,json} and docs/results/score_vs_params.png. About an hour on 2 AVX2
# cores (the table's `train s` column alone adds up to 46 min). Needs the BIG-bench data once:
# `tunelab data fetch bigbench` (the general suite's two multiple-choice tasks).
source "$(dirname "$0")/../lib.sh"
rm -rf "$RUNS/full-sweep"

record full_sweep tunelab sweep examples/compare-methods/movie_sentiment.yaml \
  "output_dir=$RUNS/full-sweep" --steps 30
cp "$RUNS/full-sweep/movie-sentiment-sweep/sweep.md" "$RUNS/full-sweep/movie-sentiment-sweep/sweep.json" \
  "$RUNS/full-sweep/movie-sentiment-sweep/score_vs_params.png" docs/results/
finish

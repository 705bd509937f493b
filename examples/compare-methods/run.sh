#!/usr/bin/env bash
# A small `tunelab sweep` (LoRA and IA3, 6 optimizer steps each, news text as the retention
# task) and a paired comparison of the two methods on the same test items:
# docs/guides/compare-methods.md. About 3 min on 2 AVX2 cores. The full eight-method sweep
# behind docs/results/sweep.md is examples/compare-methods/sweep.sh (about an hour).
source "$(dirname "$0")/../lib.sh"
rm -rf "$RUNS/movie-sentiment-sweep"

record sweep tunelab sweep examples/compare-methods/movie_sentiment.yaml "output_dir=$RUNS" \
  retention.limit=20 --methods lora,ia3 --steps 6 --retention news_lm
record compare tunelab compare "$RUNS/movie-sentiment-sweep/lora" "$RUNS/movie-sentiment-sweep/ia3" \
  --examples 2
finish

#!/usr/bin/env bash
# Human ratings (docs/guides/human-ratings.md), offline and without a person: opens a rating
# session on the built-in model's SQuAD answers shipped in tests/data/rated_squad (base 0-shot
# vs its LoRA fine-tune, 40 questions), stops the server, imports the ratings of three
# SIMULATED raters (simulate_raters.py: rules with seeded noise, not human judgements) and
# prints `tunelab ratings`. Under a minute on 2 AVX2 cores; no model is loaded.
source "$(dirname "$0")/../lib.sh"
rm -rf "$RUNS/squad" && cp -r tests/data/rated_squad "$RUNS/squad"
record_exit 124 session timeout -s INT 10 tunelab rate "$RUNS/squad" --systems base,fine-tuned \
  --criteria correctness,relevance --pairwise --show-reference --port 0
record simulate python examples/human-ratings/simulate_raters.py "$RUNS/squad" "$RUNS/simulated.csv"
record ratings tunelab ratings "$RUNS/squad" --import "$RUNS/simulated.csv"
finish

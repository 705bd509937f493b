#!/usr/bin/env bash
# Reproduces every figure of the classify-encoder guide (docs/guides/classify-encoder.md): the
# built-in encoder minilm-l6 (all-MiniLM-L6-v2) with a classification head, LoRA-trained on the
# built-in movie-review sentiment data and scored against its untrained head on the same 60 test
# sentences; then its predictions on new reviews. About 3 minutes on 2 AVX2 cores.
source "$(dirname "$0")/../lib.sh"

rm -rf "$RUNS/minilm-sentiment" "$RUNS/compare"  # a rerun trains afresh
record train tunelab train examples/classify-encoder/minilm_sentiment.yaml "output_dir=$RUNS"
# the base model with its untrained head (zero-shot) against the trained run, on the same items
record compare tunelab eval --task "$RUNS/minilm-sentiment" --adapter "$RUNS/minilm-sentiment" \
  --baselines zero --out "$RUNS/compare"
cat > "$RUNS/new_reviews.jsonl" <<'JSONL'
{"input": "A warm, funny film with a terrific cast and a script that never talks down to its audience."}
{"input": "Loud, long and instantly forgettable."}
{"input": "The best thing about this sequel is the end credits."}
{"input": "Not the disaster I expected: the second half is genuinely moving."}
{"input": "A warm and funny film."}
{"input": "A boring, lazy film."}
JSONL
record_predict "$RUNS/minilm-sentiment" "$RUNS/new_reviews.jsonl"
finish

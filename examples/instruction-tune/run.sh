#!/usr/bin/env bash
# Reproduces the worked run of the instruction-tune guide (docs/guides/instruction-tune.md):
# the built-in model LoRA-tuned for 15 steps on the built-in movie-review sentiment data in the
# alpaca template, scored against the same model zero-shot on the same 60 test sentences, then
# asked about new reviews. About 4 minutes on 2 AVX2 cores.
source "$(dirname "$0")/../lib.sh"
CONFIG=examples/instruction-tune/sentiment.yaml
RUN="$RUNS/sentiment-alpaca"

rm -rf "$RUN" "$RUNS/compare"  # a rerun trains afresh
record inspect tunelab data inspect "$CONFIG" -n 1
record train tunelab train "$CONFIG" "output_dir=$RUNS"
# the base model zero-shot against the fine-tune, on the same 60 test items, in the same template
record compare tunelab eval --task "$RUN" --adapter "$RUN" --baselines zero --out "$RUNS/compare"
# a harder baseline: the base model in its own chat template (the built-in task), same 60 items
record chat tunelab eval --model smollm2-135m --task movie_sentiment
cat > "$RUNS/new_reviews.jsonl" <<'JSONL'
{"input": "A warm, funny film with a terrific cast and a script that never talks down to its audience."}
{"input": "Loud, long and instantly forgettable."}
{"input": "Not the disaster I expected: the second half is genuinely moving."}
JSONL
record_predict "$RUN" "$RUNS/new_reviews.jsonl"
finish

#!/usr/bin/env bash
# Short factual answers (the built-in world_facts questions), LoRA on the built-in model against
# its zero- and few-shot baselines, scored by exact match and token F1:
# docs/guides/question-answering.md. About 4 min on 2 AVX2 cores.
source "$(dirname "$0")/../lib.sh"
rm -rf "$RUNS/world-facts" "$RUNS/eval"

record task tunelab tasks validate src/tunelab/tasks/world_facts.yaml
record train tunelab train examples/question-answering/world_facts.yaml
record eval tunelab eval --adapter "$RUNS/world-facts" --task world_facts --baselines zero,few \
  --out "$RUNS/eval"
tuned=$(ls -d "$RUNS"/eval/fine-tuned*)
record score tunelab score -m exact_match,f1 -p "$tuned/predictions.jsonl" --ci
record compare tunelab compare "$RUNS/eval/base-0-shot" "$tuned" --examples 4
finish

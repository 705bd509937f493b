#!/usr/bin/env bash
# Subject lines for newsgroup posts (the built-in newsgroup_subjects data), LoRA on the built-in
# model against its zero-shot baseline, scored by ROUGE, BLEU and chrF:
# docs/guides/summarise-rouge.md. About 7 min on 2 AVX2 cores (training stops at its 200 s
# budget).
source "$(dirname "$0")/../lib.sh"
rm -rf "$RUNS/newsgroup-subjects" "$RUNS/eval"

record task tunelab tasks validate src/tunelab/tasks/newsgroup_subjects.yaml
record train tunelab train examples/summarise-rouge/newsgroup_subjects.yaml
record eval tunelab eval --adapter "$RUNS/newsgroup-subjects" --task newsgroup_subjects \
  --baselines zero --out "$RUNS/eval"
tuned=$(ls -d "$RUNS"/eval/fine-tuned*)
record score tunelab score -m rouge,bleu,chrf -p "$tuned/predictions.jsonl" --ci
record compare tunelab compare "$RUNS/eval/base-0-shot" "$tuned" --examples 3
finish

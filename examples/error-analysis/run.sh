#!/usr/bin/env bash
# Reproduces every figure of the error analysis guide (docs/guides/error-analysis.md): a
# 12-step LoRA fine-tune of the built-in model on the quickstart's task, compared item by item
# with the base model (`tunelab compare`, errors exported for the next iteration), and a graded
# comparison (ROUGE) of two prompts on a news task. About 4 minutes on 2 AVX2 cores.
source "$(dirname "$0")/../lib.sh"
rm -rf "$RUNS/sentiment" "$RUNS/base-0-shot" "$RUNS/news-0-shot" "$RUNS/news-1-shot" "$RUNS/errors.jsonl"

# Right or wrong (labels): the base model against a short fine-tune, on the 60 test items.
record train tunelab train examples/error-analysis/sentiment.yaml output_dir=$RUNS
record base tunelab eval --task $RUNS/sentiment --out $RUNS/base-0-shot
record compare tunelab compare $RUNS/base-0-shot $RUNS/sentiment --examples 4 --export $RUNS/errors.jsonl
record errors head -c 1200 $RUNS/errors.jsonl

# Graded (ROUGE-L): the news articles' opening sentence written 0-shot and 1-shot, 16 items.
record news_data python examples/error-analysis/news_lead.py $RUNS/news_lead.jsonl
record news_0 tunelab eval --task examples/error-analysis/news_lead.yaml --shots 0 --limit 16 --out $RUNS/news-0-shot
record news_1 tunelab eval --task examples/error-analysis/news_lead.yaml --shots 1 --limit 16 --out $RUNS/news-1-shot
record graded tunelab compare $RUNS/news-0-shot $RUNS/news-1-shot --examples 2
record graded_pass tunelab compare $RUNS/news-0-shot $RUNS/news-1-shot --pass 30 --examples 2
record_exit 2 pass_on_labels tunelab compare $RUNS/base-0-shot $RUNS/sentiment --pass 50
finish

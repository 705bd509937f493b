#!/usr/bin/env bash
# Reproduces the live figures of the export and serve guide (docs/guides/export-serve.md): an
# 8-step LoRA fine-tune of the built-in model, `tunelab predict` on new reviews, HF and GGUF
# exports checked on 30 test items, and `tunelab serve` (llama.cpp) answering requests. About
# 5 minutes on 2 AVX2 cores. The full-size figures: examples/export-serve/deploy_demo.
source "$(dirname "$0")/../lib.sh"
rm -rf "$RUNS/sentiment" "$RUNS/hf" "$RUNS/gguf" "$RUNS"/new*.csv

record train tunelab train examples/export-serve/sentiment.yaml output_dir=$RUNS
cat > "$RUNS/new.csv" <<'CSV'
input
"a gorgeous , witty , seductive movie ."
"the plot is nothing but boilerplate clichés from start to finish ."
"an utterly compelling ' who wrote it ' in which the reputation of the most famous author who ever lived comes into question ."
CSV
record predict tunelab predict $RUNS/sentiment --input $RUNS/new.csv
record predictions cat $RUNS/new.predictions.csv
printf 'review\n"a gorgeous , witty , seductive movie ."\n' > "$RUNS/new_wrong_column.csv"
record_exit 2 predict_missing tunelab predict $RUNS/sentiment --input $RUNS/new_wrong_column.csv
record export_hf tunelab export $RUNS/sentiment --format hf --out $RUNS/hf --limit 30
# q4_0 loses more than 5 points on this short run: --max-drop makes the command exit 1
record_exit 1 export_gguf tunelab export $RUNS/sentiment --format gguf --quant f16,q8_0,q4_0 --out $RUNS/gguf --limit 30 --max-drop 5
record export_files ls $RUNS/gguf
record serve python examples/export-serve/ask.py $RUNS/gguf --quant q8_0
finish

#!/usr/bin/env bash
# Robustness to noisy input (docs/guides/robustness.md), a small live run: the quickstart's
# base model and its LoRA fine-tune on the 60 test sentences, clean and under typos, character
# noise and OCR confusions at severity 0.2, plus what training-time augmentation does to a
# training input. About 2 minutes on 2 AVX2 cores when runs/quickstart exists;
# `tunelab quickstart` first adds about 4 minutes. The full measurement in
# docs/results/robustness*.md: examples/robustness/results.sh.
source "$(dirname "$0")/../lib.sh"
[[ -d runs/quickstart/adapter ]] || record quickstart tunelab quickstart
record list tunelab robustness --list
record small tunelab robustness --adapter runs/quickstart --baselines zero \
  --perturbations typo,char_noise,ocr --severity 0.2 --out "$RUNS/small"
record augment tunelab data inspect examples/robustness/quickstart_augmented.yaml -n 1
finish

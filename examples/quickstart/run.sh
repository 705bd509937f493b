#!/usr/bin/env bash
# `tunelab quickstart` as the README's first command runs it, its whole output kept for
# docs/getting-started.md (about 4 minutes on 2 AVX2-only cores).
source "$(dirname "$0")/../lib.sh"
rm -rf "$RUNS/quickstart"
export TUNELAB_EVAL_CACHE=off  # as on a new machine: nothing scored before (the converted weights stay cached)
record quickstart tunelab quickstart --out "$RUNS"
finish

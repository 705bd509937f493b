#!/usr/bin/env bash
# Reproduces every figure of the check-data guide (docs/guides/check-data.md): `tunelab data
# check` on the built-in task and on a small review set with planted problems, and `tunelab
# train` refusing leaked data. Under a minute on 2 AVX2 cores (no model is trained).
source "$(dirname "$0")/../lib.sh"

# A small review set with one problem of each kind: rows 2 (a duplicate of row 1: case and
# spacing only), 4 (a near duplicate of row 3: one word), 5-6 (the same review, both labels),
# 7 (also in the test file) and 8 (a test sentence of the built-in movie_sentiment task).
cat > "$RUNS/train.jsonl" <<'JSONL'
{"text": "A warm, funny film with a terrific cast and a script that never talks down to its audience.", "label": "positive"}
{"text": "a warm, funny film with a terrific  cast and a script that never talks down to its audience.", "label": "positive"}
{"text": "The plot drags from the first scene, the jokes never land, and by the end the two hours feel like four.", "label": "negative"}
{"text": "The plot drags from the first scene, the jokes never land, and by the end the two hours feel like five.", "label": "negative"}
{"text": "An ambitious film that tries to do everything at once.", "label": "positive"}
{"text": "An ambitious film that tries to do everything at once.", "label": "negative"}
{"text": "Beautifully shot, but the story goes nowhere and the characters never come alive.", "label": "negative"}
{"text": "skip the film and buy the philip glass soundtrack cd .", "label": "negative"}
{"text": "The best thing about this sequel is the end credits.", "label": "negative"}
{"text": "A small, honest picture about grief that earns every one of its tears.", "label": "positive"}
{"text": "Two great leads cannot save a screenplay this lazy.", "label": "negative"}
{"text": "Sharp, moving and often very funny: see it with someone you love.", "label": "positive"}
{"text": "The director keeps the suspense tight until the very last frame.", "label": "positive"}
{"text": "Loud, long and instantly forgettable.", "label": "negative"}
JSONL
cat > "$RUNS/test.jsonl" <<'JSONL'
{"text": "Beautifully shot, but the story goes nowhere and the characters never come alive.", "label": "negative"}
{"text": "A gentle comedy that finds real warmth in ordinary lives.", "label": "positive"}
{"text": "Every twist is visible an hour before it arrives.", "label": "negative"}
{"text": "The performances are so good that the thin plot hardly matters.", "label": "positive"}
JSONL

record builtin tunelab data check movie_sentiment --out "$RUNS/builtin.json"
record data cat "$RUNS/train.jsonl" "$RUNS/test.jsonl"
record file tunelab data check "$RUNS/train.jsonl" --fields input=text,output=label \
  --against movie_sentiment --out "$RUNS/file.json"
record config tunelab data check examples/check-data/reviews.yaml \
  --fix "$RUNS/train.fixed.jsonl" --out "$RUNS/config.json"
record_exit 2 train tunelab train examples/check-data/reviews.yaml
record fixed tunelab data check examples/check-data/reviews.yaml \
  "data.train_file=$RUNS/train.fixed.jsonl" --no-label-errors --out "$RUNS/fixed.json"
finish

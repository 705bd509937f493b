#!/usr/bin/env bash
# Two tasks in one LoRA run (a temperature-sampled mixture) with an offline retention suite,
# scored before and after: docs/guides/multitask-forgetting.md. About 4 min on 2 AVX2 cores
# (3 min once the base model's retention scores are cached).
source "$(dirname "$0")/../lib.sh"

# capitals.jsonl: world capital -> country from word2vec's analogy questions in gensim's test
# data (the capital-* sections, `analogy_pairs`), each capital once
python - "$RUNS/data/capitals.jsonl" <<'PY'
import json, sys
from pathlib import Path
from tunelab.data.builtin_datasets import analogy_pairs
capitals = {}
for section, pairs in analogy_pairs().items():
    if section.startswith("capital-"):
        for capital, country in pairs:
            capitals.setdefault(capital, country)
out = Path(sys.argv[1])
out.parent.mkdir(parents=True, exist_ok=True)
out.write_text("".join(json.dumps({"instruction": "Which country has this capital city? Answer "
                                   "with the country only.", "input": a, "output": b}) + "\n"
                       for a, b in sorted(capitals.items())), encoding="utf-8")
PY
rm -rf "$RUNS/two-tasks"

record train tunelab train examples/multitask-forgetting/two_tasks.yaml --max-forgetting 10
finish

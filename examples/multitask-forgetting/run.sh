#!/usr/bin/env bash
# Two tasks in one LoRA run (a temperature-sampled mixture) with an offline retention suite,
# scored before and after: docs/guides/multitask-forgetting.md. About 4 min on 2 AVX2 cores
# (3 min once the base model's retention scores are cached).
export TQDM_DISABLE=1  # no progress bars in the recorded output
source "$(dirname "$0")/../lib.sh"

# capitals.jsonl: world capital -> country from word2vec's analogy questions in gensim's test
# data (the capital-* sections), each capital once
python - "$RUNS/data/capitals.jsonl" <<'PY'
import json, sys
from pathlib import Path
import gensim
path = Path(gensim.__file__).parent / "test" / "test_data" / "questions-words.txt"
capitals, section = {}, ""
for line in path.read_text(encoding="utf-8").splitlines():
    if line.startswith(":"):
        section = line[1:].strip()
    elif section.startswith("capital-"):
        a, b, c, d = line.split()
        capitals.setdefault(a, b)
        capitals.setdefault(c, d)
out = Path(sys.argv[1])
out.parent.mkdir(parents=True, exist_ok=True)
out.write_text("".join(json.dumps({"instruction": "Which country has this capital city? Answer "
                                   "with the country only.", "input": a, "output": b}) + "\n"
                       for a, b in sorted(capitals.items())), encoding="utf-8")
PY
rm -rf "$RUNS/two-tasks"

record train tunelab train examples/multitask-forgetting/two_tasks.yaml --max-forgetting 10
finish

#!/usr/bin/env bash
# Reruns the cheap benchmarks at a small size and writes what each printed to
# benchmarks/results/NAME.txt, with the machine in benchmarks/results/machine.txt; the
# benchmarks guide (docs/guides/benchmarks.md) includes those files. About 5 minutes on 2 AVX2
# cores. The expensive benchmarks (train_speed, proof_cost, step_profile, ...) are not rerun
# here: their commands and figures are in benchmarks/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 TRANSFORMERS_VERBOSITY=error TOKENIZERS_PARALLELISM=false
OUT=benchmarks/results
python benchmarks/startup.py --out $OUT/startup.txt
TUNELAB_EVAL_CACHE=off python benchmarks/gen_speed.py --limit 32 --repeats 1 --threads 1 --out $OUT/gen_speed.txt
python benchmarks/mc_speed.py --task movie_sentiment_mc --shots 4 --sampler first --limit 24 --repeats 1 --out $OUT/mc_speed.txt
python benchmarks/processes_speed.py --limit 16 --cases 0,mc --out $OUT/processes_speed.txt
python - > $OUT/machine.txt <<'PY'
import datetime
import torch
from tunelab.core.machine import cpu_summary
print(f"benchmarks/run_cheap.sh on {cpu_summary()}, torch {torch.__version__}, "
      f"{datetime.date.today()}")
PY
cat $OUT/machine.txt

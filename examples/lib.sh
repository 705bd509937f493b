# Sourced by the guides' scripts (examples/GUIDE/run.sh). Every figure a guide shows is a file
# its script wrote under examples/GUIDE/output/, included into the page as it is
# (`--8<-- "examples/GUIDE/output/NAME.txt"` in docs/guides/GUIDE.md), so the page never holds
# a number typed by hand. Runs go to runs/guides/GUIDE/ (ignored by git).
#
#   record NAME CMD...          run CMD from the repository root; write "$ CMD" and what it
#                               printed to output/NAME.txt (a failing CMD stops the script)
#   record_exit CODE NAME CMD... the same for a command that must exit with CODE (bad input)
#   record_predict RUN INPUT    `tunelab predict RUN --input INPUT` into output/predict.txt and
#                               the predictions it wrote into output/predictions.txt
#   finish                      write output/machine.txt: the CPU, torch, the date, the seconds
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
GUIDE=$(basename "$(cd "$(dirname "$0")" && pwd)")
OUTPUT="$ROOT/examples/$GUIDE/output"
RUNS="runs/guides/$GUIDE"
STARTED=$(date +%s)
export PYTHONUNBUFFERED=1 TRANSFORMERS_VERBOSITY=error TOKENIZERS_PARALLELISM=false TQDM_DISABLE=1
cd "$ROOT"
mkdir -p "$OUTPUT" "$RUNS"

_show() {
  local out='$' a
  for a in "$@"; do
    if [[ $a =~ [[:space:]\"\'\$\;\|\&\*\(\)\<\>] ]]; then out+=" '${a//\'/\'\\\'\'}'"; else out+=" $a"; fi
  done
  echo "${out//$ROOT\//}"
}

record() {
  local name=$1; shift
  { _show "$@"; "$@" 2>&1; } | tee "$OUTPUT/$name.txt"
}

record_predict() {
  local run=$1 input=$2
  rm -f "${input%.jsonl}.predictions.jsonl"  # predict never overwrites
  record predict tunelab predict "$run" --input "$input"
  record predictions cat "${input%.jsonl}.predictions.jsonl"
}

record_exit() {
  local want=$1 name=$2; shift 2
  local got=0
  { _show "$@"; "$@" 2>&1 || got=$?; echo "(exit code $got)"; } | tee "$OUTPUT/$name.txt"
  if ! grep -q "^(exit code $want)$" "$OUTPUT/$name.txt"; then
    echo "examples/$GUIDE: expected exit code $want from: $*" >&2; exit 1
  fi
}

finish() {
  python - "$GUIDE" "$(( $(date +%s) - STARTED ))" > "$OUTPUT/machine.txt" <<'PY'
import datetime, sys
import torch
from tunelab.core.machine import cpu_summary
guide, seconds = sys.argv[1], int(sys.argv[2])
print(f"examples/{guide}/run.sh on {cpu_summary()}, torch {torch.__version__}, "
      f"{datetime.date.today()}: {seconds // 60} min {seconds % 60} s")
PY
  cat "$OUTPUT/machine.txt"
}

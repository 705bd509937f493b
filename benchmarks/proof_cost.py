"""What the proof costs against the fine-tune: the quickstart, then its robustness sweep.

Runs, each as a new user would type it, in subprocesses on this machine, one after another:

  1. `tunelab quickstart --out DIR`: wall time, and the training time it reports
     (summary.json's train_seconds)
  2. `tunelab robustness --adapter DIR/quickstart --baselines zero --severity 0.05,0.1,0.2`
     (11 perturbations x 3 severities, base 0-shot and fine-tuned), with the result cache
     the quickstart filled (the clean items it scored are looked up)
  3. the same sweep rerun, with the cache step 2 left (every item looked up, and the two
     models' weights known: models/known_weights.py, so neither loads)
  4. the same sweep with the result cache off (`TUNELAB_EVAL_CACHE=off`)
  5. with --sweep-nproc N: the sweep again, cache off, in N processes (`--nproc N`)

and prints each time and its ratio to the training time. The goal: quickstart <= 5 minutes,
the sweep <= 1.5x the training time. The result cache starts empty (a new $TUNELAB_CACHE
under the output folder, linked to the user cache's converted weights and data, without its
eval-results.sqlite), so nothing an earlier run scored is looked up. The results the
quickstart cached are copied to OUT/quickstart-results.sqlite; `--from OUT` times the sweeps
again against that quickstart (its training time, and a result cache holding only what it
scored).

    python benchmarks/proof_cost.py --sweep-nproc 2
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tunelab.core.machine import cpu_summary
from tunelab.core.paths import cache_root

SWEEP = ["--baselines", "zero", "--severity", "0.05,0.1,0.2"]


def timed(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "tunelab.cli", *argv], env=env, check=True,
                   stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def empty_result_cache(root: Path) -> Path:
    """A cache root holding what the user cache holds (converted weights, fetched data) but no
    evaluation results."""
    root.mkdir(parents=True, exist_ok=True)
    for entry in cache_root().glob("*"):
        if not entry.name.startswith("eval-results") and not (root / entry.name).exists():
            (root / entry.name).symlink_to(entry)
    return root


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", help="where the quickstart run goes (default: a new temp dir)")
    parser.add_argument("--sweep-nproc", type=int, help="also time the sweep in N processes")
    parser.add_argument("--skip-uncached", action="store_true", help="skip step 4")
    parser.add_argument("--json", help="write the figures here")
    parser.add_argument("--from", dest="earlier", help="the --out of an earlier run: time the "
                        "sweeps again against its quickstart")
    args = parser.parse_args()
    out = Path(args.out or tempfile.mkdtemp())
    env = dict(os.environ, TQDM_DISABLE="1", TUNELAB_CACHE=str(empty_result_cache(out / "cache")))
    print(f"CPU: {cpu_summary()}", flush=True)
    cached = Path(env["TUNELAB_CACHE"]) / "eval-results.sqlite"
    figures: dict[str, float]
    if args.earlier:
        earlier = Path(args.earlier)
        figures = json.loads((earlier / "figures.json").read_text())
        run = earlier / "quickstart"
        shutil.copyfile(earlier / "quickstart-results.sqlite", cached)
    else:
        figures = {"quickstart_s": timed(["quickstart", "--out", str(out)], env)}
        run = out / "quickstart"
        figures["train_s"] = json.loads((run / "summary.json").read_text())["train_seconds"]
        shutil.copyfile(cached, out / "quickstart-results.sqlite")
        (out / "figures.json").write_text(json.dumps(figures))
    print(f"quickstart {figures['quickstart_s']:.0f} s, of which training "
          f"{figures['train_s']:.0f} s", flush=True)
    sweeps = [("sweep_cached_s", "cache filled by the quickstart", env, []),
              ("sweep_rerun_s", "the same again: a rerun", env, [])]
    if not args.skip_uncached:
        sweeps.append(("sweep_uncached_s", "cache off", {**env, "TUNELAB_EVAL_CACHE": "off"}, []))
    if args.sweep_nproc:
        sweeps.append((f"sweep_nproc{args.sweep_nproc}_s", f"cache off, --nproc {args.sweep_nproc}",
                       {**env, "TUNELAB_EVAL_CACHE": "off"}, ["--nproc", str(args.sweep_nproc)]))
    for key, what, sweep_env, extra in sweeps:
        figures[key] = timed(["robustness", "--adapter", str(run), *SWEEP, *extra,
                              "--out", str(out / key)], sweep_env)
        print(f"robustness sweep ({what}): {figures[key]:.0f} s = "
              f"{figures[key] / figures['train_s']:.2f}x the training time", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"cpu": cpu_summary(), **figures}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

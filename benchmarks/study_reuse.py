"""A robustness study with and without its store of the prompts it scored.

`tunelab robustness` scores one system's clean items, then every perturbed version of them,
inside `models/prompt_caches.py: kept_prompts`: a perturbed prompt (generation) or context
(multiple choice) runs from its first changed token. This script runs the same study
(`tunelab.robustness`, result cache off) twice in one process, alternating:

  whole  with `kept_prompts` replaced by a block that keeps nothing (every prompt runs whole;
         a prefix all prompts of a call share still runs once)
  kept   as tunelab runs it

and prints each time, the ratio, and whether the two reports are equal (scores, CIs, changed
predictions); the script exits 1 when they are not.

    python benchmarks/study_reuse.py --task movie_sentiment_mc --baselines few --limit 40
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

from printed import add_out_option, tee_stdout


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", default="movie_sentiment_mc")
    parser.add_argument("--baselines", default="few", help="as `tunelab robustness`'s")
    parser.add_argument("--limit", type=int, default=40)
    parser.add_argument("--severity", default="0.1", help="comma-separated")
    parser.add_argument("--perturbations", default="all")
    parser.add_argument("--json", help="write the figures here")
    add_out_option(parser)
    return parser.parse_args()


@contextmanager
def keeps_nothing(lm: object) -> Iterator[None]:
    """`kept_prompts` as it was before the store: nothing kept between calls."""
    yield None


def main() -> int:
    args = parse_args()
    tee_stdout(args.out)
    os.environ["TUNELAB_EVAL_CACHE"] = "off"  # every item scored, in both runs
    os.environ.setdefault("TQDM_DISABLE", "1")
    import tunelab
    from tunelab.core.machine import cpu_summary
    from tunelab.models import prompt_caches

    severities = [float(s) for s in args.severity.split(",")]
    baselines = [b for b in args.baselines.split(",") if b]
    kept = prompt_caches.kept_prompts
    seconds: dict[str, float] = {}
    reports: dict[str, object] = {}
    print(f"{cpu_summary()}; {args.task}, {args.limit} items, baselines {args.baselines}, "
          f"perturbations {args.perturbations} x severities {args.severity}", flush=True)
    for name, block in (("whole", keeps_nothing), ("kept", kept)):
        prompt_caches.kept_prompts = block
        start = time.perf_counter()
        report = tunelab.robustness(args.task, args.perturbations, baselines=baselines,
                                    severities=severities, limit=args.limit)
        seconds[name] = time.perf_counter() - start
        reports[name] = json.loads(json.dumps(report.to_json(), default=str))
        print(f"{name:>5}: {seconds[name]:.1f} s", flush=True)
    prompt_caches.kept_prompts = kept
    same = reports["whole"] == reports["kept"]
    ratio = seconds["whole"] / seconds["kept"]
    print(f"kept store: {ratio:.2f}x faster; reports equal: {same}")
    if args.json:
        with open(args.json, "w") as file:
            json.dump({"cpu": cpu_summary(), "task": args.task, "seconds": seconds,
                       "ratio": ratio, "equal": same}, file, indent=1)
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())

"""Scores that do not depend on the batch size: the built-in model (full, or cut with
--layers N) on generation and multiple choice at batch sizes 1, 8 and 32.

    python benchmarks/batch_invariance.py [--layers N] [--limit 60]

Prints, per task and batch size, how many predictions differ from batch size 1, whether the
scores are equal, and the largest difference of a choice log-likelihood.
"""

from __future__ import annotations

import argparse
import copy
import time

from tunelab.config import ModelConfig
from tunelab.eval.runner import evaluate_loaded
from tunelab.eval.tasks import load_task
from tunelab.models import load_model
from tunelab.runs import System


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--layers", type=int, default=None)
    parser.add_argument("--limit", type=int, default=60)
    args = parser.parse_args()
    lm = load_model(ModelConfig(name="smollm2-135m", num_layers=args.layers))
    for name in ("movie_sentiment", "movie_sentiment_mc"):
        task = load_task(name)
        runs = {}
        for size in (1, 8, 32):
            sized = copy.deepcopy(task)
            sized.eval.generation.batch_size = sized.eval.batch_size = size
            start = time.perf_counter()
            runs[size] = (evaluate_loaded(lm, sized, System.base(), shots=0, limit=args.limit, bootstrap=0),
                          time.perf_counter() - start)
        one = runs[1][0]
        for size, (result, seconds) in runs.items():
            differ = sum(a["prediction"] != b["prediction"]
                         for a, b in zip(one.predictions, result.predictions, strict=True))
            worst = max((abs(x - y) for a, b in zip(one.predictions, result.predictions, strict=True)
                         for x, y in zip(a.get("logprobs", []), b.get("logprobs", []), strict=True)),
                        default=0.0)
            key = next(iter(result.scores))
            print(f"{name:20s} batch {size:2d}: {result.n} items, {differ} predictions differ "
                  f"from batch 1, scores equal: {result.scores == one.scores} ({key} "
                  f"{result.scores[key]:.2f}), max |logprob diff| {worst:.1e}, {seconds:.1f} s")


if __name__ == "__main__":
    main()

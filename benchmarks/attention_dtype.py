"""Attention of one example in bf16 or in float32 on this CPU: why short examples attend in
float32 under bf16 training (`models/attention.py: FLOAT32_BELOW`).

Causal sdpa forward and backward over one example, the built-in model's shape (9 query heads
of 64 dimensions), from bf16 inputs: as bf16 (what sdpa runs under autocast) and cast to
float32 and back (what tunelab runs below FLOAT32_BELOW); about 600 positions per timing
(examples of the length, end to end), best of --repeats, both in this process.

    python benchmarks/attention_dtype.py [--lengths 64,128,256,384,512,768,1024]
"""

from __future__ import annotations

import argparse
import sys
import time

import torch
import torch.nn.functional as F
from printed import add_out_option, tee_stdout

HEADS, DIM = 9, 64


def timed(length: int, in_float32: bool, repeats: int) -> float:
    """Seconds for forward + backward over ~600 positions of examples of `length`."""
    examples = max(1, 600 // length)
    best = float("inf")
    for _ in range(repeats):
        inputs = [[torch.randn(1, HEADS, length, DIM, dtype=torch.bfloat16, requires_grad=True)
                   for _ in range(3)] for _ in range(examples)]
        start = time.perf_counter()
        for _ in range(10):  # ten layers' worth
            for q, k, v in inputs:
                if in_float32:
                    out = F.scaled_dot_product_attention(q.float(), k.float(), v.float(),
                                                         is_causal=True).to(torch.bfloat16)
                else:
                    out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
                out.sum().backward()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lengths", default="64,128,256,384,512,768,1024")
    parser.add_argument("--repeats", type=int, default=3)
    add_out_option(parser)
    args = parser.parse_args()
    tee_stdout(args.out)
    from tunelab.core.machine import cpu_summary
    from tunelab.models.attention import FLOAT32_BELOW

    print(f"{cpu_summary()}, {torch.get_num_threads()} threads, torch {torch.__version__}; "
          f"FLOAT32_BELOW = {FLOAT32_BELOW}")
    print("| example tokens | bf16 (ms) | float32 from bf16 (ms) | bf16 / float32 |")
    print("|---|---|---|---|")
    for length in (int(x) for x in args.lengths.split(",")):
        half, full = timed(length, False, args.repeats), timed(length, True, args.repeats)
        print(f"| {length} | {half * 1000:.0f} | {full * 1000:.0f} | {half / full:.2f}x |",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

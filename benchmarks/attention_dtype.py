"""Attention of one example in bf16 or in float32 on this CPU: why short examples attend in
float32 under bf16 training (`models/attention.py: FLOAT32_BELOW`).

Causal sdpa forward and backward over one example, the built-in model's shape (9 query heads
of 64 dimensions), from bf16 inputs: as bf16 (what sdpa runs under autocast) and cast to
float32 and back (what tunelab runs below FLOAT32_BELOW); about 600 positions per timing
(examples of the length, end to end), best of --repeats, both in this process.
`--losses`: the built-in model's loss on six packed batches of 8 news snippets (gensim's
Lee corpus, 40-120 tokens, loss on the second half) under bf16 autocast, each way, against
float32's: what the choice does to the numbers.

    python benchmarks/attention_dtype.py [--lengths 64,128,256,384,512,768,1024] [--losses]
"""

from __future__ import annotations

import argparse
import random
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


def losses() -> None:
    """|bf16 loss - float32 loss| per batch, short examples attended in float32 and in bf16."""
    from gensim.test.utils import datapath
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tunelab.models import attention
    from tunelab.models.builtin import builtin_model_dir
    from tunelab.models.kinds import CAUSAL, TokenizedExample

    folder = str(builtin_model_dir("smollm2-135m"))
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    with open(datapath("lee_background.cor")) as handle:
        lines = [line.strip() for line in handle if line.strip()]
    below = attention.FLOAT32_BELOW
    print("| batch | bf16, float32 attention | bf16, bf16 attention |")
    print("|---|---|---|")
    for seed in range(6):
        rng = random.Random(seed)
        examples = []
        for line in rng.sample(lines, 8):
            ids = tokenizer(line)["input_ids"][:rng.randint(40, 120)]
            half = len(ids) // 2
            examples.append(TokenizedExample(ids, [-100] * half + ids[half:], half))
        row = CAUSAL.pack(examples, pad_id=0, row_length=attention.ROW_TOKENS, per_example=True)
        count = torch.tensor(CAUSAL.loss_targets(row))
        exact, in_float32, in_bf16 = (packed_loss(model, row, count, bf16, float32_below)
                                      for bf16, float32_below in ((False, below), (True, below),
                                                                  (True, 0)))
        print(f"| {seed} | {abs(in_float32 - exact):.4f} | {abs(in_bf16 - exact):.4f} |")
    attention.FLOAT32_BELOW = below


def packed_loss(model: torch.nn.Module, row: dict, count: torch.Tensor, bf16: bool,
                float32_below: int) -> float:
    """The model's loss on a packed row attended per example, under bf16 autocast or not,
    examples shorter than `float32_below` attended in float32."""
    from tunelab.models import attention
    from tunelab.models.kinds import CAUSAL

    attention.FLOAT32_BELOW = float32_below
    with torch.no_grad(), attention.attends_per_example(model, True), \
            torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        return float(CAUSAL.loss(model, row, count))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lengths", default="64,128,256,384,512,768,1024")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--losses", action="store_true", help="also the losses each way")
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
    if args.losses:
        losses()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Generation speed: tunelab's evaluation generation vs a naive Hugging Face `generate` loop.

Both generate from exactly the same prompt token ids (tunelab's prompts of the quickstart's
task: the chat template, the task's shots), greedy, the task's max_new_tokens and stop strings,
in batches of --batch-size:

  naive    the items in their order, left-padded with the tokenizer's pad token, one
           `model.generate` per batch, then the text cut at the stop strings
  tunelab  eval.generation.generate: length-sorted batches, a token prefix shared by the
           prompts run once (models/prompt_caches.py)

Three prompt shapes: 0 shots, K shots drawn per item (`fewshot.sampler: random`), and K shots
shared by every item (`fewshot.sampler: first`, as MMLU's dev-set shots). Each system is timed
in the same process on the same model object, alternating, best of --repeats; the outputs must
be identical item for item (the script exits 1 otherwise).

    python benchmarks/gen_speed.py --limit 48 --shots 4
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from printed import add_out_option, tee_stdout


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--limit", type=int, default=48, help="items")
    parser.add_argument("--shots", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, help="default: the quickstart task's")
    parser.add_argument("--num-layers", type=int, help="cut the model (quick runs)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, help="torch intra-op threads")
    parser.add_argument("--shapes", default="0,random,first",
                        help="comma-separated: 0 (no shots), random, first")
    parser.add_argument("--json", help="write the figures to this file")
    add_out_option(parser)
    return parser.parse_args()


def naive_generate(model: torch.nn.Module, tokenizer: Any, prompts: list[list[int]],
                   gen: Any) -> list[str]:
    """The plain loop: the items in order, left-padded, one `model.generate` per batch of
    gen.batch_size (greedy), the text cut at the stop strings."""
    from tunelab.eval.generation import cut_at_stop, left_pad
    from tunelab.models.tokens import decode

    device = next(model.parameters()).device
    out = []
    for start in range(0, len(prompts), gen.batch_size):
        ids, mask = left_pad(prompts[start:start + gen.batch_size], tokenizer.pad_token_id)
        with torch.no_grad():
            generated = model.generate(  # type: ignore[operator]
                input_ids=ids.to(device), attention_mask=mask.to(device),
                max_new_tokens=gen.max_new_tokens, do_sample=False, temperature=None,
                top_p=None, top_k=None, pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id, stop_strings=list(gen.stop) or None,
                tokenizer=tokenizer if gen.stop else None)
        for tokens in generated[:, ids.shape[1]:]:
            out.append(cut_at_stop(decode(tokenizer, tokens, skip_special_tokens=True),
                                   gen.stop).strip())
    return out


def quickstart_prompts(lm: Any, task: Any, shots: int, limit: int) -> list[list[int]]:
    """The token ids of the prompts tunelab builds for the first `limit` test items of the
    quickstart's task with `shots` shots (task.fewshot.sampler as set)."""
    from tunelab.eval.output_types import Request
    from tunelab.eval.output_types.generate import _prompts
    from tunelab.eval.tasks import read_task

    items = read_task(task, shots)
    request = Request(lm, task, items.scored(limit), items.pool(shots), shots, "bench",
                      items.framing)
    return [p.ids for p in _prompts(request)]


def quickstart_generation(batch_size: int, max_new_tokens: int | None = None,
                          num_layers: int | None = None) -> tuple[Any, Any, Any, Any]:
    """(config, task, generation settings at `batch_size`, loaded model) of the quickstart."""
    from tunelab.config import GenerationConfig
    from tunelab.data.training_tasks import run_task
    from tunelab.models import load_model
    from tunelab.workflows.quickstart import quickstart_config

    config = quickstart_config(Path(tempfile.mkdtemp()))
    if num_layers:
        config.model.num_layers = num_layers
    task = run_task(config)
    gen = task.eval.generation
    gen = GenerationConfig(**{**gen.__dict__, "batch_size": batch_size,
                              "max_new_tokens": max_new_tokens or gen.max_new_tokens})
    return config, task, gen, load_model(config.model)


def main() -> int:
    args = parse_args()
    tee_stdout(args.out)
    if args.threads:
        torch.set_num_threads(args.threads)
    from tunelab.core.machine import cpu_summary
    from tunelab.eval.generation import generate

    config, task, gen, lm = quickstart_generation(args.batch_size, args.max_new_tokens,
                                                  args.num_layers)
    model, tokenizer = lm.model.eval(), lm.tokenizer

    def naive(prompts: list[list[int]]) -> list[str]:
        return naive_generate(model, tokenizer, prompts, gen)

    def tunelab_generate(prompts: list[list[int]]) -> list[str]:
        return generate(model, tokenizer, prompts, gen, desc="bench")

    print(f"{cpu_summary()}, {torch.get_num_threads()} threads, torch {torch.__version__}; "
          f"{config.model.name}{f' ({args.num_layers} layers)' if args.num_layers else ''}, "
          f"{args.limit} items, batch {gen.batch_size}, max_new_tokens {gen.max_new_tokens}")
    rows = []
    failed = False
    for shape in [s.strip() for s in args.shapes.split(",") if s.strip()]:
        shots = 0 if shape == "0" else args.shots
        if shots:
            task.fewshot.sampler = shape
        prompts = quickstart_prompts(lm, task, shots, args.limit)
        times: dict[str, list[float]] = {"naive": [], "tunelab": []}
        outputs: dict[str, list[str]] = {}
        for _ in range(args.repeats):
            for name, run in (("naive", naive), ("tunelab", tunelab_generate)):
                start = time.perf_counter()
                outputs[name] = run(prompts)
                times[name].append(time.perf_counter() - start)
        same = outputs["naive"] == outputs["tunelab"]
        failed |= not same
        best = {k: min(v) for k, v in times.items()}
        row = {"shape": f"{shots} shots" + (f" ({shape})" if shots else ""),
               "items": len(prompts), "mean prompt tokens": sum(map(len, prompts)) / len(prompts),
               "naive items/s": len(prompts) / best["naive"],
               "tunelab items/s": len(prompts) / best["tunelab"],
               "ratio": best["naive"] / best["tunelab"], "identical": same,
               "differing items": sum(a != b for a, b in zip(outputs["naive"],
                                                             outputs["tunelab"], strict=True))}
        rows.append(row)
        print(f"{row['shape']:>18}: {row['mean prompt tokens']:.0f} prompt tokens, naive "
              f"{row['naive items/s']:.2f} items/s, tunelab {row['tunelab items/s']:.2f} items/s, "
              f"{row['ratio']:.2f}x, outputs identical: {same}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"cpu": cpu_summary(), "threads": torch.get_num_threads(),
                                               "rows": rows}, indent=1))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

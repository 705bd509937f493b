"""Multiple-choice scoring speed: tunelab vs lm-evaluation-harness, same model, same prompts.

tunelab builds each item's prompt (task template, shots) and choice continuations once; both
systems then score exactly those (context, continuation) strings:

  tunelab   eval.choice.score_choices: lm-eval's tokenisation, the context encoded once per item
  lm-eval   lm_eval.models.huggingface.HFLM.loglikelihood on the same model object (it scores
            context + continuation per choice; its one-token-continuation cache is on)

Both are timed from strings to log-likelihoods (tokenisation included), in the same process,
alternating, best of --repeats. acc and acc_norm are computed from each system's
log-likelihoods with lm-eval's formula (argmax of lls, of lls / len(choice)) and must be
identical. With --end-to-end the items also run through `lm_eval.simple_evaluate` as a local
lm-eval task (lm-eval's own metric code) and that accuracy must match too.

    python benchmarks/mc_speed.py --task bb_date_understanding --limit 60 --shots 3
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from printed import add_out_option, tee_stdout


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", default="movie_sentiment_mc", help="a multiple_choice task")
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--num-layers", type=int, help="cut the model (quick runs)")
    parser.add_argument("--limit", type=int, default=60, help="items")
    parser.add_argument("--shots", type=int, default=0)
    parser.add_argument("--sampler", choices=["random", "first"],
                        help="few-shot sampler: random (per item) or first (the same shots for "
                             "every item, as MMLU's dev-set shots); default: the task's")
    parser.add_argument("--batch-size", type=int, default=8, help="tunelab: items per pass")
    parser.add_argument("--lm-eval-batch-size", type=int, default=32,
                        help="lm-eval: (context, choice) sequences per pass")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per system (best kept)")
    parser.add_argument("--threads", type=int, help="torch intra-op threads")
    parser.add_argument("--end-to-end", action="store_true", help="also run lm_eval.simple_evaluate")
    parser.add_argument("--json", help="write the figures to this file")
    add_out_option(parser)
    return parser.parse_args()


def accuracies(lls: list[list[float]], choices: list[list[str]], golds: list[list[int]]) -> dict:
    """lm-eval's acc / acc_norm from per-choice log-likelihoods."""
    acc = [float(int(np.argmax(ll)) in g) for ll, g in zip(lls, golds, strict=True)]
    norm = [float(int(np.argmax(np.array(ll) / np.array([float(len(c)) for c in ch]))) in g)
            for ll, ch, g in zip(lls, choices, golds, strict=True)]
    return {"acc": float(np.mean(acc)), "acc_norm": float(np.mean(norm)),
            "predictions": [int(np.argmax(ll)) for ll in lls]}


def main() -> int:
    args = parse_args()
    tee_stdout(args.out)
    if args.threads:
        torch.set_num_threads(args.threads)
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    from tunelab.config import ModelConfig
    from tunelab.eval.choice import ChoiceRequest, encode_pair, score_choices
    from tunelab.eval.datasets import load_task_data
    from tunelab.eval.output_types import Framing, Request, get_output_type
    from tunelab.eval.output_types.multiple_choice import MultipleChoiceOutput, build_choice_items
    from tunelab.eval.tasks import load_task
    from tunelab.models import load_model

    task = load_task(args.task)
    if args.sampler:
        task.fewshot.sampler = args.sampler
    if not isinstance(get_output_type(task.output_type), MultipleChoiceOutput):
        sys.exit(f"{args.task} is {task.output_type}, not multiple_choice")
    lm = load_model(ModelConfig(name=args.model, num_layers=args.num_layers))
    data = load_task_data(task)
    records = data.split(task.split)[: args.limit]
    pool = data.split(task.shot_split()) if args.shots else []
    items = build_choice_items(Request(lm, task, records, pool, args.shots, "bench",
                                       Framing.of(task, data)))
    pairs = [[(it.prompt.rendered.prompt, c) for c in it.continuations] for it in items]
    choices = [it.choices for it in items]
    golds = [it.gold for it in items]
    n_seq = sum(len(p) for p in pairs)
    ctx_tokens = sum(len(it.request.context) for it in items) / len(items)
    print(f"{args.task}: {len(items)} items, {n_seq} (context, choice) pairs, mean context "
          f"{ctx_tokens:.0f} tokens, {args.shots}-shot, model {args.model}"
          f"{f' ({args.num_layers} layers)' if args.num_layers else ''}, "
          f"{torch.get_num_threads()} threads")

    def run_tunelab() -> list[list[float]]:
        requests = []
        for item_pairs in pairs:  # tokenise from the strings, as lm-eval does
            encoded = [encode_pair(lm.tokenizer, ctx, cont) for ctx, cont in item_pairs]
            requests.append(ChoiceRequest(encoded[0][0], [c for _, c in encoded]))
        return [r.logprobs for r in score_choices(lm.model, requests, args.batch_size)]

    hf = HFLM(pretrained=lm.model, tokenizer=lm.tokenizer, batch_size=args.lm_eval_batch_size)

    def run_lm_eval() -> list[list[float]]:
        flat = [Instance("loglikelihood", {}, pair, i)
                for i, pair in enumerate(p for item_pairs in pairs for p in item_pairs)]
        out = [ll for ll, _ in hf.loglikelihood(flat, disable_tqdm=True)]
        lls, at = [], 0
        for item_pairs in pairs:
            lls.append(out[at:at + len(item_pairs)])
            at += len(item_pairs)
        return lls

    times: dict[str, list[float]] = {"tunelab": [], "lm-eval": []}
    results = {}
    for _ in range(args.repeats):
        for name, run in (("tunelab", run_tunelab), ("lm-eval", run_lm_eval)):
            start = time.perf_counter()
            results[name] = run()
            times[name].append(time.perf_counter() - start)
    scores = {name: accuracies(lls, choices, golds) for name, lls in results.items()}
    max_diff = max(abs(a - b) for x, y in zip(results["tunelab"], results["lm-eval"], strict=True)
                   for a, b in zip(x, y, strict=True))
    speed = {name: len(items) / min(t) for name, t in times.items()}
    report = {
        "task": args.task, "items": len(items), "pairs": n_seq, "shots": args.shots,
        "model": args.model, "num_layers": args.num_layers, "threads": torch.get_num_threads(),
        "mean_context_tokens": ctx_tokens,
        "items_per_s": speed, "seconds": {k: min(v) for k, v in times.items()},
        "ratio": speed["tunelab"] / speed["lm-eval"],
        "acc": {k: v["acc"] for k, v in scores.items()},
        "acc_norm": {k: v["acc_norm"] for k, v in scores.items()},
        "identical_predictions": scores["tunelab"]["predictions"] == scores["lm-eval"]["predictions"],
        "max_abs_loglikelihood_diff": max_diff,
    }
    if args.end_to_end:
        report["lm_eval_simple_evaluate"] = end_to_end(hf, items, choices, golds)
    for name in ("tunelab", "lm-eval"):
        print(f"  {name:8s} {speed[name]:7.2f} items/s  ({min(times[name]):.1f} s)  "
              f"acc {scores[name]['acc']:.4f}  acc_norm {scores[name]['acc_norm']:.4f}")
    print(f"  speed ratio tunelab / lm-eval: {report['ratio']:.2f}x; identical predictions: "
          f"{report['identical_predictions']}; max |delta loglikelihood| {max_diff:.2e}")
    if args.end_to_end:
        print(f"  lm_eval.simple_evaluate on the same items: {report['lm_eval_simple_evaluate']}")
    same = (report["identical_predictions"] and report["acc"]["tunelab"] == report["acc"]["lm-eval"]
            and report["acc_norm"]["tunelab"] == report["acc_norm"]["lm-eval"])
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return 0 if same else 1


def end_to_end(hf, items, choices, golds) -> dict:
    """The items as a local lm-eval task (context / choices / gold), scored by simple_evaluate."""
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    delimiters = {c[: len(c) - len(ch)] for it in items for c, ch in zip(it.continuations, it.choices,
                                                                          strict=True)}
    if len(delimiters) != 1 or not all(c.endswith(ch) for it in items
                                       for c, ch in zip(it.continuations, it.choices, strict=True)):
        return {"skipped": "continuations are not delimiter + choice (chat template?)"}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "items.jsonl"
        data.write_text("".join(json.dumps({"context": it.prompt.rendered.prompt, "choices": ch,
                                            "gold": g[0]}) + "\n"
                                for it, ch, g in zip(items, choices, golds, strict=True)))
        (Path(tmp) / "bench_items.yaml").write_text(json.dumps({
            "task": "bench_items", "dataset_path": "json", "test_split": "test",
            "dataset_kwargs": {"data_files": {"test": str(data)}, "cache_dir": f"{tmp}/hf"},
            "output_type": "multiple_choice", "doc_to_text": "{{context}}",
            "doc_to_choice": "{{choices}}", "doc_to_target": "{{gold}}",
            "target_delimiter": delimiters.pop(),
            "metric_list": [{"metric": "acc"}, {"metric": "acc_norm"}]}))
        out = simple_evaluate(model=hf, tasks=["bench_items"], bootstrap_iters=0, log_samples=False,
                              task_manager=TaskManager(include_path=tmp))
    result = out["results"]["bench_items"]
    return {"acc": result["acc,none"], "acc_norm": result["acc_norm,none"]}


if __name__ == "__main__":
    sys.exit(main())

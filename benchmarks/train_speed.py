"""Training speed and memory: tunelab against a bare PyTorch loop, HF Trainer + peft and TRL's
SFTTrainer, on the built-in model with the same examples in the same micro-batches.

    python benchmarks/train_speed.py [--steps 6] [--methods lora,full] [--data short,long]
        [--systems tunelab,bare,hf,trl,trl-bf16] [--sweep] [--json OUT]

Every system trains in its own fresh process (so peak RSS is its own), float32 unless its
name says bf16, seed 0, the micro-batches of tunelab's batch plan in tunelab's order, AdamW
at a constant learning rate (LoRA 4e-4, full 5e-5), no warmup, no weight decay, gradient clipping at 1.0:

- tunelab: `tunelab train` on the quickstart config (one run per entry of TUNELAB_VARIANTS
  whose options this tunelab has), read back from train_log.jsonl (log_every=1).
- bare: tunelab's tokenised examples collated by `tunelab.data.tokenize.collate` (right
  padding), `model(**batch).loss`, backward, clip, AdamW as a plain loop writes it (torch.optim.AdamW with
  its defaults: the per-tensor implementation on a CPU).
- hf: `transformers.Trainer` (peft model for LoRA), DataCollatorForSeq2Seq, sequential order.
- trl: `trl.SFTTrainer` on pre-tokenised `input_ids` + `completion_mask`, padding-free and
  completion-only loss (its own fused, chunked LM-head loss), sequential order. HF and TRL
  keep their default optimizer (fused AdamW) and their own progress bar and logging.
- trl-bf16: the same SFTTrainer with `bf16=True` (accelerate's bf16 autocast; weights stay
  float32), next to tunelab's `bf16` variants (`train.precision=bf16`).

short = the quickstart's builtin:movie_sentiment (chat template, max_length 256); long =
builtin:news (news articles as completions, max_length 512). LoRA is r 16, alpha 32, dropout
0, all linear layers. Prints per (data, method, system) the first-step loss (the same weights
see the same batch, so the systems agree to float32 summation order), real (non-padding)
tokens per second and seconds per step with step 1 left out as warm-up, the padding share of
the positions computed, peak RSS at the end of training; then the ratios.

--sweep: tunelab only (each variant), step time against sequence length (news cut to
--lengths at batch size 8) and batch size (--batch-sizes at max_length 256), 3 steps each.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

QUICKSTART = Path(__file__).resolve().parent.parent / "src" / "tunelab" / "configs" / "quickstart.yaml"
SYSTEMS = ("tunelab", "bare", "hf", "trl", "trl-bf16")
LR = {"lora": 4e-4, "full": 5e-5}
"""Constant learning rate of each method (tunelab's sweep defaults), the same for every system."""
METHODS = {
    "lora": "method={name: lora, r: 16, alpha: 32, dropout: 0, target_modules: all-linear}",
    "full": "method={name: full}",
}
NEWS = ["data.source=builtin:news", "data.validation_size=0", "data.test_size=10",
        "eval.metrics=[perplexity]"]
DATA = {
    "short": [],  # the quickstart's own: builtin:movie_sentiment, chat, max_length 256
    "long": [*NEWS, "data.max_length=512"],
}
TUNELAB_VARIANTS = {
    "tunelab": [],
    "tunelab packed": ["data.packing=true", "train.group_by_length=true"],
    "tunelab lean-malloc": ["env:TUNELAB_MALLOC=lean"],
    "tunelab checkpointed": ["train.gradient_checkpointing=true"],
    "tunelab bf16": ["train.precision=bf16"],
    "tunelab packed bf16": ["data.packing=true", "train.group_by_length=true",
                            "train.precision=bf16"],
    # packing alone keeps the peers' micro-batches (group_by_length reorders them, the
    # longest batch first): the like-for-like peak memory
    "tunelab packed-only": ["data.packing=true"],
    "tunelab packed-only bf16": ["data.packing=true", "train.precision=bf16"],
    "tunelab packed-only fp16": ["data.packing=true", "train.precision=fp16"],  # GPUs only
    "tunelab packed bf16 checkpointed": ["data.packing=true", "train.group_by_length=true",
                                         "train.precision=bf16",
                                         "train.gradient_checkpointing=true"],
}
"""tunelab runs: label -> extra overrides (`env:NAME=VALUE` entries set the environment
instead: lean-malloc holds glibc's mmap threshold, src/tunelab/memory.py). A variant whose options this tunelab does not have (the config rejects
them) is skipped with a note."""


def split_env(extra: list[str]) -> tuple[dict[str, str], list[str]]:
    """(environment, config overrides) of a variant's entries."""
    env = dict(e[len("env:"):].split("=", 1) for e in extra if e.startswith("env:"))
    return env, [e for e in extra if not e.startswith("env:")]
COMMON = ["train.batch_size=8", "train.seed=0", "train.warmup_ratio=0", "train.schedule=constant",
          "train.weight_decay=0", "train.max_grad_norm=1.0", "train.log_every=1",
          "train.eval_every=0", "train.precision=fp32",
          "data.packing=false"]  # padded unless a variant packs (the quickstart packs)
ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
       "TOKENIZERS_PARALLELISM": "false", "HF_HUB_DISABLE_TELEMETRY": "1"}
"""Every system's environment (and OMP_NUM_THREADS with --threads)."""


def overrides(method: str, data: list[str], extra: list[str] = ()) -> list[str]:
    return [*COMMON, METHODS[method], f"train.lr={LR[method]}", *data, *extra]


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


# --- tunelab's examples and batches, in-process ----------------------------------------------
def tunelab_data(config: Any, model: Any = None, tokenizer: Any = None) -> Any:
    """The run's tokenised training data, as `tunelab train` prepares it (no weights needed)."""
    from transformers import AutoTokenizer

    from tunelab.data.training_tasks import training_tasks
    from tunelab.models.builtin import builtin_model_dir
    from tunelab.models.kinds import CAUSAL, LoadedModel
    from tunelab.models.pretrained import ensure_pad_token
    from tunelab.training.data import prepare_data

    model_dir = str(builtin_model_dir(config.model.name))
    if tokenizer is None:
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        ensure_pad_token(tokenizer)
    lm = LoadedModel(model=model, tokenizer=tokenizer, path=model_dir, kind=CAUSAL)
    with contextlib.redirect_stdout(io.StringIO()):  # "N examples lose completion tokens"
        return prepare_data(config, lm, training_tasks(config)).data


def micro_batches(data: Any, train: Any, steps: int) -> list[list[int]]:
    """The first `steps` micro-batches of tunelab's batch plan (indices into the train split),
    epochs following each other as in the loop (grad_accum 1: one micro-batch per step)."""
    grouped = {"group_by_length": True} if getattr(train, "group_by_length", False) else {}
    plan = data.plan(train.batch_size, train.seed, **grouped)
    batches: list[list[int]] = []
    epoch = 0
    while len(batches) < steps:
        batches += [m.indices for m in plan.epoch_batches(epoch)]
        epoch += 1
    return batches[:steps]


def batch_stats(examples: Any, batches: list[list[int]]) -> tuple[list[int], list[int]]:
    """Per step: real tokens, and positions a right-padded batch computes."""
    lengths = [[len(examples[i].input_ids) for i in b] for b in batches]
    return [sum(x) for x in lengths], [len(x) * max(x) for x in lengths]


def plan_of(config_overrides: list[str], steps: int) -> dict[str, Any]:
    from tunelab.config import load_run_config

    config = load_run_config(QUICKSTART, config_overrides)
    data = tunelab_data(config)
    batches = micro_batches(data, config.train, steps)
    tokens, padded = batch_stats(data.tasks[0].train, batches)
    return {"batches": batches, "tokens": tokens, "padded": padded}


def available(extra: list[str]) -> str | None:
    """None when this tunelab has the variant's options, else why not."""
    from tunelab.config import load_run_config
    from tunelab.core.errors import TunelabError

    try:
        load_run_config(QUICKSTART, split_env(extra)[1])
    except TunelabError as err:
        return str(err)
    return None


# --- the peer systems (each in its own process: `--worker SYSTEM`) -----------------------------
def load_inputs(method: str, data: str, steps: int) -> dict[str, Any]:
    """Model, tokenizer, tunelab's examples and micro-batches, and the method applied, in
    tunelab's order (seed; tokenizer, model; data; method), so LoRA starts from the same A."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tunelab.config import load_run_config
    from tunelab.models.builtin import builtin_model_dir
    from tunelab.models.pretrained import ensure_pad_token

    config = load_run_config(QUICKSTART, overrides(method, DATA[data]))
    transformers.set_seed(config.train.seed)
    model_dir = str(builtin_model_dir(config.model.name))
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    ensure_pad_token(tokenizer)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    training = tunelab_data(config, model, tokenizer)
    examples = training.tasks[0].train
    batches = micro_batches(training, config.train, steps)
    if method == "lora":
        from peft import LoraConfig, get_peft_model

        options = config.method
        model = get_peft_model(model, LoraConfig(
            r=options["r"], lora_alpha=options["alpha"], lora_dropout=options["dropout"],
            target_modules=options["target_modules"], task_type="CAUSAL_LM"))
    else:
        for param in model.parameters():
            param.requires_grad_(True)
    tokens, padded = batch_stats(examples, batches)
    return {"config": config, "model": model, "tokenizer": tokenizer, "examples": examples,
            "batches": batches, "pad_id": training.pad_id, "tokens": tokens, "padded": padded}


def run_bare(inputs: dict[str, Any]) -> dict[str, Any]:
    import torch

    from tunelab.data.tokenize import collate

    model, examples, train = inputs["model"], inputs["examples"], inputs["config"].train
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=train.lr, weight_decay=0.0)
    model.train()
    losses, seconds = [], []
    last = time.perf_counter()
    for indices in inputs["batches"]:
        batch = collate([examples[i] for i in indices], inputs["pad_id"])
        loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, train.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
        now = time.perf_counter()
        seconds.append(now - last)
        last = now
    return {"losses": losses, "step_seconds": seconds, "padded": inputs["padded"]}


def ordered_rows(inputs: dict[str, Any], row: Any) -> Any:
    """A datasets.Dataset laid out in tunelab's micro-batch order: a sequential sampler at
    batch_size then yields exactly tunelab's micro-batches."""
    import datasets

    size = inputs["config"].train.batch_size
    if any(len(b) != size for b in inputs["batches"]):
        raise SystemExit("a micro-batch is not full (an epoch ends mid-batch): use fewer --steps")
    examples = inputs["examples"]
    return datasets.Dataset.from_list([row(examples[i]) for b in inputs["batches"] for i in b])


def trainer_args(inputs: dict[str, Any], out: str, bf16: bool = False) -> dict[str, Any]:
    import torch

    train = inputs["config"].train
    return {"output_dir": out, "per_device_train_batch_size": train.batch_size,
            "max_steps": len(inputs["batches"]), "learning_rate": train.lr,
            "lr_scheduler_type": "constant", "warmup_steps": 0, "weight_decay": 0.0,
            "max_grad_norm": train.max_grad_norm, "logging_steps": 1, "report_to": [],
            "save_strategy": "no", "dataloader_num_workers": 0,
            "use_cpu": not torch.cuda.is_available(),  # the GPU where there is one
            "seed": train.seed, "bf16": bf16, "fp16": False, "gradient_checkpointing": False}


def sequential(base: type) -> type:
    """`base` (a Trainer class) with tunelab's order and every step's exact loss recorded."""
    from torch.utils.data import SequentialSampler

    class Sequential(base):  # type: ignore[misc, valid-type]
        step_losses: list[float]

        def _get_train_sampler(self, train_dataset: Any = None) -> Any:
            return SequentialSampler(train_dataset if train_dataset is not None else self.train_dataset)

        def training_step(self, *args: Any, **kwargs: Any) -> Any:
            loss = super().training_step(*args, **kwargs)
            self.step_losses.append(float(loss))
            return loss

    return Sequential


def recorder() -> Any:
    from transformers import TrainerCallback

    class Recorder(TrainerCallback):
        """Seconds between consecutive step ends (data, forward, backward, clip, optimizer,
        logging: what tunelab's log window holds), and the logged losses."""

        def __init__(self) -> None:
            self.seconds: list[float] = []
            self.logged: list[float] = []
            self.last = 0.0

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.last = time.perf_counter()

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            now = time.perf_counter()
            self.seconds.append(now - self.last)
            self.last = now

        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
            if logs and "loss" in logs:
                self.logged.append(float(logs["loss"]))

    return Recorder()


def run_hf(inputs: dict[str, Any]) -> dict[str, Any]:
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments

    tokenizer = inputs["tokenizer"]
    tokenizer.padding_side = "right"  # as tunelab's collate (positions count from each row's start)
    dataset = ordered_rows(inputs, lambda ex: {"input_ids": ex.input_ids, "labels": ex.labels,
                                               "attention_mask": [1] * len(ex.input_ids)})
    callback = recorder()
    with tempfile.TemporaryDirectory() as out:
        trainer = sequential(Trainer)(
            model=inputs["model"], args=TrainingArguments(**trainer_args(inputs, out)),
            train_dataset=dataset, data_collator=DataCollatorForSeq2Seq(tokenizer, padding=True),
            callbacks=[callback])
        trainer.step_losses = []
        trainer.train()
    return {"losses": trainer.step_losses, "logged_losses": callback.logged,
            "step_seconds": callback.seconds, "padded": inputs["padded"],
            "optim": getattr(trainer.args.optim, "value", str(trainer.args.optim))}


def run_trl(inputs: dict[str, Any], bf16: bool = False) -> dict[str, Any]:
    from trl import SFTConfig, SFTTrainer

    dataset = ordered_rows(inputs, lambda ex: {
        "input_ids": ex.input_ids,
        "completion_mask": [0] * ex.prompt_length + [1] * (len(ex.input_ids) - ex.prompt_length)})
    callback = recorder()
    with tempfile.TemporaryDirectory() as out:
        # padding-free: each micro-batch flattened into one row whose position ids restart at
        # every example, no attention mask. TRL documents it for FlashAttention; with sdpa
        # (transformers 5.24) the model builds a dense block-diagonal mask over the whole row
        # from the position ids, only because TRL calls it with use_cache=False (with a cache
        # the examples would attend to each other). On a CPU TRL's fused LM head projects every
        # position (it keeps only the labelled ones on Triton devices). max_length None: the
        # examples are tunelab's, already cut to data.max_length.
        config = SFTConfig(**trainer_args(inputs, out, bf16), padding_free=True,
                           completion_only_loss=True, max_length=None, shuffle_dataset=False)
        trainer = sequential(SFTTrainer)(model=inputs["model"], args=config,
                                         train_dataset=dataset,
                                         processing_class=inputs["tokenizer"],
                                         callbacks=[callback])
        trainer.step_losses = []
        trainer.train()
    return {"losses": trainer.step_losses, "logged_losses": callback.logged,
            "step_seconds": callback.seconds, "padded": inputs["tokens"],  # padding-free
            "optim": getattr(trainer.args.optim, "value", str(trainer.args.optim)),
            "attn_implementation": inputs["model"].config._attn_implementation}


def worker(system: str, method: str, data: str, steps: int, out: Path) -> None:
    import warnings

    import torch

    warnings.filterwarnings("ignore")
    start = time.perf_counter()
    inputs = load_inputs(method, data, steps)
    load_seconds = time.perf_counter() - start
    peers = {"bare": run_bare, "hf": run_hf, "trl": run_trl,
             "trl-bf16": lambda given: run_trl(given, bf16=True)}  # accelerate's bf16 autocast
    result = peers[system](inputs)
    result.update(tokens=inputs["tokens"], batches=inputs["batches"], load_seconds=load_seconds,
                  peak_rss_mb=peak_rss_mb())
    if torch.cuda.is_available():  # as tunelab logs it on a GPU (its peak_memory_mb)
        result["peak_cuda_mb"] = torch.cuda.max_memory_allocated() / 2**20
    out.write_text(json.dumps(result))


# --- running the systems ------------------------------------------------------------------------
def tail(text: str, lines: int = 12) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def run_tunelab(extra: list[str], steps: int, tmp: Path, name: str) -> dict[str, Any]:
    """`tunelab train` in its own process; per-step losses and rates from train_log.jsonl."""
    env, extra = split_env(extra)
    args = [sys.executable, "-m", "tunelab.cli", "train", str(QUICKSTART), *extra,
            f"train.max_steps={steps}", f"output_dir={tmp}", f"name={name}", "--no-eval"]
    done = subprocess.run(args, capture_output=True, text=True,
                          env={**os.environ, **ENV, **env})
    if done.returncode:
        return {"error": tail(done.stderr or done.stdout)}
    run = tmp / name
    summary = json.loads((run / "summary.json").read_text())
    log = [json.loads(x) for x in (run / "train_log.jsonl").read_text().splitlines()]
    steps_log = [r for r in log if "loss" in r and "tokens_per_s" in r]
    plan = plan_of(extra, steps)
    tokens = plan["tokens"]
    result: dict[str, Any] = {
        "losses": [r["loss"] for r in steps_log], "rates": [r["tokens_per_s"] for r in steps_log],
        "peak_rss_mb": steps_log[-1]["peak_memory_mb"],  # at the last step, before saving
        "summary_peak_rss_mb": summary["peak_memory_mb"], "tokens": tokens,
        "batches": plan["batches"]}
    if summary.get("tokens_seen") == sum(tokens):  # tokens_per_s = real tokens / window seconds
        result["step_seconds"] = [t / r for t, r in zip(tokens, result["rates"], strict=True)]
    else:
        result["note"] = (f"tokens_seen {summary.get('tokens_seen')} != planned {sum(tokens)}: "
                          "speed from the logged rates")
    if summary.get("computed_tokens"):
        result["padding_share"] = summary.get("padding_share")
    else:
        result["padded"] = plan["padded"]
    return result


def run_worker(system: str, method: str, data: str, steps: int, tmp: Path) -> dict[str, Any]:
    out = tmp / f"{system}-{method}-{data}.json"
    args = [sys.executable, str(Path(__file__).resolve()), "--worker", system, "--methods", method,
            "--data", data, "--steps", str(steps), "--out", str(out)]
    done = subprocess.run(args, capture_output=True, text=True, env={**os.environ, **ENV})
    if done.returncode:
        return {"error": tail(done.stderr or done.stdout)}
    return json.loads(out.read_text())


def finish(result: dict[str, Any]) -> dict[str, Any]:
    """Real tokens/s and s/step without step 1 (warm-up), and the padding share."""
    if "error" in result:
        return result
    tokens = result["tokens"]
    skip = 1 if len(tokens) > 1 else 0
    result["warmup_excluded"] = bool(skip)
    if "step_seconds" in result:
        seconds = sum(result["step_seconds"][skip:])
        result["tokens_per_s"] = sum(tokens[skip:]) / seconds
        result["s_per_step"] = seconds / len(tokens[skip:])
    else:  # the mean of the logged windows' rates
        rates = result["rates"][skip:]
        result["tokens_per_s"] = sum(rates) / len(rates)
        result["s_per_step"] = sum(tokens[skip:]) / len(rates) / result["tokens_per_s"]
    if "padded" in result:
        result["padding_share"] = 1 - sum(tokens) / sum(result["padded"])
    result["first_loss"] = result["losses"][0] if result["losses"] else None
    return result


def variants(args: argparse.Namespace) -> list[tuple[str, list[str]]]:
    return [(label, TUNELAB_VARIANTS[label]) for label in args.variants]


def compare(args: argparse.Namespace, tmp: Path) -> list[dict[str, Any]]:
    runs = []
    for data in args.data:
        for method in args.methods:
            for system in args.systems:
                if system == "tunelab":
                    for label, extra in variants(args):
                        why = available(extra)
                        if why:
                            print(f"({label}: skipped, this tunelab lacks its options: {why})")
                            continue
                        name = f"{data}-{method}-{label.replace(' ', '_')}"
                        print(f"{data} {method} {label} ...", flush=True)
                        result = run_tunelab(overrides(method, DATA[data], extra), args.steps,
                                             tmp, name)
                        runs.append(finish({"system": label, "method": method, "data": data,
                                            "extra": extra, **result}))
                else:
                    print(f"{data} {method} {system} ...", flush=True)
                    result = run_worker(system, method, data, args.steps, tmp)
                    runs.append(finish({"system": system, "method": method, "data": data,
                                        **result}))
                if "error" in runs[-1]:
                    print(f"  FAILED:\n{runs[-1]['error']}")
    return runs


def peak(run: dict[str, Any]) -> float:
    """A run's peak memory: its process's RSS on a CPU, CUDA memory where a GPU ran (tunelab
    logs that as its peak_memory_mb; a peer's worker reports peak_cuda_mb)."""
    return run.get("peak_cuda_mb", run["peak_rss_mb"])


def fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def report(runs: list[dict[str, Any]]) -> None:
    print("\n| data | method | system | first-step loss | real tokens/s | s/step | padding | "
          "peak memory (MiB; CUDA where a GPU ran) |")
    print("|---|---|---|---|---|---|---|---|")
    for r in runs:
        if "error" in r:
            print(f"| {r['data']} | {r['method']} | {r['system']} | failed | | | | |")
            continue
        print(f"| {r['data']} | {r['method']} | {r['system']} | {fmt(r['first_loss'], '.6f')} | "
              f"{r['tokens_per_s']:.0f} | {r['s_per_step']:.2f} | "
              f"{fmt(r.get('padding_share'), '.0%')} | {peak(r):.0f} |")
    if any(not r.get("warmup_excluded", True) for r in runs):
        print("\n(one step only: its time includes the warm-up)")
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in runs:
        if "error" not in r:
            groups.setdefault((r["data"], r["method"]), []).append(r)
    print("\nLosses (systems on the same micro-batches as tunelab's default plan):")
    for (data, method), rows in groups.items():
        reference = next((r["batches"] for r in rows if r["system"] == "tunelab"),
                         rows[0]["batches"])
        same = [r for r in rows if r["batches"] == reference]
        other = [r["system"] for r in rows if r["batches"] != reference]
        first = [r["first_loss"] for r in same]
        worst = max(abs(a - b) / abs(b) for a in first for b in first) if len(first) > 1 else 0.0
        steps = min(len(r["losses"]) for r in same)
        every = max((abs(a["losses"][i] - b["losses"][i]) / abs(b["losses"][i])
                     for a in same for b in same for i in range(steps)), default=0.0)
        print(f"  {data} {method}: first step " + ", ".join(
            f"{r['system']} {r['first_loss']:.6f}" for r in same)
              + f"; largest relative difference {worst:.1e} (step 1), {every:.1e} (all "
                f"{steps} steps)" + (f"; other batches: {', '.join(other)}" if other else ""))
        for r in same:
            print(f"    {r['system']:15s} " + " ".join(f"{x:.5f}" for x in r["losses"]))
    print("\nRatios (tunelab's fastest variant / the other system; tokens/s: higher is better, "
          "peak memory: lower is better):")
    for (data, method), rows in groups.items():
        ours = [r for r in rows if r["system"].startswith("tunelab")]
        if not ours:
            continue
        best = max(ours, key=lambda r: r["tokens_per_s"])
        fp32 = [r for r in ours if "bf16" not in r["system"]]
        best_fp32 = max(fp32, key=lambda r: r["tokens_per_s"]) if fp32 else None
        for peer in ("trl-bf16", "trl", "hf", "bare"):
            other = next((r for r in rows if r["system"] == peer), None)
            # and float32 against float32 (a peer's default precision)
            mine = [best] + ([best_fp32] if best_fp32 not in (None, best)
                             and "bf16" not in peer else [])
            # and the fastest on the peer's own micro-batches (group_by_length reorders them):
            # like-for-like peak memory, as the peak is the step with the most tokens
            same = [r for r in ours if other is not None and r["batches"] == other["batches"]]
            if same and max(same, key=lambda r: r["tokens_per_s"]) not in mine:
                mine.append(max(same, key=lambda r: r["tokens_per_s"]))
            if min(ours, key=peak) not in mine:  # the leanest
                mine.append(min(ours, key=peak))
            for r in mine if other is not None else []:
                print(f"  {data} {method}: {r['system']} vs {peer}: tokens/s "
                      f"x{r['tokens_per_s'] / other['tokens_per_s']:.2f}, peak memory "
                      f"x{peak(r) / peak(other):.2f}")


# --- the sweep --------------------------------------------------------------------------------
def sweep(args: argparse.Namespace, tmp: Path) -> list[dict[str, Any]]:
    cells = [(length, 8) for length in args.lengths]
    cells += [(256, size) for size in args.batch_sizes if (256, size) not in cells]
    rows = []
    for method in args.methods:
        for label, extra in variants(args):
            why = available(extra)
            if why:
                print(f"({label}: skipped, this tunelab lacks its options: {why})")
                continue
            for length, size in cells:
                print(f"sweep {method} {label} max_length {length} batch {size} ...", flush=True)
                cell = [*NEWS, f"data.max_length={length}", *extra, f"train.batch_size={size}"]
                name = f"sweep-{method}-{label.replace(' ', '_')}-{length}-{size}"
                result = run_tunelab(overrides(method, cell), args.steps, tmp, name)
                row = finish({"system": label, "method": method, "max_length": length,
                              "batch_size": size, **result})
                if "error" in row:
                    print(f"  FAILED:\n{row['error']}")
                rows.append(row)
    print("\n| method | system | max_length | batch | real tokens/step | s/step | real tokens/s | "
          "padding | peak RSS (MiB) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['method']} | {r['system']} | {r['max_length']} | {r['batch_size']} | "
                  "failed | | | | |")
            continue
        skip = 1 if len(r["tokens"]) > 1 else 0
        per_step = sum(r["tokens"][skip:]) / len(r["tokens"][skip:])
        print(f"| {r['method']} | {r['system']} | {r['max_length']} | {r['batch_size']} | "
              f"{per_step:.0f} | {r['s_per_step']:.2f} | {r['tokens_per_s']:.0f} | "
              f"{fmt(r.get('padding_share'), '.0%')} | {r['peak_rss_mb']:.0f} |")
    return rows


def versions() -> dict[str, Any]:
    import peft
    import torch
    import transformers
    import trl

    return {"torch": torch.__version__, "transformers": transformers.__version__,
            "peft": peft.__version__, "trl": trl.__version__, "default_threads": torch.get_num_threads(),
            "cpus": os.cpu_count(), "python": platform.python_version()}


def csv(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=None,
                        help="optimizer steps per run (default 6; the sweep: 3)")
    parser.add_argument("--methods", type=csv, default=["lora", "full"])
    parser.add_argument("--data", type=csv, default=["short", "long"])
    parser.add_argument("--systems", type=csv, default=list(SYSTEMS))
    parser.add_argument("--variants", type=csv, default=list(TUNELAB_VARIANTS),
                        help="tunelab's variants (default all): " + ", ".join(TUNELAB_VARIANTS))
    parser.add_argument("--sweep", action="store_true",
                        help="tunelab only: step time vs sequence length and batch size")
    parser.add_argument("--lengths", type=lambda s: [int(x) for x in csv(s)],
                        default=[128, 256, 512, 1024], help="the sweep's max_length values")
    parser.add_argument("--batch-sizes", type=lambda s: [int(x) for x in csv(s)],
                        default=[1, 4, 8], help="the sweep's batch sizes (at max_length 256)")
    parser.add_argument("--threads", type=int, metavar="N",
                        help="torch threads of every system (OMP_NUM_THREADS; default: torch's "
                             "own, all cores); 1 when other jobs share the CPU")
    parser.add_argument("--json", metavar="OUT", help="write the results as JSON too")
    parser.add_argument("--worker", choices=SYSTEMS[1:], help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.methods[0], args.data[0], args.steps, Path(args.out))
        return
    for name, given, known in (("--methods", args.methods, METHODS), ("--data", args.data, DATA),
                               ("--systems", args.systems, SYSTEMS),
                               ("--variants", args.variants, TUNELAB_VARIANTS)):
        unknown = [x for x in given if x not in known]
        if unknown:
            parser.error(f"{name}: unknown {', '.join(unknown)}; choose from {', '.join(known)}")
    args.steps = args.steps or (3 if args.sweep else 6)
    if args.threads:
        ENV.update(OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    results: dict[str, Any] = {"steps": args.steps, "versions": versions(), "lr": LR,
                               "threads": args.threads,
                               "tunelab_variants": TUNELAB_VARIANTS}
    with tempfile.TemporaryDirectory() as tmp:
        if args.sweep:
            results["sweep"] = sweep(args, Path(tmp))
        else:
            results["runs"] = compare(args, Path(tmp))
            report(results["runs"])
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()

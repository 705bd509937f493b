"""The Python API. The CLI is a thin layer over these functions."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunelab.config import (
    EvalConfig,
    RunConfig,
    TaskConfig,
    load_run_config,
)
from tunelab.errors import TunelabError
from tunelab.eval.runner import EvalResult, evaluate_loaded, write_result
from tunelab.scoring import format_scores, score

__all__ = ["train", "evaluate", "score", "format_scores", "quickstart", "TrainResult"]


@dataclass
class TrainResult:
    run_dir: Path
    summary: dict[str, Any]
    evaluation: EvalResult | None


def train(
    config: RunConfig | str | Path,
    overrides: list[str] | None = None,
    resume: bool = False,
    evaluate_after: bool = True,
) -> TrainResult:
    """Fine-tune as the config says and write a run directory.

    Args:
        config: a RunConfig, or a YAML file path.
        overrides: ``key=value`` strings applied on top (``train.lr=1e-4``).
        resume: continue an interrupted run from its last checkpoint.
        evaluate_after: score the fine-tuned model on the test split (config.eval).
    """
    import transformers

    from tunelab.data import get_template, load_splits, tokenize_example
    from tunelab.methods import get_method, trainable_parameters
    from tunelab.methods.base import directory_size, parse_options
    from tunelab.models import load_model
    from tunelab.runs import read_config, write_config
    from tunelab.training.checkpoint import write_atomically
    from tunelab.training.loop import TrainData, Trainer, peak_memory_mb

    if not isinstance(config, RunConfig):
        config = load_run_config(config, overrides)
    elif overrides:
        raise TunelabError("overrides apply to a config file; edit the RunConfig object instead")
    run_dir = config.run_dir
    if resume:
        saved = read_config(run_dir)
        if saved != config:
            raise TunelabError(f"--resume: {run_dir}/config.yaml differs from this config; "
                               "resume with the same config and overrides")
    elif (run_dir / "config.yaml").exists():
        raise TunelabError(f"{run_dir} already holds a run; pass --resume to continue it, "
                           "or choose another name (name=...) or output_dir")
    method = get_method(config.method["name"])
    options = parse_options(method, config.method)
    transformers.set_seed(config.train.seed)
    lm = load_model(config.model)
    splits = load_splits(config.data)
    template = get_template(config.data, lm.tokenizer)

    def tokenize(records: list) -> list:
        return [tokenize_example(template.render(r), lm.tokenizer, config.data.max_length)
                for r in records]

    data = TrainData(tokenize(splits.train), tokenize(splits.validation), lm.tokenizer.pad_token_id)
    model = method.apply(lm.model, options)
    counts = trainable_parameters(model)
    print(f"tunelab: {config.method['name']} on {config.model.name}: {counts}")
    write_config(config, run_dir)
    trainer = Trainer(model, config.train, data, run_dir)
    if resume:
        trainer.resume()
    start = time.perf_counter()
    state = trainer.fit()
    seconds = time.perf_counter() - start
    model = trainer.accelerator.unwrap_model(trainer.model)
    weights_dir = run_dir / method.weights_dir
    write_atomically(weights_dir, lambda tmp: method.save(model, tmp))
    size_on_disk = directory_size(weights_dir)
    lm.tokenizer.save_pretrained(str(run_dir / "tokenizer"))
    if (weights_dir / "config.json").is_file():  # a complete model: make it loadable alone
        lm.tokenizer.save_pretrained(str(weights_dir))
    logged = [h for h in state.history if "tokens_per_s" in h]
    summary = {
        "method": config.method["name"],
        "model": config.model.name,
        "trainable_parameters": counts.trainable,
        "total_parameters": counts.total,
        "trainable_percent": counts.percent,
        "size_on_disk_bytes": size_on_disk,
        "steps": state.step,
        "train_seconds": seconds,
        "tokens_seen": state.tokens_seen,
        "tokens_per_s": (sum(h["tokens_per_s"] for h in logged) / len(logged)) if logged else None,
        "peak_memory_mb": peak_memory_mb(),
        "best_val_loss": state.best_val_loss,
        "best_step": state.best_step,
        "stopped_early": state.stopped_early,
        "truncated_examples": sum(ex.truncated for ex in data.train),
        "train_examples": len(data.train),
    }
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=1))
    evaluation = None
    if evaluate_after and splits.test and config.eval.metrics:
        lm.model = model
        evaluation = evaluate_loaded(lm, run_task(config), "fine-tuned", shots=0,
                                     limit=config.eval.limit)
        write_result(evaluation, run_dir / "eval" / "fine-tuned")
    return TrainResult(run_dir, summary, evaluation)


def run_task(config: RunConfig, eval_config: EvalConfig | None = None) -> TaskConfig:
    """The evaluation task a training config implies: its data and its eval section."""
    return TaskConfig(name=config.name, data=config.data, split="test",
                      eval=eval_config or config.eval)


def evaluate(
    task: str | TaskConfig,
    model: str | None = None,
    adapter: str | Path | None = None,
    shots: int = 0,
    limit: int | None = None,
    out_dir: str | Path | None = None,
) -> EvalResult:
    """Evaluate a model (optionally with a trained run's weights) on a task.

    Args:
        task: a built-in task name or a task YAML file (or a TaskConfig).
        model: base model spec; defaults to the adapter run's base, else the built-in model.
        adapter: a run directory from `tunelab train` whose weights are applied to the base.
        shots: in-context examples per prompt, from the task's few-shot split.
        limit: score at most this many examples.
        out_dir: where to write metrics.json and predictions.jsonl.
    """
    from tunelab.config import ModelConfig
    from tunelab.eval.tasks import load_task
    from tunelab.models import load_model
    from tunelab.runs import load_run_model

    task_config = task if isinstance(task, TaskConfig) else load_task(task)
    if adapter:
        lm = load_run_model(adapter, base=model)
        system = f"{Path(adapter).name} {shots}-shot"
    else:
        lm = load_model(ModelConfig(name=model or ModelConfig().name))
        system = f"base {shots}-shot"
    result = evaluate_loaded(lm, task_config, system, shots=shots, limit=limit)
    if out_dir:
        write_result(result, Path(out_dir))
    return result


def quickstart(out_dir: str | Path = "runs", limit: int | None = None, **kw: Any) -> Path:
    """Fine-tune the built-in model with LoRA on the built-in sentiment task and compare it
    with its own zero- and few-shot baselines. Returns the run directory."""
    from tunelab.quickstart import run_quickstart

    return run_quickstart(Path(out_dir), limit=limit, **kw)

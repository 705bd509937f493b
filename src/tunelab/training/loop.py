"""The training loop: AdamW, warmup + schedule, gradient accumulation and clipping,
validation every N steps, best checkpoint, early stopping, exact resume. Built on accelerate so
the same loop runs on one CPU, one GPU, or several processes under torch.distributed.

One task or several: micro-batches come from a batch plan (data/batching.py, data/mixture.py)
and each holds one task's examples, so the model computes the loss whatever the method, and
a task's loss weight scales its micro-batches' losses. Multi-task runs log validation loss and
the task metric per task at every evaluation.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import resource
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from accelerate import Accelerator
from safetensors.torch import load_file
from torch.utils._foreach_utils import _get_fused_kernels_supported_devices
from tqdm.auto import tqdm
from transformers import PreTrainedModel

from tunelab.config import TrainConfig
from tunelab.core.errors import DivergedError, TunelabError
from tunelab.core.memory import keep_mmap_threshold
from tunelab.data.batching import BatchPlan, MicroBatch
from tunelab.data.mixture import TaskExamples, TrainingData
from tunelab.data.tokenize import TokenizedExample
from tunelab.models import attention
from tunelab.models.kinds import ModelKind
from tunelab.runs import RunDir
from tunelab.training.checkpoint import (
    LoopState,
    load_checkpoint,
    recover,
    save_checkpoint,
    save_weights_only,
)
from tunelab.training.parallel import Replicated, layout
from tunelab.training.precision import resolve_precision
from tunelab.training.schedule import make_scheduler
from tunelab.training.threads import thread_policy
from tunelab.training.trackers import build_trackers, hyperparameters, scalars


def peak_memory_mb() -> float:
    """Peak memory of this process: CUDA allocations on a GPU, else the max resident set."""
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


T = TypeVar("T")

EvalHook = Callable[[torch.nn.Module], Mapping[str, object]]
"""Called at every evaluation with the model a process runs; what it returns joins the log
record (a mixture's metric per task; the retention suite's scores: a forgetting curve)."""

EvalListener = Callable[[Mapping[str, Any]], bool]  # Any: a train_log.jsonl line (JSON values)
"""Called with each validation record once it is logged; True ends training as early stopping
does (`tunelab tune` reports the curve to its trial and stops a pruned one)."""


def with_rng_preserved(run: Callable[[], T]) -> T:
    """Run `run` (e.g. generation, which reseeds torch) without disturbing the RNG streams that
    training draws from (dropout), so evaluating never changes what training does."""
    states = (random.getstate(), np.random.get_state(), torch.get_rng_state(),
              torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None)
    try:
        return run()
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.set_rng_state(states[2])
        if states[3] is not None:
            torch.cuda.set_rng_state_all(states[3])


def enable_gradient_checkpointing(model: torch.nn.Module) -> None:
    """Non-reentrant checkpointing of the transformer blocks. The inputs' embeddings are made
    to require grad so that, when every base weight is frozen (LoRA, prompt tuning, ...), the
    recomputed blocks still have a graph to backpropagate through."""
    get_base_model = getattr(model, "get_base_model", None)  # peft's wrapper has one
    base = get_base_model() if callable(get_base_model) else model
    if not (isinstance(base, PreTrainedModel) and base.supports_gradient_checkpointing):
        raise TunelabError(f"train.gradient_checkpointing: {type(base).__name__} does not support "
                           "it; turn it off")
    if hasattr(base, "activation_checkpointing_enable"):  # transformers >= 5.24's name
        base.activation_checkpointing_enable({"use_reentrant": False})
    else:
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    base.enable_input_require_grads()
    if hasattr(base, "config"):
        base.config.use_cache = False


def fused_adamw_runs_on(params: Sequence[torch.nn.Parameter]) -> bool:
    """torch's fused AdamW where it has the kernel for the parameters' device (CPU and GPUs):
    one kernel over all tensors instead of a Python loop over them, the same update to
    rounding, and 8x faster a step for the built-in model's 135M weights on a CPU
    (benchmarks/train_speed.py, full fine-tuning)."""
    devices = set(_get_fused_kernels_supported_devices())
    return all(p.device.type in devices for p in params)

class Trainer:
    """Runs the loop for one model on tokenised data; state lives in `self.state`."""

    def __init__(self, model: torch.nn.Module, config: TrainConfig, data: TrainingData,
                 run_dir: RunDir | Path):
        run = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
        self.config, self.data, self.run, self.run_dir = config, data, run, run.root
        keep_mmap_threshold()  # freed activations go back to the system (tunelab/memory.py)
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.precision = resolve_precision(config.precision, device)
        """train.precision for this device (`auto`: bf16 where it is native, else fp32)."""
        self.precision.check(device)  # before accelerate starts
        self.accelerator = Accelerator(
            cpu=not torch.cuda.is_available(),
            log_with=build_trackers(config.report_to, run, run.root.name) or None)
        self.scaler = torch.amp.GradScaler("cuda") if self.precision.scales_loss else None
        self.threads = thread_policy(config.threads, device)
        """train.threads: a CPU step's threads, chosen before every step (training/threads.py)."""
        if config.gradient_checkpointing:
            enable_gradient_checkpointing(model)
        if config.report_to:
            self.accelerator.init_trackers(run.root.name, hyperparameters(asdict(config)))
        world, rank = self.accelerator.num_processes, self.accelerator.process_index
        self.layout = layout(config.fsdp, world)
        """How the model lies over the processes (training/parallel.py): replicated, or
        sharded with FSDP (train.fsdp)."""
        model = self.layout.shard(model)
        self.placement = self.layout.placement(model, self.accelerator)
        self.eval_hooks: list[EvalHook] = []
        """Called at every evaluation with the model a process runs (the sharded one under
        FSDP, which every process runs in lockstep); their dicts join the log record
        (each task's metric in a mixture; the retention suite's scores: a forgetting curve)."""
        self.eval_listeners: list[EvalListener] = []
        """Each hears every validation record after it is logged; one returning True ends
        training like early stopping (the run still saves and finishes)."""
        self.tasks = list(data.tasks)
        self.plan: BatchPlan = data.plan(config.batch_size, config.seed, config.grad_accum,
                                         world, rank, config.group_by_length)
        self.has_validation = any(t.validation for t in self.tasks)
        params = [p for p in model.parameters() if p.requires_grad]
        if not params:
            raise TunelabError("the method left no trainable parameters; check method options")
        decay = [p for p in params if p.ndim >= 2]
        no_decay = [p for p in params if p.ndim < 2]
        optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": config.weight_decay},
             {"params": no_decay, "weight_decay": 0.0}],
            lr=config.lr, fused=fused_adamw_runs_on(params),
        )
        self.total_steps = config.max_steps or self.plan.default_total_steps(
            config.epochs, config.grad_accum)
        if self.total_steps < 1:
            examples = sum(len(t.train) for t in self.tasks)
            raise TunelabError(
                f"train: 0 optimizer steps ({config.epochs:g} epochs of {examples} examples at "
                f"batch_size {config.batch_size} x grad_accum {config.grad_accum}); raise "
                "train.epochs or set train.max_steps")
        scheduler = make_scheduler(optimizer, self.total_steps, config.warmup_ratio, config.schedule)
        self.model, self.optimizer = self.layout.prepare(self.accelerator, model, optimizer)
        self.scheduler = scheduler
        self.state = LoopState()
        self.consecutive_skips = 0
        first = next(t for t in data.tasks if t.train).train[0]
        self.uniform = first.kind.uniform_loss(model)
        """The loss of a uniform output for this model (a destroyed model's loss)."""
        self.log_path = run.train_log

    # --- batching -----------------------------------------------------------------------
    def epoch_batches(self, epoch: int) -> list[MicroBatch]:
        """This process's micro-batches of an epoch (a pure function of seed and epoch)."""
        return self.plan.epoch_batches(epoch)

    def to_device(self, indices: list[int], examples: Sequence[TokenizedExample],
                  task: TaskExamples) -> dict[str, torch.Tensor]:
        """The examples collated as their task says (padded or packed), on the device."""
        batch = task.collate([examples[i] for i in indices], self.data.pad_id)
        return {k: v.to(self.accelerator.device) for k, v in batch.items()}

    @staticmethod
    def kind_of(indices: list[int], examples: Sequence[TokenizedExample]) -> ModelKind:
        """The model kind the examples were tokenised for (collate checks they agree)."""
        return examples[indices[0]].kind

    # --- the loop -------------------------------------------------------------------------
    def resume(self) -> None:
        last = self.run.last_checkpoint
        recover(last)  # a kill mid-swap: the previous checkpoint back in place
        if not (last / "loop_state.json").is_file():  # stopped before its first checkpoint
            print(f"tunelab: --resume: no checkpoint in {last} yet; starting again from step 0")
            self._rewrite_log()
            return
        self.state = load_checkpoint(last, self.local_model(), self.optimizer, self.scheduler,
                                     self.layout)  # names without DDP's "module."
        self._rewrite_log()

    def _rewrite_log(self) -> None:
        """Drop log lines written after the checkpoint we resumed from."""
        lines = [json.dumps(h) for h in self.state.history]
        self.log_path.write_text("".join(line + "\n" for line in lines))

    def fit(self) -> LoopState:
        state = self.state
        # Only rank 0 shows a bar; its own is left to tqdm's defaults (TQDM_DISABLE=1 hides it).
        quiet = {} if self.accelerator.is_main_process else {"disable": True}
        bar = tqdm(total=self.total_steps, initial=state.step, desc="train", unit="step", **quiet)
        with self.attention():
            self._loop(bar)
            evaluated_now = any(h.get("step") == state.step and "val_loss" in h
                                for h in state.history)
            if self.has_validation and not state.stopped_early and not evaluated_now:
                self._evaluate_and_checkpoint()
        self._save_last()
        self.model = self.layout.plain(self.accelerator, self.model)
        self.layout = Replicated()  # the plain model: every process holds all of it
        self._restore_best()
        if self.config.report_to:
            self.accelerator.end_training()
        return state

    def attention(self) -> contextlib.AbstractContextManager[None]:
        """The model's attention while it trains: each example of a packed row alone where the
        tasks' collators pack per example (models/attention.py), else as loaded."""
        per_example = any(t.collate.per_example for t in self.tasks)
        return attention.attends_per_example(self.model, per_example)

    def _loop(self, bar: tqdm) -> None:
        """The optimizer steps, with their logging and evaluations, until the run ends."""
        config, state = self.config, self.state
        self.model.train()
        self.threads.start()
        try:
            window_tokens, window_start = 0, time.perf_counter()
            while state.step < self.total_steps and not (state.stopped_early or state.out_of_time):
                batches = self.epoch_batches(state.epoch)
                while state.batch_in_epoch < len(batches) and state.step < self.total_steps:
                    group = batches[state.batch_in_epoch:state.batch_in_epoch + config.grad_accum]
                    self.threads.before_step()
                    step_start = time.perf_counter()
                    loss, tokens = self._optimizer_step(group)
                    self.threads.after_step()
                    self._check_divergence(loss)
                    state.train_seconds += time.perf_counter() - step_start
                    if config.max_seconds and state.train_seconds >= config.max_seconds:
                        state.out_of_time = True
                    state.batch_in_epoch += len(group)
                    state.step += 1
                    state.tokens_seen += tokens
                    window_tokens += tokens
                    if self.data.per_task:
                        for micro in group:
                            name = self.tasks[micro.task].name
                            state.task_examples[name] = state.task_examples.get(name, 0) + micro.size
                    bar.update(1)
                    bar.set_postfix(loss=f"{loss:.4f}", lr=f"{self.scheduler.get_last_lr()[0]:.2e}")
                    if state.step % config.log_every == 0 or state.step == self.total_steps:
                        elapsed = time.perf_counter() - window_start
                        record: dict[str, Any] = {  # Any: a train_log.jsonl line (JSON values)
                            "step": state.step, "epoch": state.epoch, "loss": loss,
                            "lr": self.scheduler.get_last_lr()[0],
                            "tokens_per_s": window_tokens / max(elapsed, 1e-9),
                            "peak_memory_mb": peak_memory_mb(),
                            **self.threads.log_fields()}
                        record.update(self.plan.log_fields(state.epoch))
                        if self.data.per_task:
                            record["examples_by_task"] = dict(state.task_examples)
                        self._log(record)
                        window_tokens, window_start = 0, time.perf_counter()
                    end_of_epoch = state.batch_in_epoch >= len(batches)
                    if self._should_evaluate(end_of_epoch):
                        self._evaluate_and_checkpoint()
                    elif config.save_every and state.step % config.save_every == 0:
                        self._save_last()
                    if state.stopped_early or state.out_of_time:
                        break
                if state.batch_in_epoch >= len(batches):
                    state.epoch += 1
                    state.batch_in_epoch = 0
        finally:
            bar.close()  # the bar's line ends before any error is printed
            self.threads.end()  # evaluation after training: torch's own count again

    def _optimizer_step(self, group: list[MicroBatch]) -> tuple[float, int]:
        batches = []
        total_tokens, computed = 0, 0  # real tokens (padding excluded); positions computed
        for m in group:
            task = self.tasks[m.task]
            batch = self.to_device(m.indices, task.train, task)
            batches.append((task.loss_weight, self.kind_of(m.indices, task.train), batch))
            total_tokens += sum(len(task.train[i].input_ids) for i in m.indices)
            computed += batch["input_ids"].numel()
        n_label = sum(kind.loss_targets(b) for _, kind, b in batches)
        n_label_t = self.step_targets(n_label)
        total_loss = 0.0
        for weight, kind, batch in batches:
            if weight == 0:
                continue  # contributes nothing: no gradient, not even a zero one
            # Token losses are summed and divided by the whole step's label tokens (classifier:
            # examples), so accumulation weights every token equally (not every micro-batch); a
            # task's loss weight then scales its tokens' share.
            with self.autocast():
                raw = kind.loss(self.model, batch, n_label_t)
            loss = raw if weight == 1 else raw * weight
            self.accelerator.backward(self.scaler.scale(loss) if self.scaler else loss)
            total_loss += float(loss.detach())
        total_loss, total_tokens, computed = self.global_step_totals(total_loss, total_tokens,
                                                                     computed)
        self.state.computed_tokens += computed
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        limit = self.config.max_grad_norm if self.config.max_grad_norm > 0 else float("inf")
        norm = self.layout.clip_grad_norm(self.accelerator, self.model.parameters(), limit)
        if self.scaler is not None:  # fp16: inf/nan gradients are the scaler's to skip
            self.scaler.step(self.optimizer)
            self.scaler.update()
        elif not (math.isfinite(total_loss) and math.isfinite(norm)):
            self._non_finite(total_loss, norm)  # raises, or skips this step's update
        else:
            self.optimizer.step()
            self.consecutive_skips = 0
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return total_loss, total_tokens

    def autocast(self) -> torch.autocast:
        """The forward pass in train.precision (a no-op for fp32)."""
        return self.precision.autocast(self.accelerator.device)

    # --- several processes ------------------------------------------------------------------
    def step_targets(self, local: int) -> torch.Tensor:
        """What each process divides its summed loss by. One process: the step's targets.
        Several: DDP averages the processes' gradients, so each divides by all processes'
        targets over the number of processes, and the average is sum-over-all-targets /
        all-targets, the same as one process with the whole batch."""
        device = self.accelerator.device
        world = self.accelerator.num_processes
        if world == 1:
            return torch.tensor(max(local, 1), device=device)
        every = self.accelerator.reduce(torch.tensor(float(local), device=device), "sum")
        return torch.clamp(every, min=1.0) / world

    def global_step_totals(self, loss: float, tokens: int, computed: int
                           ) -> tuple[float, int, int]:
        """The step's loss (the mean of the processes' shares: the whole batch's loss), real
        tokens and computed positions over every process, so the log and the divergence
        check see the global step."""
        if self.accelerator.num_processes == 1:
            return loss, tokens, computed
        device = self.accelerator.device
        every = self.accelerator.reduce(torch.tensor([loss, float(tokens), float(computed)],
                                                     device=device, dtype=torch.float64), "sum")
        return float(every[0]) / self.accelerator.num_processes, int(every[1]), int(every[2])

    # --- divergence ------------------------------------------------------------------------
    MAX_SKIPS = 10

    def _non_finite(self, loss: float, norm: float) -> None:
        what = f"loss {loss}" if not math.isfinite(loss) else f"gradient norm {norm}"
        step = self.state.step + 1
        if self.config.on_divergence == "skip_step" and self.consecutive_skips < self.MAX_SKIPS - 1:
            self.consecutive_skips += 1
            self.state.skipped_steps += 1
            print(f"tunelab: step {step}: {what}; the step is skipped "
                  f"({self.state.skipped_steps} so far)")
            return
        raise DivergedError(
            f"train: diverged at step {step}: {what}"
            + (f" ({self.MAX_SKIPS} steps in a row)" if self.consecutive_skips else "")
            + f"; lower train.lr (now {self.config.lr:g}); no adapter or checkpoint was written "
              "from these weights")

    def _check_divergence(self, loss: float) -> None:
        """Stop when the smoothed loss rises past divergence_factor x the first step's loss,
        or settles at ln(vocab), the loss of a uniform output (the model is destroyed)."""
        state = self.state
        if not math.isfinite(loss):
            return  # a skipped step
        if state.first_loss is None:
            state.first_loss = state.smoothed_loss = loss
            return
        state.smoothed_loss = 0.7 * (state.smoothed_loss or loss) + 0.3 * loss
        factor, start, now = self.config.divergence_factor, state.first_loss, state.smoothed_loss
        uniform = self.uniform
        flat = uniform is not None and start < 0.8 * uniform and abs(now - uniform) < 0.03 * uniform
        if (factor and now > factor * max(start, 0.1)) or flat:
            tell = (f"; {now:.2f} is the loss of a uniform output ({uniform:.2f}): the "
                    "model is destroyed") if flat else ""
            raise DivergedError(
                f"train: diverged at step {state.step + 1}: the loss rose from {start:.3f} "
                f"(step 1) to {now:.3f} (smoothed), {now / max(start, 1e-9):.1f}x"
                f" (train.divergence_factor {factor:g}){tell}; lower train.lr (now "
                f"{self.config.lr:g}); no adapter or checkpoint was written from these weights")

    def _should_evaluate(self, end_of_epoch: bool) -> bool:
        if not self.has_validation:
            return False
        if self.config.eval_every:
            return self.state.step % self.config.eval_every == 0
        return end_of_epoch

    @torch.no_grad()
    def validation_sums(self) -> list[tuple[float, int]]:
        """(summed NLL, label tokens) of each task's validation completions (classifier:
        summed cross-entropy, examples). Several processes: batch k is scored by process
        k mod world and the sums are added up over the processes."""
        self.model.eval()
        model = self.local_model()
        sums = []
        size = self.config.batch_size
        world, rank = self.accelerator.num_processes, self.accelerator.process_index
        for task in self.tasks:
            nll, count = 0.0, 0
            starts = list(range(0, len(task.validation), size))
            rounds = -(-len(starts) // world)  # lockstep: the same number of passes everywhere
            mine = starts[rank::world]
            for i in range(rounds if self.layout.lockstep else len(mine)):
                start = mine[i] if i < len(mine) else 0  # a filler pass, not counted
                indices = list(range(start, min(start + size, len(task.validation))))
                batch = self.to_device(indices, task.validation, task)
                kind = self.kind_of(indices, task.validation)
                n = kind.loss_targets(batch)
                if n == 0 and not self.layout.lockstep:
                    continue
                with self.autocast():
                    loss = float(kind.loss(model, batch, torch.tensor(max(n, 1)))) * n
                if i < len(mine):
                    nll, count = nll + loss, count + n
            sums.append((nll, count))
        self.model.train()
        if world == 1:
            return sums
        every = self.accelerator.reduce(torch.tensor(sums, dtype=torch.float64,
                                                     device=self.accelerator.device), "sum")
        return [(float(nll), int(count)) for nll, count in every.tolist()]

    def overall_loss(self, sums: list[tuple[float, int]]) -> float:
        """Token-weighted mean NLL over the trained tasks' validation tokens, each task's tokens
        counted loss_weight times (all tasks when no trained task has validation data)."""
        chosen = [i for i, t in enumerate(self.tasks) if not t.held_out and sums[i][1]]
        chosen = chosen or list(range(len(self.tasks)))
        weights = [self.tasks[i].loss_weight for i in chosen]
        if not sum(w * sums[i][1] for w, i in zip(weights, chosen, strict=True)):
            weights = [1.0] * len(chosen)
        nll = sum(w * sums[i][0] for w, i in zip(weights, chosen, strict=True))
        count = sum(w * sums[i][1] for w, i in zip(weights, chosen, strict=True))
        return nll / max(count, 1)

    def _evaluate_and_checkpoint(self) -> None:
        state = self.state
        sums = self.validation_sums()
        val_loss = self.overall_loss(sums)
        improved = state.best_val_loss is None or val_loss < state.best_val_loss
        if improved:
            state.best_val_loss, state.best_step = val_loss, state.step
            state.evals_without_improvement = 0
            parts = self.layout.checkpoint(self.local_model(), None,
                                           self.accelerator.is_main_process)
            if parts is not None:
                save_weights_only(self.run.best_checkpoint, parts[0])
        else:
            state.evals_without_improvement += 1
            patience = self.config.early_stopping_patience
            if patience and state.evals_without_improvement >= patience:
                state.stopped_early = True
        record: dict[str, Any] = {  # Any: a train_log.jsonl line (JSON values)
            "step": state.step, "epoch": state.epoch, "val_loss": val_loss,
            "best_val_loss": state.best_val_loss, "best_step": state.best_step}
        if self.data.per_task:
            record["val_loss_by_task"] = {t.name: (nll / count if count else None)
                                          for t, (nll, count) in zip(self.tasks, sums, strict=True)}
        for hook in self.eval_hooks:
            model = self.local_model()
            record.update(with_rng_preserved(lambda: hook(model)))  # noqa: B023 (called at once)
            self.model.train()
        self._log(record)
        if any([listener(record) for listener in self.eval_listeners]):  # every one hears it
            state.stopped_early = True
        self._save_last()

    def local_model(self) -> torch.nn.Module:
        """The model this process runs for validation and eval hooks (training/parallel.py)."""
        return self.layout.local(self.accelerator, self.model)

    def trained_model(self) -> torch.nn.Module:
        """After fit: the trained model as one process's model, on every process."""
        return self.model  # fit made it plain

    def _save_last(self) -> None:
        parts = self.layout.checkpoint(self.local_model(), self.optimizer,
                                       self.accelerator.is_main_process)
        if parts is not None:  # rank 0 writes
            weights, optimizer_state = parts
            assert optimizer_state is not None  # the optimizer was passed
            save_checkpoint(self.run.last_checkpoint, weights, optimizer_state, self.scheduler,
                            self.state)

    def _restore_best(self) -> None:
        best = self.run.best_checkpoint / "trainable.safetensors"
        if best.is_file():
            self.layout.load_trainable_state(self.local_model(), load_file(str(best)))

    def _log(self, record: dict[str, Any]) -> None:  # Any: JSON values, as LoopState.history
        self.state.history.append(record)
        if self.config.report_to:
            self.accelerator.log(scalars(record), step=int(record["step"]))
        if self.accelerator.is_main_process:
            with self.log_path.open("a") as handle:
                handle.write(json.dumps(record) + "\n")

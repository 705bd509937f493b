"""The training loop: AdamW, warmup + schedule, gradient accumulation and clipping,
validation every N steps, best checkpoint, early stopping, exact resume. Built on accelerate so
the same loop runs on one CPU, one GPU, or several processes under torch.distributed.
"""

from __future__ import annotations

import json
import math
import resource
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from tunelab.config import TrainConfig
from tunelab.data.tokenize import IGNORE_INDEX, TokenizedExample, collate
from tunelab.errors import TunelabError
from tunelab.training.checkpoint import (
    LoopState,
    load_checkpoint,
    load_trainable_state,
    save_checkpoint,
    save_weights_only,
)
from tunelab.training.schedule import make_scheduler


@dataclass
class TrainData:
    train: Sequence[TokenizedExample]
    validation: Sequence[TokenizedExample]
    pad_id: int


def peak_memory_mb() -> float:
    """Peak memory of this process: CUDA allocations on a GPU, else the max resident set."""
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def label_tokens(labels: torch.Tensor) -> int:
    """Tokens that contribute to a causal LM loss (labels are shifted by one inside the model)."""
    return int((labels[:, 1:] != IGNORE_INDEX).sum())


class Trainer:
    """Runs the loop for one model on tokenised data; state lives in `self.state`."""

    def __init__(self, model: torch.nn.Module, config: TrainConfig, data: TrainData, run_dir: Path):
        from accelerate import Accelerator

        if not data.train:
            raise TunelabError("the train split is empty; check data.source and the split sizes")
        self.config, self.data, self.run_dir = config, data, run_dir
        self.accelerator = Accelerator(cpu=not torch.cuda.is_available())
        params = [p for p in model.parameters() if p.requires_grad]
        if not params:
            raise TunelabError("the method left no trainable parameters; check method options")
        decay = [p for p in params if p.ndim >= 2]
        no_decay = [p for p in params if p.ndim < 2]
        optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": config.weight_decay},
             {"params": no_decay, "weight_decay": 0.0}],
            lr=config.lr,
        )
        self.micro_batches_per_epoch = math.ceil(
            len(data.train) / (config.batch_size * self.accelerator.num_processes)
        )
        steps_per_epoch = math.ceil(self.micro_batches_per_epoch / config.grad_accum)
        self.total_steps = config.max_steps or max(1, math.ceil(config.epochs * steps_per_epoch))
        scheduler = make_scheduler(optimizer, self.total_steps, config.warmup_ratio, config.schedule)
        self.model, self.optimizer = self.accelerator.prepare(model, optimizer)
        self.scheduler = scheduler
        self.state = LoopState()
        self.checkpoints = run_dir / "checkpoints"
        self.log_path = run_dir / "train_log.jsonl"

    # --- batching -----------------------------------------------------------------------
    def epoch_batches(self, epoch: int) -> list[list[int]]:
        """This process's micro-batches (example indices) of an epoch; seeded per epoch."""
        generator = torch.Generator().manual_seed(self.config.seed * 100_003 + epoch)
        order = torch.randperm(len(self.data.train), generator=generator).tolist()
        world, rank = self.accelerator.num_processes, self.accelerator.process_index
        size = self.config.batch_size * world
        batches = [order[i:i + size] for i in range(0, len(order), size)]
        return [b[rank::world] or b[:1] for b in batches]

    def to_device(self, indices: list[int], examples: Sequence[TokenizedExample]) -> dict[str, torch.Tensor]:
        batch = collate([examples[i] for i in indices], self.data.pad_id)
        return {k: v.to(self.accelerator.device) for k, v in batch.items()}

    # --- the loop -------------------------------------------------------------------------
    def resume(self) -> None:
        last = self.checkpoints / "last"
        if not (last / "loop_state.json").is_file():
            raise TunelabError(f"--resume: no checkpoint in {last}; start the run without --resume")
        self.state = load_checkpoint(last, self.model, self.optimizer, self.scheduler)
        self._rewrite_log()

    def _rewrite_log(self) -> None:
        """Drop log lines written after the checkpoint we resumed from."""
        lines = [json.dumps(h) for h in self.state.history]
        self.log_path.write_text("".join(line + "\n" for line in lines))

    def fit(self) -> LoopState:
        config, state = self.config, self.state
        bar = tqdm(total=self.total_steps, initial=state.step, desc="train", unit="step",
                   disable=not self.accelerator.is_main_process)
        self.model.train()
        window_tokens, window_start = 0, time.perf_counter()
        while state.step < self.total_steps and not state.stopped_early:
            batches = self.epoch_batches(state.epoch)
            while state.batch_in_epoch < len(batches) and state.step < self.total_steps:
                group = batches[state.batch_in_epoch:state.batch_in_epoch + config.grad_accum]
                loss, tokens = self._optimizer_step(group)
                state.batch_in_epoch += len(group)
                state.step += 1
                state.tokens_seen += tokens
                window_tokens += tokens
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.4f}", lr=f"{self.scheduler.get_last_lr()[0]:.2e}")
                if state.step % config.log_every == 0 or state.step == self.total_steps:
                    elapsed = time.perf_counter() - window_start
                    self._log({"step": state.step, "epoch": state.epoch, "loss": loss,
                               "lr": self.scheduler.get_last_lr()[0],
                               "tokens_per_s": window_tokens / max(elapsed, 1e-9),
                               "peak_memory_mb": peak_memory_mb()})
                    window_tokens, window_start = 0, time.perf_counter()
                end_of_epoch = state.batch_in_epoch >= len(batches)
                if self._should_evaluate(end_of_epoch):
                    self._evaluate_and_checkpoint()
                elif config.save_every and state.step % config.save_every == 0:
                    self._save_last()
                if state.stopped_early:
                    break
            if state.batch_in_epoch >= len(batches):
                state.epoch += 1
                state.batch_in_epoch = 0
        bar.close()
        if not state.history or state.history[-1].get("step") != state.step or "val_loss" not in state.history[-1]:
            if self.data.validation and not state.stopped_early:
                self._evaluate_and_checkpoint()
        self._save_last()
        self._restore_best()
        return state

    def _optimizer_step(self, group: list[list[int]]) -> tuple[float, int]:
        batches = [self.to_device(ix, self.data.train) for ix in group]
        n_label = sum(label_tokens(b["labels"]) for b in batches)
        n_label_t = torch.tensor(max(n_label, 1), device=self.accelerator.device)
        total_loss, total_tokens = 0.0, 0
        for batch in batches:
            # The model sums token losses and divides by the whole step's label tokens, so
            # accumulation weights every token equally (not every micro-batch).
            out = self.model(**batch, num_items_in_batch=n_label_t)
            self.accelerator.backward(out.loss)
            total_loss += float(out.loss.detach())
            total_tokens += int(batch["attention_mask"].sum())
        if self.config.max_grad_norm > 0:
            self.accelerator.clip_grad_norm_(self.model.parameters(), self.config.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return total_loss, total_tokens

    def _should_evaluate(self, end_of_epoch: bool) -> bool:
        if not self.data.validation:
            return False
        if self.config.eval_every:
            return self.state.step % self.config.eval_every == 0
        return end_of_epoch

    @torch.no_grad()
    def validation_loss(self) -> float:
        """Token-weighted mean NLL of the validation completions."""
        self.model.eval()
        nll, count = 0.0, 0
        size = self.config.batch_size
        for start in range(0, len(self.data.validation), size):
            batch = self.to_device(list(range(start, min(start + size, len(self.data.validation)))),
                                   self.data.validation)
            n = label_tokens(batch["labels"])
            if n == 0:
                continue
            out = self.model(**batch, num_items_in_batch=torch.tensor(n))
            nll += float(out.loss) * n
            count += n
        self.model.train()
        return nll / max(count, 1)

    def _evaluate_and_checkpoint(self) -> None:
        state = self.state
        val_loss = self.validation_loss()
        improved = state.best_val_loss is None or val_loss < state.best_val_loss
        if improved:
            state.best_val_loss, state.best_step = val_loss, state.step
            state.evals_without_improvement = 0
            if self.accelerator.is_main_process:
                save_weights_only(self.checkpoints / "best", self.accelerator.unwrap_model(self.model))
        else:
            state.evals_without_improvement += 1
            patience = self.config.early_stopping_patience
            if patience and state.evals_without_improvement >= patience:
                state.stopped_early = True
        self._log({"step": state.step, "epoch": state.epoch, "val_loss": val_loss,
                   "best_val_loss": state.best_val_loss, "best_step": state.best_step})
        self._save_last()

    def _save_last(self) -> None:
        if self.accelerator.is_main_process:
            save_checkpoint(self.checkpoints / "last", self.accelerator.unwrap_model(self.model),
                            self.optimizer, self.scheduler, self.state)

    def _restore_best(self) -> None:
        best = self.checkpoints / "best" / "trainable.safetensors"
        if best.is_file():
            from safetensors.torch import load_file

            load_trainable_state(self.accelerator.unwrap_model(self.model), load_file(str(best)))

    def _log(self, record: dict[str, Any]) -> None:
        self.state.history.append(record)
        if self.accelerator.is_main_process:
            with self.log_path.open("a") as handle:
                handle.write(json.dumps(record) + "\n")

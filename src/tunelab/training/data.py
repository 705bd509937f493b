"""Training data of a run: every task's splits read, tokenised for the model's kind, and
ordered for the batch plan (one task, or a mixture). Call before the method changes the model:
a mixture ordered easy to hard by loss scores its examples with the base model."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tunelab.config import RunConfig, TrainTaskConfig
from tunelab.core.deferred import deferred
from tunelab.core.errors import TunelabError
from tunelab.data import Record, Splits, Template, get_template, load_splits
from tunelab.data.mixture import TaskExamples, TrainingData, get_order, length_difficulty
from tunelab.data.tokenize import TokenizedExample, collator, tokenize_records
from tunelab.data.training_tasks import augmented
from tunelab.models import LoadedModel, attention

if TYPE_CHECKING:
    from tunelab.eval import loglikelihood
else:  # it uses torch as it is imported; reading and checking a run's data does not
    loglikelihood = deferred("tunelab.eval.loglikelihood")


@dataclass
class PreparedData:
    data: TrainingData
    splits: dict[str, Splits]
    """Each task's splits, by task name (the test splits are scored after training)."""

    @property
    def train_examples(self) -> list[TokenizedExample]:
        return [ex for task in self.data.tasks for ex in task.train]


def read_splits(tasks: list[TrainTaskConfig], with_test: bool = True) -> dict[str, Splits]:
    """Every task's data read and split (no model needed): a bad file fails here, before a
    model loads; an empty train split too. `with_test=False`: each test split is sealed
    (`data.splits.SealedSplit`; a search reads train and validation only)."""
    splits = {}
    for task in tasks:
        splits[task.name] = load_splits(task.data, with_test)
        if not task.held_out and not splits[task.name].train[:task.max_train_examples]:
            raise TunelabError(_empty_train(task, len(tasks) > 1))
    return splits


def prepare_data(config: RunConfig, lm: LoadedModel, tasks: list[TrainTaskConfig],
                 read: dict[str, Splits] | None = None) -> PreparedData:
    """Split (`read`, else now) and tokenise every task (held-out tasks: validation and test
    only); a task none of whose completion tokens survive truncation is an error, and lost
    completion tokens are counted."""
    read = read or read_splits(tasks)
    examples, splits_by_task = [], {}
    per_example = attention.takes_per_example(lm.model)
    for task in tasks:
        splits = read[task.name]
        template = get_template(task.data, lm.tokenizer)

        def tokenize(records: Sequence[Record], task: TrainTaskConfig = task,
                     template: Template = template) -> list[TokenizedExample]:
            return tokenize_records(records, template, lm.tokenizer, lm.kind,
                                    task.data.max_length, task.eval.labels)

        train = [] if task.held_out else splits.train[:task.max_train_examples]
        train = augmented(train, task.data.augment)
        tokenized = tokenize(train)
        check_truncation(task, tokenized)
        examples.append(TaskExamples(task.name, tokenized, tokenize(splits.validation),
                                     loss_weight=task.loss_weight, weight=task.weight,
                                     held_out=task.held_out,
                                     collate=collator(task.data, per_example)))
        splits_by_task[task.name] = splits
    mixture = config.mixture if config.is_mixture else None
    if mixture is not None and get_order(mixture.order).needs_difficulty:
        for task_examples in examples:
            task_examples.difficulty = difficulty(task_examples.train, mixture.measure, lm,
                                                  config.train.batch_size)
    return PreparedData(TrainingData(examples, lm.tokenizer.pad_token_id, mixture), splits_by_task)


def check_truncation(task: TrainTaskConfig, examples: list[TokenizedExample]) -> None:
    """No training when truncation leaves nothing to learn; a count when it cuts completions."""
    if not examples:
        return
    lost = [ex for ex in examples if ex.lost_completion]
    where = f"task '{task.name}': " if task.name else ""
    if len(lost) == len(examples) and all(ex.kept_completion == 0 for ex in lost):
        raise TunelabError(f"{where}data.max_length {task.data.max_length}: no completion token "
                           "of any training example survives truncation; raise data.max_length")
    if lost:
        tokens = sum(ex.lost_completion for ex in lost)
        print(f"tunelab: {where}{len(lost)} of {len(examples)} training examples lose "
              f"{tokens} completion tokens to data.max_length {task.data.max_length}; raise it "
              "to train on whole completions")


def _empty_train(task: TrainTaskConfig, mixture: bool) -> str:
    if not mixture:
        return "the train split is empty; check data.source and the split sizes"
    return (f"task '{task.name}': the train split is empty; check its data source, split sizes "
            "and max_train_examples")


def loss_difficulty(examples: Sequence[TokenizedExample], lm: LoadedModel,
                    batch_size: int) -> list[float]:
    """The base model's mean NLL per completion token."""
    scored = loglikelihood.completion_nll(lm.model, examples, lm.tokenizer.pad_token_id, batch_size)
    return [nll / max(count, 1) for nll, count in scored]


MEASURES: dict[str, Callable[[Sequence[TokenizedExample], LoadedModel, int], list[float]]] = {
    "length": lambda examples, lm, batch_size: length_difficulty(examples),
    "loss": loss_difficulty,
}
"""mixture.measure -> each training example's difficulty (the names are config.choices.Measure)."""


def difficulty(examples: Sequence[TokenizedExample], measure: str, lm: LoadedModel,
               batch_size: int) -> list[float]:
    """length: tokens; loss: the base model's mean NLL per completion token."""
    if not examples:
        return []
    return MEASURES[measure](examples, lm, batch_size)

"""Training data of a run: every task's splits read, tokenised for the model's kind, and
ordered for the batch plan (one task, or a mixture). Call before the method changes the model:
a mixture ordered easy to hard by loss scores its examples with the base model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tunelab.config import RunConfig, TrainTaskConfig
from tunelab.data import Splits, get_template, load_splits
from tunelab.data.mixture import TaskExamples, TrainingData, length_difficulty
from tunelab.data.tokenize import TokenizedExample, tokenize_record
from tunelab.data.training_tasks import augmented
from tunelab.errors import TunelabError
from tunelab.eval.loglikelihood import completion_nll
from tunelab.models import LoadedModel


@dataclass
class PreparedData:
    data: TrainingData
    splits: dict[str, Splits]
    """Each task's splits, by task name (the test splits are scored after training)."""

    @property
    def train_examples(self) -> list[TokenizedExample]:
        return [ex for task in self.data.tasks for ex in task.train]


def prepare_data(config: RunConfig, lm: LoadedModel, tasks: list[TrainTaskConfig]) -> PreparedData:
    """Read, split and tokenise every task (held-out tasks: validation and test only)."""
    examples, splits_by_task = [], {}
    for task in tasks:
        splits = load_splits(task.data)
        template = get_template(task.data, lm.tokenizer)

        def tokenize(records: list, task: TrainTaskConfig = task, template: Any = template
                     ) -> list[TokenizedExample]:
            return [tokenize_record(r, template, lm.tokenizer, lm.kind, task.data.max_length,
                                    task.eval.labels) for r in records]

        train = [] if task.held_out else splits.train[:task.max_train_examples]
        if not task.held_out and not train:
            raise TunelabError(_empty_train(config, task))
        train = augmented(train, task.data.augment)
        examples.append(TaskExamples(task.name, tokenize(train), tokenize(splits.validation),
                                     loss_weight=task.loss_weight, weight=task.weight,
                                     held_out=task.held_out))
        splits_by_task[task.name] = splits
    mixture = config.mixture if config.is_mixture else None
    if mixture is not None and mixture.order == "easy_to_hard":
        for task_examples in examples:
            task_examples.difficulty = difficulty(task_examples.train, mixture.measure, lm,
                                                  config.train.batch_size)
    return PreparedData(TrainingData(examples, lm.tokenizer.pad_token_id, mixture), splits_by_task)


def _empty_train(config: RunConfig, task: TrainTaskConfig) -> str:
    if not config.is_mixture:
        return "the train split is empty; check data.source and the split sizes"
    return (f"task '{task.name}': the train split is empty; check its data source, split sizes "
            "and max_train_examples")


def difficulty(examples: list[TokenizedExample], measure: str, lm: LoadedModel,
               batch_size: int) -> list[float]:
    """length: tokens; loss: the base model's mean NLL per completion token."""
    if measure == "length" or not examples:
        return length_difficulty(examples)
    scored = completion_nll(lm.model, examples, lm.tokenizer.pad_token_id, batch_size)
    return [nll / max(count, 1) for nll, count in scored]

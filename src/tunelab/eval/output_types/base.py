"""What every output type shares: the request it runs, the outputs it returns, and the base
class whose attributes and methods answer every question callers used to ask by name.

An output type turns a task's records into predictions (generated text, a chosen choice, a
head's label) and into the quantities its metrics read (`MetricInput`: text pairs, summed NLL
with token / byte / word counts, choice log-likelihoods). It says which metrics fit it, whether
it takes in-context shots, what model it needs (a classification head or not), which task
options it checks, and how `tunelab tasks validate` previews a record. Scoring is not done
here: `eval/runner.py` turns `Outputs` into metric items and aggregates.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from tunelab.config import ModelConfig, TaskConfig
from tunelab.core.errors import TunelabError
from tunelab.data import Record, get_template, get_template_kind
from tunelab.eval.datasets import TaskData
from tunelab.eval.fewshot import PromptBuilder, choose_shots
from tunelab.eval.metrics import MetricInput, metric_class
from tunelab.eval.output_types.answers import reference_of
from tunelab.eval.result_cache import ResultCache
from tunelab.models import LoadedModel
from tunelab.models.known_weights import scoring
from tunelab.models.loader import BaseRecipe

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

Prediction = dict[str, Any]  # Any: JSON values ("prediction", "probabilities")
"""One record's prediction (`OutputType.predict`): "prediction" and, for a classifier,
"probabilities" ({label: p}, in label order)."""
Fail = Callable[[list[str | int], str], None]
"""check_task's error reporter: (option keys, message) -> raises a one-line TunelabError."""
TEXT_METRICS = ("accuracy", "classification", "exact_match", "f1", "rouge", "bleu", "chrf")
"""Metrics over (prediction text, reference) pairs, in the order errors list them."""


@dataclass
class Outputs:
    rows: list[dict[str, Any]]  # Any: predictions.jsonl rows (JSON values, per output type)
    """One JSON-able row per example (predictions.jsonl)."""
    predictions: list[str]
    references: list[str | list[str]]
    measured: dict[MetricInput, Sequence[tuple[object, ...]]] = field(default_factory=dict)
    """Item arguments of metrics that don't read (prediction, reference) text pairs."""
    context_tokens: list[int] = field(default_factory=list)
    shot_tokens: list[int] = field(default_factory=list)
    dropped_shots: int = 0
    truncated: int = 0
    """Prompts cut from the left because even without shots they did not fit."""

    def metric_inputs(self, reads: MetricInput) -> Sequence[tuple[object, ...]]:
        """The per-item arguments of a metric that reads `reads`."""
        if reads is MetricInput.TEXT:
            return list(zip(self.predictions, self.references, strict=True))
        if reads not in self.measured:
            raise TunelabError(f"these outputs have no {reads.value} for a metric to score; "
                               "check the task's metrics against its output_type")
        return self.measured[reads]


@dataclass(frozen=True)
class Framing:
    """The text around a task's examples: a preamble once before the shots and the separator
    between consecutive shots. Resolved from the task, else its data source, so records can be
    scored without their source (`Framing.of(task)`: the task's own settings only)."""

    preamble: str = ""
    separator: str = "\n\n"

    @classmethod
    def of(cls, task: TaskConfig, data: TaskData | None = None) -> Framing:
        """task.preamble / fewshot.separator, else the source's own (BIG-bench's task_prefix,
        MMLU's header), else no preamble and a blank line."""
        source_preamble = data.preamble if data is not None else ""
        source_separator = data.separator if data is not None else None
        preamble = task.preamble if task.preamble is not None else source_preamble
        separator = task.fewshot.separator if task.fewshot.separator is not None else (
            source_separator if source_separator is not None else "\n\n")
        return cls(preamble, separator)


@dataclass
class Request:
    """What every output type's `run` gets: the model, the task, the records to score, the
    pool shots are drawn from and how many each prompt takes."""

    lm: LoadedModel
    task: TaskConfig
    records: list[Record]
    pool: list[Record] = field(default_factory=list)
    shots: int = 0
    system: str = ""
    framing: Framing | None = None
    """Preamble and separator (default: `Framing.of(task)`)."""
    first_index: int = 0
    """The split index of records[0] (a process's share of a split: eval/shard.py)."""
    results: ResultCache | None = field(default_factory=ResultCache.default)
    """Where results this model already produced are looked up (None: everything runs)."""

    @property
    def context_limit(self) -> int:
        """The model's context window in tokens."""
        return context_limit(self.lm)

    def wants(self, reads: MetricInput) -> bool:
        """Whether some task metric reads `reads` (so the request is worth running)."""
        return any(metric_class(name).reads is reads for name in self.task.eval.metrics)

    def prompt_builder(self) -> PromptBuilder:
        framing = self.framing or Framing.of(self.task)
        return PromptBuilder(get_template(self.task.data, self.lm.tokenizer), self.lm.tokenizer,
                             framing.preamble, framing.separator)

    def shots_for(self, index: int, record: Record) -> list[Record]:
        """The in-context examples of item `index` (never the item itself)."""
        same_split = self.task.shot_split() == self.task.split
        return choose_shots(self.pool, self.shots, self.task.shot_seed(), self.first_index + index,
                            self.task.shot_sampler(), exclude=record if same_split else None,
                            labels=self.task.eval.labels, label_of=self.gold_label)

    def gold_label(self, record: Record) -> str:
        """The record's gold answer as one text (the first, where there are several)."""
        gold = reference_of(self.task, record)
        return gold if isinstance(gold, str) else (gold[0] if gold else "")


def context_limit(lm: LoadedModel) -> int:
    """The model's context window in tokens."""
    limit = getattr(lm.config, "max_position_embeddings", None) or getattr(
        lm.config, "n_positions", None)
    return int(limit or min(lm.tokenizer.model_max_length, 2048))


def input_text(record: Record) -> str:
    """The record's input as a reader sees it (the last user turn of a chat record)."""
    if record.messages is not None:
        users = [m["content"] for m in record.messages if m["role"] == "user"]
        return users[-1] if users else ""
    return record.input or record.instruction


def row(index: int, record: Record, prompt: str, prediction: object, reference: object
        ) -> dict[str, Any]:  # Any: a predictions.jsonl row (JSON values)
    """The predictions.jsonl row every output type starts from."""
    return {"index": index, "origin": record.origin, "input": input_text(record), "prompt": prompt,
            "prediction": prediction, "reference": reference}


def warn_dropped(task: TaskConfig, outputs: Outputs, lm: LoadedModel, stacklevel: int = 3) -> None:
    """Warn about shots dropped and prompts cut to fit the context window."""
    limit = context_limit(lm)
    if outputs.dropped_shots:
        warnings.warn(f"{task.name}: dropped {outputs.dropped_shots} in-context examples that "
                      f"would overflow the {limit}-token context", stacklevel=stacklevel)
    if outputs.truncated:
        warnings.warn(f"{task.name}: {outputs.truncated} prompts were longer than the "
                      f"{limit}-token context even without shots and were cut from the left",
                      stacklevel=stacklevel)


class OutputType:
    """One way to get predictions from a model. Subclasses set the class attributes and
    implement `run`; the defaults fit the prompt-based types (generate, multiple choice)."""

    name: ClassVar[str]
    metrics: ClassVar[tuple[str, ...]]
    """The metrics that can score this type's outputs, in the order errors list them."""
    takes_shots: ClassVar[bool] = True
    """Whether prompts can carry in-context examples."""
    needs_head: ClassVar[bool] = False
    """Whether the model needs a classification head (see `load_model`)."""
    free_text: ClassVar[bool] = False
    """Whether a prediction is text the model wrote (so it can be empty, too long, repeat
    itself, ...), rather than one of the given choices or labels."""

    def writes_text(self, task: TaskConfig) -> bool:
        """Whether evaluating `task` has the model write text: free text that some metric reads
        (a generate task scored by perplexity alone generates nothing)."""
        return self.free_text and any(metric_class(name).reads is MetricInput.TEXT
                                      for name in task.eval.metrics)

    def check(self, task: TaskConfig, fail: Fail) -> None:
        """Report (through `fail`) a task option this type cannot use; no data is read."""
        if not self.takes_shots and (task.fewshot.k or task.eval.shots):
            fail(["fewshot", "k"], f"{self.name} takes no in-context examples; set 0")

    def check_shots(self, shots: int) -> None:
        """Refuse `--shots N` for a type that takes no in-context examples."""
        if shots and not self.takes_shots:
            raise TunelabError(f"--shots {shots}: output_type {self.name} takes no in-context "
                               "examples; use --shots 0")

    def load_model(self, task: TaskConfig, model: ModelConfig) -> LoadedModel:
        """The base model as this type needs it for `task` (deferred where the result cache
        knows its weights: models/known_weights.py)."""
        return scoring(BaseRecipe(copy.deepcopy(model), None, None))

    def check_record(self, task: TaskConfig, record: Record) -> None:
        """Raise a one-line error naming the record if its answer can't be resolved."""
        reference_of(task, record)

    def preview(self, task: TaskConfig, record: Record, framing: Framing,
                tokenizer: PreTrainedTokenizerBase | None = None) -> str | None:
        """The line `tunelab tasks validate` shows for the first record (None: needs a
        tokenizer to render, e.g. a chat template)."""
        if get_template_kind(task.data.template).needs_tokenizer and tokenizer is None:
            return None
        builder = PromptBuilder(get_template(task.data, tokenizer), tokenizer, framing.preamble,
                                "\n\n")
        rendered = builder.render(record)
        return f"first prompt: {rendered.prompt!r} -> {rendered.completion!r}"

    def run(self, request: Request) -> Outputs:
        """Predictions and metric inputs for every record of the request."""
        raise NotImplementedError

    def run_all(self, requests: Sequence[Request]) -> list[Outputs]:
        """Each request's outputs, as `run` gives them. The requests are versions of the same
        items on one model (a study's perturbed copies); a type whose model calls gain from
        one pass over all of them (longer batches, less padding) overrides this."""
        return [self.run(request) for request in requests]

    def check_predict(self, task: TaskConfig) -> None:
        """Raise a one-line error when this type has nothing to predict for `task` (it only
        scores given answers); asked before any model loads."""
        raise TunelabError(f"task {task.name}: output_type {self.name} only scores given "
                           "answers, so predict has nothing to predict; predict with a run "
                           "whose task generates, classifies or picks a choice")

    def predict(self, request: Request) -> list[Prediction]:
        """The prediction for each record of new inputs, which need no answer (`tunelab
        predict`): a row with "prediction" and, where the type has them, "probabilities"
        ({label: p}). `run` predicts the same for the same records.

        Raises:
            TunelabError: the type has nothing to predict (`check_predict`).
        """
        self.check_predict(request.task)
        raise NotImplementedError

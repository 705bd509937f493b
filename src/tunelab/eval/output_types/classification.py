"""`classification`: texts -> a sequence-classification head's label -> label metrics.

The text is what training fed the head (`classifier_text`); the labels are the task's choices
list, else eval.labels, one per class in class order. A base model gets a fresh head for them
(`load_model`), which scores at chance until a run trains it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from tunelab.config import ModelConfig, TaskConfig
from tunelab.core.deferred import deferred
from tunelab.core.errors import TunelabError
from tunelab.data import Record, get_template
from tunelab.data.templates import classifier_text
from tunelab.eval.output_types.answers import reference_of
from tunelab.eval.output_types.base import (
    Fail,
    Framing,
    Outputs,
    OutputType,
    Prediction,
    Request,
    row,
)
from tunelab.models import LoadedModel
from tunelab.models.kinds import load_classifier

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from tunelab.eval import heads
else:  # it uses torch as it is imported; an output type's checks do not
    heads = deferred("tunelab.eval.heads")


HEAD_SEED = 0
"""The seed of a fresh (untrained) classification head scored as a baseline."""


def labels_of(task: TaskConfig) -> list[str]:
    """The class labels, in class order: a choices list, else eval.labels (else none)."""
    if isinstance(task.choices, list):
        return [str(c) for c in task.choices]
    return list(task.eval.labels or [])


class ClassificationOutput(OutputType):
    """A task head's label for each text; no prompt, no shots."""

    name: ClassVar[str] = "classification"
    metrics: ClassVar[tuple[str, ...]] = ("accuracy", "classification", "exact_match", "f1")
    takes_shots: ClassVar[bool] = False
    needs_head: ClassVar[bool] = True

    def check(self, task: TaskConfig, fail: Fail) -> None:
        if not (isinstance(task.choices, list) or task.eval.labels):
            fail(["eval", "labels"], "classification needs the labels, one per class in class order")
        super().check(task, fail)

    def load_model(self, task: TaskConfig, model: ModelConfig) -> LoadedModel:
        """The base model with a sequence-classification head over the task's labels; a fresh
        head is drawn from HEAD_SEED, so the untrained baseline is the same on every run."""
        return load_classifier(model, [str(label) for label in labels_of(task)], HEAD_SEED)

    def preview(self, task: TaskConfig, record: Record, framing: Framing,
                tokenizer: PreTrainedTokenizerBase | None = None) -> str | None:
        return f"first text: {(record.input or record.instruction)[:300]!r}"

    def run(self, request: Request) -> Outputs:
        lm, task = request.lm, request.task
        texts = _texts(request)
        predictions, probabilities = _classified(request, texts)
        references = [reference_of(task, r) for r in request.records]
        rows = []
        for i, record in enumerate(request.records):
            out_row = row(i, record, texts[i], predictions[i], references[i])
            out_row["probabilities"] = [round(p, 4) for p in probabilities[i]]
            rows.append(out_row)
        lengths = [len(lm.tokenizer(t).input_ids) for t in texts]
        return Outputs(rows, predictions, references, context_tokens=lengths,
                       shot_tokens=[0] * len(rows))

    def check_predict(self, task: TaskConfig) -> None:
        """A head's label is a prediction."""

    def predict(self, request: Request) -> list[Prediction]:
        predictions, probabilities = _classified(request, _texts(request))
        names = heads.class_names(request.lm.model, _labels(request.task))  # each class's label
        return [{"prediction": label,
                 "probabilities": {n: round(p, 6) for n, p in zip(names, probs, strict=True)}}
                for label, probs in zip(predictions, probabilities, strict=True)]


def _labels(task: TaskConfig) -> list[str]:
    """The task's labels, or a one-line error when it names none."""
    labels = labels_of(task)
    if not labels:
        raise TunelabError(f"task {task.name}: classification needs eval.labels (or a "
                           "choices list), one per class in class order")
    return labels


def _texts(request: Request) -> list[str]:
    """What the head reads of each record: what training fed it."""
    template = get_template(request.task.data, request.lm.tokenizer)
    return [classifier_text(r, template) for r in request.records]


def _classified(request: Request, texts: list[str]) -> tuple[list[str], list[list[float]]]:
    """(label, class probabilities) of each text."""
    task = request.task
    return heads.classify(request.lm, texts, _labels(task), task.eval.batch_size,
                          request.context_limit, results=request.results)

"""`loglikelihood_rolling`: whole texts -> windowed NLL -> perplexity, bits per byte and word
perplexity. The text is the task's target column (else the record's output); no prompt, no
shots."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, ClassVar

from tunelab.config import TaskConfig
from tunelab.core.deferred import deferred
from tunelab.core.errors import TunelabError
from tunelab.data import Record
from tunelab.eval.metrics import MetricInput
from tunelab.eval.output_types.answers import reference_of
from tunelab.eval.output_types.base import (
    Framing,
    Outputs,
    OutputType,
    Request,
    row,
)

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from tunelab.eval import rolling_nll
else:  # they use torch as they are imported; an output type's checks do not
    rolling_nll = deferred("tunelab.eval.rolling_nll")


def document_of(task: TaskConfig, record: Record) -> str:
    """The text a rolling task scores (several target texts joined by spaces)."""
    value = reference_of(task, record)
    return " ".join(value) if isinstance(value, list) else str(value)


class RollingOutput(OutputType):
    """The model's log-likelihood of whole texts, in windows of its context."""

    name: ClassVar[str] = "loglikelihood_rolling"
    metrics: ClassVar[tuple[str, ...]] = ("perplexity", "bits_per_byte", "word_perplexity")
    takes_shots: ClassVar[bool] = False

    def preview(self, task: TaskConfig, record: Record, framing: Framing,
                tokenizer: PreTrainedTokenizerBase | None = None) -> str | None:
        return f"first text: {document_of(task, record)[:300]!r}"

    def run(self, request: Request) -> Outputs:
        lm, task = request.lm, request.task
        texts = [document_of(task, r) for r in request.records]
        max_length = task.rolling.max_length or min(request.context_limit, 2048)
        scores = rolling_nll.rolling_loglikelihood(lm, lm.tokenizer, texts, max_length,
                                                   task.rolling.stride, task.eval.batch_size,
                                                   results=request.results)
        rows = []
        for i, (record, text, s) in enumerate(zip(request.records, texts, scores, strict=True)):
            out_row = row(i, record, "", f"{s.nll / max(s.tokens, 1):.4f} nats/token", "")
            out_row.update(input=text[:300], nll=s.nll, tokens=s.tokens, bytes=s.bytes,
                           words=s.words)
            rows.append(out_row)
        measured: dict[MetricInput, Sequence[tuple[object, ...]]] = {
            MetricInput.NLL_TOKENS: [(s.nll, s.tokens) for s in scores],
            MetricInput.NLL_BYTES: [(s.nll, s.bytes) for s in scores],
            MetricInput.NLL_WORDS: [(s.nll, s.words) for s in scores]}
        return Outputs(rows, [""] * len(rows), [""] * len(rows), measured,
                       context_tokens=[s.tokens for s in scores], shot_tokens=[0] * len(scores))

    def check_predict(self, task: TaskConfig) -> None:
        raise TunelabError(f"task {task.name}: output_type {self.name} only scores the "
                           "perplexity of given texts, so predict has nothing to predict; "
                           "predict with a run whose task generates, classifies or picks a "
                           "choice")

"""`generate`: prompts (with shots) -> batched generation -> text metrics, and the gold
completion's NLL -> perplexity. Each request runs only when some task metric reads it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, ClassVar

from tunelab.config import TaskConfig
from tunelab.core.deferred import deferred
from tunelab.core.errors import TunelabError
from tunelab.data import tokenize_example
from tunelab.data.tokenize import tokenize_seq2seq
from tunelab.eval.fewshot import Prompt
from tunelab.eval.metrics import MetricInput, metric_class
from tunelab.eval.output_types.answers import reference_of
from tunelab.eval.output_types.base import (
    TEXT_METRICS,
    Outputs,
    OutputType,
    Prediction,
    Request,
    row,
)

if TYPE_CHECKING:
    from tunelab.eval import generation, loglikelihood
else:  # they use torch as they are imported; an output type's checks do not
    generation = deferred("tunelab.eval.generation")
    loglikelihood = deferred("tunelab.eval.loglikelihood")


class GenerateOutput(OutputType):
    """Free text from the model, scored against the gold answer(s)."""

    name: ClassVar[str] = "generate"
    free_text: ClassVar[bool] = True
    metrics: ClassVar[tuple[str, ...]] = (*TEXT_METRICS, "perplexity")

    def run(self, request: Request) -> Outputs:
        return self.run_all([request])[0]

    def run_all(self, requests: Sequence[Request]) -> list[Outputs]:
        """Every request's prompts generated in one call (one model, one task: a study's
        versions of the same items), then each request's outputs."""
        prompts = [_prompts(request) for request in requests]
        texts: list[list[str]] = [[""] * len(p) for p in prompts]
        limits: list[list[bool]] = [[False] * len(p) for p in prompts]
        writing = [i for i, request in enumerate(requests) if request.wants(MetricInput.TEXT)]
        if writing:
            every = [prompt for i in writing for prompt in prompts[i]]
            hit_limit = [False] * len(every)
            generated = _generated(requests[writing[0]], every, hit_limit)
            start = 0
            for i in writing:
                end = start + len(prompts[i])
                texts[i], limits[i] = generated[start:end], hit_limit[start:end]
                start = end
        return [self._outputs(request, p, t, h)
                for request, p, t, h in zip(requests, prompts, texts, limits, strict=True)]

    def _outputs(self, request: Request, prompts: list[Prompt], predictions: list[str],
                 hit_limit: list[bool]) -> Outputs:
        lm, task = request.lm, request.task
        references = [reference_of(task, r) for r in request.records]
        rows = [row(i, r, p.rendered.prompt, predictions[i], references[i])
                for i, (r, p) in enumerate(zip(request.records, prompts, strict=True))]
        for out_row, limited in zip(rows, hit_limit, strict=True):
            out_row["hit_max_new_tokens"] = limited
        out = Outputs(rows,
                      predictions, references, context_tokens=[len(p.ids) for p in prompts],
                      shot_tokens=[p.shot_tokens for p in prompts],
                      dropped_shots=sum(p.dropped for p in prompts))
        if request.wants(MetricInput.NLL_TOKENS):
            limit = request.context_limit
            # As the kind trains: the prompt as context, the reference as labels.
            tokenize = tokenize_seq2seq if lm.kind.encoder_decoder else tokenize_example
            tokenized = [tokenize(p.rendered, lm.tokenizer, max_length=limit) for p in prompts]
            out.measured[MetricInput.NLL_TOKENS] = loglikelihood.completion_nll(
                lm, tokenized, lm.tokenizer.pad_token_id, task.eval.generation.batch_size,
                results=request.results)
        return out

    def check_predict(self, task: TaskConfig) -> None:
        if not any(metric_class(name).reads is MetricInput.TEXT for name in task.eval.metrics):
            # e.g. perplexity alone: the evaluation generates nothing
            raise TunelabError(
                f"task {task.name}: eval.metrics {', '.join(task.eval.metrics)} only score the "
                "likelihood of given answers, so predict has nothing to predict; predict with "
                "a run whose evaluation scores generated text (e.g. exact_match)")

    def predict(self, request: Request) -> list[Prediction]:
        self.check_predict(request.task)
        return [{"prediction": text} for text in _generated(request, _prompts(request))]


def _prompts(request: Request) -> list[Prompt]:
    """Each record's prompt (with its shots), leaving room for max_new_tokens."""
    builder = request.prompt_builder()
    budget = request.context_limit - request.task.eval.generation.max_new_tokens
    return [builder.build(r, request.shots_for(i, r), budget)
            for i, r in enumerate(request.records)]


def _generated(request: Request, prompts: list[Prompt], hit_limit: list[bool] | None = None
               ) -> list[str]:
    """The model's text after each prompt, as eval.generation says (batched, greedy or
    sampled, cut at the stop strings)."""
    lm = request.lm
    return generation.generate(lm, lm.tokenizer, [p.ids for p in prompts],
                               request.task.eval.generation, desc=request.system,
                               hit_limit=hit_limit, results=request.results,
                               kept=lm.prompt_caches)

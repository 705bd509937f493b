"""`generate`: prompts (with shots) -> batched generation -> text metrics, and the gold
completion's NLL -> perplexity. Each request runs only when some task metric reads it."""

from __future__ import annotations

from typing import ClassVar

from tunelab.data import tokenize_example
from tunelab.data.tokenize import tokenize_seq2seq
from tunelab.eval.generation import generate, is_encoder_decoder
from tunelab.eval.loglikelihood import completion_nll
from tunelab.eval.metrics import MetricInput
from tunelab.eval.output_types.answers import reference_of
from tunelab.eval.output_types.base import (
    TEXT_METRICS,
    Outputs,
    OutputType,
    Request,
    row,
)


class GenerateOutput(OutputType):
    """Free text from the model, scored against the gold answer(s)."""

    name: ClassVar[str] = "generate"
    free_text: ClassVar[bool] = True
    metrics: ClassVar[tuple[str, ...]] = (*TEXT_METRICS, "perplexity")

    def run(self, request: Request) -> Outputs:
        lm, task = request.lm, request.task
        builder = request.prompt_builder()
        gen = task.eval.generation
        budget = request.context_limit - gen.max_new_tokens
        prompts = [builder.build(r, request.shots_for(i, r), budget)
                   for i, r in enumerate(request.records)]
        references = [reference_of(task, r) for r in request.records]
        hit_limit: list[bool] = [False] * len(prompts)
        predictions = (generate(lm.model, lm.tokenizer, [p.ids for p in prompts], gen,
                                desc=request.system, hit_limit=hit_limit)
                       if request.wants(MetricInput.TEXT) else [""] * len(prompts))
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
            tokenize = tokenize_seq2seq if is_encoder_decoder(lm.model) else tokenize_example
            tokenized = [tokenize(p.rendered, lm.tokenizer, max_length=limit) for p in prompts]
            out.measured[MetricInput.NLL_TOKENS] = completion_nll(
                lm.model, tokenized, lm.tokenizer.pad_token_id, gen.batch_size)
        return out

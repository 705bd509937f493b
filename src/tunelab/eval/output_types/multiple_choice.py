"""`multiple_choice`: context + each choice -> log-likelihoods -> acc, acc_norm, and text
metrics on the chosen choice. Choices come from the task (a list or a column), a `choices`
column, or eval.labels; the gold answer is a choice's text or index (`resolve_choices`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from tunelab.config import TaskConfig
from tunelab.core.deferred import deferred
from tunelab.core.errors import TunelabError
from tunelab.data import Record
from tunelab.eval.fewshot import Prompt, with_output
from tunelab.eval.metrics import MetricInput
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
    from tunelab.eval import choice
    from tunelab.eval.choice import ChoiceRequest, ChoiceResult
else:  # they use torch as they are imported; an output type's checks do not
    choice = deferred("tunelab.eval.choice")


def choices_of(task: TaskConfig, record: Record) -> list[str]:
    """The choices of a multiple-choice record (no answer needed)."""
    if isinstance(task.choices, list):
        return [str(c) for c in task.choices]
    if isinstance(task.choices, str):
        if task.choices not in record.columns:
            raise TunelabError(f"{record.origin}: no column '{task.choices}' for choices:")
        return [str(c) for c in record.columns[task.choices]]
    if "choices" in record.columns:
        return [str(c) for c in record.columns["choices"]]
    if task.eval.labels:
        return list(task.eval.labels)
    raise TunelabError(f"{task.where('output_type')}: multiple_choice needs choices, and "
                       f"{record.origin or 'the data'} has no 'choices' column; add choices: "
                       "(a column name or a list) or eval.labels to the task file")


def resolve_choices(task: TaskConfig, record: Record) -> tuple[list[str], list[int]]:
    """(choices, gold choice indices) of a multiple-choice record."""
    choices = choices_of(task, record)
    raw: object = record.columns["gold"] if not task.target and "gold" in record.columns else (
        record.columns.get(task.target) if task.target else reference_of(task, record))
    values = raw if isinstance(raw, (list, tuple)) else [raw]
    gold = [_choice_index(v, choices, record) for v in values]
    return choices, gold


def gold_text(task: TaskConfig, record: Record) -> str:
    """The text of a multiple-choice record's (first) gold choice."""
    choices, gold = resolve_choices(task, record)
    return choices[gold[0]]


def _choice_index(value: object, choices: list[str], record: Record) -> int:
    text = str(value).strip()
    if text in choices:
        return choices.index(text)
    if isinstance(value, int) or text.lstrip("-").isdigit():
        if 0 <= int(text) < len(choices):
            return int(text)
    lowered = [c.strip().lower() for c in choices]
    if text.lower() in lowered:
        return lowered.index(text.lower())
    raise TunelabError(f"{record.origin}: answer {value!r} is not one of the choices "
                       f"{choices[:6]}; point target: at the answer column")


@dataclass
class ChoiceItem:
    """One multiple-choice item as requests: the prompt text, each choice's continuation text
    (what lm-evaluation-harness would get) and their tokens."""

    prompt: Prompt
    """The prompt text with its shots, ids and shot counts."""
    continuations: list[str]
    choices: list[str]
    gold: list[int]
    request: ChoiceRequest
    truncated: bool = False


def build_choice_items(req: Request, answered: bool = True) -> list[ChoiceItem]:
    """Prompts (with shots, fitted to the context) and tokenised choices of every record;
    `answered=False`: new inputs, whose gold is not resolved (`gold` stays empty)."""
    builder = req.prompt_builder()
    tokenizer = req.lm.tokenizer
    limit = req.context_limit
    # An encoder-decoder model reads the prompt alone (the choice is the decoder's): the
    # prompt has the whole context to itself.
    apart = req.lm.kind.encoder_decoder
    items = []
    for i, record in enumerate(req.records):
        choices, gold = resolve_choices(req.task, record) if answered else (
            choices_of(req.task, record), [])
        shots = [with_output(s, gold_text(req.task, s)) for s in req.shots_for(i, record)]
        continuations = [builder.completion(with_output(record, c)) for c in choices]
        reserve = 0 if apart else max(len(tokenizer(c, add_special_tokens=False).input_ids)
                                      for c in continuations) + 1
        # The prompt is the same whichever choice follows it.
        prompt = builder.build(with_output(record, choices[gold[0] if gold else 0]), shots,
                               limit - reserve)
        special = not prompt.rendered.special_in_text
        pairs = [choice.encode_pair(tokenizer, prompt.rendered.prompt, c, special,
                                    separately=apart)
                 for c in continuations]
        context, conts = pairs[0][0], [c for _, c in pairs]
        longest = 0 if apart else max(len(c) for c in conts)
        truncated = len(context) + longest > limit
        if truncated:  # even without shots: cut from the left, as lm-evaluation-harness does
            context = context[len(context) + longest - limit:]
        items.append(ChoiceItem(prompt, continuations, choices, gold,
                                choice.ChoiceRequest(context, conts), truncated))
    return items


class MultipleChoiceOutput(OutputType):
    """The likeliest of a fixed set of answers, scored on the choice log-likelihoods."""

    name: ClassVar[str] = "multiple_choice"
    metrics: ClassVar[tuple[str, ...]] = ("multiple_choice", *TEXT_METRICS)

    def check_record(self, task: TaskConfig, record: Record) -> None:
        resolve_choices(task, record)

    def run(self, request: Request) -> Outputs:
        items = build_choice_items(request)
        results = _scored(request, items)
        rows, predictions, args = [], [], []
        for i, (record, item, result) in enumerate(
                zip(request.records, items, results, strict=True)):
            best = _best(result)
            predictions.append(item.choices[best])
            out_row = row(i, record, item.prompt.rendered.prompt, item.choices[best],
                          item.choices[item.gold[0]])
            out_row.update(choices=item.choices, gold=item.gold,
                           logprobs=[round(lp, 4) for lp in result.logprobs])
            rows.append(out_row)
            args.append(((result.logprobs, [len(c) for c in item.choices]), item.gold))
        return Outputs(rows, predictions, [r["reference"] for r in rows],
                       {MetricInput.CHOICE_LOGPROBS: args},
                       [len(it.request.context) for it in items],
                       [it.prompt.shot_tokens for it in items],
                       sum(it.prompt.dropped for it in items), sum(it.truncated for it in items))

    def check_predict(self, task: TaskConfig) -> None:
        """The likeliest choice is a prediction."""

    def predict(self, request: Request) -> list[Prediction]:
        items = build_choice_items(request, answered=False)
        return [{"prediction": item.choices[_best(result)]}
                for item, result in zip(items, _scored(request, items), strict=True)]


def _scored(request: Request, items: list[ChoiceItem]) -> list[ChoiceResult]:
    """Each item's choice log-likelihoods."""
    return choice.score_choices(request.lm, [it.request for it in items],
                                request.task.eval.batch_size, results=request.results,
                                kept=request.lm.prompt_caches)


def _best(result: ChoiceResult) -> int:
    """The likeliest choice (the first of equally likely ones)."""
    return max(range(len(result.logprobs)), key=lambda j: (result.logprobs[j], -j))

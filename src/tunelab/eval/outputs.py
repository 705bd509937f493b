"""One request runner per output type: records in, predictions and metric inputs out.

    generate               prompts -> batched generation -> text metrics (and completion NLL)
    multiple_choice        context + each choice -> log-likelihoods -> acc, acc_norm (+ text
                           metrics on the chosen choice)
    loglikelihood_rolling  whole texts -> windowed NLL -> perplexity, bits per byte
    classification         texts -> a task head's label -> label metrics

Scoring is not done here: `runner.py` turns `Outputs` into metric items and aggregates.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tunelab.config import TaskConfig
from tunelab.data import Record, get_template, tokenize_example
from tunelab.data.templates import classifier_text
from tunelab.data.tokenize import tokenize_seq2seq
from tunelab.errors import TunelabError
from tunelab.eval.choice import ChoiceRequest, encode_pair, score_choices
from tunelab.eval.datasets import TaskData
from tunelab.eval.fewshot import PromptBuilder, choose_shots, with_output
from tunelab.eval.generate import generate, is_encoder_decoder
from tunelab.eval.heads import classify
from tunelab.eval.loglikelihood import completion_nll
from tunelab.eval.rolling import rolling_loglikelihood
from tunelab.models import LoadedModel


@dataclass
class Outputs:
    rows: list[dict[str, Any]]
    """One JSON-able row per example (predictions.jsonl)."""
    predictions: list[Any]
    references: list[Any]
    metric_args: dict[str, list[tuple[Any, ...]]] = field(default_factory=dict)
    """Item arguments for metrics that don't score (prediction, reference) text pairs."""
    context_tokens: list[int] = field(default_factory=list)
    shot_tokens: list[int] = field(default_factory=list)
    dropped_shots: int = 0
    truncated: int = 0
    """Prompts cut from the left because even without shots they did not fit."""


@dataclass
class Request:
    """What every runner gets."""

    lm: LoadedModel
    task: TaskConfig
    data: TaskData
    records: list[Record]
    pool: list[Record]
    shots: int
    system: str


def context_limit(lm: LoadedModel) -> int:
    """The model's context window in tokens."""
    limit = getattr(lm.model.config, "max_position_embeddings", None) or getattr(
        lm.model.config, "n_positions", None)
    return int(limit or min(lm.tokenizer.model_max_length, 2048))


def reference_of(task: TaskConfig, record: Record) -> Any:
    """The gold answer: the `target` column (text or list of texts), else the record's output."""
    if task.target:
        if task.target not in record.columns:
            raise TunelabError(f"{record.origin}: no column '{task.target}' (columns: "
                               f"{', '.join(map(str, record.columns))}); fix the task's target:")
        value = record.columns[task.target]
        return [str(v) for v in value] if isinstance(value, (list, tuple)) else str(value)
    if record.messages is not None:
        return record.messages[-1]["content"]
    return record.output


def resolve_choices(task: TaskConfig, record: Record) -> tuple[list[str], list[int]]:
    """(choices, gold choice indices) of a multiple-choice record."""
    if isinstance(task.choices, list):
        choices = [str(c) for c in task.choices]
    elif isinstance(task.choices, str):
        if task.choices not in record.columns:
            raise TunelabError(f"{record.origin}: no column '{task.choices}' for choices:")
        choices = [str(c) for c in record.columns[task.choices]]
    elif "choices" in record.columns:
        choices = [str(c) for c in record.columns["choices"]]
    elif task.eval.labels:
        choices = list(task.eval.labels)
    else:
        raise TunelabError(f"task {task.name}: multiple_choice needs choices: (a column or a "
                           "list) or eval.labels")
    raw: Any = record.columns["gold"] if not task.target and "gold" in record.columns else (
        record.columns.get(task.target) if task.target else reference_of(task, record))
    values = raw if isinstance(raw, (list, tuple)) else [raw]
    gold = [_choice_index(v, choices, record) for v in values]
    return choices, gold


def gold_text(task: TaskConfig, record: Record) -> str:
    """The text of a multiple-choice record's (first) gold choice."""
    choices, gold = resolve_choices(task, record)
    return choices[gold[0]]


def _choice_index(value: Any, choices: list[str], record: Record) -> int:
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


def _builder(req: Request) -> PromptBuilder:
    task, data = req.task, req.data
    preamble = task.preamble if task.preamble is not None else data.preamble
    separator = task.fewshot.separator if task.fewshot.separator is not None else (
        data.separator if data.separator is not None else "\n\n")
    return PromptBuilder(get_template(task.data, req.lm.tokenizer), req.lm.tokenizer,
                         preamble, separator)


def _shots_for(req: Request, index: int, record: Record) -> list[Record]:
    same_split = req.task.shot_split() == req.task.split
    return choose_shots(req.pool, req.shots, req.task.shot_seed(), index, req.task.fewshot.sampler,
                        exclude=record if same_split else None)


def _input_text(record: Record) -> str:
    if record.messages is not None:
        users = [m["content"] for m in record.messages if m["role"] == "user"]
        return users[-1] if users else ""
    return record.input or record.instruction


def _row(index: int, record: Record, prompt: str, prediction: Any, reference: Any) -> dict[str, Any]:
    return {"index": index, "origin": record.origin, "input": _input_text(record), "prompt": prompt,
            "prediction": prediction, "reference": reference}


def run_generate(req: Request) -> Outputs:
    builder = _builder(req)
    gen = req.task.eval.generation
    budget = context_limit(req.lm) - gen.max_new_tokens
    prompts = [builder.build(r, _shots_for(req, i, r), budget) for i, r in enumerate(req.records)]
    references = [reference_of(req.task, r) for r in req.records]
    text_metrics = [m for m in req.task.eval.metrics if m != "perplexity"]
    predictions = (generate(req.lm.model, req.lm.tokenizer, [p.ids for p in prompts], gen,
                            desc=req.system) if text_metrics else [""] * len(prompts))
    out = Outputs([_row(i, r, p.rendered.prompt, predictions[i], references[i])
                   for i, (r, p) in enumerate(zip(req.records, prompts, strict=True))],
                  predictions, references, context_tokens=[len(p.ids) for p in prompts],
                  shot_tokens=[p.shot_tokens for p in prompts],
                  dropped_shots=sum(p.dropped for p in prompts))
    if "perplexity" in req.task.eval.metrics:
        limit = context_limit(req.lm)
        tokenize = tokenize_seq2seq if is_encoder_decoder(req.lm.model) else tokenize_example
        tokenized = [tokenize(p.rendered, req.lm.tokenizer, max_length=limit) for p in prompts]
        pad = req.lm.tokenizer.pad_token_id
        out.metric_args["perplexity"] = completion_nll(req.lm.model, tokenized, pad, gen.batch_size)
    return out


@dataclass
class ChoiceItem:
    """One multiple-choice item as requests: the prompt text, each choice's continuation text
    (what lm-evaluation-harness would get) and their tokens."""

    prompt: Any
    """The fewshot.Prompt (text with shots, ids, shot counts)."""
    continuations: list[str]
    choices: list[str]
    gold: list[int]
    request: ChoiceRequest
    truncated: bool = False


def build_choice_items(req: Request) -> list[ChoiceItem]:
    """Prompts (with shots, fitted to the context) and tokenised choices of every record."""
    builder = _builder(req)
    tokenizer = req.lm.tokenizer
    limit = context_limit(req.lm)
    items = []
    for i, record in enumerate(req.records):
        choices, gold = resolve_choices(req.task, record)
        shots = [with_output(s, gold_text(req.task, s)) for s in _shots_for(req, i, record)]
        continuations = [builder.completion(with_output(record, c)) for c in choices]
        reserve = max(len(tokenizer(c, add_special_tokens=False).input_ids) for c in continuations) + 1
        prompt = builder.build(with_output(record, choices[gold[0]]), shots, limit - reserve)
        special = not prompt.rendered.special_in_text
        pairs = [encode_pair(tokenizer, prompt.rendered.prompt, c, special) for c in continuations]
        context, conts = pairs[0][0], [c for _, c in pairs]
        longest = max(len(c) for c in conts)
        truncated = len(context) + longest > limit
        if truncated:  # even without shots: cut from the left, as lm-evaluation-harness does
            context = context[len(context) + longest - limit:]
        items.append(ChoiceItem(prompt, continuations, choices, gold,
                                ChoiceRequest(context, conts), truncated))
    return items


def run_multiple_choice(req: Request) -> Outputs:
    items = build_choice_items(req)
    results = score_choices(req.lm.model, [it.request for it in items], req.task.eval.batch_size)
    rows, predictions, args = [], [], []
    for i, (record, item, result) in enumerate(zip(req.records, items, results, strict=True)):
        best = max(range(len(item.choices)), key=lambda j: (result.logprobs[j], -j))
        predictions.append(item.choices[best])
        row = _row(i, record, item.prompt.rendered.prompt, item.choices[best],
                   item.choices[item.gold[0]])
        row.update(choices=item.choices, gold=item.gold,
                   logprobs=[round(lp, 4) for lp in result.logprobs])
        rows.append(row)
        args.append(((result.logprobs, [len(c) for c in item.choices]), item.gold))
    return Outputs(rows, predictions, [row["reference"] for row in rows],
                   {"multiple_choice": args}, [len(it.request.context) for it in items],
                   [it.prompt.shot_tokens for it in items], sum(it.prompt.dropped for it in items),
                   sum(it.truncated for it in items))


def document_of(task: TaskConfig, record: Record) -> str:
    value = reference_of(task, record)
    return " ".join(value) if isinstance(value, list) else str(value)


def run_rolling(req: Request) -> Outputs:
    texts = [document_of(req.task, r) for r in req.records]
    max_length = req.task.rolling.max_length or min(context_limit(req.lm), 2048)
    scores = rolling_loglikelihood(req.lm.model, req.lm.tokenizer, texts, max_length,
                                   req.task.rolling.stride, req.task.eval.batch_size)
    rows = []
    for i, (record, text, s) in enumerate(zip(req.records, texts, scores, strict=True)):
        row = _row(i, record, "", f"{s.nll / max(s.tokens, 1):.4f} nats/token", "")
        row.update(input=text[:300], nll=s.nll, tokens=s.tokens, bytes=s.bytes, words=s.words)
        rows.append(row)
    args = {"perplexity": [(s.nll, s.tokens) for s in scores],
            "bits_per_byte": [(s.nll, s.bytes) for s in scores],
            "word_perplexity": [(s.nll, s.words) for s in scores]}
    return Outputs(rows, [""] * len(rows), [""] * len(rows), args,
                   context_tokens=[s.tokens for s in scores], shot_tokens=[0] * len(scores))


def classification_text(task: TaskConfig, record: Record, template: Any) -> str:
    return classifier_text(record, template)  # the text training fed the head


def run_classification(req: Request) -> Outputs:
    labels = [str(c) for c in req.task.choices] if isinstance(req.task.choices, list) else (
        req.task.eval.labels or [])
    if not labels:
        raise TunelabError(f"task {req.task.name}: classification needs eval.labels (or a choices "
                           "list), one per class in class order")
    template = get_template(req.task.data, req.lm.tokenizer)
    texts = [classification_text(req.task, r, template) for r in req.records]
    predictions, probabilities = classify(req.lm, texts, labels, req.task.eval.batch_size,
                                          context_limit(req.lm))
    references = [reference_of(req.task, r) for r in req.records]
    rows = []
    for i, record in enumerate(req.records):
        row = _row(i, record, texts[i], predictions[i], references[i])
        row["probabilities"] = [round(p, 4) for p in probabilities[i]]
        rows.append(row)
    lengths = [len(req.lm.tokenizer(t).input_ids) for t in texts]
    return Outputs(rows, predictions, references, context_tokens=lengths, shot_tokens=[0] * len(rows))


RUNNERS: dict[str, Callable[[Request], Outputs]] = {
    "generate": run_generate,
    "multiple_choice": run_multiple_choice,
    "loglikelihood_rolling": run_rolling,
    "classification": run_classification,
}


def warn_dropped(task: TaskConfig, outputs: Outputs, lm: LoadedModel) -> None:
    limit = context_limit(lm)
    if outputs.dropped_shots:
        warnings.warn(f"{task.name}: dropped {outputs.dropped_shots} in-context examples that "
                      f"would overflow the {limit}-token context", stacklevel=3)
    if outputs.truncated:
        warnings.warn(f"{task.name}: {outputs.truncated} prompts were longer than the "
                      f"{limit}-token context even without shots and were cut from the left",
                      stacklevel=3)

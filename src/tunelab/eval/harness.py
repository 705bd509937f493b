"""tunelab's model (base + any adapter) as an lm-evaluation-harness model.

    from tunelab.eval.harness import TunelabLM
    lm_eval.simple_evaluate(model=TunelabLM(model="smollm2-135m", adapter="runs/x"), tasks=[...])

or `tunelab harness --tasks T --adapter runs/x`. Importing this module also registers the
model as "tunelab" for `lm_eval.simple_evaluate(model="tunelab", model_args="adapter=...")`.
The three request types map onto tunelab's own requests: `loglikelihood` groups requests that
share a context and scores them with one context pass (eval/choice.py), `loglikelihood_rolling`
uses disjoint windows of the model's context (eval/rolling.py; lm-eval's own windows), and
`generate_until` is tunelab's length-batched generation with the request's stop strings.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from lm_eval.api.instance import Instance
from lm_eval.api.model import LM
from lm_eval.api.registry import register_model
from lm_eval.models.utils import handle_stop_sequences, normalize_gen_kwargs

from tunelab.config import GenerationConfig, ModelConfig
from tunelab.eval.choice import ChoiceRequest, encode_pair, score_choices
from tunelab.eval.generation import generate
from tunelab.eval.output_types import context_limit
from tunelab.eval.rolling_nll import rolling_loglikelihood
from tunelab.models import LoadedModel, load_model
from tunelab.runs.run_dir import load_run_model


@register_model("tunelab")
class TunelabLM(LM):
    """An lm-eval `LM` backed by a tunelab-loaded model.

    Args:
        model: base model spec (built-in alias, local directory, hub id).
        adapter: a tunelab run directory whose trained weights go on the base.
        lm: an already loaded model (then model/adapter are ignored).
        batch_size: contexts (log-likelihood) or prompts (generation) per forward pass.
        max_length: context window in tokens (default: the model's, at most 2048).
        num_layers: keep only the first N blocks of the base model (quick checks).
    """

    def __init__(self, model: str | None = None, adapter: str | None = None,
                 lm: LoadedModel | None = None, batch_size: int | str = 8,
                 max_length: int | None = None, num_layers: int | None = None) -> None:
        super().__init__()
        if lm is None:
            lm = (load_run_model(adapter, base=model) if adapter else
                  load_model(ModelConfig(name=model or ModelConfig().name,
                                         num_layers=int(num_layers) if num_layers else None)))
        self.lm = lm
        self.batch_size = int(batch_size) if str(batch_size).isdigit() else 8
        self.max_length = int(max_length or min(context_limit(lm), 2048))

    @property
    def tokenizer_name(self) -> str:
        return str(getattr(self.lm.tokenizer, "name_or_path", "tunelab")).replace("/", "__")

    def loglikelihood(self, requests: Sequence[Instance], disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        """(log-probability, greedy?) of each (context, continuation) request."""
        pairs = [tuple(req.args) for req in requests]
        tokenizer = self.lm.tokenizer
        groups: dict[tuple[int, ...], list[tuple[int, list[int]]]] = {}
        for index, (context, continuation) in enumerate(pairs):
            context_ids, cont_ids = encode_pair(tokenizer, context, continuation)
            # As lm-eval: keep the last max_length + 1 tokens of context + continuation.
            overflow = len(context_ids) + len(cont_ids) - (self.max_length + 1)
            if overflow > 0:
                context_ids = context_ids[overflow:]
            groups.setdefault(tuple(context_ids), []).append((index, cont_ids))
        choice_requests = [ChoiceRequest(list(ctx), [c for _, c in members])
                           for ctx, members in groups.items()]
        results = score_choices(self.lm.model, choice_requests, self.batch_size)
        out: list[tuple[float, bool]] = [(0.0, False)] * len(pairs)
        for members, result in zip(groups.values(), results, strict=True):
            for (index, _), logprob, greedy in zip(members, result.logprobs, result.greedy, strict=True):
                out[index] = (logprob, greedy)
                self.cache_hook.add_partial("loglikelihood", pairs[index], out[index])
        return out

    def loglikelihood_rolling(self, requests: Sequence[Instance], disable_tqdm: bool = False) -> list[float]:
        """Log-probability of each whole text (disjoint windows, full context in the last)."""
        texts = [req.args[0] for req in requests]
        scores = rolling_loglikelihood(self.lm.model, self.lm.tokenizer, texts, self.max_length,
                                       self.max_length, self.batch_size)
        out = [-s.nll for s in scores]
        for text, value in zip(texts, out, strict=True):
            self.cache_hook.add_partial("loglikelihood_rolling", (text,), value)
        return out

    def generate_until(self, requests: Sequence[Instance], disable_tqdm: bool = False) -> list[str]:
        """Greedy (or sampled) continuations, cut at the request's stop strings."""
        tokenizer = self.lm.tokenizer
        eos = tokenizer.decode([tokenizer.eos_token_id]) if tokenizer.eos_token_id is not None else None
        by_kwargs: dict[str, list[int]] = {}
        for index, req in enumerate(requests):
            by_kwargs.setdefault(json.dumps(req.args[1], sort_keys=True, default=str), []).append(index)
        out = [""] * len(requests)
        for key, indices in by_kwargs.items():
            kwargs = normalize_gen_kwargs(dict(json.loads(key)), 256)
            stop = handle_stop_sequences(kwargs.pop("until", None), eos=eos)
            max_new = int(kwargs.pop("max_gen_toks"))
            config = GenerationConfig(
                max_new_tokens=max_new, do_sample=bool(kwargs.get("do_sample", False)),
                temperature=float(kwargs.get("temperature") or 1.0),
                top_p=float(kwargs.get("top_p") or 1.0), stop=stop, batch_size=self.batch_size)
            budget = max(1, self.max_length - max_new)
            prompts = [list(tokenizer(requests[i].args[0]).input_ids)[-budget:] for i in indices]
            for i, text in zip(indices, generate(self.lm.model, tokenizer, prompts, config,
                                                 desc="lm-eval generate", strip=False), strict=True):
                out[i] = text
                self.cache_hook.add_partial("generate_until", tuple(requests[i].args), text)
        return out


def run_harness(tasks: Sequence[str], model: str | None = None, adapter: str | None = None,
                include_path: str | None = None, shots: int | None = None,
                limit: int | None = None, batch_size: int = 8) -> str:
    """Run lm-eval tasks on a tunelab model; lm-eval's results table."""
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager
    from lm_eval.utils import make_table

    results = simple_evaluate(
        model=TunelabLM(model=model, adapter=adapter, batch_size=batch_size),
        tasks=list(tasks), num_fewshot=shots, limit=limit,
        task_manager=TaskManager(include_path=include_path) if include_path else None,
        bootstrap_iters=1000)
    return make_table(results) if results else ""

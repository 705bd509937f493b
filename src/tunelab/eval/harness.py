"""tunelab's model (base + any adapter) as an lm-evaluation-harness model.

    from tunelab.eval.harness import TunelabLM
    lm_eval.simple_evaluate(model=TunelabLM(model="smollm2-135m", adapter="runs/x"), tasks=[...])

or `tunelab harness --tasks T --adapter runs/x [--apply_chat_template] [--output DIR
--log-samples]`. Importing this module also registers the model as "tunelab" for
`lm_eval.simple_evaluate(model="tunelab", model_args="adapter=...")`.

It answers as lm-eval's own `hf` model (`HFLM`, lm-eval 0.4.13) does; tests/test_harness_*.py
compare the two on tiny models:

- the context window is HFLM's `max_length` (lm-eval's `resolve_max_length`: the config's
  n_positions / max_position_embeddings / n_ctx, else the tokenizer's model_max_length, else
  2048), not capped at 2048;
- tokenisation is HFLM's `tok_encode`: lm-eval's `TemplateLM` splits context and continuation
  (trailing whitespace moves to the continuation, an empty context is the BOS, else EOS,
  token), and a text that already begins with the BOS text (a chat template that writes it,
  Llama-3, Gemma) is encoded without the tokenizer's own BOS; `add_bos_token` forces or stops
  the tokenizer's special tokens as in HFLM;
- `loglikelihood` keeps the last max_length + 1 tokens of context + continuation, groups the
  requests that share a context and scores them with one context pass (eval/choice.py);
  `loglikelihood_rolling` scores [prefix] + HFLM's encoding of the text in disjoint windows of
  max_length (eval/rolling_nll.py; lm-eval's own windows). HFLM encodes that text with the
  tokenizer's special tokens, so a tokenizer that adds BOS scores [BOS, BOS, ...] there, and so
  does this bridge (the numbers are lm-eval's; tunelab's own rolling tasks score one BOS);
- `generate_until` is tunelab's length-batched greedy (or sampled) generation of the prompt's
  last max_length - max_gen_toks tokens, cut at the request's stop strings and EOS. HFLM decides
  whether to add BOS once per batch, from the batch's first prompt; this bridge decides per
  prompt (the same whenever a batch's prompts all start with the BOS text or none does);
- chat templates: `apply_chat_template`, `chat_template` and `tokenizer_name` are HFLM's, so
  `apply_chat_template=True` renders the same prompts;
- an encoder-decoder model (a `model` directory of one loads as seq2seq: `language_kind`)
  answers as HFLM's `backend="seq2seq"`: context and continuation are encoded apart, the
  encoder reads the context's last max_length tokens (a rolling window's context: the tokens
  before those it scores), the decoder the continuation's, and generation prompts carry the
  tokenizer's own special tokens. Two differences, both HFLM's quirks: HFLM lets the decoder
  write up to the batch's padded context width + max_gen_toks tokens (unless a request sets
  max_length), the bridge max_gen_toks; and HFLM pads a batch's encoder inputs on the left,
  which moves learned positions (BART), the bridge on the right. Against HFLM run one prompt a
  batch, the bridge's text begins HFLM's.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Sequence
from pathlib import Path

import jinja2
from lm_eval import simple_evaluate
from lm_eval.api.instance import Instance
from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model
from lm_eval.loggers import EvaluationTracker
from lm_eval.models.utils import (
    handle_stop_sequences,
    has_bos_prefix,
    normalize_gen_kwargs,
    resolve_max_length,
)
from lm_eval.tasks import TaskManager
from lm_eval.utils import make_table

from tunelab.config import GenerationConfig, ModelConfig
from tunelab.core.errors import TunelabError
from tunelab.eval.choice import ChoiceRequest, score_choices
from tunelab.eval.generation import generate
from tunelab.eval.rolling_nll import rolling_nll_of_ids
from tunelab.models import LoadedModel, load_model
from tunelab.models.kinds import language_kind
from tunelab.models.tokens import prefix_token_id
from tunelab.runs.run_dir import RunDir

MAX_GEN_TOKS = 256
"""lm-eval's default `max_gen_toks` (HFLM.max_gen_toks)."""


@register_model("tunelab")
class TunelabLM(TemplateLM):
    """An lm-eval `LM` backed by a tunelab-loaded model.

    Args:
        model: base model spec (built-in alias, local directory, hub id).
        adapter: a tunelab run directory whose trained weights go on the base.
        lm: an already loaded model (then model/adapter are ignored).
        batch_size: contexts (log-likelihood) or prompts (generation) per forward pass.
        max_length: context window in tokens (default: the model's, as HFLM finds it).
        num_layers: keep only the first N blocks of the base model (quick checks).
        add_bos_token: HFLM's: True or False goes to the tokenizer as add_special_tokens
            (None: the tokenizer's default); a text that already begins with the BOS text
            never gets another.
    """

    def __init__(self, model: str | None = None, adapter: str | None = None,
                 lm: LoadedModel | None = None, batch_size: int | str = 8,
                 max_length: int | None = None, num_layers: int | None = None,
                 add_bos_token: bool | None = None) -> None:
        super().__init__()
        if lm is None:
            # loaded now (nothing here is looked up in the result cache)
            lm = RunDir(Path(adapter)).scoring_model(model) if adapter else _language_model(
                model or ModelConfig().name, int(num_layers) if num_layers else None)
        self.lm = lm
        # lm-eval's TemplateLM encodes a seq2seq model's context and continuation apart.
        self.backend = "seq2seq" if lm.kind.encoder_decoder else "causal"
        self.tokenizer = lm.tokenizer
        self.batch_size = int(batch_size) if str(batch_size).isdigit() else 8
        self.max_length = int(max_length or resolve_max_length(lm.model.config, lm.tokenizer))
        self.add_bos_token = add_bos_token
        self.template: str | None = None
        """The chat template chosen by name (`use_chat_template`); None: the tokenizer's own."""

    def use_chat_template(self, choice: bool | str) -> None:
        """--apply_chat_template: True or False, or the name of one of the tokenizer's named
        templates (a name it lacks is refused: transformers would render it as a template)."""
        if choice is True and self.tokenizer.chat_template is None:
            raise TunelabError(f"--apply_chat_template: {self.lm.path}'s tokenizer has no chat "
                               "template; leave the flag out or use a chat model")
        if isinstance(choice, bool):
            return
        named = self.tokenizer.chat_template if isinstance(self.tokenizer.chat_template, dict) \
            else {}
        if choice not in named:
            have = f"named {', '.join(sorted(named))}" if named else "no named ones"
            raise TunelabError(f"--apply_chat_template {choice}: {self.lm.path}'s tokenizer has "
                               f"{have}; give one of them, or the flag alone for its default")
        self.template = named[choice]

    def chat_template(self, chat_template: bool | str = False) -> str | None:
        """The template the prompts are written with (lm-eval logs it with the results)."""
        if not chat_template:
            return None
        return self.template or str(self.tokenizer.get_chat_template())

    @property
    def eot_token_id(self) -> int:
        return int(self.tokenizer.eos_token_id)

    @property
    def prefix_token_id(self) -> int:
        """The token an empty context and a rolling text start from: BOS, else EOS."""
        return prefix_token_id(self.tokenizer)

    @property
    def tokenizer_name(self) -> str:
        return str(self.tokenizer.name_or_path).replace("/", "__")

    def _special_tokens(self, text: str, bos_text: str | None) -> bool:
        """add_special_tokens for `text`: never for a text that begins with the BOS text, else
        add_bos_token when set, else the tokenizer's default (HFLM)."""
        if has_bos_prefix(text, bos_text):
            return False
        return self.add_bos_token if self.add_bos_token is not None else True

    def tok_encode(self, string: str, add_special_tokens: bool | None = None,
                   left_truncate_len: int | None = None, **kwargs: object) -> list[int]:
        """HFLM.tok_encode: the text's token ids (a text already starting with the prefix
        token's text gets no special tokens), the last `left_truncate_len` of them if set."""
        if add_special_tokens is None:
            add_special_tokens = self._special_tokens(
                string, str(self.tokenizer.decode(self.prefix_token_id)))
        ids = list(self.tokenizer.encode(string, add_special_tokens=add_special_tokens))
        return ids[-left_truncate_len:] if left_truncate_len else ids

    def _loglikelihood_tokens(
        self, requests: Sequence[tuple[tuple[str, str] | None, list[int], list[int]]],
        disable_tqdm: bool = False, override_bs: int | None = None,
    ) -> list[tuple[float, bool]]:
        """(log-probability, greedy?) of each (strings, context ids, continuation ids)."""
        groups: dict[tuple[int, ...], list[tuple[int, list[int]]]] = {}
        apart = self.lm.kind.encoder_decoder
        for index, (_, context_ids, cont_ids) in enumerate(requests):
            if apart:  # the encoder's last max_length tokens, as HFLM; the decoder's too (HFLM
                # stops with an error on a longer continuation)
                context_ids, cont_ids = context_ids[-self.max_length:], cont_ids[-self.max_length:]
            else:  # as HFLM: the last max_length + 1 tokens of context + continuation
                overflow = len(context_ids) + len(cont_ids) - (self.max_length + 1)
                context_ids = context_ids[max(overflow, 0):]
            groups.setdefault(tuple(context_ids), []).append((index, list(cont_ids)))
        choice_requests = [ChoiceRequest(list(ctx), [c for _, c in members])
                           for ctx, members in groups.items()]
        results = score_choices(self.lm.model, choice_requests, override_bs or self.batch_size)
        out: list[tuple[float, bool]] = [(0.0, False)] * len(requests)
        for members, result in zip(groups.values(), results, strict=True):
            for (index, _), logprob, greedy in zip(members, result.logprobs, result.greedy, strict=True):
                out[index] = (logprob, greedy)
                strings = requests[index][0]
                if strings is not None:
                    self.cache_hook.add_partial("loglikelihood", strings, out[index])
        return out

    def loglikelihood_rolling(self, requests: Sequence[Instance], disable_tqdm: bool = False) -> list[float]:
        """Log-probability of each whole text (disjoint windows, full context in the last)."""
        texts = [req.args[0] for req in requests]
        sequences = [[self.prefix_token_id, *self.tok_encode(text)] for text in texts]
        nlls = rolling_nll_of_ids(self.lm.model, sequences, self.max_length, self.max_length,
                                  self.batch_size)
        out = [-nll for nll in nlls]
        for text, value in zip(texts, out, strict=True):
            self.cache_hook.add_partial("loglikelihood_rolling", (text,), value)
        return out

    def _prompt_ids(self, text: str, budget: int) -> list[int]:
        """A generation prompt as HFLM.tok_batch_encode encodes it, its last `budget` ids."""
        # HFLM's seq2seq backend encodes prompts with the tokenizer's own special tokens.
        special = True if self.lm.kind.encoder_decoder else \
            self._special_tokens(text, self.tokenizer.bos_token)
        return list(self.tokenizer(text, add_special_tokens=special).input_ids)[-budget:]

    def generate_until(self, requests: Sequence[Instance], disable_tqdm: bool = False) -> list[str]:
        """Greedy (or sampled) continuations, cut at the request's stop strings."""
        tokenizer = self.tokenizer
        eos = str(tokenizer.decode([self.eot_token_id])) if tokenizer.eos_token_id is not None else None
        by_kwargs: dict[str, list[int]] = {}
        for index, req in enumerate(requests):
            by_kwargs.setdefault(json.dumps(req.args[1], sort_keys=True, default=str), []).append(index)
        out = [""] * len(requests)
        for key, indices in by_kwargs.items():
            kwargs = normalize_gen_kwargs(dict(json.loads(key)), MAX_GEN_TOKS)
            stop = handle_stop_sequences(kwargs.pop("until", None), eos=eos)
            max_new = int(kwargs.pop("max_gen_toks"))
            config = GenerationConfig(
                max_new_tokens=max_new, do_sample=bool(kwargs.get("do_sample", False)),
                temperature=float(kwargs.get("temperature") or 1.0),
                top_p=float(kwargs.get("top_p") or 1.0), stop=stop, batch_size=self.batch_size)
            # As HFLM: an encoder reads a whole window (its decoder writes the new tokens).
            budget = self.max_length if self.lm.kind.encoder_decoder \
                else max(1, self.max_length - max_new)
            prompts = [self._prompt_ids(requests[i].args[0], budget) for i in indices]
            for i, text in zip(indices, generate(self.lm.model, tokenizer, prompts, config,
                                                 desc="lm-eval generate", strip=False), strict=True):
                out[i] = text
                self.cache_hook.add_partial("generate_until", tuple(requests[i].args), text)
        return out

    def apply_chat_template(self, chat_history: list[dict[str, str]],
                            add_generation_prompt: bool = True) -> str:
        """The chat as the tokenizer's template writes it (HFLM.apply_chat_template): a
        generation prompt after it, else its last message left open to continue; a template
        that rejects a system turn gets the chat without it."""
        def written(chat: list[dict[str, str]]) -> str:
            return str(self.tokenizer.apply_chat_template(
                chat, tokenize=False, add_generation_prompt=add_generation_prompt,
                continue_final_message=not add_generation_prompt, chat_template=self.template))
        try:
            return written(chat_history)
        except jinja2.exceptions.TemplateError:
            return written([msg for msg in chat_history if msg["role"] != "system"])


def _language_model(name: str, num_layers: int | None) -> LoadedModel:
    """The checkpoint `name` loaded as the language-model kind its config says
    (`language_kind`); a hub id whose config this machine lacked is loaded again as its kind
    once the first load fetched the config."""
    kind = language_kind(name)
    try:
        return load_model(ModelConfig(name=name, kind=kind.name, num_layers=num_layers))
    except TunelabError:
        fetched = language_kind(name)
        if fetched is kind:
            raise
        return load_model(ModelConfig(name=name, kind=fetched.name, num_layers=num_layers))


def run_harness(tasks: Sequence[str], model: str | None = None, adapter: str | None = None,
                include_path: str | None = None, shots: int | None = None,
                limit: int | None = None, batch_size: int = 8,
                apply_chat_template: bool | str = False, output: str | None = None,
                log_samples: bool = False, max_length: int | None = None) -> str:
    """Run lm-eval tasks on a tunelab model; lm-eval's results table, then a line per file
    written. With `output`, the results JSON goes where lm-eval's CLI puts it
    (OUTPUT/<model>/results_<time>.json, or OUTPUT_<time>.json for a .json path) and, with
    `log_samples`, one samples_<task>_<time>.jsonl per task beside it (one line per item).
    The task names are checked before the model loads."""
    manager = task_manager(tasks, include_path)
    harness_lm = TunelabLM(model=model, adapter=adapter, batch_size=batch_size,
                           max_length=max_length)
    harness_lm.use_chat_template(apply_chat_template)
    tracker = EvaluationTracker(output_path=output) if output else None
    model_args = {"model": str(model or harness_lm.lm.path)} | ({"adapter": adapter} if adapter else {})
    results = simple_evaluate(
        model=harness_lm, model_args=model_args, tasks=list(tasks), num_fewshot=shots,
        limit=limit, task_manager=manager, bootstrap_iters=1000,
        log_samples=log_samples, evaluation_tracker=tracker,
        apply_chat_template=apply_chat_template)
    if not results:
        return ""
    samples = results.pop("samples", None) if log_samples else None
    table = make_table(results)
    if tracker is None:
        return table
    tracker.save_results_aggregated(results=results, samples=samples)
    if samples is not None:
        for task_name in results["configs"]:
            tracker.save_results_samples(task_name=task_name, samples=samples[task_name])
    return "\n".join([table, *(f"wrote {path}" for path in written(tracker, str(output), samples))])


def task_manager(tasks: Sequence[str], include_path: str | None) -> TaskManager:
    """The tasks of `include_path` alone when they hold every task asked for (indexing lm-eval's
    own thousands of tasks takes seconds), else those and lm-eval's; a task name none of them
    knows is refused in one line."""
    if include_path:
        local = TaskManager(include_path=include_path, include_defaults=False)
        if all(task in local.all_tasks for task in tasks):
            return local
    manager = TaskManager(include_path=include_path or None)
    unknown = [task for task in tasks if task not in manager.all_tasks and not Path(task).is_file()]
    if unknown:  # a task, group or tag name, or a task's YAML file, as lm-eval takes them
        close = difflib.get_close_matches(unknown[0], manager.all_tasks, n=3)
        where = f"lm-eval's tasks or {include_path}" if include_path else "lm-eval's tasks"
        raise TunelabError(
            f"--tasks: {', '.join(unknown)}: no such task, group or tag in {where}"
            + (f"; did you mean {', '.join(close)}?" if close else
               "; give a task YAML file, or --include_path DIR for a folder of them"))
    return manager


def written(tracker: EvaluationTracker, output: str,
            samples: dict[str, list[dict[str, object]]] | None) -> list[Path]:
    """The files lm-eval's tracker wrote, where its CLI writes them (the tracker logs a failure
    to write rather than raising one)."""
    date_id = getattr(tracker, "date_id", None)  # set once the results are written
    folder = Path(output)
    if folder.suffix == ".json":
        results = [folder.with_name(f"{folder.stem}_{date_id}.json")]
        folder = folder.parent
    else:
        folder = folder / str(tracker.general_config_tracker.model_name_sanitized)
        results = [folder / f"results_{date_id}.json"]
    files = results + [folder / f"samples_{task}_{date_id}.jsonl" for task in samples or {}]
    missing = [path for path in files if date_id is None or not path.is_file()]
    if missing:
        raise TunelabError(f"--output {output}: lm-eval could not write {missing[0]}; "
                           "give a writable directory")
    return files

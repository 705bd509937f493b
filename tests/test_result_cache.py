"""Evaluation results are looked up, never recomputed, and never answer for anything else:
another model, another adapter, other settings, a changed prompt, or weights that moved."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from eval_helpers import REVIEWS
from helpers import model_passes, prompts_run, tiny_run_config

import tunelab
from tests.conftest import build_tiny_llama
from tunelab.config import EvalConfig, GenerationConfig, ModelConfig, TaskConfig
from tunelab.eval import choice, generation, heads, loglikelihood, rolling_nll
from tunelab.eval.choice import ChoiceRequest, score_choices
from tunelab.eval.generation import generate
from tunelab.eval.result_cache import ResultCache
from tunelab.eval.runner import evaluate_loaded
from tunelab.methods import get_method
from tunelab.methods.base import parse_options
from tunelab.models import load_model
from tunelab.models.fingerprint import model_fingerprint
from tunelab.models.kinds import get_kind, load_classifier
from tunelab.runs import System, scoring_run_model
from tunelab.workflows.train import run_task

TEXTS = ["a gorgeous , witty movie", "dull", "the story is also as unoriginal as they come .",
         "an engrossing portrait"]
GREEDY = GenerationConfig(max_new_tokens=6, batch_size=2)


@pytest.fixture()
def results(tmp_path: Path) -> ResultCache:
    return ResultCache(tmp_path / "results.sqlite")


@pytest.fixture()
def ran(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many prompts actually ran through the model (not looked up)."""
    return prompts_run(monkeypatch)


def _sharpen(model: torch.nn.Module, seed: int, only_trainable: bool = False) -> None:
    """Weights far from zero, so different models write different text."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.requires_grad or not only_trainable:
                parameter.normal_(0, 0.5)


def _prompts(lm: Any) -> list[list[int]]:  # Any: LoadedModel
    return [lm.tokenizer(text).input_ids for text in TEXTS]


def test_a_rerun_and_a_repeated_prompt_run_nothing_and_give_the_same_text(
        tiny_llama: Path, results: ResultCache, ran: list[int]) -> None:
    lm = load_model(ModelConfig(name=str(tiny_llama)))
    _sharpen(lm.model, 0)
    prompts = _prompts(lm)
    uncached = generate(lm.model, lm.tokenizer, prompts, GREEDY)
    assert all(uncached) and len(set(uncached)) > 1
    ran.clear()
    hit_limit: list[bool] = []
    first = generate(lm.model, lm.tokenizer, prompts + prompts[:1], GREEDY, results=results,
                     hit_limit=hit_limit)
    assert ran == [4]  # the repeated prompt ran once
    assert first == [*uncached, uncached[0]] and len(hit_limit) == 5
    again: list[bool] = []
    second = generate(lm.model, lm.tokenizer, prompts, GREEDY, results=results, hit_limit=again)
    assert ran == [4] and second == uncached and again == hit_limit[:4]
    assert results.hits == 4 and results.misses == 4  # the repeat was neither: it ran once


def test_a_changed_prompt_or_other_settings_are_run_again(
        tiny_llama: Path, results: ResultCache, ran: list[int]) -> None:
    lm = load_model(ModelConfig(name=str(tiny_llama)))
    _sharpen(lm.model, 0)
    prompts = _prompts(lm)
    generate(lm.model, lm.tokenizer, prompts, GREEDY, results=results)
    changed = [*prompts[:3], lm.tokenizer("an engrossing portrait !").input_ids]
    generate(lm.model, lm.tokenizer, changed, GREEDY, results=results)
    assert ran == [4, 1]
    longer = GenerationConfig(max_new_tokens=9, batch_size=2)
    out = generate(lm.model, lm.tokenizer, prompts, longer, results=results)
    stopped = GenerationConfig(max_new_tokens=6, batch_size=2, stop=["e"])
    generate(lm.model, lm.tokenizer, prompts, stopped, results=results)
    assert ran == [4, 1, 4, 4]
    assert out == generate(lm.model, lm.tokenizer, prompts, longer)
    # Another batch size is the same request: looked up.
    generate(lm.model, lm.tokenizer, prompts, GenerationConfig(max_new_tokens=6, batch_size=3),
             results=results)
    assert ran == [4, 1, 4, 4, 4]  # the last call above ran uncached; the lookup ran nothing
    sampled = GenerationConfig(max_new_tokens=6, do_sample=True, seed=3)
    generate(lm.model, lm.tokenizer, prompts, sampled, results=results)
    generate(lm.model, lm.tokenizer, prompts, sampled, results=results)
    assert ran[-2:] == [4, 4]  # sampled text is never cached


def test_another_model_is_never_answered_from_the_cache(
        tmp_path: Path, results: ResultCache) -> None:
    texts = {}
    for seed in (1, 2):
        lm = load_model(ModelConfig(name=str(build_tiny_llama(tmp_path / f"m{seed}", seed))))
        _sharpen(lm.model, seed)
        cached = generate(lm.model, lm.tokenizer, _prompts(lm), GREEDY, results=results)
        assert cached == generate(lm.model, lm.tokenizer, _prompts(lm), GREEDY)
        texts[seed] = cached
    assert texts[1] != texts[2] and results.hits == 0


def test_two_adapters_on_one_base_and_the_base_itself_each_get_their_own_answers(
        tiny_llama: Path, results: ResultCache) -> None:
    lm = load_model(ModelConfig(name=str(tiny_llama)))
    _sharpen(lm.model, 0)
    prompts = _prompts(lm)
    base_text = generate(lm.model, lm.tokenizer, prompts, GREEDY)
    method = get_method("lora")
    options = parse_options(method, {"r": 4, "alpha": 8, "target_modules": "all-linear"})
    model: Any = method.apply(lm.model, options, get_kind("causal"))  # Any: a PeftModel
    _sharpen(model, 1, only_trainable=True)
    model.add_adapter("other", model.peft_config["default"])
    model.set_adapter("other")
    _sharpen(model, 2, only_trainable=True)
    seen = {}
    for name in ("default", "other", "default", "other"):
        model.set_adapter(name)
        text = generate(model, lm.tokenizer, prompts, GREEDY, results=results)
        assert text == generate(model, lm.tokenizer, prompts, GREEDY)  # what it really writes
        seen.setdefault(name, text)
        assert seen[name] == text
        with model.disable_adapter():
            assert generate(model, lm.tokenizer, prompts, GREEDY, results=results) == base_text
    assert seen["default"] != seen["other"] != base_text
    assert results.hits > 0


def test_an_adapter_merged_into_the_weights_in_place_is_another_model(
        tiny_llama: Path, results: ResultCache) -> None:
    """peft merges by writing `weight.data += delta`, which moves no version counter: the
    merged model must still not be answered as the base it was merged into."""
    lm = load_model(ModelConfig(name=str(tiny_llama)))
    _sharpen(lm.model, 0)
    prompts = _prompts(lm)
    base = model_fingerprint(lm.model)  # every base tensor's digest is now remembered
    base_text = generate(lm.model, lm.tokenizer, prompts, GREEDY, results=results)
    method = get_method("lora")
    options = parse_options(method, {"r": 4, "alpha": 8, "target_modules": "all-linear"})
    model = method.apply(lm.model, options, get_kind("causal"))
    _sharpen(model, 1, only_trainable=True)
    adapted = generate(model, lm.tokenizer, prompts, GREEDY)
    merged = method.merge(model)
    assert merged is not None and model_fingerprint(merged) != base
    text = generate(merged, lm.tokenizer, prompts, GREEDY, results=results)
    assert text == adapted != base_text and results.hits == 0


def test_weights_that_moved_are_another_model(tiny_llama: Path, results: ResultCache,
                                              ran: list[int]) -> None:
    lm = load_model(ModelConfig(name=str(tiny_llama)))
    _sharpen(lm.model, 0)
    prompts = _prompts(lm)
    before = model_fingerprint(lm.model)
    assert model_fingerprint(lm.model) == before  # stable while nothing changes
    first = generate(lm.model, lm.tokenizer, prompts, GREEDY, results=results)
    weight = next(lm.model.parameters())
    optimizer = torch.optim.SGD(lm.model.parameters(), lr=1.0)  # one real optimizer step
    loss = lm.model(input_ids=torch.tensor([prompts[0]]), labels=torch.tensor([prompts[0]])).loss
    loss.backward()
    optimizer.step()
    moved = model_fingerprint(lm.model)
    assert moved != before
    second = generate(lm.model, lm.tokenizer, prompts, GREEDY, results=results)
    assert ran == [4, 4] and second == generate(lm.model, lm.tokenizer, prompts, GREEDY)
    assert second != first
    weight.data = weight.data.clone()  # same values in new storage: same model
    assert model_fingerprint(lm.model) == moved
    weight.data = weight.data + 1  # replaced, not updated in place
    assert model_fingerprint(lm.model) != moved


def test_choice_scores_are_looked_up_per_request_and_keyed_by_the_choices(
        tiny_llama: Path, results: ResultCache, monkeypatch: pytest.MonkeyPatch) -> None:
    lm = load_model(ModelConfig(name=str(tiny_llama)))
    _sharpen(lm.model, 0)
    ids = _prompts(lm)
    requests = [ChoiceRequest(ids[0], [ids[1], ids[3]]), ChoiceRequest(ids[2], [ids[1]])]
    plain = score_choices(lm.model, requests)
    scored: list[int] = []
    real = choice._score_choices

    def counted(model: Any, reqs: Any, *args: Any) -> Any:  # Any: _score_choices' arguments
        scored.append(len(reqs))
        return real(model, reqs, *args)
    monkeypatch.setattr(choice, "_score_choices", counted)
    cached = score_choices(lm.model, requests, results=results)
    again = score_choices(lm.model, requests, results=results)
    assert scored == [2]
    assert [r.logprobs for r in again] == [r.logprobs for r in cached]
    assert [x for r in cached for x in r.logprobs] == pytest.approx(
        [x for r in plain for x in r.logprobs], abs=1e-6)
    # The same context with its choices split differently is another request.
    split = [ChoiceRequest(ids[0], [ids[1] + ids[3]])]
    score_choices(lm.model, split, results=results)
    assert scored == [2, 1]


def test_the_cache_is_off_when_the_environment_says_so(monkeypatch: pytest.MonkeyPatch,
                                                       tmp_path: Path) -> None:
    monkeypatch.setenv("TUNELAB_CACHE", str(tmp_path))
    default = ResultCache.default()
    assert default is not None and default.path.parent == tmp_path
    monkeypatch.setenv("TUNELAB_EVAL_CACHE", "off")
    assert ResultCache.default() is None


def test_every_output_type_is_looked_up_on_a_rerun(tiny_llama: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Generation with perplexity, rolling log-likelihood and a classification head: the
    second evaluation runs no model pass and gives the same rows."""
    monkeypatch.setenv("TUNELAB_CACHE", str(tmp_path))
    lm = load_model(ModelConfig(name=str(tiny_llama)))
    _sharpen(lm.model, 0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the fresh head's "scores at chance"
        head = load_classifier(ModelConfig(name=str(tiny_llama)), ["positive", "negative"])
    generated = TaskConfig(name="g", data=REVIEWS, eval=EvalConfig(
        metrics=["accuracy", "perplexity"], bootstrap=0, generation=GenerationConfig(
            max_new_tokens=4, batch_size=3)))
    rolling = TaskConfig(name="r", output_type="loglikelihood_rolling", data=REVIEWS,
                         target="text", eval=EvalConfig(metrics=["perplexity"], bootstrap=0))
    classified = TaskConfig(name="c", output_type="classification", data=REVIEWS, eval=EvalConfig(
        metrics=["classification"], labels=["positive", "negative"], bootstrap=0))
    passes = model_passes(monkeypatch, ((generation, "_generate"),
                                         (loglikelihood, "_completion_nll"),
                                         (rolling_nll, "rolling_nll_of_ids"), (heads, "_classify")))
    for model, task in ((lm, generated), (lm, rolling), (head, classified)):
        first = evaluate_loaded(model, task, System.base())
        ran = len(passes)
        again = evaluate_loaded(model, task, System.base())
        assert len(passes) == ran > 0, task.name  # the first ran, the rerun looked up
        assert [r["prediction"] for r in again.predictions] == [
            r["prediction"] for r in first.predictions]
        assert again.scores == first.scores
    assert set(passes) == {"_generate", "_completion_nll", "rolling_nll_of_ids", "_classify"}


def test_a_run_is_scored_merged_and_adapter_scoring_looks_up_its_own_evaluation(
        tiny_llama: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The run's evaluation after training scores its LoRA merged into the base weights, in
    memory; `--adapter RUN` (scoring_run_model) loads and merges the same weights, so every
    item is looked up and no model pass runs."""
    monkeypatch.setenv("TUNELAB_CACHE", str(tmp_path / "cache"))
    passes = model_passes(monkeypatch, ((generation, "_generate"),
                                         (loglikelihood, "_completion_nll")))
    config = tiny_run_config(tiny_llama, tmp_path, max_steps=3, lr=5e-2, eval_every=0)
    result = tunelab.train(config)
    assert result.evaluation is not None and set(passes) == {"_generate", "_completion_nll"}
    ran = len(passes)
    lm = scoring_run_model(result.run_dir)
    plain = load_model(ModelConfig(name=str(tiny_llama))).model
    assert type(lm.model) is type(plain)  # merged: a plain model, no adapter layers
    assert model_fingerprint(lm.model) != model_fingerprint(plain)  # the training is in it
    again = evaluate_loaded(lm, run_task(config), System.tuned())
    assert len(passes) == ran  # looked up, every item
    assert again.predictions == result.evaluation.predictions
    assert again.scores == result.evaluation.scores


def test_the_model_and_generation_settings_of_its_folder_are_part_of_the_model(
        tiny_llama: Path, tmp_path: Path, results: ResultCache, ran: list[int]) -> None:
    """The same weights under another generation config (a repetition penalty `generate`
    applies) or another model config (a norm's epsilon) write other text: never looked up
    from the plain folder's answers."""
    plain = load_model(ModelConfig(name=str(tiny_llama)))
    _sharpen(plain.model, 0)
    prompts = _prompts(plain)
    first = generate(plain.model, plain.tokenizer, prompts, GREEDY, results=results)
    penalised = load_model(ModelConfig(name=str(tiny_llama)))
    penalised.model.load_state_dict(plain.model.state_dict())
    penalised.model.generation_config.repetition_penalty = 50.0
    text = generate(penalised.model, penalised.tokenizer, prompts, GREEDY, results=results)
    assert ran == [4, 4] and text != first  # ran, and wrote something else
    assert model_fingerprint(penalised.model) != model_fingerprint(plain.model)
    eps = load_model(ModelConfig(name=str(tiny_llama)))
    eps.model.load_state_dict(plain.model.state_dict())
    assert model_fingerprint(eps.model) == model_fingerprint(plain.model)  # the same function
    eps.model.config.rms_norm_eps = 0.5
    assert model_fingerprint(eps.model) != model_fingerprint(plain.model)

"""A token prefix shared by the prompts runs once, and generation gives the same tokens as
whole, left-padded prompts: for every causal family and for adapters on top."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.conftest import FAMILIES
from tunelab.config import GenerationConfig, ModelConfig
from tunelab.eval import generation
from tunelab.eval.choice import ChoiceRequest, ChoiceResult, score_choices
from tunelab.eval.generation import generate
from tunelab.eval.result_cache import ResultCache
from tunelab.methods import get_method
from tunelab.methods.base import parse_options
from tunelab.models import load_model, prompt_caches
from tunelab.models.cache import shared_prefix
from tunelab.models.kinds import get_kind
from tunelab.models.logits import defers_projection
from tunelab.models.packed import packs
from tunelab.models.prompt_caches import PromptCaches
from tunelab.models.tokens import decode

SHOTS = ("a gorgeous , witty movie -> positive\n\nthe story is dull and tired -> negative\n\n"
         "an engrossing portrait of a family -> positive\n\n")
ITEMS = ["a dull movie ->", "it is witty ->", "the portrait of the story is tired and dull ->",
         "gorgeous ->", "a family movie that is also witty and engrossing ->"]


@pytest.fixture(params=["packed", "padded"])
def packing(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Prompts run packed wherever the model can (`models/packed.py`), or always as padded
    batches; returns the number of segments each packed pass ran (empty: none ran)."""
    passes: list[int] = []
    if request.param == "padded":
        monkeypatch.setattr(prompt_caches, "packs", lambda model: False)
        return passes
    monkeypatch.setattr(prompt_caches, "saves", lambda lengths, whole=False: True)
    real = prompt_caches.run_packed

    def counted(model: torch.nn.Module, segments: Any, *args: Any,  # Any: run_packed's
                **kwargs: Any) -> Any:  # Any: its own arguments
        passes.append(len(segments))
        return real(model, segments, *args, **kwargs)
    monkeypatch.setattr(prompt_caches, "run_packed", counted)
    return passes


def packed_variant(request: pytest.FixtureRequest) -> bool:
    """Whether the test runs with the `packing` fixture's packed variant."""
    return bool(request.node.callspec.params["packing"] == "packed")


def ran_packed_where_it_can(model: torch.nn.Module, packing: list[int],
                            request: pytest.FixtureRequest) -> bool:
    """The packed variant ran packed passes where the model packs (not vacuous)."""
    return not packed_variant(request) or bool(packing) or not packs(model)


def _prompts(tokenizer: Any) -> list[list[int]]:  # Any: a transformers tokenizer
    return [tokenizer(SHOTS + item).input_ids for item in ITEMS]


def _count_prefix_passes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The length of every prefix the stores run from here on (one forward pass each)."""
    passes: list[int] = []
    real = PromptCaches.extend

    def counted(self: PromptCaches, model: torch.nn.Module, prefix: Any) -> None:  # Any: ids
        if self.longest(prefix)[0] < len(prefix):
            passes.append(len(prefix))
        real(self, model, prefix)
    monkeypatch.setattr(PromptCaches, "extend", counted)
    return passes


def _both(model: torch.nn.Module, tokenizer: Any, prompts: list[list[int]],  # Any: tokenizer
          monkeypatch: pytest.MonkeyPatch, batch_size: int = 3) -> tuple[list[str], list[str], int]:
    """(shared-prefix outputs, whole-prompt outputs, prefix passes run)."""
    config = GenerationConfig(max_new_tokens=8, batch_size=batch_size)
    passes = _count_prefix_passes(monkeypatch)
    shared = generate(model, tokenizer, prompts, config, strip=False, share_prefix=True)
    whole = generate(model, tokenizer, prompts, config, strip=False, share_prefix=False)
    return shared, whole, len(passes)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_shared_prefix_generates_the_same_tokens_as_whole_prompts(
        family: str, tiny_family: Any, monkeypatch: pytest.MonkeyPatch, packing: list[int],
        request: pytest.FixtureRequest) -> None:  # Any: factory
    lm = load_model(ModelConfig(name=str(tiny_family(family))))
    prompts = _prompts(lm.tokenizer)
    shared, whole, passes = _both(lm.model, lm.tokenizer, prompts, monkeypatch)
    assert passes == 1  # the shots ran once as a prefix, for both batches
    assert shared == whole
    assert ran_packed_where_it_can(lm.model, packing, request)
    # Not an empty comparison: the model wrote text, and not the same text for every prompt.
    assert all(shared) and len(set(shared)) > 1


def test_a_shared_prefix_runs_once_for_all_batches_and_saves_its_tokens(
        tiny_family: Any, monkeypatch: pytest.MonkeyPatch, packing: list[int],  # Any: factory
        request: pytest.FixtureRequest) -> None:
    lm = load_model(ModelConfig(name=str(tiny_family("llama"))))
    prompts = _prompts(lm.tokenizer)
    shared_length = shared_prefix(prompts)
    assert shared_length >= len(lm.tokenizer(SHOTS).input_ids) - 1
    config = GenerationConfig(max_new_tokens=4, batch_size=2)
    defers_projection(lm.model)  # its once-per-model check runs before the count
    calls: list[tuple[int, int]] = []  # (positions, rows) of each forward pass
    forward = lm.model.forward

    def spy(*args: Any, **kwargs: Any) -> Any:  # Any: the model's own signature
        calls.append((int(kwargs["input_ids"].numel()), int(kwargs["input_ids"].shape[0])))
        return forward(*args, **kwargs)
    monkeypatch.setattr(lm.model, "forward", spy)
    generate(lm.model, lm.tokenizer, prompts, config, share_prefix=True)
    # One prefix pass; after it only the prompts' own tokens run, never the prefix again.
    assert calls.count((shared_length, 1)) == 1
    calls.remove((shared_length, 1))
    if not packed_variant(request):  # padded: each batch's first pass reads only the suffixes
        assert max(positions // rows for positions, rows in calls) <= \
            max(len(p) for p in prompts) - shared_length
        return
    # Packed (greedy): every prompt token without padding, the first new token picked from
    # that pass, then one token per row and step: no position beyond the prompts' own tokens.
    own = sum(len(p) - shared_length for p in prompts)
    decoding = len(prompts) * (config.max_new_tokens - 1)
    assert sum(packing) == len(prompts)
    assert sum(positions for positions, _ in calls) <= own + decoding


def test_lora_adapter_shares_the_prefix_and_prompt_tuning_runs_whole_prompts(
        tiny_family: Any, monkeypatch: pytest.MonkeyPatch, packing: list[int],
        request: pytest.FixtureRequest) -> None:  # Any: factory
    path = tiny_family("llama")
    for method_name, options, shares in (
            ("lora", {"r": 4, "alpha": 8, "target_modules": "all-linear"}, True),
            ("prompt", {"num_virtual_tokens": 4}, False)):
        lm = load_model(ModelConfig(name=str(path)))
        method = get_method(method_name)
        model = method.apply(lm.model, parse_options(method, options), get_kind("causal"))
        torch.manual_seed(1)
        with torch.no_grad():  # the adapter really changes the model
            for parameter in model.parameters():
                if parameter.requires_grad:
                    parameter.normal_(0, 0.5)
        prompts = _prompts(lm.tokenizer)
        packing.clear()
        shared, whole, passes = _both(model, lm.tokenizer, prompts, monkeypatch)
        assert shared == whole and all(shared)
        assert passes == (1 if shares else 0), method_name
        assert ran_packed_where_it_can(model, packing, request) if shares else not packing
        base = generate(lm.model, lm.tokenizer, prompts, GenerationConfig(max_new_tokens=8),
                        strip=False)
        if shares:  # LoRA's weights are injected into lm.model itself: compare with them off
            with model.disable_adapter():
                base = generate(model, lm.tokenizer, prompts, GenerationConfig(max_new_tokens=8),
                                strip=False)
        assert base != shared  # the adapter's outputs, not the base model's


def _one_token_passes(model: torch.nn.Module) -> tuple[list[int], Any]:  # Any: a hook handle
    """(a list that gets the rows of every forward pass of one token per row, the hook's handle).
    A hook, not a wrapped forward: `generate` reads the forward's signature."""
    passes: list[int] = []

    def seen(module: torch.nn.Module, args: Any, kwargs: Any) -> None:  # Any: forward's
        ids = kwargs.get("input_ids")
        if ids is not None and ids.shape[1] == 1:
            passes.append(int(ids.shape[0]))
    return passes, model.register_forward_pre_hook(seen, with_kwargs=True)


def test_greedy_generation_takes_the_first_token_from_the_packed_pass(
        tiny_family: Any, monkeypatch: pytest.MonkeyPatch) -> None:  # Any: factory
    monkeypatch.setattr(prompt_caches, "saves", lambda lengths, whole=False: True)
    lm = load_model(ModelConfig(name=str(tiny_family("llama"))))
    prompts = _prompts(lm.tokenizer)
    config = GenerationConfig(max_new_tokens=4, batch_size=2)  # three batches
    runs = {}
    for name, picks in (("first token packed", generation._picks_argmax),
                        ("last token apart", lambda model, settings: None)):
        monkeypatch.setattr(generation, "_picks_argmax", picks)
        passes, hook = _one_token_passes(lm.model)
        runs[name] = generate(lm.model, lm.tokenizer, prompts, config, strip=False), len(passes)
        hook.remove()
    whole = generate(lm.model, lm.tokenizer, prompts, config, strip=False, share_prefix=False)
    assert runs["first token packed"][0] == runs["last token apart"][0] == whole
    assert all(whole) and len(set(whole)) > 1
    # The same decoding steps, less the pass of each batch's last prompt tokens.
    assert runs["first token packed"][1] == runs["last token apart"][1] - 3


def test_logits_processors_from_the_models_config_are_applied_by_generate(
        tiny_family: Any, monkeypatch: pytest.MonkeyPatch, packing: list[int],
        request: pytest.FixtureRequest) -> None:  # Any: factory
    lm = load_model(ModelConfig(name=str(tiny_family("llama"))))
    prompts = _prompts(lm.tokenizer)
    config = GenerationConfig(max_new_tokens=8, batch_size=3)
    plain = generate(lm.model, lm.tokenizer, prompts, config, strip=False, share_prefix=False)
    settings = {"do_sample": False, "max_new_tokens": 8, "pad_token_id": 0, "eos_token_id": 2}
    assert generation._picks_argmax(lm.model, settings) is not None
    lm.model.generation_config.repetition_penalty = 5.0  # as a model's own config may set
    assert generation._picks_argmax(lm.model, settings) is None
    shared, whole, _ = _both(lm.model, lm.tokenizer, prompts, monkeypatch)
    assert shared == whole
    assert whole != plain  # the penalty changed the text: it was applied on both sides
    assert ran_packed_where_it_can(lm.model, packing, request)
    lm.model.generation_config.repetition_penalty = 1.0
    lm.model.generation_config.min_new_tokens = 8  # end tokens are held back by a processor
    assert generation._picks_argmax(lm.model, settings) is None
    lm.model.generation_config.min_new_tokens = None
    assert generation._picks_argmax(lm.model, {**settings, "do_sample": True, "top_k": 0,
                                               "temperature": 1.0, "top_p": 1.0}) is None


def test_one_new_token_comes_from_the_packed_pass_alone(
        tiny_family: Any, packing: list[int], request: pytest.FixtureRequest
) -> None:  # Any: factory
    """max_new_tokens 1 (a study's anchors): the packed pass's token, no `generate` at all."""
    lm = load_model(ModelConfig(name=str(tiny_family("llama"))))
    prompts = _prompts(lm.tokenizer)
    config = GenerationConfig(max_new_tokens=1, batch_size=5)
    shared = generate(lm.model, lm.tokenizer, prompts, config, strip=False)
    whole = generate(lm.model, lm.tokenizer, prompts, config, strip=False, share_prefix=False)
    assert shared == whole and len(set(whole)) > 1
    assert ran_packed_where_it_can(lm.model, packing, request)


def test_a_row_its_first_token_ends_gets_nothing_after_it(
        tiny_family: Any, monkeypatch: pytest.MonkeyPatch, packing: list[int],
        request: pytest.FixtureRequest) -> None:  # Any: factory
    """An end token or a stop string completed by the first new token (the one picked from
    the packed pass) ends the row there, as in `generate`."""
    lm = load_model(ModelConfig(name=str(tiny_family("llama"))))
    tokenizer, prompts = lm.tokenizer, _prompts(lm.tokenizer)
    with torch.no_grad():
        first = int(lm.model(input_ids=torch.tensor([prompts[0]])).logits[0, -1].argmax())
    config = GenerationConfig(max_new_tokens=6, batch_size=5)
    free = generate(lm.model, tokenizer, prompts, config, strip=False, share_prefix=False)
    # A stop string across the prompt's end: its last token's text and the first new token's.
    spanning = decode(tokenizer, [prompts[0][-1], first])
    stopped = replace(config, stop=[spanning])
    limits: dict[str, list[bool]] = {"shared": [], "whole": []}
    shared = generate(lm.model, tokenizer, prompts, stopped, strip=False,
                      hit_limit=limits["shared"])
    whole = generate(lm.model, tokenizer, prompts, stopped, strip=False, share_prefix=False,
                     hit_limit=limits["whole"])
    assert shared == whole and limits["shared"] == limits["whole"]
    assert whole[0] == decode(tokenizer, [first]) != free[0]  # generate stopped row 0 there
    # The first new token as the end token.
    tokenizer.eos_token = tokenizer.convert_ids_to_tokens(first)
    assert tokenizer.eos_token_id == first
    shared = generate(lm.model, tokenizer, prompts, config, strip=False)
    whole = generate(lm.model, tokenizer, prompts, config, strip=False, share_prefix=False)
    assert shared == whole
    assert whole[0] == decode(tokenizer, [first]) != free[0]  # row 0 ended at its first token
    assert ran_packed_where_it_can(lm.model, packing, request)


PERTURBED = ["a dull film ->", "it is witty ->", "the portrait of the story is tried and dull ->",
             "gorgeous !! ->", "a family movie that is also witty and engrosing ->"]


def _clean_then_perturbed(model: torch.nn.Module, tokenizer: Any, kept: PromptCaches | None
                          ) -> tuple[list[str], list[str]]:  # Any: a transformers tokenizer
    """The clean items' and then the perturbed items' outputs, both calls reading `kept`."""
    config = GenerationConfig(max_new_tokens=8, batch_size=3)
    clean = generate(model, tokenizer, _prompts(tokenizer), config, strip=False, kept=kept)
    perturbed = generate(model, tokenizer, [tokenizer(SHOTS + item).input_ids for item in PERTURBED],
                         config, strip=False, kept=kept)
    return clean, perturbed


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_kept_prompts_start_perturbed_items_from_the_clean_ones_with_the_same_tokens(
        family: str, tiny_family: Any, packing: list[int], request: pytest.FixtureRequest
) -> None:  # Any: factory
    """A study's store: each perturbed prompt runs only from its first changed token, and the
    tokens generated are those of whole prompts."""
    lm = load_model(ModelConfig(name=str(tiny_family(family))))
    positions: list[int] = []

    def count(_: torch.nn.Module, args: Any, kwargs: Any) -> None:  # Any: forward's arguments
        positions.append(int(kwargs["input_ids"].numel()))
    hook = lm.model.register_forward_pre_hook(count, with_kwargs=True)
    whole = _clean_then_perturbed(lm.model, lm.tokenizer, None)  # the shots' prefix run once
    prefix_only = sum(positions)
    positions.clear()
    kept = PromptCaches()
    reused = _clean_then_perturbed(lm.model, lm.tokenizer, kept)
    hook.remove()
    assert reused == whole
    assert all(whole[1]) and whole[0] != whole[1]  # text came out, and the perturbations told
    assert ran_packed_where_it_can(lm.model, packing, request)
    assert len(kept) == 1 + len(ITEMS) + len(PERTURBED) - 1  # the prefix, every new prompt
    # Each perturbed prompt read the clean one's tokens before its change (an unchanged item
    # all but its last token): the model ran far fewer positions than with the shots alone.
    item_tokens = sum(len(p) for p in _prompts(lm.tokenizer)) - len(ITEMS) * shared_prefix_of(lm)
    assert prefix_only - sum(positions) > item_tokens / 2


def shared_prefix_of(lm: Any) -> int:  # Any: a LoadedModel
    return shared_prefix(_prompts(lm.tokenizer))


def test_a_store_serves_only_the_weights_it_was_filled_with(tiny_family: Any) -> None:  # Any
    """Two LoRA adapters on one base, an adapter switched off, and a weight changed in place:
    each empties the store before it could answer, and the outputs are the model's own."""
    lm = load_model(ModelConfig(name=str(tiny_family("llama"))))
    method = get_method("lora")
    model = method.apply(lm.model, parse_options(method, {"r": 4, "alpha": 8,
                                                          "target_modules": "all-linear"}),
                         get_kind("causal"))
    model.add_adapter("other", model.peft_config["default"])
    torch.manual_seed(2)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_" in name:
                parameter.normal_(0, 0.5)
    kept = PromptCaches()
    clean, _ = _clean_then_perturbed(model, lm.tokenizer, kept)
    assert len(kept) > len(ITEMS)
    for change in ("other adapter", "adapter off", "weight changed"):
        if change == "other adapter":
            model.set_adapter("other")
            context: Any = torch.no_grad()  # Any: a context manager
        elif change == "adapter off":
            model.set_adapter("default")
            context = model.disable_adapter()
        else:
            with torch.no_grad():
                next(p for n, p in model.named_parameters() if "lora_B" in n).add_(0.3)
            context = torch.no_grad()
        with context:
            expected = _clean_then_perturbed(model, lm.tokenizer, None)
            before = kept.reused_tokens
            got = _clean_then_perturbed(model, lm.tokenizer, kept)
        assert got == expected, change
        assert got[0] != clean, change  # the change changed what the model writes
        # Emptied, then filled again from this model's own prompts only.
        assert kept.reused_tokens - before < sum(len(p) for p in _prompts(lm.tokenizer)) * 2


def test_a_store_keeps_prompts_only_within_its_budget(tiny_family: Any) -> None:  # Any: factory
    lm = load_model(ModelConfig(name=str(tiny_family("llama"))))
    whole = _clean_then_perturbed(lm.model, lm.tokenizer, None)
    unbounded = PromptCaches()
    _clean_then_perturbed(lm.model, lm.tokenizer, unbounded)
    small = PromptCaches(budget=unbounded.bytes * 2 // 3)
    assert _clean_then_perturbed(lm.model, lm.tokenizer, small) == whole
    assert 0 < len(small) < len(unbounded) and small.bytes <= small.budget


def test_a_store_holds_each_prefix_once(tiny_family: Any) -> None:  # Any: factory
    """An entry keeps only the positions it ran: the shots every prompt shares, and a clean
    item's tokens before a perturbation, are held once, however many prompts start with
    them."""
    lm = load_model(ModelConfig(name=str(tiny_family("llama"))))
    kept = PromptCaches()
    _clean_then_perturbed(lm.model, lm.tokenizer, kept)
    config = lm.model.config
    per_token = (config.num_hidden_layers * 2 * config.num_key_value_heads
                 * config.hidden_size // config.num_attention_heads * 4)  # float32 keys, values
    prompts = _prompts(lm.tokenizer) + [lm.tokenizer(SHOTS + item).input_ids for item in PERTURBED]
    distinct = {tuple(p[:i]) for p in prompts for i in range(1, len(p) + 1)}
    # Each distinct prefix once (two rows of one batch that share a word beyond the store
    # both ran it, and both keep it: a few positions more).
    assert len(distinct) * per_token <= kept.bytes <= (len(distinct) + 4) * per_token
    assert kept.bytes < sum(map(len, prompts)) * per_token / 3  # full copies: over 3x this


def test_clean_items_looked_up_are_run_first_for_the_perturbed_ones(
        tiny_family: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # Any
    """When the result cache answers the clean items (the quickstart scored them), the store
    notes them, and the first call with perturbed items runs those the items share most of
    first (one token each), then starts each perturbed item from its clean one."""
    lm = load_model(ModelConfig(name=str(tiny_family("llama"))))
    whole = _clean_then_perturbed(lm.model, lm.tokenizer, None)
    results = ResultCache(tmp_path / "results.sqlite")
    config = GenerationConfig(max_new_tokens=8, batch_size=3)
    generate(lm.model, lm.tokenizer, _prompts(lm.tokenizer), config, results=results)
    kept = PromptCaches()
    runs: list[tuple[int, int]] = []
    real = generation._generate

    def counted(prompts: Any, model: Any, tokenizer: Any, config: GenerationConfig,
                *args: Any, **kwargs: Any) -> Any:  # Any: _generate's own arguments
        runs.append((len(prompts), config.max_new_tokens))
        return real(prompts, model, tokenizer, config, *args, **kwargs)
    monkeypatch.setattr(generation, "_generate", counted)
    clean = generate(lm.model, lm.tokenizer, _prompts(lm.tokenizer), config, strip=False,
                     results=results, kept=kept)
    assert runs == [] and len(kept) == 0  # all looked up, nothing run yet
    perturbed = generate(lm.model, lm.tokenizer,
                         [lm.tokenizer(SHOTS + item).input_ids for item in PERTURBED],
                         config, strip=False, results=results, kept=kept)
    assert (clean, perturbed) == whole
    # "it is witty ->" is unchanged (looked up); the four others ran, after the clean items
    # they share more than the shots with ran first, one token each.
    assert runs[0] == (4, 8) and runs[1][1] == 1 and 1 <= runs[1][0] <= 4
    assert kept.reused_tokens > 4 * (shared_prefix_of(lm) + 1)


CHOICES = [[5], [17, 40], [99, 3, 8]]  # one token (no second pass) and longer choices


def _choices_clean_then_perturbed(model: torch.nn.Module, tokenizer: Any,  # Any: tokenizer
                                  kept: PromptCaches | None, shared_context: bool | None = None
                                  ) -> list[ChoiceResult]:
    """Every choice's log-likelihood after the clean contexts, then the perturbed ones."""
    scored = []
    for items in (ITEMS, PERTURBED):
        requests = [ChoiceRequest(tokenizer(SHOTS + item).input_ids, CHOICES) for item in items]
        scored += score_choices(model, requests, batch_size=3, kept=kept,
                                shared_context=shared_context)
    return scored


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_kept_contexts_start_perturbed_choice_items_from_the_clean_ones(
        family: str, tiny_family: Any, packing: list[int], request: pytest.FixtureRequest
) -> None:  # Any: factory
    """Multiple choice with a study's store: each perturbed context runs from its first changed
    token, and every choice's log-likelihood is that of the whole context."""
    lm = load_model(ModelConfig(name=str(tiny_family(family))))
    positions: list[int] = []

    def count(_: torch.nn.Module, args: Any, kwargs: Any) -> None:  # Any: forward's arguments
        positions.append(int(kwargs["input_ids"].numel()))
    hook = lm.model.register_forward_pre_hook(count, with_kwargs=True)
    whole = _choices_clean_then_perturbed(lm.model, lm.tokenizer, None)
    without = sum(positions)
    positions.clear()
    kept = PromptCaches()
    reused = _choices_clean_then_perturbed(lm.model, lm.tokenizer, kept)
    hook.remove()
    # Each context + choice as its own sequence: nothing shared, packed or kept.
    alone = _choices_clean_then_perturbed(lm.model, lm.tokenizer, None, shared_context=False)
    for scored in (whole, reused):
        torch.testing.assert_close([r.logprobs for r in scored], [r.logprobs for r in alone],
                                   rtol=1e-4, atol=1e-4)
        assert [r.greedy for r in scored] == [r.greedy for r in alone]
    assert ran_packed_where_it_can(lm.model, packing, request)
    # Not vacuous: the choices differ in likelihood, and the items too.
    assert all(len(set(r.logprobs)) == len(CHOICES) for r in whole)
    assert len({tuple(r.logprobs) for r in whole}) > len(ITEMS)
    assert len(kept) >= len(ITEMS) + len(PERTURBED) - 1 and kept.reused_tokens > 0
    item_tokens = sum(len(p) for p in _prompts(lm.tokenizer)) - len(ITEMS) * shared_prefix_of(lm)
    assert without - sum(positions) > item_tokens / 2  # the perturbed items ran from a change


def test_choice_contexts_looked_up_are_run_first_for_the_perturbed_ones(
        tiny_family: Any, tmp_path: Path) -> None:  # Any: factory
    lm = load_model(ModelConfig(name=str(tiny_family("llama"))))
    whole = _choices_clean_then_perturbed(lm.model, lm.tokenizer, None)
    results = ResultCache(tmp_path / "results.sqlite")
    clean = [ChoiceRequest(lm.tokenizer(SHOTS + item).input_ids, CHOICES) for item in ITEMS]
    score_choices(lm.model, clean, batch_size=3, results=results)
    kept = PromptCaches()
    looked_up = score_choices(lm.model, clean, batch_size=3, results=results, kept=kept)
    assert len(kept) == 0 and results.hits == len(ITEMS)  # noted, nothing run
    perturbed = score_choices(lm.model, [ChoiceRequest(lm.tokenizer(SHOTS + item).input_ids,
                                                       CHOICES) for item in PERTURBED],
                              batch_size=3, results=results, kept=kept)
    torch.testing.assert_close([r.logprobs for r in looked_up + perturbed],
                               [r.logprobs for r in whole], rtol=1e-4, atol=1e-4)
    # the clean contexts the perturbed ones share more than the shots with were kept first
    assert len(kept) > len(PERTURBED) and kept.reused_tokens > 4 * (shared_prefix_of(lm) + 1)

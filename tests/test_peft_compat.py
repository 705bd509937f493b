"""Prompt and prefix tuning across transformers' rename of the cache argument (peft_compat).

tests/data/prompt_learning/ holds tiny prompt/prefix-tuned cells and what transformers 5.23.0 +
peft 0.21.2 computed with them (the last set on which plain peft needed no workaround; see
make.py there). On the installed set, tunelab must compute the same logits and generate the
same tokens, with and without the KV cache, and without deprecation warnings. And the
workaround must be exactly as wide as the breakage: where `needs_patch` says it applies, plain
peft still gets these cells wrong (a peft release that fixed the rename fails here, and the
workaround's bound must move); where it does not apply, plain peft gets them right.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
import transformers
from families import FAMILIES, sample_batch

from tunelab.methods import get_method
from tunelab.methods.peft_compat import LAST_PEFT_WITHOUT_CACHE_NAME, needs_patch

GOLDEN = Path(__file__).parent / "data" / "prompt_learning"
EXPECTED = json.loads((GOLDEN / "expected.json").read_text())
CELLS = sorted(EXPECTED["cells"])
GENERATIVE = [key for key in CELLS if FAMILIES[key.split("/")[1]].kind != "classify"]


def base_model(family: str) -> torch.nn.Module:
    config = transformers.AutoConfig.from_pretrained(GOLDEN / family / "base")
    cls = getattr(transformers, config.architectures[0])
    return cls.from_pretrained(GOLDEN / family / "base").eval()


def tunelab_model(key: str) -> torch.nn.Module:
    method, family = key.split("/")
    return get_method(method).load(base_model(family), GOLDEN / family / method).eval()


def plain_peft_model(key: str) -> torch.nn.Module:
    from peft import PeftModel

    method, family = key.split("/")
    return PeftModel.from_pretrained(base_model(family), str(GOLDEN / family / method)).eval()


@torch.no_grad()
def generate(model: torch.nn.Module, family: str, use_cache: bool) -> list[list[int]]:
    batch = sample_batch(family)
    return model.generate(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                          max_new_tokens=EXPECTED["new_tokens"], do_sample=False,
                          eos_token_id=None, pad_token_id=0, use_cache=use_cache).tolist()


@pytest.mark.parametrize("key", CELLS)
def test_logits_and_generation_equal_the_last_set_without_workaround(key: str) -> None:
    family = key.split("/")[1]
    expected = EXPECTED["cells"][key]
    model = tunelab_model(key)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with torch.no_grad():
            got = model(**sample_batch(family)).logits
        generated = {cache: generate(model, family, cache) for cache in (True, False)
                     } if key in GENERATIVE else {}
    want = torch.tensor(expected["logits"])
    assert got.shape == want.shape
    assert torch.allclose(got, want, atol=1e-5, rtol=0), (got - want).abs().max()
    with torch.no_grad():  # the prompt matters: the base model alone computes something else
        plain = base_model(family)(**sample_batch(family)).logits
    assert (plain - want[:, want.shape[1] - plain.shape[1]:]).abs().max() > 1e-3
    for use_cache, tokens in generated.items():
        assert tokens == expected["generated"], (use_cache, tokens, expected["generated"])
    stale = [str(w.message) for w in caught if "past_key_values" in str(w.message)]
    assert not stale, stale[:2]


# The two seams plain peft gets wrong: cached generation, and prefix tuning under a head.
PLAIN_PEFT_PROBES = ["prompt/gpt2", "prefix/llama", "prefix/bart", "prefix/bert"]


def plain_peft_result(key: str) -> Any:
    """What plain peft computes for a cell: generated tokens, or a classifier's logits."""
    family = key.split("/")[1]
    model = plain_peft_model(key)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # its deprecation warnings are not the point here
            if key in GENERATIVE:
                return generate(model, family, use_cache=True)
            with torch.no_grad():
                return model(**sample_batch(family)).logits
    except ValueError as err:  # peft: "Model does not support past key values ..."
        return f"ValueError: {err}"


def matches_expected(key: str, result: Any) -> bool:
    if isinstance(result, str):
        return False
    if key in GENERATIVE:
        return bool(result == EXPECTED["cells"][key]["generated"])
    return torch.allclose(result, torch.tensor(EXPECTED["cells"][key]["logits"]), atol=1e-5)


@pytest.mark.parametrize("key", PLAIN_PEFT_PROBES)
def test_workaround_applies_exactly_where_plain_peft_is_wrong(key: str) -> None:
    from importlib.metadata import version

    family = key.split("/")[1]
    applies = needs_patch(base_model(family))
    plain_is_right = matches_expected(key, plain_peft_result(key))
    versions = f"transformers {transformers.__version__}, peft {version('peft')}"
    if applies:
        assert not plain_is_right, (
            f"{versions}: plain peft now gets {key} right, so tunelab/methods/peft_compat.py is no "
            f"longer needed for this peft; lower LAST_PEFT_WITHOUT_CACHE_NAME "
            f"({LAST_PEFT_WITHOUT_CACHE_NAME}) below it or remove the workaround")
    else:
        assert plain_is_right, (
            f"{versions}: plain peft gets {key} wrong but the workaround does not apply; "
            f"raise LAST_PEFT_WITHOUT_CACHE_NAME ({LAST_PEFT_WITHOUT_CACHE_NAME}) to this peft")


def test_needs_patch_follows_the_peft_release_and_the_cache_name() -> None:
    from tunelab.models.cache import cache_argument

    model = base_model("gpt2")
    renamed = cache_argument(model) == "cache"
    assert needs_patch(model, str(LAST_PEFT_WITHOUT_CACHE_NAME)) is renamed
    assert needs_patch(model, "0.99.0") is False  # a peft newer than checked is trusted
    assert cache_argument(base_model("bert")) == cache_argument(model)  # read off the backbone

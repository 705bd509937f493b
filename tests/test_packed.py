"""Prompts run packed (models/packed.py): the same keys and values as each prompt run alone,
after stored pieces or without, for sdpa and eager attention."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from transformers import AutoModelForCausalLM, BloomConfig, BloomForCausalLM

from tests.conftest import FAMILIES
from tunelab.models import packed
from tunelab.models.cache import output_cache
from tunelab.models.packed import ROW_TOKENS, Segment, pack, packs, run_packed, saves


def test_pack_fills_as_few_rows_as_hold_the_tokens_evenly() -> None:
    lengths = [200, 180, 120, 60, 60, 40, 30, 10]
    rows = pack(lengths)
    assert sorted(i for row in rows for i in row) == list(range(len(lengths)))
    assert len(rows) == 3  # 700 tokens in rows of 256
    held = [sum(lengths[i] for i in row) for row in rows]
    assert max(held) - min(held) <= max(lengths) / 2
    assert pack([600, 10]) == [[0], [1]]  # a long prompt is never split: a row of its own
    assert len(pack([190] * 8)) == 8  # two do not fit a row: each its own, as padded


def test_packing_is_chosen_only_where_it_saves_positions() -> None:
    assert saves([60, 12, 10, 9, 30, 8, 7, 6])  # 0 shots: lengths spread, padding dominates
    assert not saves([300, 298, 301, 299])  # drawn shots, sorted: little padding to save
    assert not saves([1, 1, 1])  # nothing before the last tokens
    # Every token packed (the first new token from that pass): no extra pass to pay for.
    assert saves([60, 12, 10, 9, 30, 8, 7, 6], whole=True)
    assert saves([3, 1, 1, 1, 1], whole=True) and not saves([3, 1, 1, 1, 1])
    assert not saves([300, 298, 301, 299], whole=True)


def _alone(model: torch.nn.Module, prompt: list[int]) -> Any:  # Any: a transformers cache
    """The cache of `prompt` run alone."""
    with torch.no_grad():
        return output_cache(model(input_ids=torch.tensor([prompt]), use_cache=True))


@pytest.mark.parametrize("family", [f for f in sorted(FAMILIES) if f != "mistral"])
@pytest.mark.parametrize("attention", ["sdpa", "eager"])
@pytest.mark.parametrize("row_tokens", [ROW_TOKENS, 16])
@pytest.mark.parametrize("projection", ["deferred", "in the model"])
def test_packed_segments_equal_each_prompt_run_alone(
        family: str, attention: str, row_tokens: int, projection: str,
        tiny_family: Any, monkeypatch: pytest.MonkeyPatch) -> None:  # Any: factory
    monkeypatch.setattr(packed, "ROW_TOKENS", row_tokens)  # 16: several rows, each padded
    if projection == "in the model":  # a model that post-processes its logits: all computed
        monkeypatch.setattr(packed, "defers_projection", lambda model: False)
    model = AutoModelForCausalLM.from_pretrained(tiny_family(family),
                                                 attn_implementation=attention).eval()
    assert packs(model)
    torch.manual_seed(0)
    shots = torch.randint(5, 60, (7,)).tolist()
    clean = shots + torch.randint(5, 60, (5,)).tolist()  # a kept item after the shots
    other = torch.randint(5, 60, (6,)).tolist()  # another prefix, shared with nothing
    # Stored pieces: the shots' positions [0, 7), the clean item's [7, 12), the other's [0, 6).
    shots_cache, clean_cache, other_cache = (_alone(model, p) for p in (shots, clean, other))
    pieces = [[(layer.keys[0], layer.values[0]) for layer in shots_cache.layers],
              [(layer.keys[0, :, 7:], layer.values[0, :, 7:]) for layer in clean_cache.layers],
              [(layer.keys[0], layer.values[0]) for layer in other_cache.layers]]
    cases = [(shots, (0,), 9), (shots, (0,), 3), (clean, (0, 1), 14), (clean, (0, 1), 1),
             (other, (2,), 4), ([], (), 11)]
    prompts = [head + torch.randint(5, 60, (n,)).tolist() for head, _, n in cases]
    segments = [Segment(p[len(head):], len(head), held)
                for p, (head, held, _) in zip(prompts, cases, strict=True)]
    out, logits = run_packed(model, segments, pieces, next_logits=True)
    for index, prompt in enumerate(prompts):  # the logits after each whole prompt
        with torch.no_grad():
            alone = model(input_ids=torch.tensor([prompt])).logits[0, -1].float()
        assert logits is not None
        torch.testing.assert_close(logits[index], alone, rtol=1e-4, atol=1e-4)
    for index, prompt in enumerate(prompts):
        first = segments[index].start
        for layer, (keys, values) in zip(_alone(model, prompt).layers, out[index], strict=True):
            torch.testing.assert_close(keys, layer.keys[0, :, first:], rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(values, layer.values[0, :, first:], rtol=1e-4, atol=1e-5)
    # Not vacuous: the prompts' states differ from one another.
    assert not torch.allclose(out[0][0][0][:, -1], out[2][0][0][:, -1])


def test_a_model_that_builds_its_own_position_bias_runs_padded() -> None:
    """ALiBi models (Bloom) read a 2-D mask for their bias: no custom 4-D mask for them."""
    config = BloomConfig(vocab_size=64, hidden_size=32, n_layer=2, n_head=4)
    assert not packs(BloomForCausalLM(config))


def test_a_sliding_window_model_runs_padded(tiny_family: Any) -> None:  # Any: factory
    assert not packs(AutoModelForCausalLM.from_pretrained(tiny_family("mistral")))

"""Less padding and less memory: the loss from the scored positions only (models/logits.py),
packed batches (data.packing) and length-grouped batches (train.group_by_length)."""

from __future__ import annotations

import itertools
import json
import random
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import needs_builtin_model
from helpers import interrupt_then_resume, tiny_run_config
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

import tunelab
from tunelab.data.batching import ShuffledPlan
from tunelab.models import attention
from tunelab.models import logits as logits_module
from tunelab.models.kinds import CAUSAL, TokenizedExample, balanced_rows
from tunelab.models.logits import defers_projection, shifted, summed_nll, token_scores


def _examples(seed: int, vocab: int, shapes: list[tuple[int, int]]) -> list[TokenizedExample]:
    """Examples of (length, prompt length) with random ids; labels on the completion."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for n, p in shapes:
        ids = torch.randint(3, vocab, (n,), generator=g).tolist()
        out.append(TokenizedExample(ids, [-100] * p + ids[p:], p))
    return out


SHAPES = [(20, 12), (35, 30), (9, 5), (50, 2), (14, 1), (27, 20)]


@pytest.fixture()
def tiny(tiny_llama: Path) -> torch.nn.Module:
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32)


def _grads(model: torch.nn.Module, loss: torch.Tensor) -> dict[str, torch.Tensor]:
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    return dict(zip(params, torch.autograd.grad(loss, list(params.values())), strict=True))


def test_scored_positions_give_the_models_own_loss_and_gradients(tiny: torch.nn.Module) -> None:
    batch = CAUSAL.collate(_examples(0, tiny.config.vocab_size, SHAPES), pad_id=3)
    count = torch.tensor(CAUSAL.loss_targets(batch))
    tiny.train()
    torch.manual_seed(1)
    theirs = tiny(**batch, num_items_in_batch=count).loss
    g_theirs = _grads(tiny, theirs)
    torch.manual_seed(1)
    ours = CAUSAL.loss(tiny, batch, count)
    g_ours = _grads(tiny, ours)
    assert defers_projection(tiny)
    assert float(ours) == pytest.approx(float(theirs), rel=1e-6)
    assert float(theirs) > 1.0
    for name, grad in g_theirs.items():
        assert grad.abs().max() > 0, name
        torch.testing.assert_close(g_ours[name], grad, rtol=1e-5, atol=1e-7)


def test_chunks_of_the_projection_give_the_same_loss(tiny: torch.nn.Module,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    batch = CAUSAL.collate(_examples(1, tiny.config.vocab_size, SHAPES), pad_id=3)
    targets = shifted(batch["labels"])
    inputs = CAUSAL.model_inputs(batch)
    whole = summed_nll(tiny, inputs, targets)
    g_whole = _grads(tiny, whole)
    calls = []
    real = logits_module.checkpoint
    monkeypatch.setattr(logits_module, "CHUNK", 7)
    monkeypatch.setattr(logits_module, "checkpoint", lambda *a, **k: calls.append(1) or real(*a, **k))
    chunked = summed_nll(tiny, inputs, targets)
    g_chunked = _grads(tiny, chunked)
    scored = int((targets != -100).sum())
    assert len(calls) == -(-scored // 7) > 1  # recomputed chunk by chunk
    assert float(chunked) == pytest.approx(float(whole), rel=1e-6)
    for name, grad in g_whole.items():
        torch.testing.assert_close(g_chunked[name], grad, rtol=1e-4, atol=1e-6)


def test_prompt_tuning_scores_the_inputs_own_positions(tiny: torch.nn.Module) -> None:
    from peft import PromptTuningConfig, get_peft_model

    model = get_peft_model(tiny, PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4))
    batch = CAUSAL.collate(_examples(2, tiny.config.vocab_size, SHAPES), pad_id=3)
    count = torch.tensor(CAUSAL.loss_targets(batch))
    theirs = model(**batch).loss * (batch["labels"][:, 1:] != -100).sum() / count
    ours = CAUSAL.loss(model, batch, count)
    assert float(ours) == pytest.approx(float(theirs), rel=1e-5)


class SoftCapped(torch.nn.Module):
    """A model that soft-caps its logits after the projection (as Gemma 2 does)."""

    def __init__(self, inner: torch.nn.Module):
        super().__init__()
        self.inner, self.config = inner, inner.config

    def get_output_embeddings(self) -> torch.nn.Module:
        return self.inner.get_output_embeddings()

    def forward(self, **kwargs):  # noqa: ANN003, ANN201
        out = self.inner(**kwargs)
        out.logits = 0.05 * torch.tanh(out.logits / 0.05)
        return out


def test_a_model_that_changes_its_logits_is_scored_from_them(tiny: torch.nn.Module) -> None:
    model = SoftCapped(tiny)
    batch = CAUSAL.collate(_examples(3, tiny.config.vocab_size, SHAPES), pad_id=3)
    assert not defers_projection(model)
    logits = model(**CAUSAL.model_inputs(batch)).logits
    expected = F.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                               shifted(batch["labels"]).reshape(-1), reduction="sum")
    assert float(summed_nll(model, CAUSAL.model_inputs(batch), shifted(batch["labels"]))) == \
        pytest.approx(float(expected), rel=1e-6)


def test_balanced_rows_place_every_example_once_within_the_row_length() -> None:
    rng = random.Random(0)
    for _ in range(200):
        lengths = [rng.randint(1, 120) for _ in range(rng.randint(1, 12))]
        capacity = rng.choice([64, 128, 256])
        rows = balanced_rows(lengths, capacity)
        assert sorted(i for row in rows for i in row) == list(range(len(lengths)))
        limit = max(capacity, max(lengths))
        assert all(sum(lengths[i] for i in row) <= limit for row in rows)
        assert len(rows) <= len(lengths)
        assert rows == balanced_rows(lengths, capacity)  # a function of the lengths


def _per_example(model: torch.nn.Module, examples: list[TokenizedExample], packed: bool,
                 row: int, per_example: bool = False) -> list[float]:
    """Each example's summed NLL, from a padded or a packed batch of all of them."""
    if not packed:
        batch = CAUSAL.collate(examples, pad_id=0)
        scored = token_scores(model, CAUSAL.model_inputs(batch), shifted(batch["labels"]))
        out = torch.zeros(len(examples), dtype=torch.float64)
        out.index_add_(0, scored.rows, scored.nll.double())
        return out.tolist()
    batch = CAUSAL.pack(examples, pad_id=0, row_length=row, per_example=per_example)
    targets = shifted(batch["labels"])
    keep = targets != -100
    nll = token_scores(model, CAUSAL.model_inputs(batch), targets).nll.double()
    owner = torch.full(targets.shape, -1)  # which example each position belongs to
    rows = balanced_rows([len(e.input_ids) for e in examples], row)
    for r, row in enumerate(rows):
        start = 0
        for i in row:
            owner[r, start:start + len(examples[i].input_ids)] = i
            start += len(examples[i].input_ids)
    out = torch.zeros(len(examples), dtype=torch.float64)
    out.index_add_(0, owner[keep], nll)
    return out.tolist()


def _check_packed_equals_padded(model: torch.nn.Module, examples: list[TokenizedExample],
                                leak: float = 0.0, row: int = 64) -> None:
    """Packed == padded per example to 1e-5; with `leak`, the same row without the restarted
    positions (so the examples see each other) is off by more than that share."""
    model.eval()
    batch = CAUSAL.pack(examples, pad_id=0, row_length=row)
    assert batch["input_ids"].shape[0] < len(examples)  # several examples share a row
    assert "attention_mask" not in batch
    starts = (batch["position_ids"] == 0).sum()
    assert starts >= len(examples)  # positions restart at every example
    assert CAUSAL.loss_targets(batch) == CAUSAL.loss_targets(CAUSAL.collate(examples, 0))
    padded = _per_example(model, examples, False, row)
    packed = _per_example(model, examples, True, row)
    assert all(x > 0 for x in padded)
    assert packed == pytest.approx(padded, rel=1e-5)
    assert attention.takes_per_example(model)
    with attention.attends_per_example(model, True):  # each example attended alone
        for width in (row, attention.ROW_TOKENS):  # several rows with padding; one row
            alone = _per_example(model, examples, True, width, per_example=True)
            assert alone == pytest.approx(padded, rel=1e-5)
    if leak:  # examples that could see each other would not match
        crossed = {"input_ids": batch["input_ids"], "use_cache": False}
        leaked = token_scores(model, crossed, shifted(batch["labels"])).nll.sum()
        assert abs(float(leaked) - sum(padded)) > leak * sum(padded)


def test_a_packed_batch_gives_each_example_its_unpacked_loss(tiny: torch.nn.Module) -> None:
    _check_packed_equals_padded(tiny, _examples(4, tiny.config.vocab_size, SHAPES))


def test_one_row_attended_per_example_gives_the_padded_losses_and_gradients(
        tiny: torch.nn.Module, monkeypatch: pytest.MonkeyPatch) -> None:
    from transformers.integrations import sdpa_attention

    examples = _examples(5, tiny.config.vocab_size, SHAPES)
    row = CAUSAL.pack(examples, pad_id=0, row_length=attention.ROW_TOKENS, per_example=True)
    assert row["input_ids"].shape == (1, sum(len(e.input_ids) for e in examples))  # no padding
    edges = row[attention.BOUNDS].tolist()  # every example's start and the row's end
    assert edges[0] == 0 and sorted(b - a for a, b in itertools.pairwise(edges)) == sorted(
        len(e.input_ids) for e in examples)
    padded = CAUSAL.collate(examples, pad_id=0)
    count = torch.tensor(CAUSAL.loss_targets(padded))
    assert CAUSAL.loss_targets(row) == int(count)
    tiny.train()
    reference = CAUSAL.loss(tiny, padded, count)
    g_reference = _grads(tiny, reference)
    queries = []
    plain = sdpa_attention.sdpa_attention_forward
    monkeypatch.setattr(sdpa_attention, "sdpa_attention_forward",
                        lambda module, q, *a, **k: queries.append(q.shape[2]) or plain(module, q, *a, **k))
    assert attention.takes_per_example(tiny)
    with attention.attends_per_example(tiny, True):
        ours = CAUSAL.loss(tiny, row, count)
        g_ours = _grads(tiny, ours)
    assert tiny.config._attn_implementation == "sdpa"  # as it was
    layers = tiny.config.num_hidden_layers
    assert sorted(queries) == sorted([len(e.input_ids) for e in examples] * layers)  # alone
    assert float(ours) == pytest.approx(float(reference), rel=1e-5)
    for name, grad in g_reference.items():
        assert grad.abs().max() > 0
        assert torch.allclose(g_ours[name], grad, rtol=1e-4, atol=1e-6), name
    unaware = CAUSAL.loss(tiny, row, count)  # plain sdpa: the same row through its mask
    assert float(unaware) == pytest.approx(float(reference), rel=1e-5)
    rows = CAUSAL.pack(examples, pad_id=0, row_length=60, per_example=True)  # padded rows
    width = rows["input_ids"].shape[1]
    assert rows["input_ids"].shape[0] > 1 and rows[attention.BOUNDS][-1] == rows["input_ids"].numel()
    queries.clear()
    with attention.attends_per_example(tiny, True):
        several = CAUSAL.loss(tiny, rows, count)
        g_several = _grads(tiny, several)
    assert float(several) == pytest.approx(float(reference), rel=1e-5)
    assert all(torch.allclose(g_several[n], g, rtol=1e-4, atol=1e-6) for n, g in g_reference.items())
    assert max(queries) <= max(len(e.input_ids) for e in examples) < width  # never a whole row


def test_short_examples_attend_in_float32_under_bf16_autocast(
        tiny: torch.nn.Module, monkeypatch: pytest.MonkeyPatch) -> None:
    """On a CPU, bf16 training attends examples shorter than FLOAT32_BELOW in float32 (the
    faster kernel there) and longer ones in bf16; the loss stays the fp32 one to bf16's
    precision and gradients reach every layer."""
    from transformers.integrations import sdpa_attention

    examples = _examples(6, tiny.config.vocab_size, SHAPES)
    lengths = sorted(len(e.input_ids) for e in examples)
    row = CAUSAL.pack(examples, pad_id=0, row_length=attention.ROW_TOKENS, per_example=True)
    count = torch.tensor(CAUSAL.loss_targets(row))
    tiny.train()
    with attention.attends_per_example(tiny, True):
        reference = CAUSAL.loss(tiny, row, count)  # float32 throughout
    seen: list[tuple[int, torch.dtype, bool]] = []  # (length, values' dtype, autocast on)
    plain = sdpa_attention.sdpa_attention_forward
    monkeypatch.setattr(sdpa_attention, "sdpa_attention_forward",
                        lambda module, q, k, v, *a, **kw: (
                            seen.append((q.shape[2], v.dtype, torch.is_autocast_enabled("cpu")))
                            or plain(module, q, k, v, *a, **kw)))
    cut = lengths[len(lengths) // 2]  # half the examples below it, half at or above
    monkeypatch.setattr(attention, "FLOAT32_BELOW", cut)
    with attention.attends_per_example(tiny, True), torch.autocast("cpu", dtype=torch.bfloat16):
        ours = CAUSAL.loss(tiny, row, count)
    grads = _grads(tiny, ours)
    # short: float32 values (bf16 out of the autocast projections, cast up), autocast off;
    # long: bf16 values into sdpa under autocast
    assert {(n, d, on) for n, d, on in seen} == {
        (n, torch.bfloat16 if n >= cut else torch.float32, n >= cut) for n in lengths}
    assert float(ours) == pytest.approx(float(reference), rel=2e-2)
    assert all(torch.isfinite(g).all() and g.abs().max() > 0 for g in grads.values())


def test_per_example_attention_is_for_sdpa_models_and_never_saved(tiny_llama: Path,
                                                                    tmp_path: Path) -> None:
    eager = AutoModelForCausalLM.from_pretrained(tiny_llama, attn_implementation="eager")
    assert not attention.takes_per_example(eager)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32)
    assert attention.takes_per_example(model)
    model.config.sliding_window = 16  # a window the per-example causal kernel would not keep
    assert not attention.takes_per_example(model)
    model.config.sliding_window = None
    with attention.attends_per_example(model, True):
        assert model.config._attn_implementation == attention.NAME
        model.save_pretrained(tmp_path / "saved")
    assert attention.NAME not in (tmp_path / "saved" / "config.json").read_text()
    assert model.config._attn_implementation == "sdpa"


@needs_builtin_model
def test_packed_real_reviews_on_the_built_in_model(tmp_path: Path) -> None:
    from tunelab.config import ModelConfig
    from tunelab.data import get_template, load_splits
    from tunelab.data.tokenize import tokenize_record
    from tunelab.models import load_model

    config = tunelab.config.load_run_config(
        Path(tunelab.__file__).parent / "configs" / "quickstart.yaml")
    lm = load_model(ModelConfig(name="smollm2-135m", num_layers=2))
    template = get_template(config.data, lm.tokenizer)
    records = load_splits(config.data).train[:6]
    examples = [tokenize_record(r, template, lm.tokenizer, lm.kind, 256) for r in records]
    _check_packed_equals_padded(lm.model, examples, leak=2e-4, row=256)


def _log(run_dir: Path) -> list[dict]:
    return [json.loads(x) for x in (run_dir / "train_log.jsonl").read_text().splitlines()]


def test_packing_trains_like_padded_batches_on_fewer_positions(
        tiny_llama: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from transformers.integrations import sdpa_attention

    queries: list[int] = []  # the per-example path's sdpa calls (plain sdpa is bound apart)
    plain = sdpa_attention.sdpa_attention_forward
    monkeypatch.setattr(sdpa_attention, "sdpa_attention_forward",
                        lambda module, q, *a, **k: queries.append(q.shape[2]) or plain(module, q, *a, **k))
    runs = {}
    for packing in (False, True):
        config = tiny_run_config(tiny_llama, tmp_path, f"packed-{packing}", max_steps=4,
                                 eval_every=2, batch_size=6,
                                 method={"name": "lora", "r": 4, "dropout": 0.0})
        config.data.packing = packing
        runs[packing] = tunelab.train(config, evaluate_after=False)
    padded, packed = (runs[p].summary for p in (False, True))
    assert packed["tokens_seen"] == padded["tokens_seen"]
    assert packed["computed_tokens"] < padded["computed_tokens"]
    assert packed["computed_tokens"] == packed["tokens_seen"]  # one row per micro-batch, no padding
    assert queries and max(queries) < packed["computed_tokens"] / 4  # attended per example
    assert packed["padding_share"] < padded["padding_share"]
    losses = {p: [r["loss"] for r in _log(runs[p].run_dir) if "loss" in r] for p in runs}
    assert losses[True] == pytest.approx(losses[False], rel=1e-5)
    assert losses[True][0] != losses[True][-1]
    vals = {p: [r["val_loss"] for r in _log(runs[p].run_dir) if "val_loss" in r] for p in runs}
    assert vals[True] == pytest.approx(vals[False], rel=1e-5) and len(vals[True]) == 2
    a, b = (load_file(str(runs[p].run_dir / "adapter" / "adapter_model.safetensors"))
            for p in (False, True))
    assert all(a[k].abs().max() > 0 for k in a if "lora_B" in k)  # trained (B starts at 0)
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)


def test_length_grouped_batches_are_seeded_and_less_padded() -> None:
    rng = random.Random(1)
    lengths = [rng.randint(5, 300) for _ in range(1000)]
    plan = ShuffledPlan(len(lengths), 8, seed=3, lengths=lengths)
    plain = ShuffledPlan(len(lengths), 8, seed=3)

    def padding(batches: list) -> int:
        return sum(len(b.indices) * max(lengths[i] for i in b.indices)
                   - sum(lengths[i] for i in b.indices) for b in batches)

    for epoch in (0, 1):
        batches = plan.epoch_batches(epoch)
        assert sorted(i for b in batches for i in b.indices) == list(range(len(lengths)))
        assert batches == ShuffledPlan(len(lengths), 8, seed=3, lengths=lengths).epoch_batches(epoch)
        assert max(lengths[i] for i in batches[0].indices) == max(lengths)  # longest first
        assert padding(batches) < 0.2 * padding(plain.epoch_batches(epoch))
    assert plan.epoch_batches(0) != plan.epoch_batches(1)
    assert plan.epoch_batches(0) != ShuffledPlan(len(lengths), 8, seed=4,
                                                 lengths=lengths).epoch_batches(0)
    # two processes: the global micro-batches split between them
    ranks = [ShuffledPlan(len(lengths), 4, 3, 2, r, lengths).epoch_batches(0) for r in (0, 1)]
    for whole, r0, r1 in zip(plan.epoch_batches(0), *ranks, strict=True):
        assert sorted(r0.indices + r1.indices) == sorted(whole.indices)


def test_grouped_packed_run_resumes_exactly(tiny_llama: Path, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    def config(name: str):  # noqa: ANN202
        c = tiny_run_config(tiny_llama, tmp_path, name, max_steps=8, eval_every=3,
                            save_every=2, batch_size=4)
        c.train.group_by_length, c.data.packing = True, True
        return c

    straight = tunelab.train(config("straight"), evaluate_after=False)
    resumed = interrupt_then_resume(config("resumed"), monkeypatch)
    ws, wr = (load_file(str(r.run_dir / "adapter" / "adapter_model.safetensors"))
              for r in (straight, resumed))
    assert all(torch.count_nonzero(ws[k]) > 0 for k in ws if "lora_B" in k)
    assert all(torch.equal(ws[k], wr[k]) for k in ws)
    assert [r.get("loss") for r in _log(straight.run_dir)] == \
        [r.get("loss") for r in _log(resumed.run_dir)]

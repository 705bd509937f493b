"""Every fine-tuning method on every architecture family: the invariants of DESIGN.md.

The matrix is METHOD x FAMILY (tests/families.py: Llama, GPT-2, Gemma, T5, BART, BERT with a
classification head). For each cell: only the method's parameters train and their count equals a
hand calculation; identity-initialised methods leave the output unchanged; save -> load in a
fresh process gives the same logits and the saved files hold only the trained weights; merge
matches the unmerged model; a few optimizer steps lower the loss; generation with the KV cache
equals generation without it and a plain greedy loop. Then the methods end to end through
`tunelab.train` on the tiny Llama fixture, and each method's own options and errors.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from families import (
    FAMILIES,
    FFN,
    HEAD_DIM,
    HEADS,
    HIDDEN,
    KV_HEADS,
    LAYERS,
    VOCAB,
    build,
    sample_batch,
)
from helpers import DATA, tiny_run_config
from safetensors import safe_open
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

import tunelab
from tunelab.cli import main
from tunelab.core.errors import TunelabError
from tunelab.methods import get_method, trainable_parameters
from tunelab.methods.base import input_logits, parse_options
from tunelab.methods.bitfit import added_biases
from tunelab.models.kinds import CAUSAL, CLASSIFIER, SEQ2SEQ, ModelKind
from tunelab.runs.merge import merge_run, merged_model
from tunelab.runs.run_dir import load_run_model, scoring_run_model

TESTS = Path(__file__).parent

OPTIONS: dict[str, dict[str, Any]] = {
    "full": {},
    "freeze": {"layers": "top:1"},
    "bitfit": {},
    "lora": {"r": 2, "dropout": 0.0},
    "ia3": {},
    "adapter": {"kind": "houlsby", "bottleneck": 4},
    "prompt": {"num_virtual_tokens": 3},
    "prefix": {"num_virtual_tokens": 3, "prefix_projection": True, "encoder_hidden_size": 8},
}
CELLS = [(method, family) for method in OPTIONS for family in FAMILIES]
IDENTITY_AT_INIT = ("full", "freeze", "bitfit", "lora", "ia3", "adapter")
GENERATIVE = [name for name, family in FAMILIES.items() if family.kind != "classify"]
PEFT_FORMAT = ("lora", "ia3", "prompt", "prefix")

# --- hand calculations ---------------------------------------------------------------------
# Shapes (tests/families.py): V vocab, H hidden, F feed-forward, L blocks per stack; Llama and
# Gemma have one key/value head, so k/v width KV = 8. GPT-2, Gemma, T5 and BART tie the LM head
# to the embeddings; Llama does not. BERT has a fresh 2-label head, which trains with every
# method (peft's modules_to_save for SEQ_CLS; the hand-written methods do the same).
V, H, F, L, KV = VOCAB, HIDDEN, FFN, LAYERS, HEAD_DIM * KV_HEADS
HEAD = H * 2 + 2  # BERT classifier
NORM_LLAMA = H  # RMSNorm weight

BLOCK = {
    # q, k, v, o + gate, up, down + 2 norms
    "llama": (H * H + 2 * H * KV + H * H) + 3 * H * F + 2 * NORM_LLAMA,
    "gemma": (H * H + 2 * H * KV + H * H) + 3 * H * F + 2 * H,
    # ln_1, c_attn (H->3H), c_proj, ln_2, c_fc, mlp.c_proj; all with biases
    "gpt2": 2 * H + (H * 3 * H + 3 * H) + (H * H + H) + 2 * H + (H * F + F) + (F * H + H),
    # self-attention q,k,v,o (no biases) + norm, wi, wo + norm
    "t5_encoder": (4 * H * H + H) + (2 * H * F + H),
    "t5_decoder": 2 * (4 * H * H + H) + (2 * H * F + H),  # + cross-attention
    # q,k,v,o with biases + norm, fc1, fc2, norm
    "bart_encoder": 4 * (H * H + H) + 2 * H + (H * F + F) + (F * H + H) + 2 * H,
    "bart_decoder": 2 * (4 * (H * H + H) + 2 * H) + (H * F + F) + (F * H + H) + 2 * H,
    # q,k,v, attention.output.dense, LN, intermediate, output.dense, LN
    "bert": 3 * (H * H + H) + (H * H + H) + 2 * H + (H * F + F) + (F * H + H) + 2 * H,
}
TOTAL = {
    "llama": 2 * V * H + L * BLOCK["llama"] + H,  # embeddings + untied head + blocks + norm
    "gemma": V * H + L * BLOCK["gemma"] + H,
    "gpt2": V * H + 128 * H + L * BLOCK["gpt2"] + 2 * H,  # + 128 learned positions, ln_f
    # shared embeddings, blocks, relative-position buckets (8 x heads) per stack, final norms
    "t5": V * H + L * (BLOCK["t5_encoder"] + BLOCK["t5_decoder"]) + 2 * 8 * HEADS + 2 * H,
    # shared embeddings, 128+2 positions and an embedding LayerNorm per stack, blocks
    "bart": V * H + 2 * (130 * H + 2 * H) + L * (BLOCK["bart_encoder"] + BLOCK["bart_decoder"]),
    # word, 128 position and 2 token-type embeddings + LN, blocks, pooler, head
    "bert": V * H + 128 * H + 2 * H + 2 * H + L * BLOCK["bert"] + (H * H + H) + HEAD,
}
TOP_BLOCK = {  # freeze layers=top:1: the last block of every stack
    "llama": BLOCK["llama"], "gemma": BLOCK["gemma"], "gpt2": BLOCK["gpt2"],
    "t5": BLOCK["t5_encoder"] + BLOCK["t5_decoder"],
    "bart": BLOCK["bart_encoder"] + BLOCK["bart_decoder"], "bert": BLOCK["bert"] + HEAD,
}
R = OPTIONS["lora"]["r"]
LORA = {  # r * (in + out) per adapted linear layer (peft all-linear: every linear but the head)
    "llama": L * R * (2 * (H + H) + 2 * (H + KV) + 3 * (H + F)),
    "gemma": L * R * (2 * (H + H) + 2 * (H + KV) + 3 * (H + F)),
    "gpt2": L * R * ((H + 3 * H) + (H + H) + 2 * (H + F)),
    "t5": L * R * (4 * 2 * H + 2 * (H + F)) + L * R * (8 * 2 * H + 2 * (H + F)),
    "bart": L * R * (4 * 2 * H + 2 * (H + F)) + L * R * (8 * 2 * H + 2 * (H + F)),
    "bert": L * R * (4 * 2 * H + 2 * (H + F)) + R * 2 * H + HEAD,  # + pooler.dense
}
IA3 = {  # out_features per scaled layer; in_features for feed-forward layers (peft's mapping)
    "llama": L * (KV + KV + F),  # k_proj, v_proj; down_proj
    "gemma": L * (H + KV + F),  # q_proj, v_proj; down_proj
    "gpt2": L * (3 * H + F),  # c_attn; mlp.c_proj
    "t5": L * (2 * H + F) + L * (4 * H + F),  # k, v (+ cross k, v in the decoder); wo
    "bart": L * (2 * H + F) + L * (4 * H + F),  # q_proj, v_proj (+ cross); fc2
    # key, value; "output.dense" matches both attention.output.dense (H) and output.dense (F)
    "bert": L * (2 * H + H + F) + HEAD,
}
BITFIT = {  # out_features of every linear layer in the blocks (added or existing biases)
    "llama": L * (H + 2 * KV + H + 2 * F + H),
    "gemma": L * (H + 2 * KV + H + 2 * F + H),
    "gpt2": L * (3 * H + H + F + H),
    "t5": L * (4 * H + F + H) + L * (8 * H + F + H),
    "bart": L * (4 * H + F + H) + L * (8 * H + F + H),
    "bert": L * (4 * H + F + H) + HEAD,
}
B = OPTIONS["adapter"]["bottleneck"]
PER_ADAPTER = 2 * H * B + B + H  # down (H*B + B) + up (B*H + H)
ADAPTERS = {"llama": 2 * L, "gemma": 2 * L, "gpt2": 2 * L, "t5": 2 * 2 * L, "bart": 2 * 2 * L,
            "bert": 2 * L}  # houlsby: after attention and feed-forward, in every stack
N = OPTIONS["prompt"]["num_virtual_tokens"]
SUBMODULES = {"t5": 2, "bart": 2}  # peft keeps virtual tokens for encoder and decoder
E = OPTIONS["prefix"]["encoder_hidden_size"]
TOKEN_DIM = {"llama": KV, "gemma": KV}  # prefix width: peft uses the key/value width (GQA)


def prefix_width(family: str) -> int:
    """Per virtual token: a key and a value vector for every layer."""
    return L * 2 * TOKEN_DIM.get(family, H)


def expected_trainable(method: str, family: str) -> int:
    head = HEAD if family == "bert" else 0
    if method == "full":
        return TOTAL[family]
    if method == "freeze":
        return TOP_BLOCK[family]
    if method == "lora":
        return LORA[family]
    if method == "ia3":
        return IA3[family]
    if method == "bitfit":
        return BITFIT[family]
    if method == "adapter":
        return ADAPTERS[family] * PER_ADAPTER + head
    if method == "prompt":
        return SUBMODULES.get(family, 1) * N * H + head
    # prefix with projection: embedding (N x T) -> Linear(T, E) -> tanh -> Linear(E, width)
    token_dim = TOKEN_DIM.get(family, H)
    return N * token_dim + (token_dim * E + E) + (E * prefix_width(family) + prefix_width(family)) + head


def is_method_parameter(method: str, name: str) -> bool:
    """Whether a trainable parameter's name belongs to the method (or the classifier head)."""
    if "classifier" in name:
        return True
    return {
        "full": lambda: True,
        "freeze": lambda: ".1." in name,  # block 1 = the top block of every 2-block stack
        "bitfit": lambda: name.endswith(".bias"),
        "lora": lambda: ".lora_" in name,
        "ia3": lambda: ".ia3_l" in name,
        "adapter": lambda: ".bottleneck_adapter." in name,
        "prompt": lambda: name.startswith("prompt_encoder."),
        "prefix": lambda: name.startswith("prompt_encoder."),
    }[method]()


# --- helpers ---------------------------------------------------------------------------------
@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Any:
    """Tiny matrices gain nothing from threads, and idle threads spin on busy cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


KINDS = {"causal": CAUSAL, "seq2seq": SEQ2SEQ, "classify": CLASSIFIER}


def kind(family: str) -> ModelKind:
    """The model kind of a family's model (tests/families.py `Family.kind`)."""
    return KINDS[FAMILIES[family].kind]


def apply(method: str, model: torch.nn.Module, family: str) -> torch.nn.Module:
    spec = get_method(method)
    return spec.apply(model, parse_options(spec, OPTIONS[method]), kind(family))


def perturb(model: torch.nn.Module, seed: int = 0) -> None:
    """Move the trainable weights off their initialisation, as training would."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                param.add_(0.1 * torch.randn(param.shape, generator=generator))


@torch.no_grad()
def logits(model: torch.nn.Module, family: str) -> torch.Tensor:
    return model.eval()(**sample_batch(family)).logits


@torch.no_grad()
def greedy(model: torch.nn.Module, family: str, steps: int) -> torch.Tensor:
    """Greedy decoding by full forward passes (no cache): the reference for `generate`."""
    batch = sample_batch(family)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    if FAMILIES[family].kind == "causal":
        for _ in range(steps):
            step = model(input_ids=ids, attention_mask=mask).logits[:, -1]
            ids = torch.cat([ids, step.argmax(-1, keepdim=True)], dim=1)
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        return ids
    decoded = torch.full((ids.shape[0], 1), model.config.decoder_start_token_id)
    for _ in range(steps):
        step = model(input_ids=ids, attention_mask=mask, decoder_input_ids=decoded).logits[:, -1]
        decoded = torch.cat([decoded, step.argmax(-1, keepdim=True)], dim=1)
    return decoded


# --- the matrix --------------------------------------------------------------------------------
@pytest.mark.parametrize("method,family", CELLS)
def test_only_method_parameters_train_count_matches_hand_calculation_and_init_is_identity(
        method: str, family: str) -> None:
    base = build(family)
    before = logits(base, family)
    model = apply(method, base, family)
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    strays = [name for name in trainable if not is_method_parameter(method, name)]
    assert not strays, f"{method} on {family} trains non-method parameters: {strays[:3]}"
    assert trainable_parameters(model).trainable == expected_trainable(method, family)
    if method in IDENTITY_AT_INIT:  # prompt and prefix add tokens: no identity to check
        after = logits(model, family)
        assert torch.allclose(after, before, atol=1e-6, rtol=0), (after - before).abs().max()


MERGEABLE = {"full": FAMILIES, "freeze": FAMILIES, "lora": FAMILIES, "ia3": FAMILIES,
             # added biases fold in only where the config can grow them (attention_bias,
             # mlp_bias: Llama); GPT-2, BART and BERT train biases they already have
             "bitfit": ("llama", "gpt2", "bart", "bert")}


@pytest.mark.parametrize("method,family", CELLS)
def test_merge_equals_unmerged_or_is_refused(method: str, family: str) -> None:
    model = apply(method, build(family), family)
    perturb(model)
    unmerged = logits(model, family)
    if family not in MERGEABLE.get(method, ()):
        with pytest.raises(TunelabError, match="cannot be merged|do not fit a plain"):
            merged_model(method, model)
        return
    # The perturbed method changes the output, so a merge that dropped it would be caught.
    assert not torch.allclose(unmerged, logits(build(family), family), atol=1e-5, rtol=0)
    merged = merged_model(method, model)
    assert type(merged) is type(build(family)), type(merged)  # a plain transformers model
    assert torch.allclose(logits(merged, family), unmerged, atol=1e-5, rtol=0)


@pytest.mark.parametrize("method,family", CELLS)
def test_a_few_optimizer_steps_lower_the_loss(method: str, family: str) -> None:
    torch.manual_seed(0)
    model = apply(method, build(family), family).eval()  # eval: no dropout noise in a 4-step check
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    batch = sample_batch(family)
    losses = []
    for _ in range(4):
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0], losses


@pytest.mark.parametrize("method,family", [c for c in CELLS if c[1] in GENERATIVE])
def test_generation_with_kv_cache_matches_uncached_and_greedy_loop(method: str, family: str) -> None:
    model = apply(method, build(family), family)
    perturb(model)
    model.eval()
    batch = sample_batch(family)
    settings = dict(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                    max_new_tokens=3, do_sample=False, eos_token_id=None, pad_token_id=0)
    with torch.no_grad():
        cached = model.generate(**settings, use_cache=True)
        uncached = model.generate(**settings, use_cache=False)
    reference = greedy(model, family, steps=3)
    assert torch.equal(cached, reference), (cached, reference)
    assert torch.equal(uncached, reference), (uncached, reference)


# --- save -> load in a fresh process -------------------------------------------------------
FRESH_PROCESS_CHECK = """
import json, sys, torch, transformers
sys.path.insert(0, sys.argv[2])
from families import sample_batch
from tunelab.methods import get_method
results = {}
for case in json.load(open(sys.argv[1])):
    try:
        base = getattr(transformers, case["cls"]).from_pretrained(case["base"])
        model = get_method(case["method"]).load(base, case["weights"]).eval()
        with torch.no_grad():
            got = model(**sample_batch(case["family"])).logits
    except Exception as err:  # one broken cell fails only its own test
        got = f"{type(err).__name__}: {err}"
    want = torch.load(case["expected"])
    results[case["method"] + "/" + case["family"]] = (
        got if isinstance(got, str) else f"shape {tuple(got.shape)}" if got.shape != want.shape
        else float((got - want).abs().max()))
print(json.dumps(results))
"""


@pytest.fixture(scope="module")
def saved_cells(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Every cell trained (perturbed), saved and reloaded by one fresh Python process.

    A cell that fails to build, save or reload is recorded under "failed" with its error and
    fails its own tests only; the other cells' results stand.
    """
    root = tmp_path_factory.mktemp("saved-methods")
    cases, weights, failed = [], {}, {}
    for family in FAMILIES:
        for method in OPTIONS:
            key = f"{method}/{family}"
            try:
                base = build(family)
                base_dir = root / family / "base"
                if not base_dir.exists():
                    base.save_pretrained(base_dir)
                model = apply(method, base, family)
                perturb(model)
                out = root / family / method
                get_method(method).save(model, out)
                torch.save(logits(model, family), root / family / f"{method}.pt")
            except Exception as err:
                failed[key] = f"building the cell failed: {type(err).__name__}: {err}"
                continue
            weights[key] = (out, trainable_parameters(model).trainable)
            cases.append({"method": method, "family": family, "cls": type(base).__name__,
                          "base": str(base_dir), "weights": str(out),
                          "expected": str(root / family / f"{method}.pt")})
    (root / "cases.json").write_text(json.dumps(cases))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", FRESH_PROCESS_CHECK, str(root / "cases.json"),
                           str(TESTS)], capture_output=True, text=True, env=env, timeout=600)
    diffs = json.loads(done.stdout.strip().splitlines()[-1]) if done.returncode == 0 else {}
    for case in cases:
        key = f"{case['method']}/{case['family']}"
        if key not in diffs:
            failed[key] = f"the reloading process failed: {done.stderr[-2000:]}"
    return {"diffs": diffs, "weights": weights, "failed": failed}


def saved_cell(saved_cells: dict[str, Any], part: str, method: str, family: str) -> Any:
    """One cell's entry of the saved_cells fixture; fails the test if that cell broke."""
    key = f"{method}/{family}"
    if key in saved_cells["failed"]:
        pytest.fail(f"{key}: {saved_cells['failed'][key]}")
    return saved_cells[part][key]


@pytest.mark.parametrize("method,family", CELLS)
def test_save_then_load_in_fresh_process_gives_identical_logits(
        method: str, family: str, saved_cells: dict[str, Any]) -> None:
    diff = saved_cell(saved_cells, "diffs", method, family)
    assert isinstance(diff, float) and diff <= 1e-6, diff


def saved_tensors(weights_dir: Path) -> dict[str, tuple[int, ...]]:
    shapes = {}
    for path in weights_dir.glob("*.safetensors"):
        with safe_open(str(path), "pt") as handle:
            shapes.update({key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys()})
    return shapes


def numel(shape: tuple[int, ...]) -> int:
    return int(torch.Size(shape).numel())


@pytest.mark.parametrize("method,family", CELLS)
def test_saved_files_hold_only_the_trained_weights(
        method: str, family: str, saved_cells: dict[str, Any]) -> None:
    weights_dir, trainable = saved_cell(saved_cells, "weights", method, family)
    shapes = saved_tensors(weights_dir)
    saved = sum(numel(shape) for shape in shapes.values())
    if method == "prefix":  # peft saves the projected prefixes, not the projection MLP
        assert list(shapes) == ["prompt_embeddings"] or family == "bert", list(shapes)
        assert shapes["prompt_embeddings"] == (N, prefix_width(family))
        assert saved == N * prefix_width(family) + (HEAD if family == "bert" else 0)
    else:  # a full model also saves persistent buffers: BART's final_logits_bias [1, V]
        buffers = V if (method, family) == ("full", "bart") else 0
        assert saved == trainable + buffers, (saved, trainable, list(shapes)[:5])
    if method in PEFT_FORMAT:
        config = json.loads((weights_dir / "adapter_config.json").read_text())
        assert config["peft_type"] == {"lora": "LORA", "ia3": "IA3", "prompt": "PROMPT_TUNING",
                                       "prefix": "PREFIX_TUNING"}[method]


# --- end to end through tunelab.train ------------------------------------------------------
E2E_OPTIONS = {**OPTIONS, "freeze": {"layers": "top:1", "modules": ["lm_head"]},
               "prompt": {"num_virtual_tokens": 4, "init": "text", "init_text": "Classify the sentiment"},
               "prefix": {"num_virtual_tokens": 4}}
E2E_METHODS = [name for name in OPTIONS if name != "full"]  # full: tests/test_train.py


@pytest.mark.parametrize("method", E2E_METHODS)
def test_train_evaluate_and_merge_a_run(method: str, tiny_llama: Path, tmp_path: Path) -> None:
    config = tiny_run_config(tiny_llama, tmp_path, name=method, max_steps=3, eval_every=0,
                             method={"name": method, **E2E_OPTIONS[method]})
    result = tunelab.train(config)  # (lower loss is checked on a fixed batch in the matrix)
    assert result.summary["steps"] == 3 and result.summary["best_val_loss"] is not None
    assert result.evaluation is not None and "perplexity" in result.evaluation.scores
    ids = torch.tensor([[5, 6, 7, 8]])
    lm = scoring_run_model(result.run_dir)  # merged where the method merges
    with torch.no_grad():
        generated = lm.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                                      max_new_tokens=3, do_sample=False, eos_token_id=None)
    assert generated.shape == (1, 4 + 3)
    if method in ("adapter", "prompt", "prefix"):
        with pytest.raises(TunelabError, match="cannot be merged"):
            merge_run(result.run_dir, tmp_path / "merged")
        return

    merged = AutoModelForCausalLM.from_pretrained(merge_run(result.run_dir, tmp_path / "merged"))
    with torch.no_grad():
        unmerged = load_run_model(result.run_dir).model(ids).logits
        assert torch.allclose(merged(ids).logits, unmerged, atol=1e-5, rtol=0)
        assert torch.equal(merged(ids).logits, lm.model(ids).logits)
        # The training is in the merged weights: the base model computes something else.
        base = AutoModelForCausalLM.from_pretrained(tiny_llama)
        assert not torch.allclose(base(ids).logits, unmerged, atol=1e-5, rtol=0)


# --- each method's own options and errors --------------------------------------------------
def test_freeze_module_patterns_and_layer_specs() -> None:
    model = apply_with("freeze", build("llama"), modules=["*.mlp.*", "lm_head"])
    assert trainable_parameters(model).trainable == L * 3 * H * F + V * H  # MLPs + untied head
    for layers in ("bottom:1", "0-0", [0], "-2"):
        model = apply_with("freeze", build("llama"), layers=layers)
        trained = {n for n, p in model.named_parameters() if p.requires_grad}
        assert trained and all(".layers.0." in n for n in trained), (layers, trained)


@pytest.mark.parametrize("options,message", [
    ({"modules": ["*.nope.*"]}, r"method \(freeze\)\.modules: '\*\.nope\.\*' matches no module"),
    ({"layers": "2-3"}, r"method \(freeze\)\.layers: .* does not exist; the model has 2 blocks"),
    ({"layers": "middle"}, r"method \(freeze\)\.layers: cannot read 'middle'"),
    ({}, r"method \(freeze\): nothing to train"),
])
def test_freeze_errors_name_the_option(options: dict[str, Any], message: str) -> None:
    with pytest.raises(TunelabError, match=message):
        apply_with("freeze", build("llama"), **options)


@pytest.mark.parametrize("method,options,message", [
    ("lora", {"r": 0}, "method (lora).r 0: must be a whole number >= 1; e.g. 8"),
    ("lora", {"r": None}, "method (lora).r: null is no value for it; leave it out for its default"),
    ("lora", {"alpha": -2}, "method (lora).alpha -2: must be a number > 0; e.g. 16"),
    ("lora", {"dropout": 1.5}, "method (lora).dropout 1.5: must be a number >= 0 and < 1"),
    ("adapter", {"kind": "weird"}, "method (adapter).kind 'weird': use one of houlsby, pfeiffer"),
    ("adapter", {"nonlinearity": "tanh"}, "method (adapter).nonlinearity 'tanh': use one of relu"),
    ("adapter", {"bottleneck": 0}, "method (adapter).bottleneck 0: must be a whole number >= 1"),
    ("prompt", {"init": "txt"}, "method (prompt).init 'txt': use one of random, text"),
    ("prompt", {"num_virtual_tokens": 0}, "method (prompt).num_virtual_tokens 0: must be"),
    ("prefix", {"num_virtual_tokens": -1}, "method (prefix).num_virtual_tokens -1: must be"),
])
def test_method_option_values_are_checked_before_any_model(
        tmp_path: Path, capsys, method: str, options: dict[str, Any], message: str) -> None:
    """A value out of its range stops `tunelab train` as the config is read: one line, exit
    2, no model loaded (the config names a model that does not exist) and nothing written."""
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({
        "name": "run", "output_dir": str(tmp_path / "runs"), "model": {"name": "no/such-model"},
        "data": {"source": str(DATA / "reviews.jsonl"), "fields": {"input": "text", "output": "label"},
                 "template": "chat", "packing": False},
        "method": {"name": method, **options}, "eval": {"metrics": ["accuracy"],
                                                        "labels": ["positive", "negative"]}}))
    assert main(["train", str(config)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"tunelab: error: {message}") and "\n" not in err, err
    assert not (tmp_path / "runs").exists()


def test_bitfit_adds_biases_only_where_missing_and_merged_model_reloads(tmp_path: Path) -> None:
    gpt2 = apply("bitfit", build("gpt2"), "gpt2")
    assert added_biases(gpt2) == []  # GPT-2 trains its own biases
    llama = apply("bitfit", build("llama"), "llama")
    assert len(added_biases(llama)) == L * 7
    perturb(llama)
    expected = logits(llama, "llama")
    merged_model("bitfit", llama).save_pretrained(tmp_path)

    reloaded = LlamaForCausalLM.from_pretrained(tmp_path)
    assert reloaded.config.attention_bias and reloaded.config.mlp_bias
    assert torch.allclose(logits(reloaded, "llama"), expected, atol=1e-6, rtol=0)


def test_adapter_pfeiffer_and_options() -> None:
    model = apply_with("adapter", build("llama"), kind="pfeiffer", bottleneck=4, nonlinearity="gelu")
    assert trainable_parameters(model).trainable == L * PER_ADAPTER  # after the MLP only
    assert isinstance(model.model.layers[0].mlp.bottleneck_adapter.act, torch.nn.GELU)
    with pytest.raises(TunelabError, match=r"method \(adapter\)\.kind 'serial': use one of houlsby, pfeiffer"):
        apply_with("adapter", build("llama"), kind="serial")
    with pytest.raises(TunelabError, match=r"method \(adapter\) sublayers: 'nope' matches no"):
        apply_with("adapter", build("llama"), feedforward_modules=["nope"])


def test_prompt_text_init_uses_the_texts_token_embeddings(tiny_llama: Path) -> None:
    base = AutoModelForCausalLM.from_pretrained(tiny_llama)
    embeddings = base.get_input_embeddings().weight.detach().clone()
    model = apply_with("prompt", base, num_virtual_tokens=4, init="text", init_text="positive review")
    ids = AutoTokenizer.from_pretrained(tiny_llama)("positive review")["input_ids"]
    ids = (ids * 4)[:4]  # peft repeats the text's tokens up to the prompt length
    prompt = model.prompt_encoder["default"].embedding.weight
    assert torch.equal(prompt.detach(), embeddings[ids])
    with pytest.raises(TunelabError, match=r"method \(prompt\)\.init_text"):
        apply_with("prompt", build("llama"), init="text")


def test_prompt_logits_are_longer_and_input_logits_aligns_them() -> None:
    model = apply("prompt", build("llama"), "llama")
    out = logits(model, "llama")
    assert out.shape[1] == 7 + N
    assert input_logits(out, 7).shape[1] == 7


def test_ia3_feedforward_must_be_a_target() -> None:
    with pytest.raises(TunelabError, match=r"method \(ia3\)\.feedforward_modules"):
        apply_with("ia3", build("llama"), target_modules=["k_proj"], feedforward_modules=["down_proj"])


def apply_with(method: str, model: torch.nn.Module, **options: Any) -> torch.nn.Module:
    """The method with `options` on a causal LM (the Llama family)."""
    spec = get_method(method)
    return spec.apply(model, parse_options(spec, options), CAUSAL)


def test_a_saved_adapter_lists_its_target_modules_sorted(tmp_path: Path) -> None:
    """peft writes its set of targets in the process's hash order (two saves of one adapter
    differed); tunelab writes them sorted, and the adapter loads back the same."""
    targets = ["v_proj", "q_proj", "o_proj", "k_proj", "up_proj", "gate_proj", "down_proj"]
    model = apply_with("lora", build("llama"), target_modules=targets).eval()
    torch.manual_seed(0)
    with torch.no_grad():  # an adapter that moves the logits (B starts at zero)
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.5)
    get_method("lora").save(model, tmp_path / "adapter")
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert config["target_modules"] == sorted(targets)
    loaded = get_method("lora").load(build("llama"), tmp_path / "adapter").eval()
    assert torch.equal(logits(loaded, "llama"), logits(model, "llama"))
    assert not torch.allclose(logits(loaded, "llama"), logits(build("llama"), "llama"))

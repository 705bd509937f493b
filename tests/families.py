"""Tiny random models of each architecture family, built from config in-process (no downloads).

Every family shares the same small shapes so the hand calculations in test_methods.py read alike:
vocabulary 128, hidden size 16, feed-forward size 32, 2 blocks (per stack), 2 attention heads of
size 8. Llama and Gemma use one key/value head (grouped-query attention), so k/v width is 8.
GPT-2, Gemma, T5 and BART tie the LM head to the embeddings; Llama here does not.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

VOCAB, HIDDEN, FFN, LAYERS, HEADS, HEAD_DIM = 128, 16, 32, 2, 2, 8
KV_HEADS = 1


@dataclass(frozen=True)
class Family:
    name: str
    kind: str
    """causal, seq2seq or classify (a sequence-classification head, 2 labels)."""
    build: Callable[..., torch.nn.Module]
    """The model from its config; keyword arguments override the config's fields."""


def llama() -> torch.nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    return LlamaForCausalLM(LlamaConfig(
        vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=FFN, num_hidden_layers=LAYERS,
        num_attention_heads=HEADS, num_key_value_heads=KV_HEADS, max_position_embeddings=128,
        pad_token_id=0, bos_token_id=1, eos_token_id=2, tie_word_embeddings=False))


def gpt2() -> torch.nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel

    return GPT2LMHeadModel(GPT2Config(
        vocab_size=VOCAB, n_embd=HIDDEN, n_inner=FFN, n_layer=LAYERS, n_head=HEADS, n_positions=128,
        pad_token_id=0, bos_token_id=1, eos_token_id=2))


def gemma() -> torch.nn.Module:
    from transformers import GemmaConfig, GemmaForCausalLM

    return GemmaForCausalLM(GemmaConfig(
        vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=FFN, num_hidden_layers=LAYERS,
        num_attention_heads=HEADS, num_key_value_heads=KV_HEADS, head_dim=HEAD_DIM,
        max_position_embeddings=128, pad_token_id=0, bos_token_id=1, eos_token_id=2))


def t5(**overrides: object) -> torch.nn.Module:
    from transformers import T5Config, T5ForConditionalGeneration

    return T5ForConditionalGeneration(T5Config(**{
        "vocab_size": VOCAB, "d_model": HIDDEN, "d_kv": HEAD_DIM, "d_ff": FFN,
        "num_layers": LAYERS, "num_decoder_layers": LAYERS, "num_heads": HEADS,
        "relative_attention_num_buckets": 8, "pad_token_id": 0, "eos_token_id": 2,
        "decoder_start_token_id": 0, **overrides}))


def bart(**overrides: object) -> torch.nn.Module:
    from transformers import BartConfig, BartForConditionalGeneration

    return BartForConditionalGeneration(BartConfig(**{
        "vocab_size": VOCAB, "d_model": HIDDEN, "encoder_layers": LAYERS,
        "decoder_layers": LAYERS, "encoder_attention_heads": HEADS,
        "decoder_attention_heads": HEADS, "encoder_ffn_dim": FFN, "decoder_ffn_dim": FFN,
        "max_position_embeddings": 128, "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2,
        "decoder_start_token_id": 2, "forced_eos_token_id": None, **overrides}))


def bert() -> torch.nn.Module:
    from transformers import BertConfig, BertForSequenceClassification

    return BertForSequenceClassification(BertConfig(
        vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=FFN, num_hidden_layers=LAYERS,
        num_attention_heads=HEADS, max_position_embeddings=128, num_labels=2, pad_token_id=0))


FAMILIES = {f.name: f for f in (
    Family("llama", "causal", llama),
    Family("gpt2", "causal", gpt2),
    Family("gemma", "causal", gemma),
    Family("t5", "seq2seq", t5),
    Family("bart", "seq2seq", bart),
    Family("bert", "classify", bert),
)}


def build(name: str, seed: int = 0, **overrides: object) -> torch.nn.Module:
    """A family's tiny model with seeded random weights, in eval mode (no dropout);
    `overrides` replace its config's fields (t5 and bart)."""
    torch.manual_seed(seed)
    model = FAMILIES[name].build(**overrides)
    return model.eval()


def sample_batch(name: str, seed: int = 1) -> dict[str, torch.Tensor]:
    """A fixed batch of 2 sequences (length 7) with labels suited to the family."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, VOCAB, (2, 7), generator=generator)
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    kind = FAMILIES[name].kind
    if kind == "causal":
        batch["labels"] = ids.clone()
    elif kind == "seq2seq":
        batch["labels"] = torch.randint(3, VOCAB, (2, 5), generator=generator)
    else:
        batch["labels"] = torch.tensor([0, 1])
    return batch

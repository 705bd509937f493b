"""A fine-tune as one GGUF file that llama.cpp (and Ollama) load: weights, tokenizer and chat
template inside.

The file is written with the `gguf` library (llama.cpp's own Python package: its writer, its
HF -> GGUF tensor names, its tokenizer keys); the integer quantisations are then made by
llama.cpp's quantiser (`llama_model_quantize` through llama-cpp-python) from a 32-bit file, as
`llama-quantize` does. An architecture is an object (`GgufArchitecture`) that knows its GGUF
name, its hyperparameter keys and how a tensor is laid out for llama.cpp (Llama's query and
key rows are permuted from the HF rotary layout back to the interleaved one).

The tokenizer's pre-tokenizer (the regex that splits text before BPE) has no HF field that
llama.cpp reads, so it is found, not guessed: each llama.cpp pre-tokenizer is tried on a
vocab-only file, and the first whose token ids equal the HF tokenizer's on probe texts (the
run's own prompts, digits, spaces, unicode) is written. None matching is a one-line error:
a served model that splits text differently from the trained one is not exported.
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import gguf
import numpy as np

from tunelab.core.deferred import torch
from tunelab.core.errors import TunelabError

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

PRE_TOKENIZERS = ("gpt-2", "smollm", "llama-bpe", "qwen2", "default")
"""llama.cpp's pre-tokenizers tried, in order, for a byte-level BPE tokenizer."""
PROBE_TEXTS = (
    "Hello world! It's 2026-12-06, isn't it? 3333333 apples cost $1,234.56 (or 7%).",
    "  two  spaces,\ttab,\nnew line\n\n  indented; éàü naïve café 東京 🙂 -- end",
    "don't I'll we've they're SHE'S 12 345 6789 x=y+z*2",
)


@dataclass(frozen=True)
class Quant:
    """One GGUF weight type: the name users pass to --quant and llama.cpp's file type."""

    name: str
    file_type: gguf.LlamaFileType
    written: bool
    """Written directly by the gguf writer (f32, f16, bf16); else made by llama.cpp's
    quantiser from a 32-bit file."""

    @property
    def label(self) -> str:
        return f"gguf {self.name}"


QUANTS: dict[str, Quant] = {q.name: q for q in (
    Quant("f32", gguf.LlamaFileType.ALL_F32, True),
    Quant("f16", gguf.LlamaFileType.MOSTLY_F16, True),
    Quant("bf16", gguf.LlamaFileType.MOSTLY_BF16, True),
    *(Quant(name, gguf.LlamaFileType[f"MOSTLY_{name.upper()}"], False)
      for name in ("q8_0", "q6_k", "q5_k_m", "q5_0", "q4_k_m", "q4_0")),
)}


def get_quant(name: str) -> Quant:
    try:
        return QUANTS[name.lower()]
    except KeyError:
        raise TunelabError(f"--quant {name}: not a GGUF type tunelab writes; choose one of "
                           f"{', '.join(QUANTS)}") from None


@dataclass(frozen=True)
class GgufArchitecture:
    """How one transformers architecture becomes llama.cpp's."""

    arch: gguf.MODEL_ARCH
    permute_qk: bool
    """Query/key rows go from HF's rotate-half layout to llama.cpp's interleaved one."""

    @property
    def name(self) -> str:
        return gguf.MODEL_ARCH_NAMES[self.arch]

    def write_parameters(self, writer: gguf.GGUFWriter, config: object) -> None:
        """The hyperparameter keys llama.cpp reads for this architecture."""
        get = config.__getattribute__
        heads, hidden = int(get("num_attention_heads")), int(get("hidden_size"))
        kv_heads = int(getattr(config, "num_key_value_heads", None) or heads)
        head_dim = int(getattr(config, "head_dim", None) or hidden // heads)
        rope = dict(getattr(config, "rope_parameters", None) or {})
        if rope.get("rope_type", "default") != "default":
            raise TunelabError(f"--format gguf: rope scaling '{rope.get('rope_type')}' is not "
                               "exported by tunelab; export --format hf and convert it with "
                               "llama.cpp's convert_hf_to_gguf.py")
        writer.add_context_length(int(get("max_position_embeddings")))
        writer.add_embedding_length(hidden)
        writer.add_block_count(int(get("num_hidden_layers")))
        writer.add_feed_forward_length(int(get("intermediate_size")))
        writer.add_head_count(heads)
        writer.add_head_count_kv(kv_heads)
        writer.add_rope_dimension_count(head_dim)
        writer.add_rope_freq_base(float(rope.get("rope_theta", 10000.0)))
        writer.add_layer_norm_rms_eps(float(get("rms_norm_eps")))
        writer.add_vocab_size(int(get("vocab_size")))
        if head_dim != hidden // heads:
            writer.add_key_length(head_dim)
            writer.add_value_length(head_dim)

    def tensor(self, name: str, data: torch.Tensor, config: object) -> torch.Tensor:
        """The tensor as llama.cpp lays it out."""
        if not self.permute_qk or not name.endswith(("q_proj.weight", "k_proj.weight")):
            return data
        heads = int(config.__getattribute__("num_attention_heads"))
        if name.endswith("k_proj.weight"):
            heads = int(getattr(config, "num_key_value_heads", None) or heads)
        return (data.reshape(heads, 2, data.shape[0] // heads // 2, *data.shape[1:])
                .swapaxes(1, 2).reshape(data.shape))


ARCHITECTURES: dict[str, GgufArchitecture] = {
    "LlamaForCausalLM": GgufArchitecture(gguf.MODEL_ARCH.LLAMA, permute_qk=True),
    "MistralForCausalLM": GgufArchitecture(gguf.MODEL_ARCH.LLAMA, permute_qk=True),
    "Qwen2ForCausalLM": GgufArchitecture(gguf.MODEL_ARCH.QWEN2, permute_qk=False),
}


def architecture_of(model: torch.nn.Module) -> GgufArchitecture:
    name = type(model).__name__
    if name not in ARCHITECTURES:
        raise TunelabError(f"--format gguf: tunelab writes GGUF for {', '.join(ARCHITECTURES)}, "
                           f"not {name}; export --format hf (transformers and vLLM serve it) or "
                           "convert that folder with llama.cpp's convert_hf_to_gguf.py")
    return ARCHITECTURES[name]


def write_gguf(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, path: Path,
               quant: Quant, name: str, probes: Sequence[str] = ()) -> tuple[Path, str]:
    """Write `model` (plain transformers weights: a merged fine-tune) + `tokenizer` as a GGUF
    file of type `quant` at `path` (atomically: a temporary file, then a rename). Returns the
    path and llama.cpp's quantiser's note on tensors it could not give that type ("" if none).

    Args:
        probes: texts whose tokenisation llama.cpp must reproduce (the run's prompts); the
            built-in probe texts are always added.
    """
    architecture = architecture_of(model)
    vocab = GgufVocab.of(tokenizer, int(model.config.vocab_size))
    vocab.pre = find_pre_tokenizer(vocab, architecture, model.config, [*PROBE_TEXTS, *probes],
                                   tokenizer)
    with tempfile.TemporaryDirectory(prefix=".gguf-", dir=path.parent) as scratch:
        first = Path(scratch) / "model.gguf"
        written = quant if quant.written else QUANTS["f32"]
        _write(model, vocab, architecture, first, written, name)
        final, note = first, ""
        if not quant.written:
            final = Path(scratch) / f"model-{quant.name}.gguf"
            note = quantize(first, final, quant)
        os.replace(final, path)
    return path, note


def _write(model: PreTrainedModel, vocab: GgufVocab, architecture: GgufArchitecture,
           path: Path, quant: Quant, name: str) -> None:
    writer = gguf.GGUFWriter(str(path), architecture.name)
    writer.add_name(name)
    writer.add_file_type(int(quant.file_type))
    architecture.write_parameters(writer, model.config)
    vocab.write(writer)
    names = gguf.get_tensor_name_map(architecture.arch, int(model.config.num_hidden_layers))
    tied = bool(getattr(model.config, "tie_word_embeddings", False))
    for key, value in model.state_dict().items():
        if key == "lm_head.weight" and tied:
            continue  # llama.cpp reads the token embeddings as the output layer
        gguf_name = names.get_name(key, try_suffixes=(".weight", ".bias"))
        if gguf_name is None:
            raise TunelabError(f"--format gguf: no llama.cpp tensor for '{key}' of "
                               f"{type(model).__name__}; export --format hf instead")
        data = architecture.tensor(key, value.detach().float().cpu(), model.config).numpy()
        _add_tensor(writer, gguf_name, data, quant)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _add_tensor(writer: gguf.GGUFWriter, name: str, data: np.ndarray, quant: Quant) -> None:
    """Norms and other 1-D tensors stay 32-bit (as llama.cpp's converter keeps them)."""
    if data.ndim == 1 or quant.name == "f32":
        writer.add_tensor(name, data.astype(np.float32))
    elif quant.name == "f16":
        writer.add_tensor(name, data.astype(np.float16))
    else:
        packed = gguf.quants.quantize(data, gguf.GGMLQuantizationType.BF16)
        writer.add_tensor(name, packed, raw_shape=packed.shape,
                          raw_dtype=gguf.GGMLQuantizationType.BF16)


def quantize(source: Path, target: Path, quant: Quant) -> str:
    """llama.cpp's quantiser (`llama-quantize`) from `source` into `target`. Its log is kept
    rather than printed: returns its note on the tensors it gave a fallback type (a row length
    not divisible by the type's block, e.g. 576 columns for q4_K), "" when there were none."""
    llama_cpp = import_llama_cpp("--quant " + quant.name)
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = int(quant.file_type)
    params.nthread = max(1, torch.get_num_threads())
    log: list[str] = []

    @llama_cpp.llama_log_callback
    def keep(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
        log.append(text.decode("utf-8", errors="replace"))

    llama_cpp.llama_log_set(keep, ctypes.c_void_p(0))
    try:
        status = llama_cpp.llama_model_quantize(str(source).encode(), str(target).encode(),
                                                ctypes.byref(params))
    finally:
        from llama_cpp import _logger  # llama-cpp-python's own log callback, put back

        llama_cpp.llama_log_set(_logger.llama_log_callback, ctypes.c_void_p(0))
    if status != 0:
        last = next((line.strip() for line in reversed(log) if line.strip()), "no message")
        raise TunelabError(f"--quant {quant.name}: llama.cpp's quantiser failed ({last[:200]}); "
                           "try --quant q8_0 or f16")
    return fallback_note("".join(log))


def fallback_note(log: str) -> str:
    """'180 of 272 tensors in q5_0, q8_0 (row length not a multiple of the q4_K block)' from
    llama.cpp's quantiser log; "" when no tensor fell back."""
    counted = re.search(r"(\d+) of (\d+) tensor\(s\) required fallback quantization", log)
    if counted is None:
        return ""
    wanted = sorted(set(re.findall(r"required for type\s+(\w+)\)", log)))
    used = sorted(set(re.findall(r"falling back to\s+(\w+)", log)))
    return (f"{counted[1]} of {counted[2]} tensors fell back to {', '.join(used) or 'another type'} "
            f"(their rows do not divide into {', '.join(wanted) or 'the type'}'s blocks)")


def import_llama_cpp(why: str) -> ModuleType:
    """llama-cpp-python, or a one-line error saying how to install it."""
    try:
        import llama_cpp
    except ImportError:
        raise TunelabError(f"{why}: needs llama-cpp-python (llama.cpp); install it with "
                           "pip install -c constraints.txt 'tunelab[serve]' (it builds "
                           "llama.cpp from source: several minutes)") from None
    return llama_cpp


@dataclass
class GgufVocab:
    """A byte-level BPE tokenizer as llama.cpp's `gpt2` tokenizer keys."""

    tokens: list[str]
    types: list[int]
    merges: list[str]
    bos: int | None
    eos: int | None
    pad: int | None
    add_bos: bool
    chat_template: str | None
    pre: str = "default"

    @classmethod
    def of(cls, tokenizer: PreTrainedTokenizerBase, vocab_size: int) -> GgufVocab:
        backend = getattr(tokenizer, "backend_tokenizer", None)
        spec = json.loads(backend.to_str()) if backend is not None else {}
        model = spec.get("model", {})
        decoder = spec.get("decoder") or {}
        if model.get("type") != "BPE" or decoder.get("type") != "ByteLevel":
            raise TunelabError("--format gguf: tunelab writes byte-level BPE tokenizers (GPT-2, "
                               "Llama 3, SmolLM, Qwen style); this one is "
                               f"{model.get('type', 'unknown')}; export --format hf instead")
        by_id = {i: t for t, i in tokenizer.get_vocab().items()}
        added = tokenizer.added_tokens_decoder
        tokens, types = [], []
        for i in range(max(vocab_size, len(by_id))):
            if i not in by_id:
                tokens.append(f"[PAD{i}]")
                types.append(gguf.TokenType.USER_DEFINED)
            elif i in added:
                tokens.append(by_id[i])
                types.append(gguf.TokenType.CONTROL if added[i].special
                             else gguf.TokenType.USER_DEFINED)
            else:
                tokens.append(by_id[i])
                types.append(gguf.TokenType.NORMAL)
        merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
        first = tokenizer("a").input_ids
        bos = tokenizer.bos_token_id
        return cls(tokens, [int(t) for t in types], merges, bos, tokenizer.eos_token_id,
                   tokenizer.pad_token_id, bool(first) and bos is not None and first[0] == bos,
                   getattr(tokenizer, "chat_template", None))

    def write(self, writer: gguf.GGUFWriter) -> None:
        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre(self.pre)
        writer.add_token_list(self.tokens)
        writer.add_token_types(self.types)
        writer.add_token_merges(self.merges)
        for value, add in ((self.bos, writer.add_bos_token_id), (self.eos, writer.add_eos_token_id),
                           (self.pad, writer.add_pad_token_id)):
            if value is not None:
                add(value)
        writer.add_add_bos_token(self.add_bos)
        writer.add_add_eos_token(False)
        if self.chat_template:
            writer.add_chat_template(self.chat_template)


def find_pre_tokenizer(vocab: GgufVocab, architecture: GgufArchitecture, config: object,
                       texts: Sequence[str], tokenizer: PreTrainedTokenizerBase) -> str:
    """The first llama.cpp pre-tokenizer whose token ids equal the HF tokenizer's on `texts`.

    Raises:
        TunelabError: none does (the first difference is named).
    """
    llama_cpp = import_llama_cpp("--format gguf")
    expected = [tokenizer(t, add_special_tokens=False).input_ids for t in texts]
    first_difference = ""
    with tempfile.TemporaryDirectory(prefix="tunelab-vocab-") as scratch:
        for pre in PRE_TOKENIZERS:
            path = Path(scratch) / f"{pre}.gguf"
            vocab.pre = pre
            writer = gguf.GGUFWriter(str(path), architecture.name)
            architecture.write_parameters(writer, config)
            vocab.write(writer)
            writer.write_header_to_file()
            writer.write_kv_data_to_file()
            writer.write_tensors_to_file()
            writer.close()
            with llama_cpp._utils.suppress_stdout_stderr(disable=False):  # its note on a vocab file
                llm = llama_cpp.Llama(str(path), vocab_only=True, verbose=False)
            try:
                got = [llm.tokenize(t.encode("utf-8"), add_bos=False, special=True) for t in texts]
            finally:
                llm.close()
            if got == expected:
                return pre
            if not first_difference:
                at = next(i for i, (a, b) in enumerate(zip(got, expected, strict=True)) if a != b)
                first_difference = f"{texts[at][:60]!r}"
    raise TunelabError(f"--format gguf: no llama.cpp pre-tokenizer ({', '.join(PRE_TOKENIZERS)}) "
                       f"splits text as this tokenizer does (first difference on "
                       f"{first_difference}); export --format hf instead")

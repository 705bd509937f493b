"""The engines an exported fine-tune runs on: transformers (tunelab's own generation, an HF
folder), llama.cpp (a GGUF file, through llama-cpp-python) and vLLM (a GPU server with the
run's LoRA adapter). Each engine is an object that loads its artefact, generates greedily from
prompt texts as a server would (it tokenises the text itself), measures its decoding speed,
and starts its own OpenAI-compatible server (deploy/serve.py).
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from tqdm.auto import tqdm

from tunelab.config import GenerationConfig
from tunelab.core.errors import TunelabError
from tunelab.deploy.gguf_file import import_llama_cpp
from tunelab.eval.generation import cut_at_stop, generate
from tunelab.models import LoadedModel

SPEED_PROMPTS, SPEED_TOKENS = 4, 64
"""The decoding-speed probe: this many prompts, each continued by exactly this many tokens
(end of text banned), one prompt at a time."""


@dataclass
class Speed:
    tokens: int
    seconds: float
    writes: bool = True
    """False for a model that writes no text (a classifier's head): no decoding speed."""

    @property
    def tokens_per_s(self) -> float | None:
        if not self.writes:
            return None
        return self.tokens / self.seconds if self.seconds else 0.0


class Engine(ABC):
    """A loaded artefact that turns prompt texts into greedy completions."""

    name: ClassVar[str]

    @abstractmethod
    def generate(self, prompts: Sequence[str], gen: GenerationConfig, desc: str = "") -> list[str]:
        """Greedy completions of the prompt texts (stop strings cut, whitespace stripped), as
        tunelab's evaluation makes them."""

    @abstractmethod
    def speed(self, prompts: Sequence[str]) -> Speed:
        """Tokens per second decoding SPEED_TOKENS after each of the prompts, one at a time."""

    def close(self) -> None:  # noqa: B027  (an engine without native memory has nothing to free)
        """Free the engine's memory."""


class TransformersEngine(Engine):
    """A transformers model (tunelab's own generation: batched, left-padded)."""

    name: ClassVar[str] = "transformers"

    def __init__(self, lm: LoadedModel) -> None:
        self.lm = lm

    def _ids(self, prompt: str) -> list[int]:
        return list(self.lm.tokenizer(prompt, add_special_tokens=False).input_ids)

    def generate(self, prompts: Sequence[str], gen: GenerationConfig, desc: str = "") -> list[str]:
        return generate(self.lm.model, self.lm.tokenizer, [self._ids(p) for p in prompts], gen,
                        desc=desc or self.name)

    @torch.no_grad()
    def speed(self, prompts: Sequence[str]) -> Speed:
        if not self.lm.kind.has_lm_head:  # a classifier's head picks a label; it decodes nothing
            return Speed(0, 0.0, writes=False)
        run: Any = self.lm.model.generate  # Any: transformers' generate; nn.Module lacks it
        tokens, start = 0, time.perf_counter()
        for prompt in prompts[:SPEED_PROMPTS]:
            ids = torch.tensor([self._ids(prompt)], device=next(self.lm.model.parameters()).device)
            out = run(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                      max_new_tokens=SPEED_TOKENS, min_new_tokens=SPEED_TOKENS,
                      pad_token_id=self.lm.tokenizer.pad_token_id, temperature=None, top_p=None,
                      top_k=None)
            tokens += out.shape[1] - ids.shape[1]
        return Speed(tokens, time.perf_counter() - start)


class LlamaCppEngine(Engine):
    """A GGUF file under llama.cpp (llama-cpp-python), prompts one at a time."""

    name: ClassVar[str] = "llama.cpp"

    def __init__(self, path: Path, context: int = 0, threads: int | None = None) -> None:
        llama_cpp = import_llama_cpp("the llama.cpp engine")
        self.path = path
        threads = threads or max(1, torch.get_num_threads())
        try:
            self.llm = llama_cpp.Llama(str(path), n_ctx=context, n_threads=threads,
                                       n_threads_batch=threads, seed=0, verbose=False)
        except ValueError as err:
            raise TunelabError(f"{path}: llama.cpp cannot load it ({err}); the file is not a "
                               "GGUF model llama.cpp reads") from None

    def generate(self, prompts: Sequence[str], gen: GenerationConfig, desc: str = "") -> list[str]:
        if gen.do_sample:
            raise TunelabError("the llama.cpp check generates greedily; set "
                               "eval.generation.do_sample false")
        out = []
        for prompt in tqdm(prompts, desc=desc or self.name, unit="ex", leave=False):
            self.llm.reset()
            done = self.llm.create_completion(prompt, max_tokens=gen.max_new_tokens,
                                              temperature=0.0, top_k=1, stop=list(gen.stop) or None)
            out.append(cut_at_stop(done["choices"][0]["text"], gen.stop).strip())
        return out

    def speed(self, prompts: Sequence[str]) -> Speed:
        banned = {self.llm.token_eos(): float("-inf")}
        tokens, start = 0, time.perf_counter()
        for prompt in prompts[:SPEED_PROMPTS]:
            self.llm.reset()
            done = self.llm.create_completion(prompt, max_tokens=SPEED_TOKENS, temperature=0.0,
                                              top_k=1, logit_bias=banned)
            tokens += int(done["usage"]["completion_tokens"])
        return Speed(tokens, time.perf_counter() - start)

    def close(self) -> None:
        self.llm.close()

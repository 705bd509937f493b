"""The Ollama Modelfile written beside a GGUF export: the file, the run's generation settings
as PARAMETERs, and, for a ChatML chat template, the same template in Ollama's syntax with the
default system prompt the tokenizer's template adds (other templates are left to Ollama, which
reads the GGUF's own)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from tunelab.config import GenerationConfig

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

CHATML = ('{{ if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}'
          '{{ if .Prompt }}<|im_start|>user\n{{ .Prompt }}<|im_end|>\n{{ end }}'
          '<|im_start|>assistant\n')


def default_system(tokenizer: PreTrainedTokenizerBase) -> str | None:
    """The system turn a ChatML template adds when the messages have none."""
    rendered = str(tokenizer.apply_chat_template([{"role": "user", "content": "x"}],
                                                 tokenize=False, add_generation_prompt=True))
    start = "<|im_start|>system\n"
    if rendered.startswith(start) and "<|im_end|>" in rendered:
        return rendered[len(start):rendered.index("<|im_end|>")]
    return None


def write_modelfile(gguf_file: Path, tokenizer: PreTrainedTokenizerBase, gen: GenerationConfig,
                    note: str) -> Path:
    """`<gguf stem>.Modelfile` beside the GGUF file (`ollama create NAME -f` it)."""
    lines = [f"# {note}", f"FROM ./{gguf_file.name}"]
    template = getattr(tokenizer, "chat_template", None) or ""
    if "<|im_start|>" in template:
        lines.append(f'TEMPLATE """{CHATML}"""')
        if system := default_system(tokenizer):
            lines.append(f"SYSTEM {json.dumps(system)}")
    else:
        lines.append("# TEMPLATE: Ollama reads the chat template stored in the GGUF file")
    lines += [f"PARAMETER temperature {gen.temperature if gen.do_sample else 0}",
              f"PARAMETER num_predict {gen.max_new_tokens}"]
    if gen.do_sample:
        lines.append(f"PARAMETER top_p {gen.top_p}")
    stops = [*gen.stop, *([tokenizer.eos_token] if tokenizer.eos_token else [])]
    lines += [f"PARAMETER stop {json.dumps(stop)}" for stop in dict.fromkeys(stops)]
    path = gguf_file.with_suffix(".Modelfile")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path

"""Write the golden prompt/prefix-tuning cells that tests/test_peft_compat.py reloads.

Run with the last dependency set on which plain peft needed no workaround (transformers 5.23.0,
peft 0.21.2; transformers 5.24 renamed the cache argument):

    python tests/data/prompt_learning/make.py

Each cell is a tiny base model (tests/families.py), a perturbed peft adapter of it, and what
that set computed: the logits of the family's sample batch and the greedy tokens that
`generate` (with the KV cache) produced. The test reloads them on the installed set, so a
workaround has to reproduce what peft computed before the rename, not merely agree with itself.
"""

from __future__ import annotations

import json
import sys
from importlib.metadata import version
from pathlib import Path

import torch

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parent.parent))  # tests/, for families.py

from families import FAMILIES, build, sample_batch  # noqa: E402

CELLS = [("prompt", "llama"), ("prompt", "gpt2"), ("prompt", "t5"), ("prompt", "bert"),
         ("prefix", "llama"), ("prefix", "gpt2"), ("prefix", "bart"), ("prefix", "bert")]
NEW_TOKENS = 4


def peft_config(method: str, task_type: str):
    from peft import PrefixTuningConfig, PromptTuningConfig

    if method == "prompt":
        return PromptTuningConfig(task_type=task_type, num_virtual_tokens=3)
    return PrefixTuningConfig(task_type=task_type, num_virtual_tokens=3)


TASK_TYPE = {"causal": "CAUSAL_LM", "seq2seq": "SEQ_2_SEQ_LM", "classify": "SEQ_CLS"}


def main() -> None:
    from peft import get_peft_model

    expected = {"versions": {name: version(name) for name in ("torch", "transformers", "peft")},
                "new_tokens": NEW_TOKENS, "cells": {}}
    for method, family in CELLS:
        base = build(family)
        base_dir = HERE / family / "base"
        if not base_dir.exists():
            base.save_pretrained(base_dir)
        model = get_peft_model(base, peft_config(method, TASK_TYPE[FAMILIES[family].kind]))
        generator = torch.Generator().manual_seed(7)
        with torch.no_grad():  # move the prompt off its initialisation, as training would
            for param in model.parameters():
                if param.requires_grad:
                    param.add_(torch.randn(param.shape, generator=generator))
        model.eval()
        model.save_pretrained(HERE / family / method)
        (HERE / family / method / "README.md").unlink(missing_ok=True)  # peft's model card
        batch = sample_batch(family)
        cell: dict[str, object] = {}
        with torch.no_grad():
            cell["logits"] = model(**batch).logits.tolist()
            if FAMILIES[family].kind != "classify":
                cell["generated"] = model.generate(
                    input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                    max_new_tokens=NEW_TOKENS, do_sample=False, eos_token_id=None,
                    pad_token_id=0, use_cache=True).tolist()
        expected["cells"][f"{method}/{family}"] = cell
    (HERE / "expected.json").write_text(json.dumps(expected) + "\n")


if __name__ == "__main__":
    main()

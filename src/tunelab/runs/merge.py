"""Merge a run's trained weights into its base model and write a plain HF model directory,
loadable with `from_pretrained` alone (no tunelab, no peft); and the model to generate with for
a run of any method.

Generation is the same call for every method: `model.generate(..., use_cache=True)` works on the
model `load_run_model` returns (a plain model for full/freeze/bitfit/adapter, a PeftModel for
lora/ia3/prompt/prefix; tests/test_methods.py checks cached == uncached == a greedy loop for
every method and family). Evaluations score `RunDir.scoring_model`: the same merge where the
method can, so generation pays no per-token adapter cost.
"""

from __future__ import annotations

from pathlib import Path

from tunelab.core.deferred import torch, transformers
from tunelab.core.errors import TunelabError
from tunelab.methods import get_method
from tunelab.models import LoadedModel
from tunelab.runs.run_dir import RunDir, load_run_model, read_config


def merged_model(method_name: str, model: torch.nn.Module) -> torch.nn.Module:
    """The method's merge of `model`, checked to be a plain model of its architecture.

    Raises:
        TunelabError: the method cannot merge, or its merge holds weights that the plain
            architecture would not load (they would be silently dropped).
    """
    merged = get_method(method_name).merge(model)
    if merged is None:
        raise TunelabError(f"method '{method_name}' cannot be merged into the base weights (its "
                           "trained part is not a weight of the base model); run it from the "
                           "run directory instead: tunelab predict RUN --input FILE")
    extra, missing = state_dict_difference(merged)
    if extra or missing:
        raise TunelabError(f"method '{method_name}': the merged weights do not fit a plain "
                           f"{type(merged).__name__} (extra {extra[:3]}, missing {missing[:3]}); "
                           "use the run directory with its base model instead")
    return merged


def state_dict_difference(model: torch.nn.Module) -> tuple[list[str], list[str]]:
    """(names only the model has, names only a fresh model of its class and config has)."""
    config = getattr(model, "config", None)
    if config is None:
        return [], []
    with torch.device("meta"):
        plain = type(model)(config)
    ours, theirs = set(model.state_dict()), set(plain.state_dict())
    return sorted(ours - theirs), sorted(theirs - ours)


def check_out_dir(out_dir: Path) -> None:
    """--out must be new or empty: merge and export never overwrite."""
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise TunelabError(f"--out {out_dir}: exists and is not empty; choose a new directory "
                           "(nothing is overwritten)")


def merged_run_model(run_dir: str | Path) -> LoadedModel:
    """A run's model with its method merged into plain transformers weights, frozen, in eval
    mode, with the run's tokenizer: what `merge`, `export` and `serve` write or load.

    Raises:
        TunelabError: the run's method cannot merge (adapter, prompt, prefix).
    """
    method_name = read_config(Path(run_dir)).method["name"]
    lm = load_run_model(run_dir)
    model = merged_model(method_name, lm.model)
    if not isinstance(model, transformers.PreTrainedModel):
        raise TunelabError(f"method '{method_name}': the merged model is a {type(model).__name__}, "
                           "not a transformers model; it cannot be saved as a plain model "
                           "directory")
    for param in model.parameters():
        param.requires_grad_(False)
    lm.model = model.eval()
    tokenizer_dir = RunDir(Path(run_dir)).tokenizer
    if tokenizer_dir.is_dir():
        lm.tokenizer = transformers.AutoTokenizer.from_pretrained(str(tokenizer_dir))
    return lm


def merge_run(run_dir: str | Path, out_dir: str | Path) -> Path:
    """Save a run's merged model (`merged_run_model`) as a plain model directory (+ the run's
    tokenizer) in out_dir.

    Raises:
        TunelabError: the run's method cannot merge (adapter, prompt, prefix).
    """
    out_dir = Path(out_dir)
    check_out_dir(out_dir)
    lm = merged_run_model(run_dir)
    assert isinstance(lm.model, transformers.PreTrainedModel)  # merged_run_model checked it
    out_dir.mkdir(parents=True, exist_ok=True)
    lm.model.save_pretrained(str(out_dir))
    lm.tokenizer.save_pretrained(str(out_dir))
    return out_dir


"""Run directories: everything one run made, and loading a trained model back from one.

    RUN/config.yaml          the resolved config (rebuilds the run)
    RUN/train_log.jsonl      loss, lr, tokens/s, peak memory; validation loss
    RUN/checkpoints/last     resumable state (atomic); checkpoints/best: best trainable weights
    RUN/adapter | RUN/model  the trained weights (PEFT format, or a full HF model directory)
    RUN/summary.json         trainable parameters, size on disk, time, best validation loss
    RUN/eval/<system>/       metrics.json + predictions.jsonl per evaluated system
    RUN/report.md            the human-readable report
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from tunelab.config import RunConfig, from_dict, load_yaml, to_dict
from tunelab.core.errors import TunelabError
from tunelab.methods import get_method
from tunelab.models import LoadedModel, load_model


def write_config(config: RunConfig, run_dir: Path) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(to_dict(config), sort_keys=False))


def read_config(run_dir: Path) -> RunConfig:
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise TunelabError(f"{run_dir}: not a tunelab run directory (no config.yaml)")
    return from_dict(RunConfig, load_yaml(path), str(path), Path(path))


def load_run_model(run_dir: str | Path, base: str | None = None) -> LoadedModel:
    """The base model of a run with its trained weights applied, rebuilt as the run's
    model.kind (a classifier gets its head over the run's eval.labels back from the weights).

    Args:
        run_dir: a run directory written by `tunelab train`.
        base: override the base model spec (defaults to the one the run trained).
    """
    run_dir = Path(run_dir)
    config = read_config(run_dir)
    if base:
        config.model.name = base
    method = get_method(config.method["name"])
    weights = run_dir / method.weights_dir
    if not weights.exists():
        raise TunelabError(f"{run_dir}: no trained weights in {weights}; did training finish?")
    lm = load_model(config.model, labels=config.eval.labels)  # model.kind: causal/seq2seq/classifier
    try:
        lm.model = method.load(lm.model, weights)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise TunelabError(f"{weights}: a damaged file in the trained weights ({err}); train "
                           "the run again") from None
    except (RuntimeError, ValueError, KeyError, OSError, TypeError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise TunelabError(f"{weights}: cannot be applied to {config.model.name} ({first}); "
                           "the run was trained on another base model (pass that one with "
                           "--model) or its files are damaged") from None
    lm.model.eval()
    return lm

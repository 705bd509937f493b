"""The Python API of `tunelab merge`, `combine`, `predict`, `export` and `serve`: one
function per command, which the CLI calls."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from tunelab.config.choices import Range
from tunelab.core.deferred import deferred
from tunelab.deploy.verify import ExportCheck
from tunelab.runs.merge import merge_run

if TYPE_CHECKING:
    from tunelab.deploy import predict as predicting
    from tunelab.deploy import serve as serving
    from tunelab.workflows import combine as combining
    from tunelab.workflows import export as exporting
    from tunelab.workflows.combine import CombineResult
else:  # loaded by the command that uses them: `tunelab tasks list` needs none
    predicting = deferred("tunelab.deploy.predict")
    serving = deferred("tunelab.deploy.serve")
    combining = deferred("tunelab.workflows.combine")
    exporting = deferred("tunelab.workflows.export")


def merge(run_dir: str | Path, out_dir: str | Path) -> Path:
    """`tunelab merge RUN --out DIR`: the run's weights merged into a plain HF model directory."""
    return merge_run(run_dir, out_dir)


def combine(runs: Sequence[str | Path], how: str, out: str | Path,
            weights: Sequence[float] | None = None, density: float | None = None, seed: int = 0,
            limit: int | None = None) -> CombineResult:
    """`tunelab combine RUN_A RUN_B ... --how linear|ties|dare_ties|cat --out RUN`: per-task
    LoRA runs of one base combined into one adapter by peft's `add_weighted_adapter`, written
    as a run directory (its tasks: the runs' tasks) and scored on every task's test split
    against the run that trained on it, paired (see tunelab.workflows.combine).

    Args:
        weights: one per run (default 1.0 each).
        density: ties, dare_ties: the share of entries kept (default 0.2).
        seed: seeds DARE's random drops.
        limit: score at most this many test items per task (default: each run's eval.limit).
    """
    return combining.combine_runs(combining.CombineOptions([Path(r) for r in runs], how, Path(out),
                                       list(weights) if weights is not None else None, density,
                                       seed, limit))


def predict(run_dir: str | Path, input_file: str | Path, out_file: str | Path | None = None,
            limit: int | None = None, task: str | None = None) -> Path:
    """`tunelab predict RUN --input FILE [--out FILE] [--limit N]`: the run's predictions on
    new inputs (JSONL, CSV, Parquet; no answers needed), every row kept with `prediction` (and
    a classifier's `probabilities`) added; returns the written file (default
    `<input stem>.predictions<suffix>` beside the input). `task`: which task of a multi-task
    run (a mixture, a `tunelab combine` run) predicts."""
    return predicting.predict_file(run_dir, input_file, out_file, limit, task)


def export(run_dir: str | Path, format: str, out_dir: str | Path, quant: str | None = None,
           max_drop: float | None = None, limit: int | None = None) -> ExportCheck:
    """`tunelab export RUN --format hf|gguf [--quant f16,q8_0] --out DIR [--max-drop P]`: the
    merged fine-tune written for an engine and scored by it against the fine-tune (paired);
    raises ExportDropError (exit 1) when an artefact lost more than max_drop points."""
    Range(1, whole=True, fix="leave --limit out to check on every test item").check("--limit",
                                                                                   limit)
    return exporting.export_run(run_dir, format, out_dir, quant, max_drop, limit)


def serve(path: str | Path, engine: str | None = None, host: str = "127.0.0.1",
          port: int = 8000, quant: str | None = None) -> None:
    """`tunelab serve RUN|EXPORT [--engine llamacpp|transformers|vllm] [--quant q8_0]`: an
    OpenAI-compatible endpoint on an existing engine, with the run's chat template and
    generation defaults (`quant`: which GGUF file of the export)."""
    serving.serve(path, engine, host, port, quant)

"""`tunelab export RUN --format hf|gguf [--quant ...] --out DIR`: write the fine-tune in a
format an engine serves, and check it before calling it good.

Top to bottom: read the run and refuse what cannot work (one line each, nothing loaded or
written) -> the fine-tune's own test evaluation (the one the run wrote; scored now when the
run has none or --limit asks for fewer items) -> merge the method into the base weights ->
per format: write the artefact, load it with its serving engine, score it on the same items,
pair it with the fine-tune, measure size and speed -> export.json + export.md + each
artefact's predictions (verify/) -> the folder appears at --out in one rename -> exit 1 when
an artefact dropped more than --max-drop points.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from tunelab.config import RunConfig, TaskConfig
from tunelab.core.deferred import deferred, torch, transformers
from tunelab.core.errors import TunelabError
from tunelab.data.training_tasks import run_task
from tunelab.deploy.export_formats import ExportFormat, folder_size, get_formats
from tunelab.deploy.verify import ExportCheck, ExportDropError, FormatCheck, changed_predictions
from tunelab.eval.compare import paired_difference
from tunelab.eval.metrics import task_metrics
from tunelab.eval.runner import EvalResult, evaluate_loaded, read_result, write_result
from tunelab.models import LoadedModel
from tunelab.runs import RunDir, System
from tunelab.runs.merge import check_out_dir, merged_run_model

if TYPE_CHECKING:
    from tunelab.deploy import engines
else:  # it uses torch as it is imported
    engines = deferred("tunelab.deploy.engines")

EXPORT_JSON, EXPORT_MD, VERIFY = "export.json", "export.md", "verify"


def open_run(run_dir: str | Path) -> RunDir:
    run = RunDir(Path(run_dir))
    if not run.root.is_dir():
        raise TunelabError(f"{run_dir}: no such run directory; give a folder tunelab train wrote")
    if not run.config_file.is_file():
        raise TunelabError(f"{run_dir}: not a run directory (no {run.config_file.name}); give a "
                           "folder tunelab train wrote")
    return run


def export_run(run_dir: str | Path, format_name: str, out_dir: str | Path,
               quant: str | None = None, max_drop: float | None = None,
               limit: int | None = None) -> ExportCheck:
    """Export and check; see the module docstring. Returns the check (also in out_dir)."""
    run, out = open_run(run_dir), Path(out_dir)
    formats = get_formats(format_name, quant)
    config = run.read_config()
    task = run_task(config)
    for export_format in formats:
        export_format.check(config, task)
    check_out_dir(out)
    if max_drop is not None and max_drop < 0:
        raise TunelabError(f"--max-drop {max_drop}: give the points an artefact may lose (>= 0)")
    lm = merged_run_model(run.root)
    tuned = _tuned_result(run, lm, task, limit)
    key = compared_key(formats[0].scored_task(task), tuned)
    prompts = [str(row.get("prompt", "")) for row in tuned.predictions]
    check = ExportCheck(run.root.name, task.name, key, tuned.n, tuned.scores[key],
                        engines.TransformersEngine(lm).speed(prompts).tokens_per_s,
                        torch.get_num_threads(), max_drop=max_drop)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        for export_format in formats:
            check.formats.append(_export_one(export_format, lm, config, task, tuned, staging, key,
                                             prompts))
        (staging / EXPORT_JSON).write_text(json.dumps(
            {**check.to_json(), "run_dir": str(run.root.resolve()), "format": format_name,
             "generation": config.eval.generation.__dict__,
             "artefacts": {f.label: str(Path(f.artefact).relative_to(staging))
                           for f in check.formats}},
            indent=1, default=str), encoding="utf-8")
        (staging / EXPORT_MD).write_text(check.table() + "\n", encoding="utf-8")
        if out.exists():
            out.rmdir()  # empty: checked above
        os.replace(staging, out)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    for f in check.formats:
        f.artefact = str(out / Path(f.artefact).relative_to(staging))
    if failed := check.failed():
        raise ExportDropError(f"export check failed: {', '.join(f.label for f in failed)} lost "
                              f"more than --max-drop {max_drop:g} points of {key} against the "
                              f"fine-tune (report: {out / EXPORT_MD})", check)
    return check


def compared_key(task: TaskConfig, tuned: EvalResult) -> str:
    """eval.primary, else the first score of the first metric the check scores."""
    if task.eval.primary:
        return task.eval.primary
    name, metric = next(iter(task_metrics(task).items()))
    return next(iter(metric.aggregate(tuned.items[name])))


def _tuned_result(run: RunDir, lm: LoadedModel, task: TaskConfig, limit: int | None
                  ) -> EvalResult:
    """The fine-tune's test evaluation as the run wrote it; scored now (merged weights) when
    the run has none or --limit asks for a prefix of the items."""
    stored = run.eval_dir(System.tuned())
    if limit is None and stored.exists():
        return read_result(stored)
    return evaluate_loaded(lm, task, System.tuned(), limit=limit)


def _export_one(export_format: ExportFormat, lm: LoadedModel, config: RunConfig,
                task: TaskConfig, tuned: EvalResult, staging: Path, key: str,
                prompts: list[str]) -> FormatCheck:
    """Write one artefact, score it with its engine, pair it with the fine-tune."""
    assert isinstance(lm.model, transformers.PreTrainedModel)
    written = export_format.write(lm.model, lm.tokenizer, staging, config, prompts)
    engine = export_format.engine(written.path, config)
    try:
        result = export_format.score(engine, task, tuned)
        speed = engine.speed(prompts)
    finally:
        engine.close()
    write_result(result, staging / VERIFY / export_format.system.slug)
    difference = paired_difference(export_format.scored_task(task), tuned, result, key)
    check = FormatCheck.of(export_format.label, engine.name, str(written.path),
                           folder_size(written.path), difference,
                           changed_predictions(tuned, result), result.n, speed.tokens_per_s,
                           written.note)
    export_format.write_companions(
        written.path, lm.tokenizer, config,
        f"tunelab export of run {config.name} ({export_format.label}): {key} {check.score:.2f} "
        f"vs the fine-tune's {tuned.scores[key]:.2f} on {tuned.n} test items")
    return check

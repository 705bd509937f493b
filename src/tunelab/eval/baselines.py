"""The comparison users need: the base model zero- and few-shot against the fine-tuned model.

Every system is scored on the same items of the same split, in the same template; the base
model's in-context baselines differ only by the shots in front of each prompt. The fine-tune's
gain over the best baseline is tested with a paired bootstrap on those items.
"""

from __future__ import annotations

import gc
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunelab.config import ModelConfig, TaskConfig
from tunelab.errors import TunelabError
from tunelab.eval.metrics import get_metric
from tunelab.eval.runner import EvalResult, evaluate_loaded, metric_options, write_result
from tunelab.models import LoadedModel
from tunelab.report.tables import Comparison, compare, results_table, shown_keys

BASELINES = ("zero", "one", "few")


def baseline_shots(name: str, task: TaskConfig, shots: int | None) -> int:
    """Shots of a baseline: zero 0, one 1, few the task's few-shot k (or --shots), or a number."""
    name = name.strip()
    if name.isdigit():
        return int(name)
    if name not in BASELINES:
        raise TunelabError(f"--baselines {name}: use zero, one, few or a number of shots")
    return {"zero": 0, "one": 1}.get(name, shots if shots is not None else task.fewshot_k())


def load_for_task(task: TaskConfig, model: ModelConfig) -> LoadedModel:
    """The base model as the task's output type needs it (with a fresh head for classification)."""
    from tunelab.models import load_model

    if task.output_type == "classification":
        from tunelab.models.kinds import load_classifier

        labels = task.choices if isinstance(task.choices, list) else task.eval.labels or []
        return load_classifier(model, [str(label) for label in labels])
    return load_model(model)


def metric_for_key(task: TaskConfig, result: EvalResult, key: str) -> str:
    """The task metric that produces score `key`."""
    for name in task.eval.metrics:
        if key in get_metric(name, **metric_options(task, name)).aggregate(result.items[name]):
            return name
    raise TunelabError(f"eval.primary '{key}': not a score of this task; scores are "
                       f"{', '.join(result.scores)}")


@dataclass
class BaselineReport:
    task: str
    key: str
    """The score compared (eval.primary, else the first metric's first score)."""
    results: list[EvalResult]
    comparison: Comparison | None

    def table(self, keys: Sequence[str] | None = None, markdown: bool = False) -> str:
        keys = list(keys or dict.fromkeys([self.key, *shown_keys(self.results[-1].scores, 4)]))
        lines = [f"{self.task} (n={self.results[0].n}, 95% bootstrap CIs)",
                 results_table(self.results, keys, markdown)]
        if self.comparison:
            lines.append(self.comparison.sentence())
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        comparison = None
        if self.comparison:
            c = self.comparison
            comparison = {"candidate": c.candidate, "best_baseline": c.best_baseline, "key": c.key,
                          "gain": c.gain, "p_value": c.p_value, "significant": c.significant}
        return {"task": self.task, "key": self.key,
                "systems": [r.summary() for r in self.results], "comparison": comparison}


def run_baselines(
    task: TaskConfig,
    model: str | None = None,
    adapter: str | Path | None = None,
    baselines: Sequence[str] = ("zero", "few"),
    shots: int | None = None,
    limit: int | None = None,
    out_dir: str | Path | None = None,
) -> BaselineReport:
    """Base model with each baseline's shots, then the adapter run (zero-shot), then the test.

    Args:
        model: the base model (default: the adapter run's base, else the built-in model).
        adapter: a run directory; without it the last baseline is tested against the others.
        baselines: zero, one, few, or numbers of shots.
        shots: k of the `few` baseline (default: the task's fewshot.k).
        out_dir: writes SYSTEM/metrics.json + predictions.jsonl and comparison.json here.
    """
    from tunelab.runs import load_run_model, read_config

    if not baselines:
        raise TunelabError("--baselines: name at least one of zero, one, few")
    base = ModelConfig(name=model) if model else (
        read_config(Path(adapter)).model if adapter else ModelConfig())
    if model and adapter:
        base.num_layers = read_config(Path(adapter)).model.num_layers
    plan = [(f"base {k}-shot", k) for k in dict.fromkeys(baseline_shots(b, task, shots)
                                                           for b in baselines)]
    lm = load_for_task(task, base)
    results = [evaluate_loaded(lm, task, name, shots=k, limit=limit) for name, k in plan]
    del lm
    gc.collect()
    comparison = None
    if adapter:
        tuned = load_run_model(adapter, base=model)
        results.append(evaluate_loaded(tuned, task, f"fine-tuned ({Path(adapter).name})", shots=0,
                                       limit=limit))
        del tuned
        gc.collect()
    key = task.eval.primary or next(iter(results[0].scores))
    if len(results) > 1:
        name = metric_for_key(task, results[-1], key)
        comparison = compare(results[:-1], results[-1], key, name, metric_options(task, name))
    report = BaselineReport(task.name, key, results, comparison)
    if out_dir:
        out = Path(out_dir)
        for result in results:
            write_result(result, out / _slug(result.system))
        (out / "comparison.json").write_text(json.dumps(report.to_json(), indent=1, default=str))
    return report


def _slug(system: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in system).strip("-")

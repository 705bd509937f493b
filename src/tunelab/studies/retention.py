"""Forgetting: the retention suite scored before training (cached per base model) and after.

Fine-tuning on one task can make a model worse at everything else. A run with a retention
suite scores the base model on tasks it is never trained on, scores the fine-tuned model on
the same items, and reports each task's change with a paired-bootstrap confidence interval.
`max_forgetting` turns a drop larger than X points into a failed run.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tunelab.config import ModelConfig, RetentionConfig, TaskConfig, to_dict
from tunelab.core.errors import TunelabError
from tunelab.core.paths import cache_root
from tunelab.eval.compare import paired_difference, primary_key
from tunelab.eval.harm import HarmRates
from tunelab.eval.output_types import get_output_type
from tunelab.eval.runner import EvalResult, evaluate_loaded
from tunelab.eval.tables import format_table
from tunelab.eval.tasks import TaskItems, is_suite, load_suite, load_task
from tunelab.models import LoadedModel
from tunelab.models.kinds import get_kind
from tunelab.runs import System

if TYPE_CHECKING:
    import torch

    from tunelab.training.loop import EvalHook


@dataclass
class RetentionRow:
    task: str
    key: str
    before: float
    after: float
    delta: float
    ci: tuple[float, float]
    lower_is_better: bool

    @property
    def significant_drop(self) -> bool:
        """Worse, with the 95% CI of the change excluding zero."""
        return self.ci[0] > 0 if self.lower_is_better else self.ci[1] < 0

    @property
    def forgetting(self) -> float:
        """How much worse the model got (positive = forgot): points lost on a 0-100 score, or
        the relative increase in percent for a lower-is-better score (perplexity, bits/byte)."""
        if self.lower_is_better:
            return 100.0 * self.delta / self.before if self.before else 0.0
        return -self.delta


def retention_tasks(config: RetentionConfig, kind: str = "causal") -> list[TaskConfig]:
    """The configured tasks, suites expanded, loaded and checked (before any model loads).
    A max_forgetting limit without tasks checks the built-in `general` suite."""
    names: list[str] = []
    wanted = config.tasks or (["general"] if config.max_forgetting is not None else [])
    for name in wanted:
        for task in (load_suite(name).tasks if is_suite(name) else [name]):
            if task not in names:
                names.append(task)
    if names and not get_kind(kind).has_lm_head:
        raise TunelabError("retention.tasks: a classifier run (model.kind: classifier) has no "
                           "language-model head to score them; remove retention for this run")
    tasks = [load_task(name) for name in names]
    for loaded in tasks:
        if get_output_type(loaded.output_type).needs_head:
            raise TunelabError(f"retention.tasks: {loaded.name} needs a task head; retention "
                               "scores the trained language model, choose generate, "
                               "multiple_choice or loglikelihood_rolling tasks")
    return tasks


def score_tasks(lm: LoadedModel, tasks: list[TaskConfig], limit: int | None, system: System,
                items: Mapping[str, TaskItems] | None = None) -> dict[str, EvalResult]:
    """Each task's score (`items`: its data as read once by `read_task`; else read here)."""
    read = items or {}
    return {task.name: evaluate_loaded(lm, task, system, shots=0, limit=limit,
                                       items=read.get(task.name)) for task in tasks}


def _cache_key(model: ModelConfig, task: TaskConfig, limit: int | None) -> str:
    """The model spec, task and limit; for a local model directory also its weights' mtimes, so
    a directory overwritten by a new run is scored again."""
    local = Path(model.name)
    stamps = sorted((p.name, p.stat().st_mtime_ns) for p in local.glob("*.safetensors")) \
        if local.is_dir() else []
    blob = json.dumps({"model": to_dict(model), "task": to_dict(task), "limit": limit,
                       "weights": stamps}, sort_keys=True)
    return hashlib.sha1(blob.encode()).hexdigest()[:16]


def _to_json(result: EvalResult) -> dict[str, object]:
    return dict(result.summary(), items=result.items)


def _from_json(data: dict[str, Any]) -> EvalResult:  # Any: a cache file's JSON values
    system = System.from_json(data.pop("system_id", None), data.pop("system"))
    return EvalResult(system=system, harm=HarmRates.from_json(data.pop("harm", None)), **data)


def base_scores(lm: LoadedModel, model: ModelConfig, tasks: list[TaskConfig],
                limit: int | None, items: Mapping[str, TaskItems] | None = None
                ) -> dict[str, EvalResult]:
    """The base model's retention results, computed once per (model, task, limit) and cached."""
    folder = cache_root() / "retention"
    folder.mkdir(parents=True, exist_ok=True)
    results = {}
    for task in tasks:
        path = folder / f"{task.name}-{_cache_key(model, task, limit)}.json"
        if path.is_file():
            results[task.name] = _from_json(json.loads(path.read_text()))
            continue
        result = evaluate_loaded(lm, task, System.base(), shots=0, limit=limit,
                                 items=(items or {}).get(task.name))
        path.write_text(json.dumps(_to_json(result), default=list))
        results[task.name] = result
    return results


def compare(before: dict[str, EvalResult], after: dict[str, EvalResult],
            tasks: list[TaskConfig]) -> list[RetentionRow]:
    """One row per task: score before and after, the change and its 95% CI."""
    rows = []
    for task in tasks:
        b, a = before[task.name], after[task.name]
        change = paired_difference(task, b, a, primary_key(task, a))
        rows.append(RetentionRow(task.name, change.key, change.before, change.after, change.delta,
                                 change.ci, change.lower_is_better))
    return rows


def significant_drops(rows: list[RetentionRow]) -> list[str]:
    """Tasks whose score got worse with the 95% CI of the change excluding zero."""
    return [r.task for r in rows if r.significant_drop]


def curve_hook(lm: LoadedModel, tasks: list[TaskConfig], limit: int | None,
               items: Mapping[str, TaskItems] | None = None) -> EvalHook:
    """A Trainer eval hook: each task's primary score at every evaluation step (the forgetting
    curve, logged next to the validation loss as `retention`)."""
    keys = {task.name: (task.eval.primary or None) for task in tasks}

    def hook(model: torch.nn.Module) -> dict[str, dict[str, float]]:
        current = lm.with_model(model)
        results = score_tasks(current, tasks, limit, System.tuned(), items)
        return {"retention": {name: r.scores[keys[name] or next(iter(r.scores))]
                              for name, r in results.items()}}

    return hook


def worst_forgetting(rows: list[RetentionRow]) -> float:
    return max((r.forgetting for r in rows), default=0.0)


def write_retention(rows: list[RetentionRow], path: Path, max_forgetting: float | None) -> bool:
    """Write retention.json; return False when forgetting exceeds max_forgetting."""
    worst = worst_forgetting(rows)
    ok = max_forgetting is None or worst <= max_forgetting
    path.write_text(json.dumps({"rows": [dict(asdict(r), forgetting=r.forgetting) for r in rows],
                                "worst_forgetting": worst, "max_forgetting": max_forgetting,
                                "significant_drops": significant_drops(rows), "passed": ok},
                               indent=1))
    return ok


def retention_table(rows: Sequence[RetentionRow], markdown: bool = False) -> str:
    """Retention rows (before, after, change, CI, forgetting), lower-is-better scores to 3 places."""
    body = [[r.task, r.key + (" (lower is better)" if r.lower_is_better else ""),
             f"{r.before:.3f}" if r.lower_is_better else f"{r.before:.2f}",
             f"{r.after:.3f}" if r.lower_is_better else f"{r.after:.2f}",
             f"{r.delta:+.3f}" if r.lower_is_better else f"{r.delta:+.2f}",
             f"[{r.ci[0]:+.3f}, {r.ci[1]:+.3f}]" if r.lower_is_better else
             f"[{r.ci[0]:+.2f}, {r.ci[1]:+.2f}]",
             f"{r.forgetting:+.2f}" + ("%" if r.lower_is_better else "")] for r in rows]
    return format_table(["task", "score", "before", "after", "change", "95% CI", "forgetting"],
                        body, markdown)

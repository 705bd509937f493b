"""The comparison users need: the base model zero- and few-shot against the fine-tuned model.

Every system is scored on the same items of the same split, in the same template; the base
model's in-context baselines differ only by the shots in front of each prompt. The fine-tune's
gain over the best baseline is tested with a paired bootstrap on those items (eval/compare.py).
Orchestration (it loads models and runs), so it sits above eval/ and report/.
"""

from __future__ import annotations

import gc
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from tunelab.config import ModelConfig, TaskConfig
from tunelab.core.errors import TunelabError
from tunelab.eval.compare import Comparison, compare_to_best, primary_key
from tunelab.eval.output_types import get_output_type, load_for_task
from tunelab.eval.runner import EvalResult, evaluate_loaded, write_result
from tunelab.eval.tables import results_table, shown_keys
from tunelab.eval.tasks import read_task
from tunelab.models import LoadedModel
from tunelab.runs import StudyFiles, System, read_config, scoring_run_model

BASELINES = ("zero", "one", "few")


def baseline_shots(name: str, task: TaskConfig, shots: int | None) -> int:
    """Shots of a baseline: zero 0, one 1, few the task's few-shot k (or --shots), or a number."""
    name = name.strip()
    if name.isdigit():
        return int(name)
    if name not in BASELINES:
        raise TunelabError(f"--baselines {name}: use zero, one, few or a number of shots")
    return {"zero": 0, "one": 1}.get(name, shots if shots is not None else task.fewshot_k())


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

    def to_json(self) -> dict[str, object]:
        comparison = None
        if self.comparison:
            c = self.comparison
            comparison = {"candidate": c.candidate, "best_baseline": c.best_baseline, "key": c.key,
                          "gain": c.gain, "p_value": c.p_value, "significant": c.significant}
        return {"task": self.task, "key": self.key,
                "systems": [r.summary() for r in self.results], "comparison": comparison}


@dataclass
class SystemGroup:
    """One model to load and the systems scored on it: the base model carries every baseline,
    each adapter run its fine-tuned system."""

    load: Callable[[], LoadedModel]
    systems: list[System] = field(default_factory=list)


def system_groups(task: TaskConfig, model: str | None = None,
                  adapters: Sequence[str | Path] = (), baselines: Sequence[str] = ("zero", "few"),
                  shots: int | None = None) -> list[SystemGroup]:
    """The systems compared on a task: the base model under each baseline's shots, then every
    adapter run zero-shot. Nothing loads until a group's `load` is called.

    Args:
        model: the base model (default: the first adapter run's base, else the built-in model).
        adapters: run directories; each is one fine-tuned system.
        baselines: zero, one, few, or numbers of shots (may be empty when adapters are given).
        shots: k of the `few` baseline (default: the task's fewshot.k).
    """
    if not baselines and not adapters:
        raise TunelabError("--baselines: name at least one of zero, one, few (or give --adapter)")
    first = Path(adapters[0]) if adapters else None
    base = ModelConfig(name=model) if model else (
        read_config(first).model if first else ModelConfig())
    if model and first:
        base.num_layers = read_config(first).model.num_layers
    plan = [System.base(k) for k in dict.fromkeys(baseline_shots(b, task, shots)
                                                  for b in baselines)]
    shot = [system for system in plan if system.shots]
    if shot and not get_output_type(task.output_type).takes_shots:
        raise TunelabError(f"--baselines: output_type {task.output_type} takes no in-context "
                           f"examples, which the {shot[0].label} baseline would be given; use "
                           "--baselines zero")
    groups = [SystemGroup(lambda: load_for_task(task, base), plan)] if plan else []
    for adapter in adapters:
        groups.append(SystemGroup(partial(scoring_run_model, adapter, base=model),
                                  [System.tuned(Path(adapter).name)]))
    return groups


def each_system(groups: Sequence[SystemGroup]) -> Iterator[tuple[LoadedModel, System]]:
    """(model, system) for every system, one model in memory at a time."""
    for group in groups:
        lm = group.load()
        for system in group.systems:
            yield lm, system
        del lm
        gc.collect()


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
    if not baselines:
        raise TunelabError("--baselines: name at least one of zero, one, few")
    groups = system_groups(task, model, [adapter] if adapter else [], baselines, shots)
    # the task's data read and checked once, before any model loads, for the most shots asked
    items = read_task(task, max(s.shots for g in groups for s in g.systems))
    results = [evaluate_loaded(lm, task, system, shots=system.shots, limit=limit, items=items)
               for lm, system in each_system(groups)]
    key = primary_key(task, results[0])
    comparison = None
    if len(results) > 1:
        comparison = compare_to_best(task, results[:-1], results[-1], key)
    report = BaselineReport(task.name, key, results, comparison)
    if out_dir:
        files = StudyFiles(Path(out_dir), "comparison")
        for result in results:
            write_result(result, files.system_eval(result.system), task)
        files.json.write_text(json.dumps(report.to_json(), indent=1, default=str))
    return report

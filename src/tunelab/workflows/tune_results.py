"""The end of `tunelab tune`: every trial as tune.json records it, the best trial scored on
the test split once (next to the base model's baselines, with the paired test, exactly as
`tunelab eval --baselines` scores them), parameter importances, the table and report.html.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from tunelab.config import RunConfig
from tunelab.core.errors import TunelabError
from tunelab.eval.tasks import task_of
from tunelab.report.run_page import write_html_report
from tunelab.report.tune_page import tune_table
from tunelab.runs import TuneDir
from tunelab.studies.baselines import run_baselines
from tunelab.workflows.sweep import set_aside
from tunelab.workflows.tune_objective import get_objective


def finish(study: optuna.Study, tune: TuneDir, base: RunConfig, baselines: Sequence[str],
           settings: dict[str, object]) -> dict[str, Any]:  # Any: tune.json's JSON values
    """Write tune.json (scoring the best trial on test unless that trial was scored before),
    print the table, write report.html; returns tune.json's content."""
    trials = study.get_trials(deepcopy=False)
    rows = [trial_row(t) for t in trials]
    counts = {"complete": _count(trials, TrialState.COMPLETE),
              "pruned": _count(trials, TrialState.PRUNED),
              "failed": _count(trials, TrialState.FAIL),
              "running": _count(trials, TrialState.RUNNING)}
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    best = study.best_trial if complete else None
    previous = json.loads(tune.results.read_text()) if tune.is_tune() else {}
    final = previous.get("final")
    if best is not None and (final is None or final.get("trial") != best.number):
        final = score_on_test(best, tune, base, baselines, str(settings["objective"]))
    importances, note = param_importances(study, len(complete))
    results = {**settings, "tune_dir": str(tune.root), "counts": counts, "trials": rows,
               "best": None if best is None else {
                   "number": best.number, "params": best.params, "value": best.value,
                   "run_dir": str(_run_dir(best, tune))},
               "importances": importances, "importance_note": note,
               "final": final if best is not None else None}
    tune.results.write_text(json.dumps(results, indent=1, default=str))
    print(tune_table(results))
    print(f"tune: {tune.results} and {write_html_report(tune.root)}")
    if best is None:
        raise TunelabError(f"{tune.root}: no trial completed ({counts['pruned']} pruned, "
                           f"{counts['failed']} failed); tune.json lists each trial's error")
    return results


def _count(trials: Sequence[FrozenTrial], state: TrialState) -> int:
    return sum(t.state == state for t in trials)


def _run_dir(trial: FrozenTrial, tune: TuneDir) -> object:
    """The run that trained the trial's configuration (a repeated one: the first trial's)."""
    return tune.trial(int(trial.user_attrs.get("same_as", trial.number)))


def trial_row(trial: FrozenTrial) -> dict[str, object]:
    """One trial as tune.json lists it."""
    attrs = trial.user_attrs
    seconds = attrs.get("seconds")
    if seconds is None and trial.datetime_start and trial.datetime_complete:
        seconds = (trial.datetime_complete - trial.datetime_start).total_seconds()
    return {"number": trial.number, "state": trial.state.name.lower(), "params": trial.params,
            "value": trial.value,
            "intermediate": {str(step): v for step, v in sorted(trial.intermediate_values.items())},
            "run_dir": attrs.get("run_dir"), "seconds": seconds,
            "hostname": attrs.get("hostname"), "pid": attrs.get("pid"),
            "same_as": attrs.get("same_as"), "inactive": attrs.get("inactive"),
            "error": attrs.get("error")}


def score_on_test(best: FrozenTrial, tune: TuneDir, base: RunConfig, baselines: Sequence[str],
                  objective: str) -> dict[str, object]:
    """The best trial's run on the test split, once, next to the base model's baselines with
    the paired test (TUNE/final/); its validation score beside its test score (the gap)."""
    run_dir = tune.trial(int(best.user_attrs.get("same_as", best.number)))
    if tune.final.exists():  # an earlier best's scoring: kept, renamed
        set_aside(tune.final)
    print(f"tune: trial {best.number} is the best; scoring it on the test split next to the "
          f"base model's {', '.join(baselines)} baselines")
    report = run_baselines(task_of(str(run_dir)), None, run_dir, list(baselines), None,
                           base.eval.limit, tune.final)
    tuned = report.results[-1].scores
    assert best.value is not None
    chosen = get_objective(objective)
    test = chosen.test_value(tuned, report.key)
    return {"trial": best.number, "run_dir": str(run_dir), "key": report.key,
            "test_score": tuned[report.key],
            "validation": best.value, "validation_of": chosen.validation_of(report.key),
            "test": test, "gap": None if test is None else test - best.value,
            "comparison": report.to_json(), "table": report.table(), "out_dir": str(tune.final)}


def param_importances(study: optuna.Study, complete: int
                      ) -> tuple[dict[str, float] | None, str]:
    """Optuna's parameter importances (PED-ANOVA) over the complete trials, or why not."""
    if complete < 2:
        return None, f"{complete} complete trial(s): importances need at least 2"
    try:
        return optuna.importance.get_param_importances(study), ""
    except (ValueError, RuntimeError, ImportError, ZeroDivisionError) as err:
        return None, f"importances could not be computed ({err})"

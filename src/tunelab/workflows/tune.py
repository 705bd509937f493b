"""`tunelab tune`: a hyperparameter search on the validation split, then one test scoring.

    check the space -> the data check (leaked test items stop the tune, as they stop train)
    -> plan (the data read with the test split sealed) -> the study (SQLite
    beside the runs) -> trials (here, or in K worker processes) -> the best trial scored on
    test once, next to the base model's baselines -> tune.json, a table, report.html

Each trial is an ordinary run (`train`) in TUNE/trial-<n>/ that reads train and validation
only; at every validation evaluation its objective (the validation loss, or the task metric
on the validation split) is reported to Optuna, and a trial the pruner stops ends early but
finishes cleanly: its run directory is kept. The study lives in a database (default
TUNE/study.sqlite, named after the config), so a killed tune resumes with the same command and
several processes, or machines sharing the database, work on one study. A trial whose process
died is failed (its heartbeat stops; on this machine its recorded pid is gone) and its run
directory set aside, never deleted; a finished trial is never run again.
"""

from __future__ import annotations

import copy
import json
import math
import os
import socket
import sys
import time
import typing
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import optuna
from optuna.trial import FrozenTrial, TrialState

from tunelab.config import RunConfig, load_run_config
from tunelab.core.errors import TunelabError, first_line
from tunelab.data.training_tasks import run_task
from tunelab.runs import TuneDir
from tunelab.studies.baselines import baseline_shots
from tunelab.training.watch import VALIDATION_SCORES, ValidationWatch
from tunelab.workflows.data_check import check_before_search
from tunelab.workflows.train import plan_run, train
from tunelab.workflows.tune_objective import OBJECTIVES, get_objective
from tunelab.workflows.tune_results import finish
from tunelab.workflows.tune_space import (
    Param,
    Value,
    check_space,
    describe,
    grid_of,
    read_space,
    trial_config,
)
from tunelab.workflows.tune_workers import AskGate, run_workers, settle_dead_trials

Sampler = Literal["tpe", "random", "grid"]
Pruner = Literal["median", "hyperband", "none"]
ObjectiveName = Literal["loss", "metric"]
"""--objective (workflows/tune_objective.py: each is an object)."""

PRUNERS: dict[str, Callable[[], optuna.pruners.BasePruner]] = {
    "median": optuna.pruners.MedianPruner,
    "hyperband": optuna.pruners.HyperbandPruner,
    "none": optuna.pruners.NopPruner,
}
"""--pruner -> the Optuna pruner that judges each trial's validation curve."""

HEARTBEAT_S, GRACE_S = 30, 180
"""A running trial's process records a heartbeat every HEARTBEAT_S; after GRACE_S without one
the trial is failed by the next process that asks for a trial (machines sharing a database)."""


@dataclass
class TuneOptions:
    space: str
    """The search space YAML (workflows/tune_space.py)."""
    trials: int
    """Finished trials (complete or pruned) in total, over every process and resumption."""
    timeout: float = 0
    """Seconds after which a process starts no new trial (0: none)."""
    workers: int = 1
    """Worker processes on the study (1: trials run in this process)."""
    storage: str | None = None
    """The study's database URL (default sqlite:///TUNE/study.sqlite)."""
    sampler: Sampler = "tpe"
    pruner: Pruner = "median"
    objective: ObjectiveName = "loss"
    """loss: the best validation loss (minimised); metric: the task's primary metric on the
    validation split."""
    baselines: list[str] = field(default_factory=lambda: ["zero", "few"])
    """Base-model baselines scored on test next to the best trial."""
    worker: int | None = None
    """Set in a process that --workers started: run trials only."""


@dataclass
class Search:
    """The tune resolved once, before any trial: every process works from it."""

    config_path: str
    overrides: list[str]
    options: TuneOptions
    space: list[Param]
    base: RunConfig
    tune: TuneDir
    storage_url: str
    direction: Literal["minimize", "maximize"]
    trials: int
    """Finished trials wanted: --trials, or the grid's size when that is smaller."""


def run_tune(config_path: str, overrides: list[str], options: TuneOptions) -> Path:
    """Search, score the best trial on test once, write tune.json and report.html; returns
    the tune directory."""
    search = plan_search(config_path, overrides, options)  # every bad input fails here
    study = open_study(search)
    if options.worker is not None:  # a process that --workers started: trials only
        run_trials(study, search, options.worker)
        return search.tune.root
    settle_dead_trials(study, search.tune)  # a killed tune's last trial: failed, set aside
    if options.workers > 1:
        run_workers(_worker_argv(search), search.tune, options.workers)
        settle_dead_trials(study, search.tune)  # a worker that died mid-trial:
    run_trials(study, search, 0)  # its trial is run here (with one worker: all of them)
    settle_dead_trials(study, search.tune)
    finish(study, search.tune, search.base, options.baselines, _describe(search))
    return search.tune.root


def plan_search(config_path: str, overrides: list[str], options: TuneOptions) -> Search:
    """Check the options, the space (every value through the config's checks) and the data
    (read with the test split sealed), and open the storage, before any trial starts."""
    if options.trials < 1:
        raise TunelabError(f"--trials {options.trials}: give at least 1")
    if options.workers < 1:
        raise TunelabError(f"--workers {options.workers}: give at least 1")
    if options.timeout < 0:
        raise TunelabError(f"--timeout {options.timeout:g}: give seconds >= 0 (0: none)")
    for option, value, allowed in (("--sampler", options.sampler, typing.get_args(Sampler)),
                                   ("--pruner", options.pruner, tuple(PRUNERS)),
                                   ("--objective", options.objective, tuple(OBJECTIVES))):
        if value not in allowed:
            raise TunelabError(f"{option} {value}: use {', '.join(allowed)}")
    base = load_run_config(config_path, overrides)
    space = read_space(options.space)
    check_space(space, base, config_path, overrides, options.space)
    trials = options.trials
    if options.sampler == "grid":  # a grid point is tried once: at most the grid's size
        trials = min(trials, math.prod(len(v) for v in grid_of(space, options.space).values()))
        if trials < options.trials:
            print(f"tune: --sampler grid: {trials} grid points, so {trials} trials")
    direction = get_objective(options.objective).direction(base)
    tune = TuneDir(base.run_dir.with_name(base.run_dir.name + "-tune"))
    checked = None  # leakage: the test texts compared once before any trial, never scored
    if options.worker is None and not tune.data_check.is_file():  # not again on resume
        checked = check_before_search(base)
    plan = plan_run(trial_run_config(copy.deepcopy(base), base.run_dir),
                    with_test=False)  # the data read and checked here
    if not any(splits.validation for splits in plan.splits.values()):
        raise TunelabError("data.validation_size: the validation split is empty, and trials are "
                           "scored on it; set data.validation_size (or data.validation_file)")
    for name in options.baselines:
        baseline_shots(name, run_task(base), None)
    url = options.storage or f"sqlite:///{tune.study.resolve()}"
    if options.storage:
        open_storage(url)  # a URL that cannot be opened fails before the tune dir exists
    tune.root.mkdir(parents=True, exist_ok=True)
    tune.space.write_text(Path(options.space).read_text(encoding="utf-8"))
    if checked is not None:
        tune.data_check.write_text(json.dumps(checked.to_json(), indent=1, default=str))
    return Search(config_path, list(overrides), options, space, base, tune, url, direction,
                  trials)


def open_storage(url: str) -> optuna.storages.RDBStorage:
    """The study's database, with heartbeats; one line naming the URL when it cannot open."""
    sqlite = url.startswith("sqlite")  # waits for another process's write, not fails
    engine: dict[str, Any] = {"connect_args": {"timeout": 60}} if sqlite else {}  # Any: SQLAlchemy's options
    try:
        with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna 5
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(url, engine_kwargs=engine,
                                              heartbeat_interval=HEARTBEAT_S,
                                              grace_period=GRACE_S)
    except Exception as err:  # SQLAlchemy and its drivers raise many types for a bad URL
        reason = first_line(err, 1000)
        raise TunelabError(f"--storage {url}: cannot be opened ({reason[:200]}); give a "
                           "database URL that opens, e.g. sqlite:///tune/study.sqlite") from None


def open_study(search: Search) -> optuna.Study:
    """The study named after the config (made, or loaded to resume): a study started with
    another objective or space is refused."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    options = search.options
    study = optuna.create_study(storage=open_storage(search.storage_url),
                                study_name=search.base.name, direction=search.direction,
                                pruner=PRUNERS[options.pruner](), load_if_exists=True)
    started = {"objective": options.objective, "space": describe(search.space)}
    if not study.user_attrs:
        for key, value in started.items():
            study.set_user_attr(key, value)
    elif any(study.user_attrs.get(k) != v for k, v in started.items()) or \
            study.direction.name.lower() != search.direction:
        raise TunelabError(f"--storage {search.storage_url}: study '{search.base.name}' was "
                           "started with another --objective or search space; use the same, or "
                           "another name (name=...)")
    seed = search.base.train.seed + 7919 * len(study.trials) + 104729 * (options.worker or 0)
    study.sampler = _sampler(search, seed)  # seeded apart: a resumed or parallel process
    return study                            # does not repeat another's suggestions


def _sampler(search: Search, seed: int) -> optuna.samplers.BaseSampler:
    if search.options.sampler == "grid":
        grid = grid_of(search.space, search.options.space)
        return optuna.samplers.GridSampler(grid, seed=seed)
    if search.options.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed)


def trial_run_config(config: RunConfig, run_dir: Path) -> RunConfig:
    """A trial's run: in `run_dir`, with the studies that score test data turned off."""
    config.name, config.output_dir = run_dir.name, str(run_dir.parent)
    config.retention.tasks, config.robustness.perturbations = [], []
    config.bias.probes, config.bias.bbq = [], False
    return config


def run_trials(study: optuna.Study, search: Search, worker: int) -> None:
    """Run trials until --trials are finished over every process, or --timeout passes. The
    count happens before asking (Optuna's MaxTrialsCallback counts after a trial, so K
    workers would overshoot by up to K - 1): a RUNNING trial counts as one on its way."""
    gate = AskGate(search.tune.ask_lock)
    objective = TrialObjective(search, gate)
    start, wanted = time.monotonic(), search.trials
    while not (search.options.timeout and time.monotonic() - start >= search.options.timeout):
        with gate:  # released by the trial once it is RUNNING in the study
            settle_dead_trials(study, search.tune)
            states = [t.state for t in study.get_trials(deepcopy=False)]
            finished = states.count(TrialState.COMPLETE) + states.count(TrialState.PRUNED)
            if finished + states.count(TrialState.RUNNING) >= wanted:
                return
            if states.count(TrialState.FAIL) >= max(wanted, 3):
                print(f"tune: worker {worker}: {states.count(TrialState.FAIL)} trials failed; "
                      "stopping (tune.json lists their errors)")
                return
            study.optimize(objective, n_trials=1, catch=(Exception,))


class TrialObjective:
    """One trial: its values, then an ordinary run on train and validation, its curve
    reported at every evaluation; a pruned trial's run finishes before TrialPruned."""

    def __init__(self, search: Search, gate: AskGate):
        self.search, self.gate = search, gate

    def __call__(self, trial: optuna.Trial) -> float:
        trial.set_user_attr("hostname", socket.gethostname())
        trial.set_user_attr("pid", os.getpid())
        self.gate.release()  # the trial is RUNNING in the study: the next one may be asked
        params = {p.key: p.suggest(trial) for p in self.search.space}
        same = _same_params(trial.study, params)
        if same is not None and same.value is not None:  # a finished configuration again
            trial.set_user_attr("same_as", same.number)
            return same.value
        search = self.search
        config, inactive = trial_config(search.base, search.config_path, search.overrides,
                                        params)
        if inactive:
            trial.set_user_attr("inactive", inactive)
        config = trial_run_config(config, search.tune.trial(trial.number))
        curve = Curve(trial, get_objective(search.options.objective).curve_metric(config),
                      config.name)
        print(f"tune: trial {trial.number}: {_shown(params)} -> {config.run_dir}")
        start = time.perf_counter()
        try:
            result = train(config, evaluate_after=False,
                           on_eval=ValidationWatch(curve.hear, metric=curve.metric is not None))
        except Exception as err:
            trial.set_user_attr("error", first_line(err, 300))
            raise
        finally:
            trial.set_user_attr("seconds", time.perf_counter() - start)
        trial.set_user_attr("run_dir", str(result.run_dir))
        if curve.pruned_at is not None:
            raise optuna.TrialPruned(f"trial {trial.number} pruned at step {curve.pruned_at}")
        return curve.final(result.summary)


class Curve:
    """A trial's validation curve: each evaluation's objective value reported to Optuna;
    True (end training) once the pruner says so."""

    def __init__(self, trial: optuna.Trial, metric: str | None, task: str):
        self.trial, self.task = trial, task
        self.metric = metric
        """None: the validation loss; else the score key ('' : the first metric's first)."""
        self.values: dict[int, float] = {}
        self.pruned_at: int | None = None

    def value(self, record: Mapping[str, Any]) -> float:  # Any: a train_log.jsonl line
        if self.metric is None:
            return float(record["val_loss"])
        scores = record[VALIDATION_SCORES][self.task]
        return float(scores[self.metric or next(iter(scores))])

    def hear(self, record: Mapping[str, Any]) -> bool:  # Any: a train_log.jsonl line
        step = int(record["step"])
        self.values[step] = self.value(record)
        self.trial.report(self.values[step], step)
        if self.trial.should_prune():
            self.pruned_at = step
            return True
        return False

    def final(self, summary: Mapping[str, Any]) -> float:  # Any: summary.json's values
        """The objective of the weights the run kept (its best validation loss's step)."""
        if self.metric is None:
            return float(summary["best_val_loss"])
        best = summary.get("best_step")
        return self.values.get(int(best), self.values[max(self.values)]) if best is not None \
            else self.values[max(self.values)]


def _same_params(study: optuna.Study, params: dict[str, Value]) -> FrozenTrial | None:
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return next((t for t in done if t.params == params), None)


def _shown(params: Mapping[str, Value]) -> str:
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                     for k, v in params.items())


def _worker_argv(search: Search) -> list[str]:
    """The command of a worker process: this tune's, on its storage."""
    options = search.options
    return [sys.executable, "-m", "tunelab.cli", "tune", search.config_path, *search.overrides,
            "--space", options.space, "--trials", str(options.trials), "--timeout",
            str(options.timeout), "--storage", search.storage_url, "--sampler", options.sampler,
            "--pruner", options.pruner, "--objective", options.objective,
            "--baselines", ",".join(options.baselines)]


def _describe(search: Search) -> dict[str, object]:
    """The tune's settings as tune.json records them."""
    options = search.options
    return {"config": search.config_path, "overrides": search.overrides,
            "study": search.base.name, "storage": search.storage_url,
            "objective": options.objective, "direction": search.direction,
            "metric": get_objective(options.objective).curve_metric(search.base) or None,
            "sampler": options.sampler, "pruner": options.pruner, "trials_asked": options.trials,
            "workers": options.workers, "space": describe(search.space)}

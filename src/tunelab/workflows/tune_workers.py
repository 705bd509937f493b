"""The processes of `tunelab tune`: worker processes on one study, the gate through which
they ask for trials one at a time, and the trials whose process died.

A trial records its machine and pid; when that process is gone (SIGKILL, a crash) the trial
is failed the next time any process looks (machines sharing a database fail it by its missing
heartbeat instead), and its half-written run directory is set aside, never deleted.
"""

from __future__ import annotations

import fcntl
import os
import socket
import subprocess
import time
import warnings
from pathlib import Path
from typing import IO

import optuna
from optuna.trial import TrialState

from tunelab.runs import TuneDir
from tunelab.workflows.sweep import set_aside


def settle_dead_trials(study: optuna.Study, tune: TuneDir) -> None:
    """A trial RUNNING in a process of this machine that is gone (killed) is failed; the run
    directory of every failed trial still here is set aside (renamed, never deleted: a trial
    that failed on its own has none left)."""
    host = socket.gethostname()
    with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna 5
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)  # no heartbeat for GRACE_S: any machine
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        pid = int(trial.user_attrs.get("pid", 0))
        if trial.user_attrs.get("hostname") == host and pid and not _alive(pid):
            study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)
            print(f"tune: trial {trial.number} was running in process {pid}, which is gone: "
                  "failed")
    for trial in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)):
        if tune.trial(trial.number).exists():
            set_aside(tune.trial(trial.number))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


class AskGate:
    """One process at a time counts the study's trials and asks for the next one, so the
    workers never start more than --trials between them (an flock on TUNE/ask.lock; machines
    that share only the database may each start one trial too many at the end)."""

    def __init__(self, path: Path):
        self.path = path
        self.handle: IO[str] | None = None

    def __enter__(self) -> AskGate:
        self.handle = self.path.open("a")
        fcntl.flock(self.handle, fcntl.LOCK_EX)
        return self

    def release(self) -> None:
        if self.handle is not None:
            fcntl.flock(self.handle, fcntl.LOCK_UN)
            self.handle.close()
            self.handle = None

    def __exit__(self, *exc: object) -> None:
        self.release()


def run_workers(argv: list[str], tune: TuneDir, count: int) -> None:
    """--workers K: K processes of `tunelab tune ... --worker I` (`argv` + the index) on the
    same study, each with its share of the CPU threads; their output goes to
    TUNE/worker-<i>.log."""
    threads = max(1, (os.cpu_count() or 1) // count)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    processes: list[subprocess.Popen[bytes]] = []
    try:
        for index in range(count):
            with tune.worker_log(index).open("w") as log:
                processes.append(subprocess.Popen([*argv, "--worker", str(index)], stdout=log,
                                                  stderr=subprocess.STDOUT, env=env))
        print(f"tune: {count} worker processes (their output: {tune.worker_log(0)}, ...)")
        while any(process.poll() is None for process in processes):  # reaps each as it ends,
            time.sleep(1)  # so a killed worker's pid is gone for the others at once
    finally:
        for process in processes:
            if process.poll() is None:
                process.terminate()
                process.wait()
    for index, process in enumerate(processes):
        if process.returncode:
            print(f"tune: worker {index} exited with {process.returncode}; see "
                  f"{tune.worker_log(index)}")

"""A launch never runs fewer processes than asked without saying so (tunelab/core/launch.py).

`accelerate launch --cpu --num_processes 2 $(which tunelab) train CFG` starts one process
(accelerate 1.16's simple launcher: several local CPU processes only through mpirun) and tells
it nothing but ACCELERATE_USE_CPU; `Launch` reads the launcher's command line from the parent
process and refuses, or warns where only accelerate's environment shows."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import DATA

from tunelab.cli import main
from tunelab.core import launch
from tunelab.core.errors import TunelabError
from tunelab.core.launch import Launch, accelerate_request

SCRIPT = "/venv/bin/tunelab"
ACCELERATE = ["/venv/bin/python3", "/venv/bin/accelerate", "launch"]
SIMPLE_ENV = {"ACCELERATE_USE_CPU": "True", "ACCELERATE_MIXED_PRECISION": "no",
              "ACCELERATE_DYNAMO_BACKEND": "no", "MASTER_ADDR": "127.0.0.1",
              "MASTER_PORT": "29500"}
"""What accelerate 1.16's simple launcher sets for `--cpu --num_processes 2` (no WORLD_SIZE)."""


def parent(*argv: str) -> list[str]:
    return [*argv, SCRIPT, "train", "run.yaml", "train.batch_size=4"]


@pytest.mark.parametrize(("argv", "asked"), [
    (parent(*ACCELERATE, "--cpu", "--num_processes", "2"), 2),
    (parent(*ACCELERATE, "--cpu", "--num-processes=3"), 3),
    (parent("/usr/bin/python3", "-m", "accelerate.commands.launch", "--num_processes=4"), 4),
    (parent("/venv/bin/accelerate-launch", "--cpu", "--num_processes", "2"), 2),
    (parent(*ACCELERATE, "--cpu"), 1),  # accelerate's default on a CPU: one
], ids=["flag", "dashes and =", "python -m", "accelerate-launch", "no count"])
def test_the_launchers_own_options_say_how_many(argv: list[str], asked: int,
                                                 tmp_path: Path) -> None:
    assert accelerate_request(argv, SCRIPT, {"HF_HOME": str(tmp_path)}) == asked


def test_only_the_launchers_options_count_and_its_config_file(tmp_path: Path) -> None:
    config = tmp_path / "multi_cpu.yaml"
    config.write_text(yaml.safe_dump({"distributed_type": "MULTI_CPU", "num_processes": 2}))
    argv = parent(*ACCELERATE, "--config_file", str(config))
    assert accelerate_request(argv, SCRIPT, {"HF_HOME": str(tmp_path)}) == 2
    # the script's own arguments are not the launcher's
    script_args = [*ACCELERATE, "--cpu", SCRIPT, "train", "run.yaml", "--num_processes", "5"]
    assert accelerate_request(script_args, SCRIPT, {"HF_HOME": str(tmp_path)}) == 1
    # accelerate's default config (`accelerate config`), where no --config_file is given
    default = tmp_path / "accelerate" / "default_config.yaml"
    default.parent.mkdir()
    default.write_text(yaml.safe_dump({"num_processes": 3}))
    assert accelerate_request(parent(*ACCELERATE, "--cpu"), SCRIPT, {"HF_HOME": str(tmp_path)}) == 3
    assert accelerate_request(["/bin/bash", "run.sh"], SCRIPT, {}) is None  # no accelerate


def test_a_request_for_more_processes_than_run_is_refused() -> None:
    found = Launch.detect(SIMPLE_ENV, lambda: parent(*ACCELERATE, "--cpu", "--num_processes", "2"),
                          SCRIPT)
    assert found == Launch(running=1, by_accelerate=True, requested=2)
    with pytest.raises(TunelabError) as refused:
        found.check("tunelab train run.yaml train.batch_size=4")
    message = str(refused.value)
    assert "asked for 2 processes and started 1" in message and "\n" not in message
    assert "`tunelab train run.yaml train.batch_size=4 --nproc 2`" in message
    assert launch.EXAMPLE in message


def test_accelerates_environment_alone_is_a_warning() -> None:
    """The parent's command line unreadable (no /proc): one line that says one process runs."""
    found = Launch.detect(SIMPLE_ENV, lambda: None, SCRIPT)
    assert found == Launch(running=1, by_accelerate=True, requested=None)
    warning = found.check("tunelab train run.yaml")
    assert warning is not None and "\n" not in warning
    assert "started this as one process" in warning and "--nproc N" in warning


@pytest.mark.parametrize("env", [
    {"WORLD_SIZE": "2", "RANK": "0", **SIMPLE_ENV},  # torchrun, accelerate's multi-process launcher
    {"OMPI_COMM_WORLD_SIZE": "2", **SIMPLE_ENV},  # accelerate's mpirun
    {},  # a plain `tunelab train`
    {"ACCELERATE_USE_CPU": "True"},  # a user who forces accelerate onto the CPU, no launcher
], ids=["torchrun", "mpirun", "plain", "ACCELERATE_USE_CPU alone"])
def test_a_launch_that_runs_what_it_asked_for_says_nothing(env: dict[str, str]) -> None:
    found = Launch.detect(env, lambda: ["/bin/bash"], SCRIPT)
    assert found.check("tunelab train run.yaml") is None
    one = Launch.detect(SIMPLE_ENV, lambda: parent(*ACCELERATE, "--cpu", "--num_processes", "1"),
                        SCRIPT)
    assert one.check("tunelab train run.yaml") is None


def _config(tmp_path: Path) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({
        "name": "run", "output_dir": str(tmp_path / "runs"), "model": {"name": "smollm2-135m"},
        "data": {"source": str(tmp_path / "missing.jsonl"), "template": "chat",
                 "fields": {"input": "text", "output": "label"}},
        "method": {"name": "lora"}, "eval": {"metrics": ["accuracy"],
                                             "labels": ["positive", "negative"]}}))
    return path


def test_tunelab_train_refuses_or_warns(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    config = _config(tmp_path)
    for name, value in SIMPLE_ENV.items():
        monkeypatch.setenv(name, value)
    for name in launch.WORLD_SIZE:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(sys, "argv", [SCRIPT, "train", str(config)])
    monkeypatch.setattr(launch, "parent_command_line",
                        lambda: [*ACCELERATE, "--cpu", "--num_processes", "2", SCRIPT, "train",
                                 str(config)])
    assert main(["train", str(config), "train.batch_size=4"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("tunelab: error: accelerate launch asked for 2")
    assert f"tunelab train {config} train.batch_size=4 --nproc 2" in err[0]

    monkeypatch.setattr(launch, "parent_command_line", lambda: None)  # the request unreadable
    assert main(["train", str(config)]) == 2  # warned, then the missing data file stops it
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("tunelab: warning: accelerate launch started this as one process")
    assert "no such file" in err[1] and len(err) == 2
    assert not (tmp_path / "runs").exists()


def test_a_real_accelerate_launch_of_two_cpu_processes_is_refused(tmp_path: Path) -> None:
    """`accelerate launch --cpu --num_processes 2 tunelab train ...` as a user types it (one
    process starts): the one line, exit 2 from tunelab, nothing trained or written."""
    config = _config(tmp_path)
    config.write_text(config.read_text().replace(str(tmp_path / "missing.jsonl"),
                                                 str(DATA / "reviews.jsonl")))
    script = tmp_path / "tunelab_script.py"  # what `$(which tunelab)` is
    script.write_text("import sys\nfrom tunelab.cli import main\nsys.exit(main())\n")
    done = subprocess.run(
        [sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "2",
         str(script), "train", str(config), "train.batch_size=4"],
        capture_output=True, text=True, timeout=300, check=False)
    refused = [line for line in done.stderr.splitlines()
               if line.startswith("tunelab: error: accelerate launch asked for 2 processes")]
    assert done.returncode != 0 and refused, done.stderr[-3000:]
    assert f"tunelab train {config} train.batch_size=4 --nproc 2" in refused[0]
    assert "returned non-zero exit status 2" in done.stderr  # accelerate reports tunelab's 2
    assert not (tmp_path / "runs").exists()


def test_a_one_process_command_refuses_a_launch_of_several(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Every command but train runs as one process: under torchrun's two each would run all of
    it and write the same files, under accelerate's one the second process asked for would
    never run. Refused in one line before anything runs, naming --nproc where the command
    spreads its evaluations that way."""
    for name in launch.WORLD_SIZE:
        monkeypatch.delenv(name, raising=False)
    out = tmp_path / "eval"
    monkeypatch.setenv("WORLD_SIZE", "2")  # torchrun --nproc_per_node 2 $(which tunelab) eval ...
    monkeypatch.setattr(launch, "parent_command_line",
                        lambda: ["/venv/bin/python3", "/venv/bin/torchrun", "--nproc_per_node",
                                 "2", SCRIPT, "eval"])
    assert main(["eval", "--task", "movie_sentiment", "--limit", "2", "--out", str(out),
                 "--nproc", "3"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("tunelab: error: a launcher started 2 processes")
    assert f"run `tunelab eval --task movie_sentiment --limit 2 --out {out} --nproc 2` instead" \
        in err[0]  # its own --nproc, not the one typed beside it
    assert not out.exists()
    assert main(["sweep", str(_config(tmp_path)), "--methods", "lora"]) == 2  # no --nproc
    assert "run `tunelab sweep" in capsys.readouterr().err and not (tmp_path / "runs").exists()
    # a launched process's own subprocess (a script's `tunelab ...` on rank 0) runs, once
    monkeypatch.setattr(launch, "parent_command_line", lambda: ["/usr/bin/python3", "my_train.py"])
    assert main(["tasks", "list"]) == 0 and "movie_sentiment" in capsys.readouterr().out

    monkeypatch.delenv("WORLD_SIZE")
    for name, value in SIMPLE_ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(launch, "parent_command_line",
                        lambda: [*ACCELERATE, "--cpu", "--num_processes", "2", SCRIPT, "quickstart"])
    assert main(["quickstart", "--out", str(tmp_path / "qs")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "accelerate launch asked for 2 processes and started 1" in err[0]
    assert f"`tunelab quickstart --out {tmp_path / 'qs'} --nproc 2`" in err[0]
    assert not (tmp_path / "qs").exists()

    monkeypatch.setattr(launch, "parent_command_line", lambda: None)  # the request unreadable
    assert main(["tasks", "list"]) == 0  # one process, which is what it runs as: a warning
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["tunelab: warning: accelerate launch started this as one process, and this "
                   "command runs as one; run `tunelab tasks list` without a launcher"]

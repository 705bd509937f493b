"""Running as several processes: `tunelab train --nproc N` (torchrun underneath), what a
launcher asked for against what runs (`Launch`), the exit code a process of it hands back, and
how a launched process ends."""

from __future__ import annotations

import logging
import os
import shlex
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from tunelab.core.errors import TunelabError


def launched() -> bool:
    """Whether a launcher started this process as one of several (`--nproc`, torchrun,
    accelerate launch): they set $RANK, and accelerate places its model and its peers."""
    return "RANK" in os.environ


def nproc(argv: Sequence[str], n: int) -> int:
    """`tunelab train --nproc N ...` is `torchrun --nproc_per_node N -m tunelab.cli train ...`."""
    if n < 1:
        raise TunelabError(f"--nproc {n}: give 1 or more processes")
    rest = without_nproc(argv)
    with socket.socket() as probe:  # a free port for the processes to meet on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(n),
               "--master_addr", "127.0.0.1", "--master_port", str(port), "-m", "tunelab.cli",
               *rest]
    with tempfile.TemporaryDirectory() as folder:  # torchrun itself exits 1 on any failure
        status = Path(folder) / "exit-code"
        code = subprocess.call(command, env={**os.environ, EXIT_CODE_FILE: str(status)})
        return int(status.read_text()) if code and status.is_file() else code


EXIT_CODE_FILE = "TUNELAB_EXIT_CODE_FILE"
"""Where a process started by --nproc leaves the exit code of its one-line error."""


def leave_exit_code(code: int) -> None:
    """A process of --nproc that fails with a one-line error leaves its exit code for the
    launcher, which returns it (torchrun itself exits 1 whatever failed)."""
    if os.environ.get(EXIT_CODE_FILE):
        Path(os.environ[EXIT_CODE_FILE]).write_text(str(code))


def end_launched_process(code: int) -> None:
    """End a launched process here, once its work is done and its files are closed (the
    process group is destroyed in `train`): os._exit skips the interpreter's teardown, in
    which gloo's C++ threads, still alive after destroy_process_group, now and then abort
    a finished process ("terminate called without an active exception", pytorch#190489)
    and torchrun then fails the whole run. Nothing is lost: output streams are flushed
    first, and trackers are closed by the training loop."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(code)


WORLD_SIZE = ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")
"""Where torchrun (and mpirun's MPI libraries) tell a process how many run together; accelerate
reads the same."""

ACCELERATE_ENV = ("ACCELERATE_USE_CPU", "ACCELERATE_MIXED_PRECISION")
"""What `accelerate launch` sets for the process it starts itself (accelerate 1.16's simple
launcher: `--cpu`, or `distributed_type: MULTI_CPU`/`NO`, on one machine without mpirun):
nothing in it says how many processes were asked for, and it starts one."""

EXAMPLE = "examples/distributed/accelerate_cpu_ddp.yaml"
"""The accelerate config that starts several local processes (torchrun underneath)."""


LAUNCHERS = ("torchrun", "accelerate", "accelerate-launch", "mpirun", "mpiexec", "orted",
             "prted", "torch.distributed.run", "torch.distributed.launch",
             "accelerate.commands.launch")
"""What starts a process as one of several (its program or module name)."""


def is_launcher(argv: Sequence[str]) -> bool:
    """Whether a command line is a launcher's (`torchrun ...`, `python -m torch.distributed.run
    ...`, `accelerate launch ...`, mpirun's)."""
    return any(Path(arg).name in LAUNCHERS or arg in LAUNCHERS for arg in argv[:4])


def without_nproc(argv: Sequence[str]) -> list[str]:
    """A command line without its --nproc N."""
    return [a for i, a in enumerate(argv) if a != "--nproc" and not a.startswith("--nproc=")
            and (i == 0 or argv[i - 1] != "--nproc")]


def parent_command_line() -> list[str] | None:
    """The parent process's argv (Linux: /proc/PPID/cmdline), or None where it is unreadable."""
    try:
        raw = Path(f"/proc/{os.getppid()}/cmdline").read_bytes()
    except OSError:
        return None
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part] or None


def accelerate_config_file(env: Mapping[str, str]) -> Path:
    """accelerate's default config (`accelerate config` writes it), as accelerate 1.16 finds it."""
    home = env.get("HF_HOME") or str(Path(env.get("XDG_CACHE_HOME", "~/.cache")) / "huggingface")
    return Path(home).expanduser() / "accelerate" / "default_config.yaml"


def accelerate_request(argv: Sequence[str], script: str, env: Mapping[str, str]) -> int | None:
    """How many processes an `accelerate launch` command line asks for (`--num_processes N`,
    else its `--config_file`'s or the default config's `num_processes`, else 1), reading only
    the launcher's own options (those before `script`); None when `argv` is no accelerate launch."""
    start = next((i + 1 for i, arg in enumerate(argv)
                  if arg == "accelerate.commands.launch" or Path(arg).name == "accelerate-launch"
                  or (Path(arg).name == "accelerate" and argv[i + 1:i + 2] == ["launch"])), None)
    if start is None:
        return None
    end = argv.index(script, start) if script in argv[start:] else len(argv)
    options = dict(_option_values(argv[start:end]))
    for name in ("--num_processes", "--num-processes"):
        if name in options and options[name].lstrip("-").isdigit():
            return int(options[name])
    config = options.get("--config_file") or options.get("--config-file")
    path = Path(config) if config else accelerate_config_file(env)
    try:
        asked = yaml.safe_load(path.read_text()) if path.is_file() else None
    except (OSError, yaml.YAMLError):
        return None  # accelerate itself reads it or fails before this process starts
    count = asked.get("num_processes") if isinstance(asked, dict) else None
    return count if isinstance(count, int) and count > 0 else 1


def _option_values(args: Sequence[str]) -> list[tuple[str, str]]:
    """(`--name`, value) of `--name value` and `--name=value`."""
    found = []
    for i, arg in enumerate(args):
        if arg.startswith("--") and "=" in arg:
            name, _, value = arg.partition("=")
            found.append((name, value))
        elif arg.startswith("--") and i + 1 < len(args):
            found.append((arg, args[i + 1]))
    return found


@dataclass(frozen=True)
class Launch:
    """How this process was started: how many processes run together (`running`, what the
    launcher told them), whether `accelerate launch` started it without telling (`by_accelerate`),
    and how many processes its command line asked for (`requested`; None where unreadable)."""

    running: int = 1
    by_accelerate: bool = False
    requested: int | None = None
    by_launcher: bool = True
    """Whether a launcher started this process itself (False: a launched process's own
    subprocess, which inherits WORLD_SIZE and runs once, e.g. a script's `tunelab eval` on
    rank 0)."""

    @classmethod
    def detect(cls, env: Mapping[str, str] | None = None,
               parent: Callable[[], list[str] | None] | None = None,
               script: str | None = None) -> Launch:
        """This process's launch, from its environment (default os.environ) and its parent's
        command line (default `parent_command_line`; `script`: this process's, sys.argv[0])."""
        env = os.environ if env is None else env
        sizes = [env[name] for name in WORLD_SIZE if env.get(name, "").isdigit()]
        argv = (parent or parent_command_line)()
        if sizes:  # torchrun, mpirun: the processes know how many they are
            return cls(running=int(sizes[0]), by_launcher=argv is None or is_launcher(argv))
        requested = accelerate_request(argv, script or sys.argv[0], env) if argv else None
        by_accelerate = requested is not None or all(name in env for name in ACCELERATE_ENV)
        return cls(1, by_accelerate, requested)

    def check(self, command: str) -> str | None:
        """Refuse a launch that asked for more processes than run together; where accelerate
        started this process and what it asked for is unreadable, the line to warn with
        (`command`: what to run instead, e.g. `tunelab train run.yaml`)."""
        if self.requested is not None and self.requested > self.running:
            raise TunelabError(
                f"accelerate launch asked for {self.requested} processes and started "
                f"{self.running}, which would train alone at the per-process train.batch_size "
                "(accelerate 1.16 starts several local CPU processes only through mpirun); run "
                f"`{command} --nproc {self.requested}` or use `accelerate launch --config_file "
                f"{EXAMPLE}`")
        if self.by_accelerate and self.requested is None:
            return (f"accelerate launch started this as one process (no WORLD_SIZE), so it "
                    f"trains alone at the per-process train.batch_size; for N processes run "
                    f"`{command} --nproc N` or use `accelerate launch --config_file {EXAMPLE}`")
        return None

    def check_alone(self, command: str, spreads: bool) -> str | None:
        """For a command that runs as one process (every command but `train`): refuse a launch
        of several, run or asked for (each process would run the whole command and write the
        same files), naming what does it instead (`spreads`: the command takes --nproc N for
        its evaluations); where accelerate started it and what it asked for is unreadable,
        the line to warn with."""
        command = shlex.join(without_nproc(shlex.split(command)))  # the suggestion adds its own
        instead = "run `{command} --nproc {n}` instead, which spreads its evaluations over {n} " \
            "processes" if spreads else "run `{command}` without a launcher"
        if self.running > 1 and self.by_launcher:
            raise TunelabError(
                f"a launcher started {self.running} processes, but this command runs as one: "
                "each would run all of it and write the same files; "
                + instead.format(command=command, n=self.running))
        if self.requested is not None and self.requested > 1:
            raise TunelabError(
                f"accelerate launch asked for {self.requested} processes and started 1, and this "
                "command runs as one; " + instead.format(command=command, n=self.requested))
        if self.by_accelerate and self.requested is None:
            return ("accelerate launch started this as one process, and this command runs as "
                    "one; " + instead.format(command=command, n="N"))
        return None

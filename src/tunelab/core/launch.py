"""Running as several processes: `tunelab train --nproc N` (torchrun underneath), the exit code
a process of it hands back, and how a launched process ends."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from tunelab.core.errors import TunelabError


def nproc(argv: Sequence[str], n: int) -> int:
    """`tunelab train --nproc N ...` is `torchrun --nproc_per_node N -m tunelab.cli train ...`."""
    if n < 1:
        raise TunelabError(f"--nproc {n}: give 1 or more processes")
    rest = [a for i, a in enumerate(argv) if a != "--nproc" and not a.startswith("--nproc=")
            and (i == 0 or argv[i - 1] != "--nproc")]
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

"""`--out FILE` for the benchmark scripts: what a script prints also goes to FILE, headed by
its command line, so that a page shows the script's own output rather than a copy typed from
it (docs/guides/benchmarks.md includes benchmarks/results/*.txt).

    parser = argparse.ArgumentParser(...)
    add_out_option(parser)
    args = parser.parse_args()
    tee_stdout(args.out)
"""

from __future__ import annotations

import argparse
import atexit
import shlex
import sys
from pathlib import Path
from typing import TextIO


class _Tee:
    """A text stream writing to the terminal and to a file."""

    def __init__(self, terminal: TextIO, file: TextIO) -> None:
        self.terminal, self.file = terminal, file

    def write(self, text: str) -> int:
        self.file.write(text)
        return self.terminal.write(text)

    def flush(self) -> None:
        self.file.flush()
        self.terminal.flush()

    def __getattr__(self, name: str) -> object:
        return getattr(self.terminal, name)


def add_out_option(parser: argparse.ArgumentParser) -> None:
    """Add `--out FILE` to a benchmark's options."""
    parser.add_argument("--out", metavar="FILE",
                        help="also write what this prints to FILE, after its command line "
                             "(e.g. benchmarks/results/NAME.txt)")


def tee_stdout(out: str | None) -> None:
    """From now on, print to the terminal and to `out` (nothing changes when it is None)."""
    if out is None:
        return
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    file = path.open("w", encoding="utf-8")
    file.write("$ python " + shlex.join(sys.argv) + "\n")
    terminal = sys.stdout
    sys.stdout = _Tee(terminal, file)  # type: ignore[assignment]

    def close() -> None:
        sys.stdout.flush()
        sys.stdout = terminal
        file.close()

    atexit.register(close)

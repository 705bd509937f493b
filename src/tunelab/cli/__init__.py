"""The `tunelab` command: parse (cli/options.py), call one API function (cli/commands.py),
print. No logic lives here."""

from __future__ import annotations

import argparse
import contextlib
import shlex
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from tunelab.cli.commands import COMMANDS, LAUNCHED
from tunelab.cli.options import parser
from tunelab.config import RunConfig
from tunelab.config.reading import option_fields
from tunelab.core import launch
from tunelab.core.deferred import deferred
from tunelab.core.dependencies import check_dependencies
from tunelab.core.errors import TunelabError
from tunelab.core.memory import keep_mmap_threshold

if TYPE_CHECKING:
    from tunelab.eval import processes
else:
    processes = deferred("tunelab.eval.processes")  # torch: only when a command scores

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    code = _main(argv)
    if launch.launched():  # a process that torchrun or accelerate launch started
        launch.end_launched_process(code)
    return code


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line; key=value overrides may also follow the options (`tunelab train
    CFG --nproc 2 train.batch_size=4`), where argparse would take only those before them: an
    item whose key starts with a run config's option (`train.`, `name=`), nothing else."""
    command_line = parser()
    args, rest = command_line.parse_known_args(argv)
    sections = {field.name for field in option_fields(RunConfig)}
    later = [item for item in rest if item.split("=", 1)[0].split(".")[0] in sections]
    if rest and (later != rest or not isinstance(getattr(args, "overrides", None), list)):
        command_line.error(f"unrecognized arguments: {' '.join(rest)}")
    if later:
        args.overrides = [*args.overrides, *later]
    return args


def _main(argv: Sequence[str] | None) -> int:
    args = parse(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    try:
        check_dependencies()
        keep_mmap_threshold()  # freed memory goes back to the system (tunelab/memory.py)
        handler = COMMANDS[args.command]
        if handler not in LAUNCHED:  # one process: a launcher's several would each run it all
            warning = launch.Launch.detect().check_alone(shlex.join(["tunelab", *args.argv]),
                                                         hasattr(args, "eval_nproc"))
            if warning:
                print(f"tunelab: warning: {warning}", file=sys.stderr)
        # A command that scores models (it has --nproc): its evaluations over N processes
        # (without --nproc: $TUNELAB_EVAL_NPROC, else one, which starts no worker).
        with (processes.EvalProcesses(args.eval_nproc) if hasattr(args, "eval_nproc")
              else contextlib.nullcontext()):
            code = handler(args)
    except TunelabError as err:
        if args.debug:
            raise
        print(f"tunelab: error: {err}", file=sys.stderr)
        launch.leave_exit_code(err.exit_code)
        return err.exit_code
    except KeyboardInterrupt:
        print("tunelab: interrupted", file=sys.stderr)
        return 130
    return code

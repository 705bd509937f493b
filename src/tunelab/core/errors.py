"""The one exception type for problems a user can fix."""

from __future__ import annotations


class TunelabError(Exception):
    """A user-fixable problem: a bad file, option or name.

    The message is one line that names the file, line or option and says how to fix it.
    The CLI prints it without a traceback and exits with `exit_code` (2).
    """

    exit_code = 2


class DivergedError(TunelabError):
    """Training diverged (a non-finite loss or gradient, or a loss far above where it began):
    the run stops without saving the diverged weights. The CLI exits with code 1: the input
    was valid, the run failed."""

    exit_code = 1

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


def first_line(err: BaseException, limit: int = 200) -> str:
    """What a library's error says, in one line of at most `limit` characters: its first line,
    and the next where the first only introduces it ("Error(s) in loading state_dict for
    ...:"); the error's type where it says nothing."""
    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
    if not lines:
        return type(err).__name__
    said = lines[0] if not lines[0].endswith(":") or len(lines) == 1 else f"{lines[0]} {lines[1]}"
    return said[:limit]

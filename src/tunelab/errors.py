"""The one exception type for problems a user can fix."""

from __future__ import annotations


class TunelabError(Exception):
    """A user-fixable problem: a bad file, option or name.

    The message is one line that names the file, line or option and says how to fix it.
    The CLI prints it without a traceback and exits with code 2.
    """

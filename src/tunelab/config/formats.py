"""Format strings a record fills (data.prompt_format, data.completion_format): checked when the
config is read, so a field no record can fill is a one-line error before any data loads."""

from __future__ import annotations

import re
import string

from tunelab.core.errors import TunelabError


def check_format(option: str, text: str | None) -> None:
    """One-line error for a format string a record can't fill: unbalanced braces, or a
    positional field ({} or {0}), which has no value: templates fill named fields only (the
    record's columns and instruction, input, output)."""
    if text is None:
        return
    try:
        positional = _positional_field(text)
    except ValueError as err:
        raise TunelabError(f"{option} {text!r}: {err}; escape braces as {{{{ }}}}") from None
    if positional is not None:
        raise TunelabError(f"{option} {text!r}: positional field {{{positional}}} has no value; "
                           "use named fields, e.g. {text} (a column of the data) or {input}")


def _positional_field(text: str) -> str | None:
    """The first positional field of a format string (in a format spec too), else None."""
    for _, name, spec, _ in string.Formatter().parse(text):
        if name is None:
            continue
        head = re.split(r"[.\[]", name, maxsplit=1)[0]
        if not head or head.isdigit():  # str.format reads these as positional arguments
            return name
        inner = _positional_field(spec) if spec else None
        if inner is not None:
            return inner
    return None

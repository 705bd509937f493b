"""Combinations of installed releases known to break tunelab, said in one line before they do.

pyproject.toml keeps ranges for library users and leaves these combinations out, but pip
can still be asked for them (`--no-deps`, an older environment, a conda stack). The CLI and
every peft-backed method check the installed set first, so the user reads what is wrong and
the command that fixes it, not a traceback from inside peft. Each entry records what was
measured, on which set (see tests/test_dependencies.py and `scripts/check-latest`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version

from packaging.specifiers import SpecifierSet

from tunelab.core.errors import TunelabError


@dataclass(frozen=True)
class KnownBreak:
    """`package` in `versions` does not work beside `other` in `other_versions`."""

    package: str
    versions: str
    other: str
    other_versions: str
    what: str
    """What fails, as measured."""
    fix: str
    """The command that gets a working set."""
    measured: tuple[str, str]
    """The (package, other) releases on which the failure was seen."""

    def applies(self, installed: Callable[[str], str | None]) -> bool:
        mine, theirs = installed(self.package), installed(self.other)
        return (mine is not None and theirs is not None
                and SpecifierSet(self.versions).contains(mine, prereleases=True)
                and SpecifierSet(self.other_versions).contains(theirs, prereleases=True))


KNOWN_BREAKS = (
    KnownBreak("peft", "<0.18", "transformers", ">=5.0",
               "peft does not import (it needs transformers' HybridCache, removed in 5.0)",
               "pip install 'peft>=0.21.2'", ("0.17.1", "5.23.0")),
    KnownBreak("peft", ">=0.18,<0.21.2", "transformers", ">=5.23",
               "peft cannot wrap seq2seq models such as T5 and BART, with any method (it reads "
               "_prepare_encoder_decoder_kwargs_for_generation, which transformers removed)",
               "pip install 'peft>=0.21.2'", ("0.21.1", "5.23.0")),
)


@functools.cache
def installed_version(package: str) -> str | None:
    """The installed release of `package` (read once per process; None if not installed)."""
    try:
        return version(package)
    except PackageNotFoundError:
        return None


def check_dependencies(installed: Callable[[str], str | None] | None = None) -> None:
    """Raise TunelabError (one line: the releases, what breaks, the fix) for the first known
    broken combination that is installed (`installed`: package -> version, for tests)."""
    installed = installed or installed_version
    for known in KNOWN_BREAKS:
        if known.applies(installed):
            raise TunelabError(
                f"{known.package} {installed(known.package)} with {known.other} "
                f"{installed(known.other)}: {known.what}; fix: {known.fix}")

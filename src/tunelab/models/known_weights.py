"""Which weights a model recipe loads, known before they load: a cached rerun loads no model.

The result cache (eval/result_cache.py) keeps results under the model's fingerprint
(models/fingerprint.py), taken from the loaded tensors. Loading them (a base model, an adapter
merged into it, and the imports behind both) costs seconds where every item is then looked up.
So when a recipe (`models/loader.py: BaseRecipe`, `runs/run_dir.py: RunRecipe`) loads for
scoring, its weights' fingerprint is remembered under a key made of:

- the recipe itself (model spec, dtype, layers, kind; the run and the base it is scored on);
- the bytes of every file it reads (`Recipe.sources`: the base model folder's files, the run's
  config and trained weights, each earlier run it starts from). The first time, each file is
  read once to hash it (about a second a gigabyte); its digest is kept with its size,
  modification and change times and inode, as git keeps its index, so an unchanged file is
  not read again (one changed in the last two seconds is: its times may not show a rewrite
  within the same tick);
- the versions of the libraries that turn those files into tensors, and a stamp of tunelab's
  own code (its files' sizes and times: an edited loader is another key);
- where the weights are computed (`machine`: a GPU's name, else the CPU's model and
  instruction set): an adapter merged into the base may round otherwise on another device.

A fingerprint is remembered only where no file changed while the recipe loaded (the key is
taken again after the load), and training remembers its run's scoring form as it saves it
(`remember_loaded`), so the run's first `--adapter` evaluation, whose items the run's own
evaluation cached, loads nothing either.

Asked for the same recipe again, `scoring` returns a deferred `LoadedModel`: its tokenizer,
the remembered fingerprint, and weights that load on first use, which is never where every
item is in the cache. Where they do load (an item was not cached), their fingerprint is
checked against the remembered one; a difference means something outside the key changed them
(results looked up under it may not hold), so the record is dropped and the command stops with
one line saying to run it again. A recipe whose files are not all local (a hub id), or whose
kind builds more than the saved weights (a classification head), loads as before.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import time
from collections.abc import Callable, Sequence
from contextlib import closing
from dataclasses import dataclass
from functools import cache, partial
from pathlib import Path

from tunelab.core.deferred import torch
from tunelab.core.dependencies import installed_version
from tunelab.core.errors import TunelabError
from tunelab.core.machine import CpuFeatures
from tunelab.core.paths import open_store, results_store
from tunelab.models.fingerprint import model_fingerprint
from tunelab.models.kinds import LoadedModel, Recipe
from tunelab.models.loader import places_on_gpu

LIBRARIES = ("torch", "transformers", "peft", "safetensors", "accelerate")
"""What reads the files into tensors (their versions are part of the key)."""

RECENT_NS = 2 * 10**9
"""A file changed this recently is hashed again next time (its time may not tell a rewrite
within the same tick apart; git's "racily clean" rule)."""


@dataclass
class KnownWeights:
    """Recipes' weight fingerprints, and file digests by their stat, in one SQLite file."""

    path: Path

    @classmethod
    def default(cls) -> KnownWeights | None:
        """The result cache's file (`core/paths.py: results_store`), or None where it is off."""
        path = results_store()
        return None if path is None else cls(path)

    def _connect(self) -> sqlite3.Connection:
        return open_store(self.path, "weights (key TEXT PRIMARY KEY, fingerprint TEXT NOT NULL)",
                          "files (path TEXT PRIMARY KEY, stat TEXT NOT NULL, digest TEXT NOT NULL)")

    def key(self, recipe: Recipe) -> str | None:
        """The key of what `recipe` loads (see module doc); None where its files are not all
        local."""
        sources = recipe.sources()
        if sources is None:
            return None
        files = list(dict.fromkeys(path.resolve() for path in sources))  # a base read twice: once
        digest = hashlib.blake2b(digest_size=20)
        digest.update(repr(recipe).encode())
        digest.update(repr([(name, installed_version(name)) for name in LIBRARIES]).encode())
        digest.update(code_stamp().encode())
        digest.update(machine().encode())
        for path, file_digest in zip(files, self.file_digests(files), strict=True):
            digest.update(f"{path}\0{file_digest}\0".encode())
        return digest.hexdigest()

    def file_digests(self, paths: Sequence[Path]) -> list[str]:
        """Each file's content digest (`paths` resolved), read again only where its stat
        changed or it changed moments ago; hashed outside any lock on the store."""
        stats = [_stat(path) for path in paths]
        names = [str(path) for path in paths]
        known: dict[str, str] = {}
        with closing(self._connect()) as connection:
            for start in range(0, len(names), 500):
                part = names[start:start + 500]
                known.update(connection.execute(
                    f"SELECT path, stat || '|' || digest FROM files WHERE path IN "
                    f"({','.join('?' * len(part))})", part).fetchall())
        digests, new = [], []
        for path, name, (stat, settled) in zip(paths, names, stats, strict=True):
            held = known.get(name, "")
            if held.startswith(stat + "|"):
                digests.append(held[len(stat) + 1:])
                continue
            digests.append(_file_digest(path))
            if settled:
                new.append((name, stat, digests[-1]))
        if new:
            with closing(self._connect()) as connection, connection:
                connection.executemany("INSERT OR REPLACE INTO files VALUES (?, ?, ?)", new)
        return digests

    def fingerprint(self, key: str) -> str | None:
        """The fingerprint remembered under `key`, if any."""
        with closing(self._connect()) as connection:
            row = connection.execute("SELECT fingerprint FROM weights WHERE key = ?",
                                     (key,)).fetchone()
        return None if row is None else str(row[0])

    def remember(self, key: str, fingerprint: str) -> None:
        with closing(self._connect()) as connection, connection:
            connection.execute("INSERT OR REPLACE INTO weights VALUES (?, ?)", (key, fingerprint))

    def forget(self, key: str) -> None:
        with closing(self._connect()) as connection, connection:
            connection.execute("DELETE FROM weights WHERE key = ?", (key,))


class OtherWeights(TunelabError):
    """The weights a deferred model loaded are not the ones it was known to have."""


def deferred_model(recipe: Recipe, fingerprint: str,
                   on_other: Callable[[], object] = lambda: None) -> LoadedModel:
    """`recipe`'s model with its weights known to be `fingerprint`, loaded on first use and
    checked then: other weights call `on_other` and raise OtherWeights (results looked up
    under `fingerprint` may not be theirs)."""
    def check(model: torch.nn.Module) -> None:
        if model_fingerprint(model) != fingerprint:
            on_other()
            raise OtherWeights(f"{recipe}: the weights loaded now differ from those the result "
                               "cache recorded for the same files, so results it looked up may "
                               "not be this model's; the record is dropped: run the command "
                               "again")
    tokenizer, path, kind = recipe.without_weights()
    return LoadedModel.deferred(tokenizer, path, kind, recipe, fingerprint, check)


def scoring(recipe: Recipe, expected: str | None = None) -> LoadedModel:
    """`recipe.load()`, or where the result cache knows which weights it loads, a deferred
    model whose weights load on first use (see module doc). `expected`: the fingerprint
    another process loaded the recipe with (a worker of `--nproc` takes its share's), deferred
    on it without a key. A kind whose loaded model is more than its files (a classification
    head drawn at load) loads as before."""
    if not recipe.model_kind().weights_are_files:
        return recipe.load()
    if expected is not None:
        return deferred_model(recipe, expected)
    store = KnownWeights.default()
    key = store.key(recipe) if store is not None else None
    if store is None or key is None:
        return recipe.load()
    known = store.fingerprint(key)
    if known is not None:
        return deferred_model(recipe, known, partial(store.forget, key))
    lm = recipe.load()
    if store.key(recipe) == key:  # no file changed while it loaded
        store.remember(key, model_fingerprint(lm.model))
    return lm


def remember_loaded(recipe: Recipe, model: torch.nn.Module) -> None:
    """Remember `model` (in memory, just saved: a run's scoring form after training) as what
    `recipe` loads, so the run's first evaluation by `--adapter` loads nothing either."""
    store = KnownWeights.default()
    if store is not None and recipe.model_kind().weights_are_files \
            and (key := store.key(recipe)) is not None:
        store.remember(key, model_fingerprint(model))


@cache
def machine() -> str:
    """Where a recipe's weights are computed: the device (a GPU's name, else the CPU's model
    and instruction set). A merge's products may round otherwise on another one, so weights
    merged there are another key (and a GPU's weights never answer for a CPU's)."""
    if places_on_gpu():
        return torch.cuda.get_device_name(torch.cuda.current_device())
    cpu = CpuFeatures.here()
    return f"{cpu.name} {cpu.kind}"


@cache
def code_stamp() -> str:
    """A digest of tunelab's own source files' names, sizes and times (taken once a process)."""
    root = Path(__file__).parents[1]  # the tunelab package
    digest = hashlib.blake2b(digest_size=16)
    for path in sorted(root.rglob("*.py")):
        digest.update(f"{path.relative_to(root)}\0{_stat(path)[0]}\0".encode())
    return digest.hexdigest()


def _file_digest(path: Path) -> str:
    digest = hashlib.blake2b(digest_size=20)
    with path.open("rb") as handle:
        while chunk := handle.read(2**22):
            digest.update(chunk)
    return digest.hexdigest()


def _stat(path: Path) -> tuple[str, bool]:
    """(size, modification and change times, inode) of a file, and whether it last changed
    long enough ago (RECENT_NS) for them to tell a later rewrite apart."""
    found = os.stat(path)
    settled = time.time_ns() - max(found.st_mtime_ns, found.st_ctime_ns) > RECENT_NS
    return f"{found.st_size}:{found.st_mtime_ns}:{found.st_ctime_ns}:{found.st_ino}", settled

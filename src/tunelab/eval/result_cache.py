"""No item scored twice: evaluation results kept by exactly what produced them.

A result (one prompt's generated text, one context's choice log-likelihoods) is stored under a
key made of the model's fingerprint (models/fingerprint.py: every weight, buffer and adapter
switch), the tokenizer's, the kind of request and its settings (max_new_tokens, stop strings,
...), and the exact input token ids. The clean items that the quickstart, robustness, bias and
retention all score, a perturbation that leaves an item as it was, a prompt repeated within a
task, and a rerun of the same command are then looked up instead of run. Another model, another
adapter, other settings or a changed prompt is another key, so the cache cannot answer for
them; a run's weights after training are another fingerprint.

Sampled generation is never cached (its text depends on the random stream of the whole call).
Any other deterministic scorer keeps its results the same way under its own name
(`through_scorer`: the offensive-text classifier of eval/harm.py, named by its packages'
versions). The store is one SQLite file under the user cache
(`$TUNELAB_CACHE/eval-results.sqlite`), which several processes read and write at once; it also
holds the fingerprint each model recipe's weights had (models/known_weights.py: a rerun whose
items are all here loads no weights). `TUNELAB_EVAL_CACHE=off` turns both off.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import weakref
from array import array
from collections.abc import Callable, Sequence
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tunelab.core.deferred import torch  # imported when a result is stored
from tunelab.core.paths import open_store, results_store
from tunelab.models.kinds import LoadedModel, fingerprint_of

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

_TOKENIZER_DIGESTS: weakref.WeakKeyDictionary[object, str] = weakref.WeakKeyDictionary()


def tokenizer_fingerprint(tokenizer: PreTrainedTokenizerBase) -> str:
    """A digest of a tokenizer's vocabulary, added tokens and special tokens (what decoding
    generated ids into text depends on)."""
    known = _TOKENIZER_DIGESTS.get(tokenizer)
    if known is None:
        digest = hashlib.blake2b(digest_size=16)
        digest.update(type(tokenizer).__name__.encode())
        digest.update(json.dumps(sorted(tokenizer.get_vocab().items())).encode())
        digest.update(repr(sorted(tokenizer.special_tokens_map.items())).encode())
        known = digest.hexdigest()
        _TOKENIZER_DIGESTS[tokenizer] = known
    return known


def token_bytes(ids: Sequence[int]) -> bytes:
    """Token ids as bytes for a key (fixed width, so no two sequences collide)."""
    return array("q", ids).tobytes()


@dataclass
class ResultCache:
    """Results of one kind of request on one model, looked up before anything runs."""

    path: Path
    hits: int = 0
    misses: int = 0

    @classmethod
    def default(cls) -> ResultCache | None:
        """The user cache's store, or None when `TUNELAB_EVAL_CACHE` turns it off."""
        path = results_store()
        return None if path is None else cls(path)

    def _connect(self) -> sqlite3.Connection:
        return open_store(self.path, "results (key TEXT PRIMARY KEY, value TEXT NOT NULL)")

    def through(
        self,
        model: torch.nn.Module | LoadedModel,
        request: str,
        settings: object,
        items: Sequence[bytes],
        compute: Callable[[list[int]], list[Any]],  # Any: a JSON value per item
    ) -> list[Any]:  # Any: as compute returns
        """Each item's result: looked up under (model, request, settings, item), and for the
        missing ones `compute(indices)` called once (an item repeated in `items` runs once)
        and stored. A deferred model (models/known_weights.py) is looked up by its known
        fingerprint: its weights load only if `compute` runs."""
        return self.through_scorer(fingerprint_of(model), request, settings, items, compute)

    def through_scorer(
        self,
        scorer: str,
        request: str,
        settings: object,
        items: Sequence[bytes],
        compute: Callable[[list[int]], list[Any]],  # Any: a JSON value per item
    ) -> list[Any]:  # Any: as compute returns
        """`through` for any deterministic scorer named by `scorer` (a model's fingerprint; a
        text classifier and its version, eval/harm.py)."""
        base = hashlib.blake2b(digest_size=20)
        base.update(scorer.encode())
        base.update(request.encode())
        base.update(json.dumps(settings, sort_keys=True, default=str).encode())
        keys = []
        for item in items:
            digest = base.copy()
            digest.update(item)
            keys.append(digest.hexdigest())
        found: dict[str, Any] = {}  # Any: JSON values
        with closing(self._connect()) as connection:
            unique = list(dict.fromkeys(keys))
            for start in range(0, len(unique), 500):
                part = unique[start:start + 500]
                rows = connection.execute(
                    f"SELECT key, value FROM results WHERE key IN ({','.join('?' * len(part))})",
                    part).fetchall()
                found.update((key, json.loads(value)) for key, value in rows)
        first: dict[str, int] = {}
        for index, key in enumerate(keys):
            if key not in found:
                first.setdefault(key, index)
        self.hits += sum(key in found for key in keys)
        self.misses += len(first)
        if first:
            computed = compute(list(first.values()))
            new = dict(zip(first, computed, strict=True))
            with closing(self._connect()) as connection, connection:
                connection.executemany("INSERT OR REPLACE INTO results VALUES (?, ?)",
                                       [(k, json.dumps(v)) for k, v in new.items()])
            found.update(new)
        return [found[key] for key in keys]

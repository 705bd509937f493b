"""Human ratings in SQLite: one row per judgement, committed as it is given.

The database lives in the run (or eval) directory as `ratings.sqlite`, in WAL mode, so a
server killed at any moment loses nothing already submitted, and several raters can write at
once. A rater rating the same (item, system, criterion) again replaces their earlier score
(the latest judgement counts). CSV export and import carry the same rows, so ratings collected
in a spreadsheet merge into the same store.
"""

from __future__ import annotations

import csv
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tunelab.core.errors import TunelabError

SCHEMA = """
CREATE TABLE IF NOT EXISTS scores (
    rater TEXT NOT NULL, item TEXT NOT NULL, system TEXT NOT NULL, criterion TEXT NOT NULL,
    score INTEGER NOT NULL, note TEXT NOT NULL DEFAULT '', created REAL NOT NULL,
    PRIMARY KEY (rater, item, system, criterion));
CREATE TABLE IF NOT EXISTS preferences (
    rater TEXT NOT NULL, item TEXT NOT NULL, first TEXT NOT NULL, second TEXT NOT NULL,
    preference INTEGER NOT NULL, created REAL NOT NULL,
    PRIMARY KEY (rater, item, first, second));
CREATE TABLE IF NOT EXISTS marks (
    rater TEXT NOT NULL, item TEXT NOT NULL, kind TEXT NOT NULL, note TEXT NOT NULL DEFAULT '',
    created REAL NOT NULL, PRIMARY KEY (rater, item));
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
CSV_FIELDS = ("table", "rater", "item", "system", "criterion", "score", "first", "second",
              "preference", "note")


@dataclass(frozen=True)
class Score:
    rater: str
    item: str
    system: str
    criterion: str
    score: int
    note: str = ""


@dataclass(frozen=True)
class Preference:
    rater: str
    item: str
    first: str
    second: str
    preference: int
    """-1: first better, 0: tie, 1: second better."""


def _preference_row(rater: str, item: str, first: str, second: str, preference: int,
                    created: float) -> tuple[str, str, str, str, int, float]:
    """The `preferences` row of one pairwise judgement, as every writer stores it: the pair in
    its fixed (sorted) order with the preference flipped to match, so one rater's judgements of
    a pair share one row whichever order the page or the CSV showed the pair in."""
    if preference not in (-1, 0, 1):
        raise TunelabError(f"preference {preference!r}: -1 (first better), 0 (tie) or 1")
    if first > second:
        first, second, preference = second, first, -preference
    return rater, item, first, second, int(preference), created


class RatingStore:
    """The ratings of one evaluation directory."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.parent.is_dir():
            raise TunelabError(f"{self.path.parent}: no such directory; rate an existing run "
                               "or eval directory")
        with self.connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(SCHEMA)

    @contextmanager
    def connect(self) -> Iterator[sqlite3.Connection]:
        """A connection whose changes are committed when the block ends (one per request)."""
        db = sqlite3.connect(self.path, timeout=30)
        try:
            with db:
                yield db
        finally:
            db.close()

    def add_score(self, rater: str, item: str, system: str, criterion: str, score: int,
                  note: str = "") -> None:
        with self.connect() as db:
            db.execute("INSERT OR REPLACE INTO scores VALUES (?, ?, ?, ?, ?, ?, ?)",
                       (rater, item, system, criterion, int(score), note, time.time()))

    def add_preference(self, rater: str, item: str, first: str, second: str,
                       preference: int) -> None:
        row = _preference_row(rater, item, first, second, preference, time.time())
        with self.connect() as db:
            db.execute("INSERT OR REPLACE INTO preferences VALUES (?, ?, ?, ?, ?, ?)", row)

    def add_judgement(self, rater: str, item: str, scores: list[tuple[str, str, int]],
                      preferences: list[tuple[str, str, int]], note: str = "") -> None:
        """One submitted page: every (system, criterion, score) and (first, second,
        preference) of an item in one transaction, so a kill stores all of it or none; a
        skip of the item by this rater is withdrawn (a flag stays)."""
        now = time.time()
        rows = [_preference_row(rater, item, first, second, preference, now)
                for first, second, preference in preferences]
        with self.connect() as db:
            db.executemany("INSERT OR REPLACE INTO scores VALUES (?, ?, ?, ?, ?, ?, ?)",
                           [(rater, item, system, criterion, int(score), note, now)
                            for system, criterion, score in scores])
            db.executemany("INSERT OR REPLACE INTO preferences VALUES (?, ?, ?, ?, ?, ?)", rows)
            db.execute("DELETE FROM marks WHERE rater = ? AND item = ? AND kind = 'skip'",
                       (rater, item))

    def given(self, rater: str, item: str) -> dict[str, object]:
        """What this rater gave an item so far: scores by (system, criterion), preferences by
        (first, second), the note and the mark (to show a revisited page filled in)."""
        with self.connect() as db:
            scores = db.execute("SELECT system, criterion, score, note FROM scores WHERE "
                                "rater = ? AND item = ?", (rater, item)).fetchall()
            prefs = db.execute("SELECT first, second, preference FROM preferences WHERE "
                               "rater = ? AND item = ?", (rater, item)).fetchall()
            mark = db.execute("SELECT kind, note FROM marks WHERE rater = ? AND item = ?",
                              (rater, item)).fetchone()
        return {"scores": {(s, c): v for s, c, v, _ in scores},
                "preferences": {(a, b): v for a, b, v in prefs},
                "note": next((n for *_, n in scores if n), mark[1] if mark else ""),
                "mark": mark[0] if mark else None}

    def set_meta(self, key: str, value: str) -> None:
        with self.connect() as db:
            db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    def meta(self, key: str) -> str | None:
        with self.connect() as db:
            row = db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def marks(self) -> list[tuple[str, str, str, str]]:
        """(rater, item, skip|flag, note) of every marked item."""
        with self.connect() as db:
            return db.execute("SELECT rater, item, kind, note FROM marks ORDER BY created"
                              ).fetchall()

    def mark(self, rater: str, item: str, kind: str, note: str = "") -> None:
        """Skip or flag an item for one rater (it counts as done for their progress)."""
        with self.connect() as db:
            db.execute("INSERT OR REPLACE INTO marks VALUES (?, ?, ?, ?, ?)",
                       (rater, item, kind, note, time.time()))

    def scores(self) -> list[Score]:
        with self.connect() as db:
            rows = db.execute("SELECT rater, item, system, criterion, score, note FROM scores "
                              "ORDER BY created").fetchall()
        return [Score(*row) for row in rows]

    def preferences(self) -> list[Preference]:
        with self.connect() as db:
            rows = db.execute("SELECT rater, item, first, second, preference FROM preferences "
                              "ORDER BY created").fetchall()
        return [Preference(*row) for row in rows]

    def done(self, rater: str) -> set[str]:
        """Items this rater has scored, skipped or flagged (where they resume)."""
        with self.connect() as db:
            rows = db.execute("SELECT item FROM scores WHERE rater = ? UNION "
                              "SELECT item FROM marks WHERE rater = ?", (rater, rater))
            return {row[0] for row in rows}

    def export_csv(self, path: str | Path) -> int:
        """Every score and preference as CSV rows; returns the rows written."""
        rows = [{"table": "score", "rater": s.rater, "item": s.item, "system": s.system,
                 "criterion": s.criterion, "score": s.score, "note": s.note}
                for s in self.scores()]
        rows += [{"table": "preference", "rater": p.rater, "item": p.item, "first": p.first,
                  "second": p.second, "preference": p.preference} for p in self.preferences()]
        with Path(path).open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, CSV_FIELDS)
            writer.writeheader()
            writer.writerows(rows)
        return len(rows)

    def import_csv(self, path: str | Path) -> int:
        """Merge a CSV written by `export_csv` (or by hand in its columns); a bad row is a
        one-line error naming its line, and nothing of the file is stored then."""
        source = Path(path)
        if not source.is_file():
            raise TunelabError(f"{source}: no such file")
        with source.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            missing = [f for f in ("table", "rater", "item") if f not in (reader.fieldnames or [])]
            if missing:
                raise TunelabError(f"{source}:1: no column {missing[0]}; the header must be "
                                   f"{','.join(CSV_FIELDS)}")
            parsed = [(line, row) for line, row in enumerate(reader, start=2)]
        scores, preferences = [], []
        for line, row in parsed:
            try:
                if row["table"] == "score":
                    scores.append((row["rater"], row["item"], row["system"], row["criterion"],
                                   int(row["score"]), row.get("note") or "", time.time()))
                elif row["table"] == "preference":
                    preferences.append(_preference_row(
                        row["rater"], row["item"], row["first"], row["second"],
                        int(row["preference"]), time.time()))
                else:
                    raise ValueError(row["table"])
            except (KeyError, TypeError, ValueError, TunelabError) as err:
                raise TunelabError(f"{source}:{line}: not a rating row ({err}); table is score "
                                   "(with system, criterion, score) or preference (first, "
                                   "second, preference -1/0/1)") from None
        with self.connect() as db:
            db.executemany("INSERT OR REPLACE INTO scores VALUES (?, ?, ?, ?, ?, ?, ?)", scores)
            db.executemany("INSERT OR REPLACE INTO preferences VALUES (?, ?, ?, ?, ?, ?)",
                           preferences)
        return len(scores) + len(preferences)

"""What a rating session shows: the rated systems' outputs on the same items, blind.

    a run or eval directory -> each system's evaluation (eval/<system>/ or <dir>/<system>/)
    -> the items every chosen system scored, paired by origin -> one fixed, seeded item order
    -> per (rater, item) a seeded order of the systems behind the labels A, B, ... (the names
    never reach the page) -> the criteria (name + one-line description) and the scale.

The slot -> system mapping is a pure function of (seed, rater, item), so the page a rater
reloads shows the same order, and the server, not the browser, turns a slot back into a
system name when a rating arrives.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from tunelab.core.errors import TunelabError
from tunelab.eval.runner import EvalResult, read_result
from tunelab.runs import EvalDir, RunDir, ratings_file
from tunelab.studies.error_analysis import reference_text, row_key

# The built-in criteria, one line each as the page shows them (SummEval's dimensions).
CRITERIA = {
    "fluency": "Is the text well-formed, grammatical English that reads naturally?",
    "coherence": "Does it hang together: ordered, on one thread, without contradictions?",
    "relevance": "Does it answer the input, with the important content and nothing off-topic?",
    "consistency": "Is everything it states supported by the input (no invented facts)?",
    "helpfulness": "Would this output help the person who wrote the input?",
    "correctness": "Is the answer right?",
}
SLOTS = "ABCDEFGH"


@dataclass(frozen=True)
class Criterion:
    name: str
    description: str


@dataclass(frozen=True)
class Item:
    key: str
    input: str
    reference: str
    outputs: Mapping[str, str]
    prompt: str = ""
    """The prompt as the model saw it (template and shots included)."""
    """system name -> its output on this item."""


def system_results(folder: Path) -> tuple[Path, dict[str, EvalResult]]:
    """(the folder holding the systems' eval dirs, system name -> its evaluation)."""
    run = RunDir(folder)
    systems_dir = run.eval_root if run.eval_root.is_dir() else folder
    results: dict[str, EvalResult] = {}
    folders: dict[str, Path] = {}
    for sub in sorted(systems_dir.iterdir()):
        if EvalDir(sub).exists():
            result = read_result(EvalDir(sub))
            label = result.system.label
            if label in folders:
                raise TunelabError(f"{sub}: scores the same system ({label}) as "
                                   f"{folders[label]}; keep one of the two in {systems_dir}")
            results[label], folders[label] = result, sub
    return systems_dir, results


def choose_systems(results: Mapping[str, EvalResult], wanted: Sequence[str] | None,
                   where: Path) -> list[str]:
    """The systems named by --systems: a system's name, its directory name or a prefix that
    names exactly one (`base` when one base evaluation is there)."""
    names = list(results)
    if not wanted:
        if len(names) < 2:
            raise TunelabError(f"{where}: holds {len(names)} evaluation(s) ({', '.join(names) or 'none'}); "
                               "rating compares at least two systems: evaluate the base model beside "
                               "the fine-tune (tunelab eval --task RUN --out RUN/eval/base-0-shot)")
        return names
    chosen = []
    for want in wanted:
        slugs = {n: results[n].system.slug for n in names}
        exact = [n for n in names if want in (n, slugs[n])]
        matches = exact or [n for n in names if n.startswith(want) or slugs[n].startswith(want)]
        if len(matches) != 1:
            found = "matches " + ", ".join(matches) if matches else "matches none"
            raise TunelabError(f"--systems {want}: {found} of the evaluations in {where} "
                               f"({', '.join(names)}); name one of them exactly")
        if matches[0] not in chosen:
            chosen.append(matches[0])
    if len(chosen) < 2:
        raise TunelabError("--systems: name at least two systems to rate side by side")
    if len(chosen) > len(SLOTS):
        raise TunelabError(f"--systems: at most {len(SLOTS)} systems on one page")
    return chosen


def read_criteria(names: Sequence[str] | None, file: str | Path | None) -> list[Criterion]:
    """Criteria from --criteria (built-in names) and/or --criteria-file (name: description)."""
    described = dict(CRITERIA)
    if file:
        path = Path(file)
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
            raise TunelabError(f"--criteria-file {path}: unreadable ({err}); write one "
                               "'name: one-line description' per line") from None
        if not isinstance(loaded, dict) or not loaded or not all(
                isinstance(v, str) and v.strip() for v in loaded.values()):
            raise TunelabError(f"--criteria-file {path}: must map each criterion name to a "
                               "one-line description (e.g. 'faithfulness: No invented facts?')")
        described.update({str(k): v.strip() for k, v in loaded.items()})
        names = names or [str(k) for k in loaded]
    names = list(names or ("fluency", "coherence", "relevance"))
    unknown = [n for n in names if n not in described]
    if unknown:
        raise TunelabError(f"--criteria {unknown[0]}: no description; built-in criteria are "
                           f"{', '.join(CRITERIA)}; describe others in --criteria-file")
    if len(set(names)) != len(names):
        raise TunelabError("--criteria: a criterion is named twice")
    return [Criterion(n, described[n]) for n in names]


@dataclass
class RatingSession:
    folder: Path
    systems: list[str]
    items: list[Item]
    criteria: list[Criterion]
    scale: int = 5
    pairwise: bool = False
    show_reference: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        self.index = {item.key: i for i, item in enumerate(self.items)}

    @property
    def ratings(self) -> Path:
        """Where the ratings go: the rated directory's ratings.sqlite."""
        return ratings_file(self.folder)

    def order(self, rater: str, key: str) -> list[str]:
        """The systems behind slots A, B, ... for this rater and item (seeded, stable)."""
        digest = hashlib.sha256(f"{self.seed}|{rater}|{key}".encode()).digest()
        systems = list(self.systems)
        random.Random(int.from_bytes(digest[:8], "big")).shuffle(systems)
        return systems

    def slots(self, rater: str, key: str) -> dict[str, str]:
        return dict(zip(SLOTS, self.order(rater, key), strict=False))

    def describe(self) -> dict[str, object]:
        return {"systems": self.systems, "items": len(self.items), "scale": self.scale,
                "criteria": [c.name for c in self.criteria], "pairwise": self.pairwise}


def open_session(directory: str | Path, systems: Sequence[str] | None = None,
                 criteria: Sequence[str] | None = None, criteria_file: str | Path | None = None,
                 scale: int = 5, pairwise: bool = False, show_reference: bool = False,
                 limit: int | None = None, seed: int = 0) -> RatingSession:
    """The session for a run or eval directory (one-line errors for everything wrong)."""
    folder = Path(directory)
    if not folder.is_dir():
        raise TunelabError(f"{folder}: no such directory; give a run directory or a directory "
                           "of evaluations (tunelab eval --baselines --out DIR)")
    if not 2 <= scale <= 9:
        raise TunelabError(f"--scale {scale}: rate on 2 to 9 points (keys 1-9); 5 is usual")
    if limit is not None and limit < 1:
        raise TunelabError(f"--limit {limit}: rate at least one item")
    chosen_criteria = read_criteria(criteria, criteria_file)
    systems_dir, results = system_results(folder)
    chosen = choose_systems(results, systems, systems_dir)
    tasks = {results[s].task for s in chosen}
    if len(tasks) > 1:
        raise TunelabError(f"--systems: {', '.join(chosen)} evaluated different tasks "
                           f"({', '.join(sorted(tasks))}); rate evaluations of one task")
    rows = {s: {row_key(r): r for r in results[s].predictions} for s in chosen}
    first = results[chosen[0]].predictions
    shared = [row_key(r) for r in first if all(row_key(r) in rows[s] for s in chosen)]
    if not shared:
        raise TunelabError(f"{systems_dir}: {', '.join(chosen)} share no scored item; rate "
                           "evaluations of the same split")
    items = [Item(key, str(rows[chosen[0]][key].get("input", "")),
                  reference_text(rows[chosen[0]][key].get("reference", "")),
                  {s: str(rows[s][key]["prediction"]) for s in chosen},
                  str(rows[chosen[0]][key].get("prompt", ""))) for key in shared]
    random.Random(seed).shuffle(items)
    return RatingSession(folder, chosen, items[:limit] if limit else items, chosen_criteria,
                         scale, pairwise, show_reference, seed)

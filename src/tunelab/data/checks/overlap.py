"""Duplicates, near duplicates, 13-gram overlap and conflicting labels, within and across sets.

Every detector finds pairs of items (i < j, positions in one list of all items); a pair is
counted once, under the first detector that finds it (exact before near before 13-gram):

    exact     the same input after whitespace and case normalisation
    near      MinHash (datasketch) over character 5-grams of the normalised input, candidate
              pairs from LSH, kept when the estimated Jaccard similarity >= the threshold
    ngram     a shared word 13-gram (lower case, punctuation dropped), as lm-evaluation-
              harness's decontamination counts overlap; inputs of fewer than 13 words have none

Within a set, the duplicates of an item are the later members of its group (the first is
kept); across sets, an item of the later set is leaked when it matches an item of the earlier
one. Conflicting labels: the same normalised input with different normalised outputs.
"""

from __future__ import annotations

import zlib
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from datasketch import MinHash, MinHashLSH

from tunelab.data.checks.items import CheckItem, CheckSet, normalize, words

NGRAM = 13
SHINGLE = 5
NUM_PERM = 128
Pair = tuple[int, int]


class Detector:
    """One way two inputs count as the same item."""

    name: str
    description: str
    same_example: bool = True
    """A match is the same example twice (a duplicate to drop), not just shared text."""

    def pairs(self, items: Sequence[CheckItem], keys: Sequence[str]) -> set[Pair]:
        """Pairs (i < j) of matching items; `keys`: each item's normalised input."""
        raise NotImplementedError


class Exact(Detector):
    name = "exact"
    description = "the same input after whitespace and case normalisation"

    def pairs(self, items: Sequence[CheckItem], keys: Sequence[str]) -> set[Pair]:
        groups: dict[str, list[int]] = defaultdict(list)
        for i, key in enumerate(keys):
            groups[key].append(i)
        return _chain_pairs(groups.values())


def _chain_pairs(groups: Iterable[list[int]]) -> set[Pair]:
    """Every pair within each group (groups are small; a large one is linked to its first)."""
    out: set[Pair] = set()
    for group in groups:
        if len(group) < 2:
            continue
        if len(group) > 50:  # a huge group: each member linked to the first and to the
            # first of every other set is enough to count and to drop (and stays linear)
            out.update((group[0], j) for j in group[1:])
            continue
        out.update((a, b) for n, a in enumerate(group) for b in group[n + 1:])
    return out


@dataclass
class Near(Detector):
    threshold: float = 0.8
    name = "near"
    description = "MinHash-LSH estimated Jaccard similarity of character 5-grams >= threshold"

    def pairs(self, items: Sequence[CheckItem], keys: Sequence[str]) -> set[Pair]:
        unique: dict[str, list[int]] = defaultdict(list)
        for i, key in enumerate(keys):
            unique[key].append(i)
        texts = list(unique)
        hashes = minhashes(texts)
        # LSH gives candidates (its bands need a threshold below ~0.95); each is verified
        lsh = MinHashLSH(threshold=min(self.threshold, 0.9), num_perm=NUM_PERM)
        with lsh.insertion_session() as session:
            for n, minhash in enumerate(hashes):
                session.insert(n, minhash, check_duplication=False)
        out: set[Pair] = set()
        for n, minhash in enumerate(hashes):
            for m in lsh.query(minhash):
                if m <= n or minhash.jaccard(hashes[m]) < self.threshold:
                    continue
                first, second = unique[texts[n]], unique[texts[m]]
                out.update((min(a, b), max(a, b)) for a in first[:50] for b in second[:50])
        return out


def shingles(text: str) -> list[bytes]:
    encoded = text.encode("utf-8")
    if len(encoded) <= SHINGLE:
        return [encoded]
    return [encoded[k:k + SHINGLE] for k in range(len(encoded) - SHINGLE + 1)]


def minhashes(texts: Sequence[str]) -> list[MinHash]:
    """One MinHash per text, sharing one set of permutations (datasketch's bulk path)."""
    return MinHash.bulk((shingles(t) for t in texts), num_perm=NUM_PERM, hashfunc=zlib.crc32)


class NGram(Detector):
    name = "ngram13"
    description = "a shared word 13-gram (lm-evaluation-harness's decontamination)"
    same_example = False  # a shared phrase is contamination evidence, not a duplicate

    def pairs(self, items: Sequence[CheckItem], keys: Sequence[str]) -> set[Pair]:
        owners: dict[int, list[int]] = defaultdict(list)
        for i, item in enumerate(items):
            tokens = words(item.input)
            grams = {hash(tuple(tokens[k:k + NGRAM])) for k in range(len(tokens) - NGRAM + 1)}
            for gram in grams:
                owners[gram].append(i)
        return _chain_pairs(group for group in owners.values() if len(group) > 1)


def detectors(threshold: float) -> list[Detector]:
    """The detectors in precedence order (`threshold`: near duplicates; 0 turns them off)."""
    found: list[Detector] = [Exact()]
    if threshold > 0:
        found.append(Near(threshold))
    found.append(NGram())
    return found


@dataclass
class Overlap:
    """Every matching pair of items, by the detector that found it."""

    items: list[CheckItem]
    sets: list[CheckSet]
    pairs: dict[str, set[Pair]]
    """Detector name -> the pairs it found first."""
    set_index: list[int] = field(default_factory=list)
    """Per item: the position of its set in `sets`."""
    found_by: list[Detector] = field(default_factory=list)

    def within(self, set_position: int) -> dict[str, int]:
        """Per detector: items of the set that repeat an earlier item of the same set."""
        return {name: len({j for i, j in found if self.set_index[i] == self.set_index[j]
                           == set_position})
                for name, found in self.pairs.items()}

    def across(self, earlier: int, later: int) -> dict[str, list[Pair]]:
        """Per detector: (item of `earlier`, item of `later`) pairs that match."""
        out: dict[str, list[Pair]] = {}
        for name, found in self.pairs.items():
            out[name] = sorted((i, j) if self.set_index[i] == earlier else (j, i)
                               for i, j in found
                               if {self.set_index[i], self.set_index[j]} == {earlier, later}
                               and earlier != later)
        return out

    def duplicates_to_drop(self, set_position: int) -> set[int]:
        """Items of a set that repeat an earlier item of it (detectors of the same example)."""
        return {j for detector in self.found_by if detector.same_example
                for i, j in self.pairs[detector.name]
                if self.set_index[i] == self.set_index[j] == set_position}


def find_overlap(sets: Sequence[CheckSet], threshold: float) -> Overlap:
    """Run every detector over the items of all sets; a pair goes to the first detector."""
    items = [item for s in sets for item in s.items]
    set_index = [n for n, s in enumerate(sets) for _ in s.items]
    keys = [item.input_key for item in items]
    seen: set[Pair] = set()
    pairs: dict[str, set[Pair]] = {}
    used = detectors(threshold)
    for detector in used:
        found = detector.pairs(items, keys) - seen
        pairs[detector.name] = found
        seen |= found
    return Overlap(items, list(sets), pairs, set_index, used)


@dataclass
class Conflict:
    """The same input with different outputs."""

    input: str
    items: list[CheckItem]

    def to_json(self) -> dict[str, object]:
        return {"input": self.input[:300], "outputs": [
            {"set": i.set_name, "origin": i.origin, "output": i.output[:200]} for i in self.items]}


def conflicts(sets: Sequence[CheckSet]) -> list[Conflict]:
    """Inputs given different outputs, in or across the sets (largest groups first)."""
    groups: dict[str, list[CheckItem]] = defaultdict(list)
    for s in sets:
        for item in s.items:
            groups[item.input_key].append(item)
    found = [Conflict(members[0].input, members) for key, members in groups.items()
             if key and len({normalize(m.output) for m in members}) > 1]
    return sorted(found, key=lambda c: -len(c.items))

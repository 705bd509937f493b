"""Duplicates, near duplicates, 13-gram overlap and conflicting labels, within and across sets.

Every detector finds pairs of items (i < j, positions in one list of all items); a pair is
counted once, under the first detector that finds it (exact before near before 13-gram):

    exact     the same example (input and output) after whitespace and case normalisation
    near      MinHash (datasketch) over character 5-grams of the normalised example, candidate
              pairs from LSH, kept when the estimated Jaccard similarity >= the threshold
    ngram     a shared word 13-gram of the inputs (lower case, punctuation dropped), as
              lm-evaluation-harness's decontamination counts overlap; inputs of fewer than 13
              words have none

An example, not an input alone: the same input with another output is a conflicting label
(below), and when the inputs are short and shared (a label in, a review out) only the output
tells two examples apart.

Within a set, the duplicates of an item are the later members of its group (the first is
kept); across sets, an item of the later set is leaked when it matches an item of the earlier
one. Conflicting labels: the same normalised input with different normalised outputs.
"""

from __future__ import annotations

import zlib
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from tunelab.core.deferred import datasketch
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

    def pairs(self, items: Sequence[CheckItem], keys: Sequence[str],
              set_index: Sequence[int]) -> set[Pair]:
        """Pairs (i < j) of matching items; `keys`: each item's normalised example (input
        and output);
        `set_index`: each item's set."""
        raise NotImplementedError


class Exact(Detector):
    name = "exact"
    description = "the same example (input and output) after whitespace and case normalisation"

    def pairs(self, items: Sequence[CheckItem], keys: Sequence[str],
              set_index: Sequence[int]) -> set[Pair]:
        groups: dict[str, list[int]] = defaultdict(list)
        for i, key in enumerate(keys):
            groups[key].append(i)
        return _chain_pairs(groups.values(), set_index)


LARGE = 50
"""A group of matching items larger than this is linked through its first members only."""


def _chain_pairs(groups: Iterable[list[int]], set_index: Sequence[int]) -> set[Pair]:
    """Every pair within each group. A large group links each member to the first member of
    its own set and of every other set instead: the same items count as duplicates and as
    found across sets, and the pairs stay linear in the group's size."""
    out: set[Pair] = set()
    for group in groups:
        if len(group) < 2:
            continue
        if len(group) <= LARGE:
            out.update((a, b) for n, a in enumerate(group) for b in group[n + 1:])
            continue
        firsts: dict[int, int] = {}
        for i in group:  # groups list items in order, so the first seen is the first
            firsts.setdefault(set_index[i], i)
        out.update((min(i, f), max(i, f)) for i in group for f in firsts.values() if i != f)
    return out


@dataclass
class Near(Detector):
    threshold: float = 0.8
    name = "near"
    description = ("MinHash-LSH estimated Jaccard similarity of the examples' character 5-grams "
                   ">= threshold")

    def pairs(self, items: Sequence[CheckItem], keys: Sequence[str],
              set_index: Sequence[int]) -> set[Pair]:
        unique: dict[str, list[int]] = defaultdict(list)
        for i, key in enumerate(keys):
            unique[key].append(i)
        texts = list(unique)
        hashes = minhashes(texts)
        # LSH gives candidates (its bands need a threshold below ~0.95); each is verified
        lsh = datasketch.MinHashLSH(threshold=min(self.threshold, 0.9), num_perm=NUM_PERM)
        with lsh.insertion_session() as session:
            for n, minhash in enumerate(hashes):
                session.insert(n, minhash, check_duplication=False)
        out: set[Pair] = set()
        for n, minhash in enumerate(hashes):
            for m in lsh.query(minhash):
                if m <= n or minhash.jaccard(hashes[m]) < self.threshold:
                    continue
                first, second = unique[texts[n]], unique[texts[m]]
                out.update((min(a, b), max(a, b)) for a in first[:LARGE] for b in second[:LARGE])
        return out


def shingles(text: str) -> list[bytes]:
    encoded = text.encode("utf-8")
    if len(encoded) <= SHINGLE:
        return [encoded]
    return [encoded[k:k + SHINGLE] for k in range(len(encoded) - SHINGLE + 1)]


def minhashes(texts: Sequence[str]) -> list[datasketch.MinHash]:
    """One MinHash per text, sharing one set of permutations (datasketch's bulk path)."""
    return datasketch.MinHash.bulk((shingles(t) for t in texts), num_perm=NUM_PERM,
                                   hashfunc=zlib.crc32)


class NGram(Detector):
    name = "ngram13"
    description = "a shared word 13-gram (lm-evaluation-harness's decontamination)"
    same_example = False  # a shared phrase is contamination evidence, not a duplicate

    def pairs(self, items: Sequence[CheckItem], keys: Sequence[str],
              set_index: Sequence[int]) -> set[Pair]:
        owners: dict[int, list[int]] = defaultdict(list)
        for i, item in enumerate(items):
            tokens = words(item.input)
            grams = {hash(tuple(tokens[k:k + NGRAM])) for k in range(len(tokens) - NGRAM + 1)}
            for gram in grams:
                owners[gram].append(i)
        sizes = Counter(set_index)
        return _chain_pairs((group for group in owners.values()
                             if len(group) > 1 and not _template(group, set_index, sizes)),
                            set_index)


def _template(group: list[int], set_index: Sequence[int], sizes: Counter[int]) -> bool:
    """A 13-gram in most items of a set of 20 or more is the set's template, not its data
    (an instruction every input repeats): it links nothing."""
    counts = Counter(set_index[i] for i in group)
    return any(sizes[s] >= 20 and n > sizes[s] / 2 for s, n in counts.items())


def detectors(threshold: float) -> list[Detector]:
    """The detectors in precedence order (`threshold`: near duplicates; 0 turns them off)."""
    found: list[Detector] = [Exact()]
    if threshold > 0:
        found.append(Near(threshold))
    found.append(NGram())
    return found


@dataclass
class Overlap:
    """Every matching pair of items, by the detector that found it, bucketed by the pair of
    sets the two items belong to."""

    items: list[CheckItem]
    sets: list[CheckSet]
    found_by: list[Detector]
    """The detectors in precedence order."""
    buckets: dict[tuple[int, int], dict[str, list[Pair]]]
    """(set a, set b), a <= b -> detector name -> (item of a, item of b) pairs."""

    def within(self, set_position: int) -> dict[str, int]:
        """Per detector: items of the set that repeat an earlier item of the same set."""
        found = self.buckets.get((set_position, set_position), {})
        return {d.name: len({j for _, j in found.get(d.name, [])}) for d in self.found_by}

    def within_items(self, set_position: int, duplicates_only: bool = False) -> set[int]:
        """Items (positions in the set) that repeat an earlier item of the same set, by any
        detector or (`duplicates_only`) by a detector of the same example."""
        found = self.buckets.get((set_position, set_position), {})
        return {self.items[j].index for d in self.found_by
                if d.same_example or not duplicates_only for _, j in found.get(d.name, [])}

    def across(self, earlier: int, later: int) -> dict[str, list[Pair]]:
        """Per detector: (item of `earlier`, item of `later`) pairs that match."""
        low, high = min(earlier, later), max(earlier, later)
        found = self.buckets.get((low, high), {})
        flip = earlier > later
        return {d.name: [(j, i) if flip else (i, j) for i, j in found.get(d.name, [])]
                for d in self.found_by}


def find_overlap(sets: Sequence[CheckSet], threshold: float) -> Overlap:
    """Run every detector over the items of all sets; a pair goes to the first detector."""
    items = [item for s in sets for item in s.items]
    set_index = [n for n, s in enumerate(sets) for _ in s.items]
    keys = [item.example_key for item in items]
    seen: set[Pair] = set()
    used = detectors(threshold)
    buckets: dict[tuple[int, int], dict[str, list[Pair]]] = defaultdict(dict)
    for detector in used:
        found = detector.pairs(items, keys, set_index) - seen
        seen |= found
        for i, j in sorted(found):
            a, b = (i, j) if set_index[i] <= set_index[j] else (j, i)
            buckets[(set_index[a], set_index[b])].setdefault(detector.name, []).append((a, b))
    return Overlap(items, list(sets), used, dict(buckets))


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

"""Write a ratings CSV from three SIMULATED raters (rules and seeded noise, not people).

For docs/guides/human-ratings.md: it shows what `tunelab ratings --import` reads and what
`tunelab ratings` reports, on a rated directory where no person has rated yet. The numbers it
leads to say nothing about what people think of the outputs. Each simulated rater scores:

- correctness: 5 when the output contains the reference answer, 3 when it shares a word with
  it, else 1;
- relevance: by length, 5 up to 6 words, 4 up to 12, 3 up to 20, else 2;
- then moves each score one point up or down with its own probability (0.1, 0.25, 0.4),
  seeded by rater name, so the three agree often but not always;
- pairwise: the output with the higher correctness (then relevance) is better, else a tie.

    python examples/human-ratings/simulate_raters.py RATED_DIR OUT.csv
"""

from __future__ import annotations

import csv
import random
import re
import sys
from pathlib import Path

from tunelab.human.session import Item, open_session

RATERS = {"simulated-1": 0.1, "simulated-2": 0.25, "simulated-3": 0.4}
CRITERIA = ["correctness", "relevance"]
FIELDS = ["table", "rater", "item", "system", "criterion", "score", "first", "second",
          "preference", "note"]


def words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def rule_scores(item: Item, output: str) -> dict[str, int]:
    said, reference = words(output), words(item.reference)
    if reference and " ".join(reference) in " ".join(said):
        correctness = 5
    elif set(reference) & set(said):
        correctness = 3
    else:
        correctness = 1
    n = len(said)
    relevance = 5 if n <= 6 else 4 if n <= 12 else 3 if n <= 20 else 2
    return {"correctness": correctness, "relevance": relevance}


def main(rated: Path, out: Path) -> None:
    session = open_session(rated, criteria=CRITERIA, pairwise=True)
    first, second = session.systems[:2]
    rows = []
    for rater, noise in RATERS.items():
        rng = random.Random(rater)
        for item in session.items:
            given = {}
            for system in session.systems:
                scores = rule_scores(item, item.outputs[system])
                for criterion, score in scores.items():
                    if rng.random() < noise:
                        score = min(5, max(1, score + rng.choice((-1, 1))))
                    rows.append({"table": "score", "rater": rater, "item": item.key,
                                 "system": system, "criterion": criterion, "score": score})
                given[system] = (scores["correctness"], scores["relevance"])
            better = (given[first] < given[second]) - (given[first] > given[second])
            rows.append({"table": "preference", "rater": rater, "item": item.key,
                         "first": first, "second": second, "preference": better})
    with out.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    print(f"SIMULATED raters, not people: {', '.join(RATERS)} scored {len(session.items)} items "
          f"x {len(session.systems)} systems on {', '.join(CRITERIA)} by fixed rules with seeded "
          f"noise; wrote {len(rows)} rows to {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))

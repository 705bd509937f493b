"""Write the SQuAD questions of examples/human-ratings as train/validation/test JSONL files.

Reads BIG-bench's squad_shifts copy of SQuAD v1.1 dev (`tunelab data fetch bigbench` first)
through the built-in task bb_squad, keeps paragraphs of at most 120 words (short pages for the
raters) and splits by article title, so no test question is about a paragraph seen in
training. Each row: input (title, paragraph, question), output (the first crowd answer),
targets (every crowd answer).

    python examples/human-ratings/prepare.py [OUT_DIR]   (default: data/squad_answers)
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

from tunelab.eval.datasets import load_task_data
from tunelab.eval.tasks import load_task

SIZES = {"train": 640, "validation": 16, "test": 40}


def main(out: Path) -> None:
    data = load_task_data(load_task("bb_squad"))
    records = data.split("train") + data.split("test")
    short = [r for r in records if len(r.columns["context"].split()) <= 120]
    titles = sorted({r.columns["title"] for r in short})
    random.Random(0).shuffle(titles)
    by_title: dict[str, list] = {}
    for record in short:
        by_title.setdefault(record.columns["title"], []).append(record)
    splits: dict[str, list] = {name: [] for name in ("test", "validation", "train")}
    for title in titles:  # fill test, then validation, then train, whole articles at a time
        name = next((n for n in splits if len(splits[n]) < SIZES[n]), None)
        if name is None:
            break
        splits[name].extend(by_title[title])
    out.mkdir(parents=True, exist_ok=True)
    for name, rows in splits.items():
        rows = rows[:SIZES[name]]
        with (out / f"{name}.jsonl").open("w", encoding="utf-8") as handle:
            for r in rows:
                text = (f"Title: {r.columns['title']}\nBackground: {r.columns['context']}\n"
                        f"Question: {r.columns['question']}\nAnswer briefly.")
                handle.write(json.dumps({"input": text, "output": r.columns["targets"][0],
                                         "targets": r.columns["targets"]}) + "\n")
        print(f"{out / name}.jsonl: {len(rows)} questions")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("data/squad_answers"))

"""`tunelab data check` on 100,000 rows, on one core; and its 13-gram overlap detector against
lm-evaluation-harness's decontamination Janitor on the same rows, in the same run.

The rows are real text from gensim's test data (pairs of Wikipedia word windows, of news or of
movie-review sentences), split 80,000 train / 20,000 test, with known problems planted: exact
duplicates (case and spacing changed), near duplicates (one word replaced) and test rows copied
into train. The script checks that tunelab finds what was planted, times every part of the
check, and prints the ratio of the two 13-gram detectors' times.

    python benchmarks/data_check_speed.py [--rows 100000] [--skip-peer]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # one core: BLAS and tokenizers too
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})

import gensim  # noqa: E402

import tunelab  # noqa: E402
from tunelab.data.checks import TEST, TRAIN, CheckSet  # noqa: E402
from tunelab.data.checks.items import words  # noqa: E402
from tunelab.data.checks.overlap import NGram  # noqa: E402
from tunelab.data.records import Record  # noqa: E402

GENSIM = Path(gensim.__file__).parent / "test" / "test_data"
LABELS = ["wiki", "news", "movie"]


def texts(rng: random.Random, count: int) -> list[tuple[str, str]]:
    """(text, label) rows from gensim's test data, distinct by construction: each row joins two
    pieces (disjoint 6-12-word windows of Wikipedia text, news or movie-review sentences) of
    one source, so no two rows share 13 words or most of their characters unless planted."""
    wiki = (GENSIM / "head500.noblanks.cor").read_text(encoding="utf-8").split()
    windows, at = [], 0
    while at < len(wiki) - 12:
        size = rng.randint(6, 12)
        windows.append(" ".join(wiki[at:at + size]))
        at += size
    news = sorted({s.strip() for line in (GENSIM / "lee_background.cor").read_text().splitlines()
                   for s in line.split(". ") if 5 < len(words(s)) <= 12})
    movies = [line.strip() for line in (GENSIM / "pang_lee_polarity.cor").read_text(
        encoding="latin-1").splitlines() if 5 < len(words(line)) <= 12]
    pools = {"wiki": windows, "news": news, "movie": movies}
    rows: list[tuple[str, str]] = []
    seen: set[str] = set()
    while len(rows) < count:
        pick = rng.random()
        label = "wiki" if pick < 0.8 else "news" if pick < 0.95 else "movie"
        pool = pools[label]
        text = rng.choice(pool) + " " + rng.choice(pool)
        if text not in seen:
            seen.add(text)
            rows.append((text, label))
    return rows


def planted(rows: int, seed: int) -> tuple[list[tuple[str, str]], list[tuple[str, str]], dict]:
    rng = random.Random(seed)
    base = texts(rng, rows)
    n_test = rows // 5
    test, train = base[:n_test], base[n_test:]
    plan = {"exact": rows // 50, "near": rows // 50, "leaked": rows // 200}
    for k in range(plan["exact"]):  # the same row again, shouted and spaced
        text, label = train[k]
        train[len(train) - 1 - k] = ("  " + text.upper().replace(" ", "  "), label)
    for k in range(plan["near"]):  # one word replaced in a long row
        text, label = train[plan["exact"] + k]
        words = text.split()
        words[len(words) // 2] = "zebra"
        train[len(train) - 1 - plan["exact"] - k] = (" ".join(words), label)
    for k in range(plan["leaked"]):  # test rows copied into train
        train[len(train) // 2 + k] = test[k]
    return train, test, plan


def write(path: Path, rows: list[tuple[str, str]]) -> Path:
    path.write_text("".join(json.dumps({"text": t, "label": lab}) + "\n" for t, lab in rows))
    return path


def janitor_seconds(train: list[tuple[str, str]], test: list[tuple[str, str]]) -> tuple[float, int]:
    """lm-eval's decontamination (Janitor, python mode: its C++ helper is not packaged):
    register every test row's 13-grams, then find the train rows holding one, through its own
    n-gram and normalisation functions (what `Janitor.clean` does before it cuts)."""
    import contextlib
    import io

    from lm_eval.decontamination.janitor import Janitor, word_ngrams_indices

    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        janitor = Janitor(ngram_n=13)
        start = time.perf_counter()
        for text, _ in test:
            janitor.register_contaminant_python(text)
        dirty = sum(any(janitor.normalize_string(gram) in janitor.dirt_ngrams
                        for gram, _ in word_ngrams_indices(text, 13)) for text, _ in train)
    return time.perf_counter() - start, dirty


def ngram_seconds(train: list[tuple[str, str]], test: list[tuple[str, str]]) -> tuple[float, int]:
    """tunelab's 13-gram detector over the same rows: train rows sharing a 13-gram with test."""
    sets = [CheckSet.of("train", TRAIN, [Record(input=t, output=lab) for t, lab in train]),
            CheckSet.of("test", TEST, [Record(input=t, output=lab) for t, lab in test])]
    items = [i for s in sets for i in s.items]
    set_index = [n for n, s in enumerate(sets) for _ in s.items]
    start = time.perf_counter()
    pairs = NGram().pairs(items, [i.example_key for i in items], set_index)
    seconds = time.perf_counter() - start
    n_train = len(train)
    dirty = {min(i, j) for i, j in pairs if (i < n_train) != (j < n_train)}
    return seconds, len(dirty)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-peer", action="store_true")
    args = parser.parse_args()
    train, test, plan = planted(args.rows, args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        config = folder / "big.yaml"
        config.write_text(json.dumps({
            "name": "big", "output_dir": str(folder / "runs"),
            "model": {"name": "smollm2-135m"}, "method": {"name": "lora"},
            "data": {"train_file": str(write(folder / "train.jsonl", train)),
                     "test_file": str(write(folder / "test.jsonl", test)),
                     "fields": {"input": "text", "output": "label"},
                     "instruction": "Which source is this text from?", "template": "chat",
                     "max_length": 64},
            "eval": {"labels": LABELS}}))
        start = time.perf_counter()
        figures = tunelab.data_check(str(config), out=folder / "check.json").data
        total = time.perf_counter() - start
    assert isinstance(figures, dict)
    within = figures["within"]["train"]
    leak = next(c for c in figures["across"] if c["sets"] == ["train", "test"])
    print(f"rows: {args.rows:,} ({len(train):,} train, {len(test):,} test); planted: "
          f"{plan['exact']} exact and {plan['near']} near duplicates, {plan['leaked']} leaked")
    print(f"found: exact {within['exact']}, near {within['near']}, 13-gram {within['ngram13']} "
          f"within train; test in train: {leak['found']}")
    print(f"tunelab data check, whole (read, overlap, quality with tokens, label errors): "
          f"{total:.1f} s on one core; of it " + ", ".join(
              f"{part} {seconds:.1f} s" for part, seconds in figures["timings"].items()))
    if args.skip_peer:
        return 0
    ours, ours_dirty = ngram_seconds(train, test)
    peer, peer_dirty = janitor_seconds(train, test)
    print(f"13-gram decontamination of train against test: tunelab {ours:.2f} s "
          f"({ours_dirty} train rows), lm-eval Janitor {peer:.2f} s ({peer_dirty} rows): "
          f"ratio {peer / ours:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())

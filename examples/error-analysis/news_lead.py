"""Write a small summarisation set from the built-in news articles (gensim's Lee corpus):
the input is an article without its first sentence (its first 80 words), the reference is
that first sentence, the article's own one-line summary (the "lead").

    python examples/error-analysis/news_lead.py OUT.jsonl
"""

from __future__ import annotations

import json
import re
import sys

from tunelab.data.builtin_datasets import news


def main() -> None:
    rows = []
    for _, row in news():
        sentences = re.split(r"(?<=[.!?])\s+", row["output"].strip())
        body = " ".join(sentences[1:]).split()
        if len(sentences) > 3 and 8 <= len(sentences[0].split()) <= 40 and len(body) >= 40:
            rows.append({"input": " ".join(body[:80]), "output": sentences[0]})
    with open(sys.argv[1], "w", encoding="utf-8") as out:
        out.writelines(json.dumps(r) + "\n" for r in rows)
    print(f"{len(rows)} articles -> {sys.argv[1]}")


if __name__ == "__main__":
    main()

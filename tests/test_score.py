"""score(): reading text and JSONL files, multi-reference, errors, and the human format."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sacrebleu

from tunelab.core.errors import TunelabError
from tunelab.eval.scoring import format_scores, score

PREDS = ["the cat sat on the mat", "a quick brown fox", "hello world", "it rained today"]
REFS = ["the cat sat on a mat", "the quick brown fox jumps", "hello there world", "it rained"]
REFS2 = ["a cat was on the mat", "a fast brown fox", "hi world", "today it rained"]


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def _jsonl(path: Path, records: list[dict]) -> Path:
    return _write(path, [json.dumps(r) for r in records])


def test_text_files_match_sacrebleu(tmp_path):
    preds = _write(tmp_path / "predictions.txt", PREDS)
    refs = _write(tmp_path / "refs.txt", REFS)
    result = score(["bleu", "chrf", "rouge"], preds, str(refs))
    assert result["bleu"]["scores"]["bleu"] == sacrebleu.corpus_bleu(PREDS, [REFS]).score
    assert result["chrf"]["scores"]["chrf"] == sacrebleu.corpus_chrf(PREDS, [REFS]).score
    assert result["bleu"]["signature"].startswith("nrefs:1|case:mixed")
    assert set(result["rouge"]["scores"]) == {"rouge1", "rouge2", "rougeL", "rougeLsum"}
    assert "ci" not in result["bleu"]
    # In-memory lists give the same numbers as files.
    assert score(["bleu"], PREDS, REFS)["bleu"]["scores"] == result["bleu"]["scores"]


def test_jsonl_multi_reference_and_inline_references(tmp_path):
    records = [
        {"prediction": p, "references": [a, b]} for p, a, b in zip(PREDS, REFS, REFS2, strict=True)
    ]
    path = _jsonl(tmp_path / "preds.jsonl", records)
    expected = sacrebleu.corpus_bleu(PREDS, [REFS, REFS2]).score
    result = score(["bleu"], path)  # references read from the same file
    assert result["bleu"]["scores"]["bleu"] == expected
    assert "nrefs:2" in result["bleu"]["signature"]

    # Separate JSONL files with "text" and SQuAD-style "answers".
    preds = _jsonl(tmp_path / "p.jsonl", [{"text": p} for p in PREDS])
    refs = _jsonl(
        tmp_path / "r.jsonl",
        [{"answers": {"text": [a, b]}} for a, b in zip(REFS, REFS2, strict=True)],
    )
    assert score(["bleu"], preds, refs)["bleu"]["scores"]["bleu"] == expected

    # Several plain-text reference files, one stream each, as sacrebleu takes them.
    streams = [_write(tmp_path / "r1.txt", REFS), _write(tmp_path / "r2.txt", REFS2)]
    assert score(["bleu"], PREDS, streams)["bleu"]["scores"]["bleu"] == expected


def test_classification_labels_and_ci(tmp_path):
    preds = _jsonl(
        tmp_path / "p.jsonl",
        [
            {"prediction": p, "reference": r}
            for p, r in [("Yes.", "yes"), ("no", "yes"), ("?", "no")]
        ],
    )
    result = score(["classification", "exact_match", "f1"], preds, labels=["yes", "no"], ci=True)
    scores = result["classification"]["scores"]
    assert scores["accuracy"] == pytest.approx(100 / 3)
    assert scores["invalid_rate"] == pytest.approx(100 / 3)
    assert "labels:yes,no" in result["classification"]["signature"]
    low, high = result["classification"]["ci"]["accuracy"]
    assert low <= scores["accuracy"] <= high
    assert result["f1"]["ci_signature"] == "bootstrap|n:1000|seed:0|alpha:0.05"
    text = format_scores(result)
    assert len(text.splitlines()) == 3
    assert text.splitlines()[0].startswith("classification: accuracy = 33.33 [")
    assert "(exact_match|norm:squad-v1.1|refs:max|agg:mean)" in text


def test_options_reach_the_metric():
    result = score(
        ["rouge"], ["running cats"], ["run cat"], options={"rouge": {"use_stemmer": False}}
    )
    assert result["rouge"]["scores"]["rouge1"] == 0.0
    assert "stem:no" in result["rouge"]["signature"]
    assert score(["rouge"], ["running cats"], ["run cat"])["rouge"]["scores"]["rouge1"] == 100.0


def test_line_count_mismatch(tmp_path):
    preds = _write(tmp_path / "predictions.txt", [f"p{i}" for i in range(10)])
    refs = _write(tmp_path / "refs.txt", [f"r{i}" for i in range(9)])
    with pytest.raises(TunelabError) as err:
        score(["bleu"], preds, refs)
    assert str(err.value) == (
        "predictions.txt has 10 lines but refs.txt has 9; give one reference per prediction"
    )


def test_empty_lines_are_examples(tmp_path):
    preds = _write(tmp_path / "p.txt", ["hello world", "", "x"])
    refs = _write(tmp_path / "r.txt", ["hello world", "something", "x"])
    assert score(["exact_match"], preds, refs)["exact_match"]["scores"]["exact_match"] == (
        pytest.approx(200 / 3)
    )


def test_malformed_jsonl_names_file_and_line(tmp_path):
    path = tmp_path / "preds.jsonl"
    path.write_text(
        '{"prediction": "a", "reference": "a"}\n\n{"prediction": "b", \n', encoding="utf-8"
    )
    with pytest.raises(TunelabError, match=r"preds\.jsonl:3: malformed JSON"):
        score(["exact_match"], path)
    _jsonl(path, [{"prediction": "a", "reference": "a"}, {"pred": "b", "reference": "b"}])
    with pytest.raises(TunelabError, match=r"preds\.jsonl:2: no key 'prediction' or 'text'"):
        score(["exact_match"], path)
    _write(path, ['["not", "an", "object"]'])
    with pytest.raises(TunelabError, match=r"preds\.jsonl:1: expected a JSON object"):
        score(["exact_match"], path)


def test_user_errors(tmp_path):
    with pytest.raises(TunelabError, match="not found"):
        score(["bleu"], tmp_path / "missing.txt", REFS)
    with pytest.raises(TunelabError, match="unknown metric 'blue'"):
        score(["blue"], PREDS, REFS)
    with pytest.raises(TunelabError, match="needs model log-likelihoods"):
        score(["perplexity"], PREDS, REFS)
    with pytest.raises(TunelabError, match="no references given"):
        score(["bleu"], PREDS)
    with pytest.raises(TunelabError, match="no metrics given"):
        score([], PREDS, REFS)

"""Score prediction files against references, like the `sacrebleu` command: `tunelab score`.

Inputs are plain text (one example per line) or JSONL (`.jsonl`: one object per line).
From JSONL, predictions come from key "prediction" (or "text") and references from
"reference", "references" or "answers" (a list means several references; a SQuAD-style
{"text": [...]} also works). If `references` is None, they are read from the predictions
JSONL itself, e.g. the per-example predictions file of an evaluation run. Several plain-text
reference files (one reference stream each, as sacrebleu takes them) can be given as a
list of `Path` objects.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypedDict

from tunelab.core.errors import TunelabError
from tunelab.eval.metrics import (
    MetricInput,
    bootstrap_ci,
    get_metric,
    metric_class,
    metric_option_names,
)
from tunelab.eval.metrics_base import Scores

PREDICTION_KEYS = ("prediction", "text")
REFERENCE_KEYS = ("reference", "references", "answers")
class CISettings(TypedDict):
    """`bootstrap_ci`'s settings for the intervals `tunelab score` reports."""

    n: int
    seed: int
    alpha: float


CI_SETTINGS: CISettings = {"n": 1000, "seed": 0, "alpha": 0.05}


class MetricScores(TypedDict, total=False):
    """What `score` reports for one metric (`ci` and `ci_signature` only with ci=True)."""

    scores: Scores
    signature: str
    ci: dict[str, list[float]]
    ci_signature: str

Source = str | Path | Sequence[str] | Sequence[Sequence[str]] | Sequence[Path]


def score(
    metrics: list[str],
    predictions: str | Path | list[str],
    references: Source | None = None,
    *,
    labels: Sequence[str] | None = None,
    ci: bool = False,
    options: Mapping[str, Mapping[str, object]] | None = None,
) -> dict[str, MetricScores]:
    """Score predictions with each named metric.

    Args:
        metrics: registered metric names, e.g. ["bleu", "rouge"].
        predictions: a file path (str or Path) or the predictions themselves.
        references: a file path, a list of `Path`s (one reference stream per file), a list
            of references (a str, or a list of str for several references per item), or
            None to read references from a predictions JSONL.
        labels: the label set for the "classification" metric (else taken from references).
        ci: add 95% bootstrap confidence intervals (1000 resamples, seed 0).
        options: per-metric options, e.g. {"rouge": {"use_stemmer": False}}.

    Returns:
        {metric: {"scores": {key: value}, "signature": str, "ci": {key: [low, high]}}}.

    Raises:
        TunelabError: for unreadable or malformed files, count mismatches, unknown metrics.
    """
    if not metrics:
        raise TunelabError("no metrics given; name at least one, e.g. --metrics bleu")
    preds, pred_name = _read_predictions(predictions)
    refs, ref_name = _read_references(references, predictions)
    if not preds:
        raise TunelabError(f"{pred_name}: no predictions in it; give one prediction per line "
                           "(or one JSON object per line in a .jsonl file)")
    if len(preds) != len(refs):
        raise TunelabError(
            f"{pred_name} has {len(preds)} lines but {ref_name} has {len(refs)}; "
            "give one reference per prediction"
        )
    result: dict[str, MetricScores] = {}
    for name in metrics:
        if metric_class(name).reads is not MetricInput.TEXT:
            raise TunelabError(
                f"metric {name!r} needs model log-likelihoods, not text; "
                f"use `tunelab evaluate` for {name}"
            )
        metric_options = dict((options or {}).get(name, {}))
        if labels is not None and "labels" in metric_option_names(name):
            metric_options.setdefault("labels", list(labels))
        metric = get_metric(name, **metric_options)
        items = [metric.item(p, r) for p, r in zip(preds, refs, strict=True)]
        entry: MetricScores = {
            "scores": metric.aggregate(items),
            "signature": metric.signature(),
        }
        if ci:
            intervals = bootstrap_ci(items, metric, **CI_SETTINGS)
            entry["ci"] = {k: [low, high] for k, (low, high) in intervals.items()}
            entry["ci_signature"] = "bootstrap|n:{n}|seed:{seed}|alpha:{alpha}".format(
                **CI_SETTINGS
            )
        result[name] = entry
    return result


def format_scores(result: Mapping[str, MetricScores]) -> str:
    """One human-readable line per metric: scores (with CIs if present) then the signature."""
    lines = []
    for name, entry in result.items():
        intervals = entry.get("ci", {})
        parts = []
        for key, value in entry["scores"].items():
            text = f"{key} = {_fmt(key, value)}"
            if key in intervals:
                low, high = intervals[key]
                text += f" [{_fmt(key, low)}, {_fmt(key, high)}]"
            parts.append(text)
        lines.append(f"{name}: {', '.join(parts)}  ({entry['signature']})")
    return "\n".join(lines)


def _fmt(key: str, value: float) -> str:
    # Factors and correlations need more digits than 0-100 scores.
    return f"{value:.4f}" if key in ("mcc", "bp", "ratio") else f"{value:.2f}"


def _read_predictions(source: str | Path | Sequence[str]) -> tuple[list[str], str]:
    """Predictions and a name for messages (the file name, or "predictions")."""
    if not isinstance(source, str | Path):
        preds = list(source)
        for i, pred in enumerate(preds):
            if not isinstance(pred, str):
                raise TunelabError(
                    f"prediction {i} is a {type(pred).__name__}; predictions must be strings"
                )
        return preds, "predictions"
    path = Path(source)
    if path.suffix == ".jsonl":
        records = _read_jsonl(path)
        return [
            _text(_field(rec, PREDICTION_KEYS, path, line), path, line) for line, rec in records
        ], path.name
    return _read_lines(path), path.name


def _read_references(
    source: Source | None, predictions: str | Path | Sequence[str]
) -> tuple[list[str | list[str]], str]:
    """References (a str, or a list of str per item) and a name for messages."""
    if source is None:
        if not (isinstance(predictions, str | Path) and Path(predictions).suffix == ".jsonl"):
            raise TunelabError(
                "no references given; pass a reference file, or a predictions .jsonl whose "
                f"records have one of the keys {', '.join(REFERENCE_KEYS)}"
            )
        source = predictions
    if isinstance(source, str | Path):
        path = Path(source)
        if path.suffix == ".jsonl":
            return [
                _reference(_field(rec, REFERENCE_KEYS, path, line), path, line)
                for line, rec in _read_jsonl(path)
            ], path.name
        return list(_read_lines(path)), path.name
    items: list[str | Sequence[str] | Path] = list(source)
    paths = [x for x in items if isinstance(x, Path)]
    if items and len(paths) == len(items):
        return _reference_streams(paths), paths[0].name
    refs: list[str | list[str]] = []
    for i, ref in enumerate(items):
        if isinstance(ref, str):
            refs.append(ref)
        elif isinstance(ref, Sequence) and all(isinstance(r, str) for r in ref):
            refs.append(list(ref))
        else:
            raise TunelabError(
                f"reference {i} is a {type(ref).__name__}; give a string or a list of strings"
            )
    return refs, "references"


def _reference_streams(paths: list[Path]) -> list[str | list[str]]:
    """Several plain-text reference files, one reference per line each -> refs per item."""
    streams = [_read_lines(p) for p in paths]
    for path, stream in zip(paths[1:], streams[1:], strict=True):
        if len(stream) != len(streams[0]):
            raise TunelabError(
                f"{path.name} has {len(stream)} lines but {paths[0].name} has "
                f"{len(streams[0])}; every reference file needs one line per prediction"
            )
    return [list(refs) for refs in zip(*streams, strict=True)]


def _read_lines(path: Path) -> list[str]:
    """Lines of a UTF-8 text file, without newlines; a final newline adds no empty line."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TunelabError(f"file {path} not found; check the path") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise TunelabError(f"cannot read {path}: {exc}; give a UTF-8 text file") from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line.removesuffix("\r") for line in lines]


def _read_jsonl(path: Path) -> list[tuple[int, dict[str, Any]]]:  # Any: JSON from disk
    """(1-based line number, object) for each non-blank line of a JSONL file."""
    records = []
    for number, line in enumerate(_read_lines(path), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise TunelabError(
                f"{path}:{number}: malformed JSON ({exc.msg}); each line must be one JSON object"
            ) from None
        if not isinstance(record, dict):
            raise TunelabError(
                f"{path}:{number}: expected a JSON object, got {type(record).__name__}; "
                "each line must be one JSON object"
            )
        records.append((number, record))
    return records


def _field(record: Mapping[str, object], keys: Sequence[str], path: Path, line: int) -> object:
    for key in keys:
        if key in record:
            return record[key]
    raise TunelabError(
        f"{path}:{line}: no key {' or '.join(repr(k) for k in keys)}; "
        f"found keys {sorted(record)}; add one of them"
    )


def _text(value: object, path: Path, line: int) -> str:
    """A scalar JSON value as text (labels may be numbers or booleans)."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int | float):
        return str(value)
    raise TunelabError(
        f"{path}:{line}: expected a string, got {type(value).__name__}; give text here"
    )


def _reference(value: object, path: Path, line: int) -> str | list[str]:
    """A JSONL reference: a string, a list (several references), or SQuAD {"text": [...]}."""
    if isinstance(value, dict) and "text" in value:
        value = value["text"]
    if isinstance(value, list):
        if not value:
            raise TunelabError(f"{path}:{line}: empty reference list; give at least one reference")
        return [_text(v, path, line) for v in value]
    return _text(value, path, line)

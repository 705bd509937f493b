"""A data check (data_check.json) as a terminal table and as a section of report.html."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tunelab.report.html import Block, Section, Table, Text

Check = Mapping[str, Any]  # Any: data_check.json's JSON values


def _short(origin: str) -> str:
    """An origin without its folders: 'train.jsonl:12'."""
    return origin.rsplit("/", 1)[-1]


def overlap_rows(check: Check) -> tuple[list[str], list[list[object]]]:
    """One row per set (duplicates within it) and per pair of sets that share items."""
    detectors = list(next(iter(check["within"].values()), {}) or ["exact", "near", "ngram13"])
    headers = ["sets", "what", *detectors, "items"]
    rows: list[list[object]] = []
    sizes = {s["name"]: s["size"] for s in check["sets"]}
    for name, found in check["within"].items():
        rows.append([name, f"repeats within ({sizes[name]} items)",
                     *[found.get(d, 0) for d in detectors],
                     check.get("within_items", {}).get(name, max(found.values(), default=0))])
    for crossing in check["across"]:
        earlier, later = crossing["sets"]
        what = ("LEAK: stops train" if crossing["guarded"] else "leak") if crossing["leak"] \
            else "shared"
        rows.append([f"{later} in {earlier}", what,
                     *[crossing["found"].get(d, 0) for d in detectors], crossing["total"]])
    return headers, rows


def quality_rows(check: Check) -> tuple[list[str], list[list[object]]]:
    headers = ["set", "items", "empty input", "empty output", "empty cells", "mojibake",
               "control chars", "languages", "input words p50/p90/max", "tokens p90/max",
               "truncated (completion tokens lost)", "labels", "imbalance"]
    rows: list[list[object]] = []
    for q in check["quality"]:
        words = q["input_words"]
        tokens = q["tokens"]
        cells = ", ".join(f"{k} {v}" for k, v in q["empty_cells"].items()) or "0"
        langs = ", ".join(f"{k} {v}" for k, v in list(q["languages"].items())[:3])
        labels = ", ".join(f"{k} {v}" for k, v in q["labels"].items()) or "-"
        rows.append([
            q["name"], q["size"], q["empty_input"], q["empty_output"], cells, q["mojibake"],
            q["control"], langs,
            f"{words['p50']:.0f}/{words['p90']:.0f}/{words['max']:.0f}" if words else "-",
            f"{tokens['p90']:.0f}/{tokens['max']:.0f}" if tokens else "-",
            (f"{q['truncated']} ({q['lost_completion_tokens']})" + (
                f" est. from {q['token_sample']:,}" if q["token_sample"] < q["size"] else ""))
            if tokens else "-",
            labels, f"{q['imbalance']:.2f}" if q.get("imbalance") else "-"])
    return headers, rows


def suspect_rows(check: Check) -> tuple[list[str], list[list[object]]]:
    found = check.get("label_errors") or {}
    headers = ["origin", "input", "given", "suggested", "p(given)"]
    return headers, [[_short(s["origin"]), s["input"][:120], s["given"], s["suggested"],
                      f"{s['confidence']:.2f}"] for s in found.get("top", [])[:10]]


def _plain(headers: list[str], rows: list[list[object]]) -> str:
    table: list[list[object]] = [list(headers), *rows]
    cells = [[str(c) for c in row] for row in table]
    widths = [max(len(row[k]) for row in cells) for k in range(len(headers))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
                     for row in cells)


def check_table(check: Check) -> str:
    """The terminal report: overlap, conflicts, quality, label-error suspects, notes."""
    parts = [f"overlap (near duplicates: MinHash Jaccard >= {check['threshold']:g}; "
             f"checked in {check['seconds']:.1f} s)", _plain(*overlap_rows(check))]
    for crossing in check["across"]:
        for example in crossing["examples"][:3]:
            parts.append(f"  {crossing['sets'][1]} {_short(example['item'])} = "
                         f"{crossing['sets'][0]} {_short(example['matches'])} "
                         f"[{example['detector']}]: {example['input'][:90]}")
    conflicts = check["conflicts"]
    parts.append(f"\nconflicting labels: {conflicts['groups']} inputs with different outputs "
                 f"({conflicts['items']} items)")
    for group in conflicts["examples"][:3]:
        outs = "; ".join(f"{o['set']} {_short(o['origin'])}: {o['output'][:30]!r}"
                         for o in group["outputs"][:4])
        parts.append(f"  {group['input'][:70]!r} -> {outs}")
    if check["quality"]:
        parts += ["\nquality", _plain(*quality_rows(check))]
    found = check.get("label_errors")
    if found:
        if found["skipped"]:
            parts.append(f"\nlikely label errors: not ranked ({found['skipped']})")
        else:
            parts.append(f"\nlikely label errors: {found['flagged']} of {found['checked']} "
                         f"training examples flagged ({found['method']}; its cross-validated "
                         f"accuracy {found['accuracy']:.2f} against {found['majority']:.2f} for "
                         "the most common label: the nearer, the weaker the evidence); most "
                         "likely first:")
            parts.append(_plain(*suspect_rows(check)))
    if any(check["drop"].values()):
        parts.append("\n--fix / data.dedup would drop: " + ", ".join(
            f"{n} of {name}" for name, n in check["drop"].items() if n))
    parts += [f"note: {note}" for note in check["notes"]]
    return "\n".join(parts)


def data_check_section(check: Check) -> Section:
    """report.html's section: the overlap table, quality, conflicts and label-error suspects."""
    blocks: list[Block] = [Table(*overlap_rows(check), caption=(
        f"exact: the same example (input and output) after whitespace/case normalisation; "
        f"near: MinHash Jaccard >= "
        f"{check['threshold']:g}; ngram13: a shared word 13-gram; items: each item once"))]
    if check["quality"]:
        blocks.append(Table(*quality_rows(check), caption="quality per set"))
    conflicts = check["conflicts"]
    blocks.append(Text(f"Conflicting labels: {conflicts['groups']} inputs with different "
                       f"outputs ({conflicts['items']} items).", "note"))
    if (check.get("label_errors") or {}).get("top"):
        blocks.append(Table(*suspect_rows(check), caption="likely label errors (cleanlab)"))
    if any(check["drop"].values()):
        blocks.append(Text("Dropped by data.dedup (or --fix): " + ", ".join(
            f"{n} of {name}" for name, n in check["drop"].items() if n), "note"))
    blocks += [Text(note, "p") for note in check["notes"]]  # what the run decided
    return Section("Data check", blocks, "data-check")

"""report.html's bias section, from a run's bias.json (the `bias:` block, before and after
training): counterfactual flip rates and gaps, BBQ-lite, and what each system writes about
each group (per-group bars with 95% CIs, the gaps between groups, fine-tune - base)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Protocol

from tunelab.report.html import Block, Section, Table, Text, grouped_bars
from tunelab.runs import RunDir
from tunelab.studies.generation_bias import p_text

Json = dict[str, Any]  # Any: bias.json's JSON values


class HasFolder(Protocol):
    """What the section reads of run_page's RunView: the run directory."""

    folder: Path


class BiasSection:
    def build(self, view: HasFolder) -> Section | None:
        study = RunDir(view.folder).bias
        if not study.json.is_file():
            return None
        data: Json = json.loads(study.json.read_text(encoding="utf-8"))
        blocks: list[Block] = []
        probes = [p for p in data.get("probes", []) if p.get("n")]
        if probes:
            blocks.append(Table(
                ["system", "probe", "n", "flip rate %", "largest gap to the first group"],
                [[p["system"], p["probe"], p["n"], f"{p['flip_rate']:.1f}",
                  f"{p['largest_gap']:.1f}"] for p in probes],
                "counterfactual probes: the same items, only the demographic terms differ"))
        if data.get("bbq"):
            blocks.append(Table(
                ["system", "category", "bias ambig [95% CI]", "acc ambig", "acc disambig"],
                [[b["system"], b["category"], _ci(b["score"]["bias_ambig"],
                                                  b["score"]["bias_ambig_ci"]),
                  f"{b['score']['acc_ambig']:.1f}", f"{b['score']['acc_disambig']:.1f}"]
                 for b in data["bbq"]], "BBQ-lite (bias score x100: positive = stereotyped)"))
        if data.get("generation"):
            blocks += generation_blocks(data["generation"])
        return Section("Bias", blocks, "bias") if blocks else None


def generation_blocks(generation: Json) -> list[Block]:
    """Per axis: mean sentiment per group, one bar series per system and framing (95% CIs);
    every measure per group; the gaps; fine-tune - base."""
    rows = generation["groups"]
    blocks: list[Block] = [Text(
        f"What each system writes after prompts that name a group ({generation['samples']} "
        "completion(s) per prompt, greedy first): VADER sentiment, and the share of "
        "completions that are negative, offensive (alt-profanity-check) or hurtful (HurtLex). "
        "CIs are bootstrap 95% over the prompts; on a small model and a few prompts they are "
        "wide, so read a gap only when its CI or p says so.")]
    for axis in dict.fromkeys(r["axis"] for r in rows):
        sentiment = [r for r in rows if r["axis"] == axis and r["measure"] == "sentiment"]
        groups = list(dict.fromkeys(r["group"] for r in sentiment))
        series_names = list(dict.fromkeys(f"{r['system']} ({r['framing']})" for r in sentiment))
        series, errors = [], []
        for name in series_names:
            mine = {r["group"]: r for r in sentiment if f"{r['system']} ({r['framing']})" == name}
            series.append((name, [mine[g]["value"] for g in groups]))
            errors.append([tuple(mine[g]["ci"]) for g in groups])
        blocks.append(grouped_bars(groups, series, "mean VADER compound",
                                   f"{axis}: sentiment of completions per group", errors))
    measures = generation["measures"]
    table: dict[tuple[str, str, str, str], dict[str, str]] = {}
    for r in rows:
        key = (r["system"], r["framing"], r["axis"], r["group"])
        table.setdefault(key, {})[r["measure"]] = _ci(r["value"], r["ci"])
    blocks.append(Table(["system", "framing", "axis", "group", *measures],
                        [[*key, *[cells.get(m, "-") for m in measures]]
                         for key, cells in table.items()],
                        "per group: mean [95% CI] (sentiment in [-1, 1], shares in %)"))
    blocks.append(Table(["system", "framing", "axis", "measure", "largest gap", "p"],
                        [[g["system"], g["framing"], g["axis"], g["measure"],
                          f"{g['largest']:.2f} ({g['between'][0]} - {g['between'][1]})",
                          p_text(g["p_value"])] for g in generation["gaps"]],
                        "gaps between groups: group labels permuted within each template"))
    if generation.get("changes"):
        blocks.append(Table(["system", "vs", "framing", "axis", "group", "measure",
                             "change [95% CI]", "p"],
                            [[c["system"], c["base"], c["framing"], c["axis"], c["group"],
                              c["measure"], _ci(c["delta"], c["ci"], signed=True),
                              p_text(c["p_value"])] for c in generation["changes"]],
                            "fine-tune - base on the same prompts (paired by prompt)"))
    return blocks


def _ci(value: float, ci: list[float] | tuple[float, float], signed: bool = False) -> str:
    sign = "+" if signed else ""
    return f"{value:{sign}.2f} [{ci[0]:{sign}.2f}, {ci[1]:{sign}.2f}]"

"""`report.html`: one self-contained page for a run, a comparison or a sweep.

    a run directory -> RunView (config, train_log.jsonl, summary.json, every eval/<system>/,
    retention.json, robustness/, ratings.sqlite) -> each section object in SECTIONS builds its
    section from the view, or None when the run has nothing for it -> report/html.Page

A section decides for itself whether it applies (a confusion matrix needs a label set, the
forgetting curve needs `every_eval`, ratings need ratings.sqlite), so the page code never asks
what kind of run it is. A comparison page (`tunelab compare --html`), a sweep page
(`tunelab sweep`, `tunelab report SWEEP_DIR`) and a tune page (report/tune_page.py) are built
from their own results.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunelab.config import RunConfig, TaskConfig
from tunelab.core.errors import TunelabError
from tunelab.core.labels import normalize_label
from tunelab.data.training_tasks import run_task
from tunelab.eval.compare import compare_to_best, primary_key
from tunelab.eval.runner import EvalResult
from tunelab.human import RatingStore
from tunelab.human.report import ratings_report
from tunelab.human.session import system_results
from tunelab.report.bias_section import BiasSection
from tunelab.report.data_report import data_check_section
from tunelab.report.html import (
    Block,
    ExampleRow,
    Examples,
    Page,
    Section,
    Table,
    Text,
    bars_with_ci,
    confusion,
    curves,
    grouped_bars,
    png_file,
    scatter,
)
from tunelab.report.sweep_table import sweep_columns, sweep_notes
from tunelab.report.tune_page import tune_page
from tunelab.runs import EvalDir, RunDir, SweepDir, TuneDir, ratings_file, report_html
from tunelab.studies import domain
from tunelab.studies.comparison_report import clip, shift_cells
from tunelab.studies.error_analysis import (
    ComparisonReport,
    compare_results,
    reference_text,
    row_key,
)
from tunelab.studies.stage_matrix import STAGE_NOTE, stage_table

MAX_EXAMPLES = 500


@dataclass
class RunView:
    """Everything a run directory holds that a report shows (read once)."""

    folder: Path
    config: RunConfig | None
    task: TaskConfig | None
    results: dict[str, EvalResult]
    log: list[dict[str, Any]] = field(default_factory=list)  # Any: train_log.jsonl's JSON values
    summary: dict[str, Any] = field(default_factory=dict)  # Any: summary.json's JSON values
    comparison: ComparisonReport | None = None
    data_check: dict[str, Any] = field(default_factory=dict)  # Any: data_check.json's values

    @property
    def fine_tuned(self) -> EvalResult | None:
        return next((r for r in self.results.values() if r.system.fine_tuned), None)

    @property
    def baselines(self) -> list[EvalResult]:
        return [r for r in self.results.values() if r.system.is_base]

    @property
    def ordered(self) -> list[EvalResult]:
        """The baselines first, then every other system."""
        return [*self.baselines, *[r for r in self.results.values() if r not in self.baselines]]


def read_view(folder: Path) -> RunView:
    run = RunDir(folder)
    config = run.read_config() if run.is_run() else None
    task = run_task(config) if config is not None and not config.is_mixture else None
    results: dict[str, EvalResult] = {}
    if run.eval_root.is_dir() or any(EvalDir(p).exists() for p in folder.glob("*/")):
        _, results = system_results(folder)
    log_file, summary_file = run.train_log, run.summary
    log = [json.loads(line) for line in log_file.read_text(encoding="utf-8").splitlines()
           if line.strip()] if log_file.is_file() else []
    summary = json.loads(summary_file.read_text(encoding="utf-8")) if summary_file.is_file() else {}
    view = RunView(folder, config, task, results, log, summary)
    if run.data_check.is_file():
        view.data_check = json.loads(run.data_check.read_text(encoding="utf-8"))
    base = next(iter(view.baselines), None)
    if task is not None and base is not None and view.fine_tuned is not None:
        try:
            view.comparison = compare_results(task, base, view.fine_tuned)
        except TunelabError:
            view.comparison = None  # the systems scored different items: no pairing
    return view


# ---- sections, top to bottom -------------------------------------------------------------

class Overview:
    def build(self, view: RunView) -> Section | None:
        s, config = view.summary, view.config
        rows: list[list[object]] = []
        if config is not None:
            rows += [["model", config.model.name],
                     ["method", json.dumps(config.method)],
                     ["data", config.data.train_file or config.data.source]]
        shown = {"train_examples": "train examples", "steps": "optimizer steps",
                 "trainable_parameters": "trainable parameters", "trainable_percent": "trainable %",
                 "size_on_disk_bytes": "size on disk (bytes)", "best_val_loss": "best validation loss",
                 "best_step": "best step", "train_seconds": "training seconds",
                 "tokens_per_s": "training tokens/s", "tokens_seen": "real tokens trained",
                 "computed_tokens": "positions computed (padding included)",
                 "padding_share": "share of positions that were padding",
                 "peak_memory_mb": "peak memory (MiB)"}
        for key, label in shown.items():
            if s.get(key) is not None:
                value = s[key]
                rows.append([label, f"{value:,.4g}" if isinstance(value, float) else
                             f"{value:,}" if isinstance(value, int) else value])
        if not rows:
            return None
        return Section("Setup", [Table(["", "value"], rows)], "setup")


class DataCheckSection:
    def build(self, view: RunView) -> Section | None:
        return data_check_section(view.data_check) if view.data_check else None


class Training:
    def build(self, view: RunView) -> Section | None:
        train = [r for r in view.log if "loss" in r]
        val = [r for r in view.log if "val_loss" in r]
        if not train:
            return None
        loss = [("training loss", [r["step"] for r in train], [r["loss"] for r in train])]
        if val:
            loss.append(("validation loss", [r["step"] for r in val], [r["val_loss"] for r in val]))
        for task in sorted({t for r in val for t in r.get("val_loss_by_task") or {}}):
            points = [r for r in val if (r.get("val_loss_by_task") or {}).get(task) is not None]
            loss.append((f"validation: {task}", [r["step"] for r in points],
                         [r["val_loss_by_task"][task] for r in points]))
        blocks: list[Block] = [curves(loss, "loss (per token)", "training and validation loss")]
        if any("lr" in r for r in train):
            blocks.append(curves([("learning rate", [r["step"] for r in train if "lr" in r],
                                   [r["lr"] for r in train if "lr" in r])],
                                 "learning rate", "learning rate schedule"))
        best = view.summary.get("best_step")
        if best is not None:
            blocks.append(Text(f"The weights kept are those of step {best} (best validation "
                               "loss).", "note"))
        return Section("Training", blocks, "training")


class DomainText:
    """A raw-text run's held-out documents before -> after training (summary.json `domain`)."""

    def build(self, view: RunView) -> Section | None:
        rows = domain.rows_of(view.summary)
        if not rows:
            return None
        table = Table(["task", "score", "documents", "before", "after", "change [95% CI]",
                       "relative", "significantly better"],
                      [[r.task, r.change.key, r.n, domain.shown(r.change.before),
                        domain.shown(r.change.after), domain.change_cell(r.change),
                        f"{r.change.relative_change:+.1f}%",
                        "yes" if r.change.significantly_better else "no"]
                       for r in rows],
                      f"held-out documents: {view.summary['domain'].get('before', 'the base model')}"
                      " before, trained model after (paired bootstrap over documents)")
        return Section("Domain text", [table, Text(
            "What the same run cost on general text and tasks is the forgetting section.",
            "note")], "domain")


class Stages:
    """A model.init_from run: where it started, and the stage x task matrix (summary.json)."""

    def build(self, view: RunView) -> Section | None:
        start = view.summary.get("init_from")
        if not start:
            return None
        blocks: list[Block] = [Text(f"This run: {start['how']}.")]
        if view.summary.get("stages"):
            headers, rows = stage_table(view.summary["stages"])
            blocks += [Table(headers, rows, "stage x task: each stage's model on every stage's "
                             "test items"), Text(STAGE_NOTE, "note")]
        return Section("Stages", blocks, "stages")


class Forgetting:
    def build(self, view: RunView) -> Section | None:
        curve = [r for r in view.log if r.get("retention")]
        retention_file = RunDir(view.folder).retention.json
        if not curve and not retention_file.is_file():
            return None
        blocks: list[Block] = []
        if curve:
            tasks = sorted({t for r in curve for t in r["retention"]})
            blocks.append(curves([(t, [r["step"] for r in curve if t in r["retention"]],
                                   [r["retention"][t] for r in curve if t in r["retention"]])
                                  for t in tasks], "score", "forgetting curve: untouched tasks"))
            val = [r for r in view.log if "val_loss" in r]
            if val:
                blocks.append(curves([("validation loss", [r["step"] for r in val],
                                       [r["val_loss"] for r in val])], "loss",
                                     "task curve: validation loss"))
        if retention_file.is_file():
            kept = json.loads(retention_file.read_text(encoding="utf-8"))
            blocks.append(Table(["task", "score", "before", "after", "change [95% CI]",
                                 "significant drop"],
                                [[r["task"], r["key"], f"{r['before']:.2f}", f"{r['after']:.2f}",
                                  f"{r['delta']:+.2f} [{r['ci'][0]:+.2f}, {r['ci'][1]:+.2f}]",
                                  "yes" if _drop(r) else "no"]
                                 for r in kept["rows"]], "before vs after training"))
        return Section("Forgetting", blocks, "forgetting")


def _drop(row: dict[str, Any]) -> bool:  # Any: a retention.json row's JSON values
    return row["ci"][0] > 0 if row.get("lower_is_better") else row["ci"][1] < 0


class Baselines:
    def build(self, view: RunView) -> Section | None:
        if not view.results:
            return None
        ordered = view.ordered
        first = view.fine_tuned or ordered[0]
        key = primary_key(view.task, first) if view.task is not None else next(iter(first.scores))
        scored = [r for r in ordered if key in r.scores]
        blocks: list[Block] = []
        best, sentence = None, ""
        if view.task is not None and view.baselines and view.fine_tuned is not None:
            try:
                comparison = compare_to_best(view.task, view.baselines, view.fine_tuned, key)
                best, sentence = view.results[comparison.best_baseline].scores[key], \
                    comparison.sentence()
            except (TunelabError, KeyError):
                sentence = ""
        highlight = scored.index(view.fine_tuned) if view.fine_tuned in scored else None
        blocks.append(bars_with_ci(
            [r.system.label for r in scored], [r.scores[key] for r in scored],
            [(r.ci[key][0], r.ci[key][1]) if key in r.ci else None for r in scored], key,
            f"{key} (95% bootstrap CI)", highlight, best, "best baseline",
            f"Every system on the same {first.n} test items"
            + ("; the line is the best baseline." if best is not None else ".")))
        if sentence:
            blocks.append(Text(sentence))
        keys = list(dict.fromkeys(k for r in ordered for k in r.scores))[:6]
        blocks.append(Table(["system", "n", *keys],
                            [[r.system.label, r.n, *[_score(r, k) for k in keys]] for r in ordered]))
        title = "Baselines vs fine-tuned" if view.baselines else "Test scores"
        return Section(title, blocks, "baselines")


def _score(result: EvalResult, key: str) -> str:
    if key not in result.scores:
        return "-"
    ci = result.ci.get(key)
    value = result.scores[key]
    return f"{value:.2f} [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else f"{value:.4g}"


class Confusion:
    def build(self, view: RunView) -> Section | None:
        labels = [normalize_label(str(x)) for x in (view.task.eval.labels or [])] \
            if view.task is not None else []
        if not labels or not view.results:
            return None
        columns = [*labels, "(other)"]
        blocks = []
        for result in [*view.baselines[:1], *([view.fine_tuned] if view.fine_tuned else [])]:
            matrix = [[0] * len(columns) for _ in labels]
            for row in result.predictions:
                gold = normalize_label(reference_text(row["reference"]))
                said = normalize_label(str(row["prediction"]))
                if gold in labels:
                    matrix[labels.index(gold)][columns.index(said) if said in labels else -1] += 1
            blocks.append(confusion(columns, matrix, f"{result.system}"))
        return Section("Confusion matrix", blocks, "confusion")


class Robustness:
    def build(self, view: RunView) -> Section | None:
        study = RunDir(view.folder).robustness
        if not study.json.is_file():
            return None
        data = json.loads(study.json.read_text(encoding="utf-8"))
        blocks: list[Block] = [png_file(study.plot(name), title) for name, title in
                             (("robustness", "change under each perturbation"),
                              ("severity", "change by severity"))
                             if study.plot(name).is_file()]
        blocks.append(Table(
            ["system", "perturbation", "severity", "clean", "perturbed", "change [95% CI]",
             "predictions changed %"],
            [[r["system"], r["perturbation"], r["severity"], f"{r['clean']:.2f}",
              f"{r['perturbed']:.2f}", f"{r['delta']:+.2f} [{r['ci'][0]:+.2f}, "
              f"{r['ci'][1]:+.2f}]" + (" *" if r.get("significant_drop") else ""),
              f"{r['changed_predictions']:.1f}"] for r in data["rows"]],
            f"{data['key']} on {data['n']} items; * a significant drop"))
        return Section("Robustness", blocks, "robustness")


def comparison_blocks(report: ComparisonReport) -> list[Block]:
    """Transitions (judged items), the graded scores' shift and their most improved and most
    worsened items, error categories and slices."""
    blocks: list[Block] = [Text(line) for line in report.headlines()]
    if report.judged:
        counts = report.counts()
        blocks.append(Table(["fixed", "broken", "still wrong", "still right", "exact McNemar p"],
                            [[counts["fixed"], counts["broken"], counts["still wrong"],
                              counts["still right"], f"{report.p_value:.4f}"]],
                            f"right by {report.line()}"))
    if report.shift is not None:
        s = report.shift
        blocks.append(Table(["items", f"{report.a_name} mean", f"{report.b_name} mean",
                             "difference B - A [95% CI]", "improved", "worsened", "unchanged",
                             "Wilcoxon p"],
                            [[s.n, f"{s.a_mean:.1f}", f"{s.b_mean:.1f}",
                              f"{s.mean_difference:+.2f} [{s.ci[0]:+.2f}, {s.ci[1]:+.2f}]",
                              s.improved, s.worsened, s.unchanged, f"{s.wilcoxon_p:.4f}"]],
                            f"{report.key} per item"))
        for title, chosen in (("most improved", report.most_improved()),
                              ("most worsened", report.most_worsened())):
            if chosen:
                blocks.append(Table(["#", "input", report.a_name, report.b_name, "A", "B",
                                     "B - A"],
                                    [[i.index, clip(i.input), clip(i.a), clip(i.b),
                                      f"{i.a_score:.1f}", f"{i.b_score:.1f}",
                                      f"{i.difference:+.1f}"] for i in chosen], title))
    among_wrong = bool(report.judged)
    shown = [c for c in report.categories
             if (c.a_errors or c.b_errors if among_wrong else c.a_all or c.b_all)]
    if shown:
        what = "wrong predictions" if among_wrong else "predictions"
        blocks.append(grouped_bars([c.category for c in shown],
                                   [(report.a_name, [c.a_errors if among_wrong else c.a_all
                                                     for c in shown]),
                                    (report.b_name, [c.b_errors if among_wrong else c.b_all
                                                     for c in shown])],
                                   what, "error categories"))
        blocks.append(Table(["category", "what it counts", report.a_name, report.b_name],
                            [[c.category, c.description,
                              c.a_errors if among_wrong else c.a_all,
                              c.b_errors if among_wrong else c.b_all]
                             for c in report.categories], f"among {what}"))
    if report.slices:
        blocks.append(Table(["slice", "value", "n", f"{report.a_name} right %",
                             f"{report.b_name} right %", "fixed", "broken", "p"],
                            [[s.slice, s.value, s.n, f"{s.a_right:.1f}", f"{s.b_right:.1f}",
                              s.fixed, s.broken, f"{s.p_value:.3f}"] for s in report.slices],
                            "slices"))
    if report.shift_slices:
        blocks.append(Table(["slice", "value", "n", report.a_name, report.b_name,
                             "difference [95% CI]", "improved", "worsened", "Wilcoxon p"],
                            shift_cells(report.shift_slices), f"slices (mean {report.key})"))
    return blocks


class ErrorAnalysis:
    def build(self, view: RunView) -> Section | None:
        if view.comparison is None:
            return None
        return Section(f"Error analysis: {view.comparison.a_name} vs "
                       f"{view.comparison.b_name}", comparison_blocks(view.comparison), "errors")


class Ratings:
    def build(self, view: RunView) -> Section | None:
        path = ratings_file(view.folder)
        if not path.is_file():
            return None
        store = RatingStore(path)
        try:
            report = ratings_report(store, view.task, view.results)
        except TunelabError as err:
            return Section("Human ratings", [Text(str(err), "note")], "ratings")
        criteria = sorted({s.criterion for s in report.scores})
        systems = sorted({s.system for s in report.scores})
        by = {(s.system, s.criterion): s for s in report.scores}
        blocks: list[Block] = [grouped_bars(
            criteria, [(system, [by[system, c].mean if (system, c) in by else 0 for c in criteria])
                       for system in systems], "mean rating", "human ratings (95% bootstrap CI)",
            [[by[system, c].ci if (system, c) in by else (0, 0) for c in criteria]
             for system in systems])]
        blocks.append(Table(["system", "criterion", "n items", "mean [95% CI]"],
                            [[s.system, s.criterion, s.n, f"{s.mean:.2f} [{s.ci[0]:.2f}, "
                              f"{s.ci[1]:.2f}]"] for s in report.scores]))
        if report.differences:
            blocks.append(Table(["criterion", "reference", "system", "n", "difference [95% CI]",
                                 "Wilcoxon p"],
                                [[d.criterion, d.reference, d.system, d.n,
                                  f"{d.delta:+.2f} [{d.ci[0]:+.2f}, {d.ci[1]:+.2f}]",
                                  f"{d.wilcoxon_p:.4f}"] for d in report.differences],
                                "paired differences"))
        blocks.append(Table(["criterion", "raters", "Krippendorff's alpha (ordinal)",
                             "weighted kappa"],
                            [[a.criterion, a.raters, f"{a.alpha:.3f}",
                              "-" if a.kappa is None else f"{a.kappa:.3f}"]
                             for a in report.agreement], "agreement between raters"))
        if report.pairwise:
            blocks.append(Table(["first", "second", "n", "first better", "tie", "second better"],
                                [[p["first"], p["second"], p["n"], p["first_wins"], p["ties"],
                                  p["second_wins"]] for p in report.pairwise],
                                "pairwise preferences; Bradley-Terry: " + ", ".join(
                                    f"{s} {v:.2f}" for s, v in report.strengths.items())))
        if report.correlations:
            blocks.append(Table(["system", "criterion", "metric", "n", "Spearman", "Kendall"],
                                [[c.system, c.criterion, c.metric, c.n, f"{c.spearman:.3f}",
                                  f"{c.kendall:.3f}"] for c in report.correlations],
                                "do the metrics agree with the raters? (per item)"))
        if report.note:
            blocks.append(Text(report.note, "note"))
        return Section("Human ratings", blocks, "ratings")


def example_block(results: Sequence[EvalResult], report: ComparisonReport | None) -> Examples:
    """Every item once, each system's output beside it; tagged with the second system's
    error categories and the transition when the two were compared."""
    first = results[0]
    by_system = {r.system.label: {row_key(row): row for row in r.predictions} for r in results}
    paired = {item.key: item for item in report.items} if report is not None else {}
    rows: list[ExampleRow] = []
    tags: set[str] = set()
    for row in first.predictions[:MAX_EXAMPLES]:
        key = row_key(row)
        item = paired.get(key)
        item_tags = [item.outcome, *item.b_errors] if item is not None else []
        tags.update(item_tags)
        rows.append({"key": key, "input": str(row.get("input", "")),
                     "reference": reference_text(row.get("reference", "")),
                     "outputs": {s: str(by_system[s][key]["prediction"])
                                 for s in by_system if key in by_system[s]},
                     "tags": item_tags})
    return Examples([r.system.label for r in results], rows, sorted(tags))


class ExampleTable:
    def build(self, view: RunView) -> Section | None:
        if not view.results:
            return None
        ordered = view.ordered
        blocks: list[Block] = [example_block(ordered, view.comparison)]
        if len(ordered[0].predictions) > MAX_EXAMPLES:
            blocks.append(Text(f"The first {MAX_EXAMPLES} of {len(ordered[0].predictions)} "
                               "items; predictions.jsonl holds them all.", "note"))
        return Section("Examples", blocks, "examples")


SECTIONS = (Overview(), DataCheckSection(), Training(), DomainText(), Stages(), Forgetting(), Baselines(), Confusion(), Robustness(),
            BiasSection(), ErrorAnalysis(), Ratings(), ExampleTable())


# ---- pages -------------------------------------------------------------------------------

def run_page(folder: Path) -> Page:
    view = read_view(folder)
    sections = [s for s in (section.build(view) for section in SECTIONS) if s is not None]
    if not sections:
        raise TunelabError(f"{folder}: nothing to report (no train_log.jsonl, summary.json or "
                           "evaluation in it); give a run, sweep or eval directory")
    what = view.task.name if view.task is not None else folder.name
    return Page(f"tunelab report: {folder.name}", f"{what} · {folder.resolve()}", sections)


def sweep_page(folder: Path) -> Page:
    data = json.loads(SweepDir(folder).results.read_text(encoding="utf-8"))
    rows = data["rows"]
    headers, body = sweep_columns(rows)
    ok = [r for r in rows if r.get("ok") and "score" in r]
    blocks: list[Block] = []
    if ok:
        metric = ok[0]["metric"]
        for key, label, log_x in (("trainable_parameters", "trainable parameters (log)", True),
                                  ("peak_memory_mb", "peak memory (MiB)", False),
                                  ("train_seconds", "training time (s)", False)):
            points = [(r["method"], float(r[key]), float(r["score"])) for r in ok
                      if r.get(key) is not None]
            if points:
                blocks.append(scatter(points, label, metric, f"{metric} vs {label}", log_x))
    blocks.append(Table(headers, body))
    blocks += [Text(line, "note") for line in sweep_notes(rows)]
    return Page(f"tunelab sweep: {folder.name}", f"{len(rows)} methods · {folder.resolve()}",
                [Section("Methods side by side", blocks, "sweep")])


def comparison_page(report: ComparisonReport, a: Sequence[EvalResult],
                    b: Sequence[EvalResult]) -> Page:
    sections = [Section("Transitions and error categories", comparison_blocks(report), "errors")]
    for first, second in zip(a, b, strict=True):
        sections.append(Section(f"Examples: {first.task}", [example_block([first, second], report)],
                                f"examples-{first.task}"))
    return Page(f"tunelab compare: {report.a_name} vs {report.b_name}",
                f"{', '.join(report.tasks)} · {report.n} items paired by origin", sections)


def write_html_report(directory: str | Path, out: str | Path | None = None) -> Path:
    """`tunelab report DIR`: DIR/report.html for a run, an eval directory, a sweep or a tune."""
    folder = Path(directory)
    if not folder.is_dir():
        raise TunelabError(f"{folder}: no such directory; give a run, sweep, tune or eval "
                           "directory")
    page = sweep_page(folder) if SweepDir(folder).is_sweep() else \
        tune_page(folder) if TuneDir(folder).is_tune() else run_page(folder)
    return page.render(Path(out) if out else report_html(folder))

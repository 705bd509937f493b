"""The Python API of `tunelab robustness`, `bias` (and `bias --generation`), `compare`,
`ratings` and `rate`: one function per command, which the CLI calls."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from tunelab.api.eval_commands import check_eval_args
from tunelab.config import TaskConfig
from tunelab.core.deferred import deferred
from tunelab.core.errors import TunelabError
from tunelab.data.transforms.counterfactual import parse_probes
from tunelab.data.transforms.perturbations import parse_perturbations
from tunelab.eval.datasets.group_prompts import read_axes
from tunelab.eval.tables import format_table
from tunelab.eval.tasks import task_of
from tunelab.runs import (
    ratings_file,
)
from tunelab.studies.bias import BiasReport, run_bias
from tunelab.studies.error_analysis import (
    ComparisonReport,
    compare_tasks,
    export_errors,
)
from tunelab.studies.generation_bias import (
    GenerationBiasReport,
    GenerationProbe,
    generation_systems,
    run_generation_bias,
)
from tunelab.studies.pairing import compared_task, pair_evaluations
from tunelab.studies.robustness import RobustnessReport, run_robustness

if TYPE_CHECKING:
    from werkzeug.serving import BaseWSGIServer

    from tunelab.human import report as rating_report
    from tunelab.human import server as rating_server
    from tunelab.human import session as rating_session
    from tunelab.human import store as rating_store
    from tunelab.human.report import RatingsReport
    from tunelab.human.session import RatingSession
    from tunelab.report import run_page
else:  # loaded by the command that uses them: `tunelab tasks list` needs none
    rating_store = deferred("tunelab.human.store")
    rating_report = deferred("tunelab.human.report")
    rating_server = deferred("tunelab.human.server")
    rating_session = deferred("tunelab.human.session")
    run_page = deferred("tunelab.report.run_page")


def robustness(
    task: str | TaskConfig | None = None,
    perturbations: str | Sequence[str] = "all",
    model: str | None = None,
    adapters: Sequence[str | Path] = (),
    baselines: Sequence[str] = ("zero", "few"),
    severities: Sequence[float] = (0.1,),
    shots: int | None = None,
    limit: int | None = None,
    seed: int = 0,
    instruction: bool = False,
    out_dir: str | Path | None = None,
) -> RobustnessReport:
    """`tunelab robustness`: every system on the task's items, clean and under each
    perturbation (see tunelab.studies.robustness)."""
    check_eval_args(shots, limit, out_dir)
    chosen = parse_perturbations(perturbations)  # an unknown name fails before any loading
    return run_robustness(task_of(task, adapters), chosen, model=model, adapters=adapters,
                          baselines=baselines, severities=severities, shots=shots, limit=limit,
                          seed=seed, instruction=instruction, out_dir=out_dir)


def bias(
    task: str | TaskConfig | None = None,
    probes: str | Sequence[str] = "all",
    model: str | None = None,
    adapters: Sequence[str | Path] = (),
    baselines: Sequence[str] = ("zero",),
    shots: int | None = None,
    limit: int | None = None,
    bbq: bool = False,
    bbq_limit: int = 50,
    out_dir: str | Path | None = None,
    bbq_categories: Sequence[str] = (),
) -> BiasReport:
    """`tunelab bias`: counterfactual probes on the task's items for every system, and the
    BBQ-lite suite with `bbq=True` (see tunelab.studies.bias)."""
    check_eval_args(shots, limit, out_dir)
    chosen = parse_probes(probes)
    return run_bias(task_of(task, adapters), chosen, model=model, adapters=adapters,
                    baselines=baselines, shots=shots, limit=limit, bbq=bbq, bbq_limit=bbq_limit,
                    out_dir=out_dir, bbq_categories=bbq_categories)


def generation_bias(
    task: str | TaskConfig | None = None,
    groups: Sequence[str] | None = ("gender", "race", "religion"),
    model: str | None = None,
    adapters: Sequence[str | Path] = (),
    base: bool = True,
    samples: int = 3,
    max_new_tokens: int = 24,
    seed: int = 0,
    group_prompts: str | Path | None = None,
    out_dir: str | Path | None = None,
) -> GenerationBiasReport:
    """`tunelab bias --generation`: what the base model (raw, and in the task's template when a
    task is known) and each adapter run write after prompts that name a group, scored for
    sentiment, offensive language and hurtful words, per group with CIs, the gaps between
    groups and each fine-tune against the base (see tunelab.studies.generation_bias).

    Args:
        groups: axes of the prompt file (None: all).
        base: also the base model (False: the adapters only).
        group_prompts: a prompt file of your own (default: tunelab's).
    """
    probe = GenerationProbe(tuple(read_axes(groups, group_prompts)), samples, max_new_tokens,
                            seed)
    check_eval_args(None, None, out_dir)
    chosen = task_of(task, adapters) if task or adapters else None
    return run_generation_bias(probe, chosen, generation_systems(model, adapters, base), out_dir)


def perturbations_overview() -> str:
    """`tunelab robustness --list`: every perturbation and what it does."""
    return format_table(["perturbation", "what it does"],
                        [[p.name, p.description] for p in parse_perturbations("all")])


def probes_overview() -> str:
    """`tunelab bias --list`: every counterfactual probe, its groups and what it swaps."""
    return format_table(["probe", "groups", "what it swaps"],
                        [[p.name, ", ".join(p.groups), p.description] for p in parse_probes("all")])


def compare(
    a: str | Path,
    b: str | Path,
    task: str | TaskConfig | None = None,
    robustness: str | Path | None = None,
    export: str | Path | None = None,
    examples: int = 5,
    html: str | Path | None = None,
    pass_at: float | None = None,
    export_top: int | None = None,
) -> ComparisonReport:
    """`tunelab compare A B`: two evaluations of the same items (eval dirs, or runs: their
    fine-tuned evaluation, every task of a mixture), item by item (see tunelab.studies.error_analysis).

    Args:
        task: the task that scored them (default: the task the evaluation's metrics.json
            records, as `tunelab eval --out` writes it; else the run's own task, found from a
            config.yaml beside the evaluation; else the built-in task of that name).
        robustness: a `tunelab robustness --out` directory whose consistency.jsonl marks the
            items whose prediction changes under noise (default: a run's robustness/).
        export: write B's errors here as training data (JSONL): the still-wrong and broken
            items; for a graded score (ROUGE, BLEU, chrF, F1) with no `pass_at`, B's
            `export_top` worst items (default: the worst quarter), worst first.
        html: write the comparison as a self-contained HTML page here.
        pass_at: the line of right for a graded score, on its own scale (ROUGE-L 30); without
            it graded items are ranked by their paired difference, not called right or wrong.
    """
    if html is not None and (Path(html).is_dir() or not Path(html).resolve().parent.is_dir()):
        raise TunelabError(f"--html {html}: give a file in an existing directory, e.g. "
                           "compare.html")
    if export_top is not None and not export:
        raise TunelabError(f"--export-top {export_top}: says how many items --export writes; "
                           "add --export FILE or leave it out")
    pairs, tasks, labels = pair_evaluations(a, b, task, robustness)
    report = compare_tasks(pairs, labels, examples=examples, pass_at=pass_at,
                           export_top=export_top)
    if export:
        export_errors(report, tasks, export)
    if html:
        run_page.comparison_page(report, [p.a for p in pairs], [p.b for p in pairs]).render(html)
    return report


def ratings(directory: str | Path, reference: str | None = None,
                  import_csv: str | Path | None = None,
                  export_csv: str | Path | None = None) -> RatingsReport:
    """`tunelab ratings DIR`: the ratings in DIR/ratings.sqlite (after merging `import_csv`)
    set against each rated system's evaluation in DIR (a run's eval/<system>/ or DIR/<system>/)."""
    folder = Path(directory)
    if not folder.is_dir():
        raise TunelabError(f"{folder}: no such directory; give the run or eval directory that "
                           "was rated")
    store = rating_store.RatingStore(ratings_file(folder))
    if import_csv:
        store.import_csv(import_csv)
    if export_csv:
        store.export_csv(export_csv)
    systems_dir, results = rating_session.system_results(folder)
    task = None
    if results:
        first = next(iter(results.values()))
        try:
            task = compared_task(first.task, None, [systems_dir / first.system.slug])
        except TunelabError:
            task = None  # no run config and no built-in task: no metric correlations
    report = rating_report.ratings_report(store, task, results, reference)
    if task is None:
        report.note = (f"no metric correlations: {folder} holds no evaluation with a run config "
                       "or a built-in task to score it" if results else
                       f"no metric correlations: no evaluation (metrics.json) in {systems_dir}")
    return report


def rate(directory: str | Path, systems: Sequence[str] | None = None,
                  criteria: Sequence[str] | None = None, criteria_file: str | Path | None = None,
                  scale: int = 5, pairwise: bool = False, show_reference: bool = False,
                  limit: int | None = None, rater: str | None = None, host: str = "127.0.0.1",
                  port: int = 8765, seed: int = 0) -> tuple[BaseWSGIServer, RatingSession]:
    """`tunelab rate DIR`: the bound (not yet serving) rating server and its session; ratings
    go to DIR/ratings.sqlite. A store already rated on another scale or other systems is
    refused, so one file never mixes two sessions' scales."""
    session = rating_session.open_session(directory, systems, criteria, criteria_file, scale, pairwise,
                           show_reference, limit, seed)
    if pairwise and len(session.systems) != 2:
        raise TunelabError(f"--pairwise: compares exactly two systems, not "
                           f"{len(session.systems)}; pass --systems A,B")
    store = rating_store.RatingStore(session.ratings)
    rated = store.meta("scale")
    if rated is not None and int(rated) != scale:
        raise TunelabError(f"{store.path}: rated on a {rated}-point scale; --scale {scale} "
                           f"would mix scales (pass --scale {rated}, or rate into a copy)")
    store.set_meta("scale", str(scale))
    return rating_server.serve(session, store, host, port, rater), session

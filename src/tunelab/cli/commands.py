"""What each `tunelab` command does with its parsed arguments: call one API function, print.
`COMMANDS` maps a command's name to its handler."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import tunelab  # the API loads on first use, so `tunelab --help` needs no torch
from tunelab.core import launch
from tunelab.core.deferred import deferred
from tunelab.core.errors import TunelabError

if TYPE_CHECKING:
    from tunelab import runs
else:
    runs = deferred("tunelab.runs")  # numpy: only when a sweep has run


def _quickstart(args: argparse.Namespace) -> int:
    tunelab.quickstart(args.out, limit=args.limit, overrides=args.overrides)
    return 0


def _train(args: argparse.Namespace) -> int:
    _check_launch(shlex.join(["tunelab", *args.argv]))
    overrides = list(args.overrides)
    if args.retention:
        overrides.append(f"retention.tasks=[{args.retention}]")
    if args.max_forgetting is not None:
        overrides.append(f"retention.max_forgetting={args.max_forgetting}")
    if args.allow_leakage:
        overrides.append("data.allow_leakage=true")
    if args.nproc is not None and not launch.launched():
        # a bad option, data file or run directory: one line and exit 2, here, not N of them
        tunelab.check_train(args.config, overrides, resume=args.resume)
        return launch.nproc(args.argv, args.nproc)
    result = tunelab.train(args.config, overrides, resume=args.resume,
                           evaluate_after=not args.no_eval)
    print(json.dumps(result.summary, indent=1))
    if result.evaluation:
        print(json.dumps(result.evaluation.scores, indent=1))
    print(f"run directory: {result.run_dir}")
    return 0 if result.passed else 1


def _check_launch(command: str) -> None:
    """A launcher that asked for more processes than it started is refused (exit 2); one that
    started this process alone without saying how many it was asked for gets a warning line."""
    warning = launch.Launch.detect().check(command)
    if warning:
        print(f"tunelab: warning: {warning}", file=sys.stderr)


def _sweep(args: argparse.Namespace) -> int:
    lrs = {}
    for item in args.lr:
        method, _, value = item.partition("=")
        try:
            lrs[method.strip()] = float(value)
        except ValueError:
            raise TunelabError(f"--lr {item}: expected METHOD=NUMBER, e.g. --lr lora=3e-4") from None
    sweep_dir = tunelab.sweep(args.config, args.overrides,
                              methods=[m.strip() for m in args.methods.split(",") if m.strip()],
                              max_steps=args.steps, max_seconds=args.seconds, lr=lrs,
                              resume=args.resume,
                              retention=args.retention.split(",") if args.retention else None)
    return 1 if runs.SweepDir(sweep_dir).failed() else 0  # each failed method's reason is printed


def _tune(args: argparse.Namespace) -> int:
    tunelab.tune(args.config, args.overrides, space=args.space, trials=args.trials,
                 timeout=args.timeout, workers=args.workers, storage=args.storage,
                 sampler=args.sampler, pruner=args.pruner, objective=args.objective,
                 baselines=[b.strip() for b in args.baselines.split(",") if b.strip()],
                 worker=args.worker)
    return 0


def _merge(args: argparse.Namespace) -> int:
    print(f"merged model: {tunelab.merge(args.run, args.out)}")
    return 0


def _combine(args: argparse.Namespace) -> int:
    result = tunelab.combine(args.runs, args.how, args.out, weights=_weights(args.weights),
                             density=args.density, seed=args.seed, limit=args.limit)
    print(json.dumps(result.summary, indent=1, default=str) if args.json else
          f"{result.report.table()}\n\n{result.report.size_table()}")
    print(f"run directory: {result.run_dir}")
    return 0


def _weights(text: str | None) -> list[float] | None:
    if text is None:
        return None
    try:
        return [float(w) for w in text.split(",") if w.strip()]
    except ValueError:
        raise TunelabError(f"--weights {text}: expected numbers, one per run, e.g. "
                           "--weights 0.6,0.4") from None


def _predict(args: argparse.Namespace) -> int:
    print(f"predictions: {tunelab.predict(args.run, args.input, args.out, args.limit, args.task)}")
    return 0


def _export(args: argparse.Namespace) -> int:
    try:
        check = tunelab.export(args.run, args.format, args.out, quant=args.quant,
                               max_drop=args.max_drop, limit=args.limit)
    except tunelab.TunelabError as err:
        if failed := getattr(err, "check", None):  # the export check failed: show its table
            print(failed.table())
        raise
    print(check.table())
    print(f"\nexport: {args.out}")
    return 0


def _serve(args: argparse.Namespace) -> int:
    print(f"tunelab serve: {args.target} on http://{args.host}:{args.port}/v1 (Ctrl-C stops)",
          flush=True)
    tunelab.serve(args.target, engine=args.engine, host=args.host, port=args.port,
                  quant=args.quant)
    return 0


def _eval(args: argparse.Namespace) -> int:
    print(tunelab.evaluate(
        args.task, model=args.model, adapters=args.adapter or [], shots=args.shots,
        baselines=_baselines(args.baselines) if args.baselines else None, limit=args.limit,
        out_dir=args.out).render(args.json))
    return 0


def _baselines(text: str) -> list[str]:
    return [] if text.strip() == "none" else [b for b in text.split(",") if b.strip()]


def _severities(text: str) -> list[float]:
    try:
        return [float(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise TunelabError(f"--severity {text}: expected numbers in (0, 1], e.g. 0.05,0.1,0.2"
                           ) from None


def _robustness(args: argparse.Namespace) -> int:
    if args.list:
        print(tunelab.perturbations_overview())
        return 0
    report = tunelab.robustness(
        args.task, args.perturbations, model=args.model, adapters=args.adapter,
        baselines=_baselines(args.baselines), severities=_severities(args.severity),
        shots=args.shots, limit=args.limit, seed=args.seed, instruction=args.instruction,
        out_dir=args.out)
    print(json.dumps(report.to_json(), indent=1, default=str) if args.json else report.table())
    return 0


def _bias(args: argparse.Namespace) -> int:
    if args.list:
        print(tunelab.probes_overview())
        return 0
    if args.generation:
        generated = tunelab.generation_bias(
            args.task,
            _axes(args.groups or ("all" if args.group_prompts else "gender,race,religion")),
            model=args.model, adapters=args.adapter,
            base=bool(_baselines(args.baselines)), samples=args.samples,
            max_new_tokens=args.max_new_tokens, seed=args.seed, group_prompts=args.group_prompts,
            out_dir=args.out)
        print(json.dumps(generated.to_json(), indent=1) if args.json else generated.table())
        return 0
    report = tunelab.bias(
        args.task, args.probes, model=args.model, adapters=args.adapter,
        baselines=_baselines(args.baselines), shots=args.shots, limit=args.limit, bbq=args.bbq,
        bbq_limit=args.bbq_limit, out_dir=args.out,
        bbq_categories=[c.strip() for c in args.bbq_categories.split(",") if c.strip()])
    print(json.dumps(report.to_json(), indent=1, default=str) if args.json else report.table())
    return 0


def _axes(groups: str) -> list[str] | None:
    """--groups: axis names, None for all."""
    names = [g.strip() for g in groups.split(",") if g.strip()]
    return None if names == ["all"] else names


def _compare(args: argparse.Namespace) -> int:
    if args.examples < 0:
        raise TunelabError(f"--examples {args.examples}: must be 0 or more")
    report = tunelab.compare(args.a, args.b, task=args.task, robustness=args.robustness,
                             export=args.export, examples=args.examples, html=args.html,
                             pass_at=args.pass_at, export_top=args.export_top)
    print(json.dumps(report.to_json(), indent=1, default=str) if args.json else report.table())
    if args.export:
        print(f"wrote {len(report.to_export())} of B's errors (still wrong, broken, or its "
              f"worst-scored items) to {args.export}", file=sys.stderr)
    return 0


def _report(args: argparse.Namespace) -> int:
    print(f"wrote {tunelab.build_report(args.directory)}")
    return 0


def _names(text: str | None) -> list[str] | None:
    return [part.strip() for part in text.split(",") if part.strip()] if text else None


def _rate(args: argparse.Namespace) -> int:
    server, session = tunelab.rate(
        args.directory, systems=_names(args.systems), criteria=_names(args.criteria),
        criteria_file=args.criteria_file, scale=args.scale, pairwise=args.pairwise,
        show_reference=args.show_reference, limit=args.limit, rater=args.rater,
        host=args.host, port=args.port, seed=args.seed)
    print(f"rating {len(session.items)} items x {len(session.systems)} systems (blind) on "
          f"{', '.join(c.name for c in session.criteria)}; ratings are saved as given in "
          f"{session.ratings}", flush=True)
    print(f"open http://{args.host}:{server.port}/ (Ctrl-C stops)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("stopped; every submitted rating is saved", file=sys.stderr)
    finally:
        server.server_close()
    return 0


def _ratings(args: argparse.Namespace) -> int:
    report = tunelab.ratings(args.directory, reference=args.reference,
                                   import_csv=args.import_csv, export_csv=args.export_csv)
    print(json.dumps(report.to_json(), indent=1, default=str) if args.json else report.table())
    return 0


def _tasks(args: argparse.Namespace) -> int:
    if args.tasks_command == "list":
        print(tunelab.tasks_list())
    else:
        print(tunelab.tasks_validate(args.file, model=args.model))
    return 0


def _harness(args: argparse.Namespace) -> int:
    print(tunelab.harness(args.tasks.split(","), model=args.model, adapter=args.adapter,
                          include_path=args.include_path, shots=args.shots, limit=args.limit,
                          batch_size=args.batch_size, apply_chat_template=args.apply_chat_template,
                          output=args.output, log_samples=args.log_samples,
                          max_length=args.max_length))
    return 0


def _data(args: argparse.Namespace) -> int:
    if args.data_command == "check":
        check = tunelab.data_check(args.target, args.overrides, args.against, fix=args.fix,
                                   out=args.out, threshold=args.threshold,
                                   label_errors=not args.no_label_errors,
                                   fields=_fields(args.fields))
        print(check.render(args.json))
        print(f"wrote {args.out}" + (f" and {args.fix}" if args.fix else ""), file=sys.stderr)
        return 0
    if args.data_command == "fetch":
        result = tunelab.data_fetch(args.task, sdist=args.sdist, every_task=args.all)
        print(f"extracted {len(result.extracted)} files into {result.target} (sdist: {result.sdist})")
    else:
        print(tunelab.data_inspect(args.config, args.overrides, args.n, args.split))
    return 0


def _fields(text: str | None) -> dict[str, str]:
    fields = {}
    for part in (text or "").split(","):
        if part.strip():
            name, sep, column = part.partition("=")
            if not sep or not name.strip() or not column.strip():
                raise TunelabError(f"--fields {text}: expected FIELD=COLUMN pairs, e.g. "
                                   "input=question,output=answer")
            fields[name.strip()] = column.strip()
    return fields


def _score(args: argparse.Namespace) -> int:
    metrics = [m.strip() for item in args.metric for m in item.split(",") if m.strip()]
    labels = args.labels.split(",") if args.labels else None
    refs = args.references or []
    # One file: its lines (or JSONL) are the references; several: one stream per file.
    references = refs[0] if len(refs) == 1 else [Path(r) for r in refs] or None
    result = tunelab.score(metrics, args.predictions, references, labels=labels, ci=args.ci)
    print(json.dumps(result, indent=1) if args.json else tunelab.format_scores(result))
    return 0


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "quickstart": _quickstart, "train": _train, "sweep": _sweep, "tune": _tune, "merge": _merge,
    "combine": _combine,
    "predict": _predict,
    "export": _export, "serve": _serve,
    "eval": _eval,
    "robustness": _robustness, "bias": _bias, "compare": _compare, "report": _report, "rate": _rate, "ratings": _ratings,
    "tasks": _tasks, "harness": _harness,
    "data": _data, "score": _score,
}

LAUNCHED = frozenset({_train})
"""The commands that run as each of a launcher's processes (torchrun, `--nproc`, accelerate):
`train` alone; every other command refuses a launch of several."""

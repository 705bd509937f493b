"""The `tunelab` command: parse, call one API function, print. No logic lives here."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from tunelab.errors import TunelabError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tunelab",
        description="Fine-tune language models and prove, with numbers, whether it worked.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    commands = parser.add_subparsers(dest="command", required=True)

    quick = commands.add_parser("quickstart", help="LoRA on the built-in model vs its baselines")
    quick.add_argument("--out", default="runs", help="parent directory of the run (default: runs)")
    quick.add_argument("--limit", type=int, help="evaluate at most N test examples")
    quick.add_argument("overrides", nargs="*", help="key=value config overrides, e.g. train.epochs=1")

    train = commands.add_parser("train", help="fine-tune as CONFIG says; writes a run directory")
    train.add_argument("config", help="a run config YAML file")
    train.add_argument("overrides", nargs="*", help="key=value overrides, e.g. train.lr=1e-4")
    train.add_argument("--resume", action="store_true", help="continue an interrupted run")
    train.add_argument("--no-eval", action="store_true", help="skip the test-split evaluation")

    ev = commands.add_parser("eval", help="evaluate a model (optionally with a run's weights)")
    ev.add_argument("--model", help="base model: built-in alias, local directory or hub id")
    ev.add_argument("--adapter", help="a run directory from `tunelab train`")
    ev.add_argument("--task", required=True, help="built-in task name or task YAML file")
    ev.add_argument("--shots", type=int, default=0, help="in-context examples per prompt")
    ev.add_argument("--limit", type=int, help="evaluate at most N examples")
    ev.add_argument("--out", help="write metrics.json and predictions.jsonl here")
    ev.add_argument("--json", action="store_true", help="print the metrics as JSON")

    data = commands.add_parser("data", help="data tools")
    data_commands = data.add_subparsers(dest="data_command", required=True)
    inspect = data_commands.add_parser("inspect", help="show templated examples, trained tokens marked")
    inspect.add_argument("config", help="a run config YAML file")
    inspect.add_argument("overrides", nargs="*", help="key=value overrides")
    inspect.add_argument("-n", type=int, default=3, help="how many examples to show")
    inspect.add_argument("--split", default="train", help="train, validation or test")

    sc = commands.add_parser("score", help="score predictions against references")
    sc.add_argument("--metric", "-m", required=True, action="append",
                    help="rouge, bleu, chrf, exact_match, f1, accuracy, classification (repeatable "
                         "or comma-separated)")
    sc.add_argument("--predictions", "-p", required=True, help="text file (one per line) or JSONL")
    sc.add_argument("--references", "-r", nargs="*", help="text file(s) or JSONL")
    sc.add_argument("--labels", help="comma-separated label set for classification")
    sc.add_argument("--ci", action="store_true", help="add bootstrap 95%% confidence intervals")
    sc.add_argument("--json", action="store_true", help="machine-readable output")
    return parser


def _run(args: argparse.Namespace) -> None:
    import tunelab

    if args.command == "quickstart":
        tunelab.quickstart(args.out, limit=args.limit, overrides=args.overrides)
    elif args.command == "train":
        result = tunelab.train(args.config, args.overrides, resume=args.resume,
                               evaluate_after=not args.no_eval)
        print(json.dumps(result.summary, indent=1))
        if result.evaluation:
            print(json.dumps(result.evaluation.scores, indent=1))
        print(f"run directory: {result.run_dir}")
    elif args.command == "eval":
        result = tunelab.evaluate(args.task, model=args.model, adapter=args.adapter,
                                  shots=args.shots, limit=args.limit, out_dir=args.out)
        if args.json:
            print(json.dumps(result.summary(), indent=1, default=str))
        else:
            from tunelab.report.tables import results_table

            print(results_table([result], list(result.scores)))
    elif args.command == "data":
        from tunelab.config import load_run_config
        from tunelab.data.inspect import inspect_data

        print(inspect_data(load_run_config(args.config, args.overrides), args.n, args.split))
    elif args.command == "score":
        metrics = [m.strip() for item in args.metric for m in item.split(",") if m.strip()]
        labels = args.labels.split(",") if args.labels else None
        refs = args.references or []
        # One file: its lines (or JSONL) are the references; several: one stream per file.
        references = refs[0] if len(refs) == 1 else [Path(r) for r in refs] or None
        result = tunelab.score(metrics, args.predictions, references, labels=labels, ci=args.ci)
        print(json.dumps(result, indent=1) if args.json else tunelab.format_scores(result))


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        _run(args)
    except TunelabError as err:
        if args.debug:
            raise
        print(f"tunelab: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("tunelab: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())

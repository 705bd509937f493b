"""Every `tunelab` command's arguments: `parser()` builds the parser (its --help pages are
docs/reference/cli.md, written by scripts/docs-reference)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # argparse's class is generic in typeshed only
    Commands = argparse._SubParsersAction[argparse.ArgumentParser]
    """What `add_subparsers()` returns: each command adds its parser to it."""


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tunelab",
        description="Fine-tune language models and prove, with numbers, whether it worked.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    commands = parser.add_subparsers(dest="command", required=True)
    for add in (_quickstart_args, _train_args, _sweep_args, _tune_args, _merge_args, _combine_args, _predict_args, _export_args, _serve_args,
                _eval_args,
                _robustness_args, _bias_args, _compare_args, _report_args, _rate_args, _ratings_args, _tasks_args, _harness_args, _data_args,
                _score_args):
        add(commands)
    return parser


def _quickstart_args(commands: Commands) -> None:
    quick = commands.add_parser("quickstart", help="LoRA on the built-in model vs its baselines")
    quick.add_argument("--out", default="runs", help="parent directory of the run (default: runs)")
    quick.add_argument("--limit", type=int, help="evaluate at most N test examples")
    _nproc_arg(quick)
    quick.add_argument("overrides", nargs="*", help="key=value config overrides, e.g. train.epochs=1")


def _train_args(commands: Commands) -> None:
    train = commands.add_parser("train", help="fine-tune as CONFIG says; writes a run directory")
    train.add_argument("config", help="a run config YAML file")
    train.add_argument("overrides", nargs="*", help="key=value overrides, e.g. train.lr=1e-4")
    train.add_argument("--resume", action="store_true", help="continue an interrupted run")
    train.add_argument("--nproc", type=int, metavar="N",
                       help="train in N processes on this machine (torchrun; batch_size is per "
                            "process; one per GPU, or CPU processes with gloo)")
    train.add_argument("--no-eval", action="store_true", help="skip the test-split evaluation")
    train.add_argument("--allow-leakage", action="store_true",
                       help="train even when test items are in the training data "
                            "(data.allow_leakage; data.dedup: true drops them instead)")
    train.add_argument("--retention", metavar="TASKS",
                       help="retention tasks or suites, comma-separated (e.g. general): scored "
                            "before and after training (retention.tasks)")
    train.add_argument("--max-forgetting", type=float, metavar="X",
                       help="exit 1 when a retention score drops by more than X points "
                            "(retention.max_forgetting; default suite: general)")


def _sweep_args(commands: Commands) -> None:
    sweep = commands.add_parser("sweep", help="every method on the same data and budget, one table")
    sweep.add_argument("config", help="a run config YAML file")
    sweep.add_argument("overrides", nargs="*", help="key=value overrides for every method")
    sweep.add_argument("--methods", default="full,freeze,bitfit,lora,ia3,adapter,prompt,prefix",
                       help="comma-separated methods (default: all eight)")
    budget = sweep.add_mutually_exclusive_group()
    budget.add_argument("--steps", type=int, default=0, help="optimizer steps for every method")
    budget.add_argument("--seconds", type=float, default=0,
                        help="wall-clock training budget for every method")
    sweep.add_argument("--lr", action="append", default=[], metavar="METHOD=LR",
                       help="learning rate of one method (repeatable), e.g. --lr lora=3e-4")
    sweep.add_argument("--resume", action="store_true",
                       help="finish an existing sweep: keep finished methods, run the rest")
    sweep.add_argument("--retention", metavar="TASKS",
                       help="untouched tasks or suites, comma-separated (default: the config's "
                            "retention.tasks): their score change is the forgetting column")


def _tune_args(commands: Commands) -> None:
    tune = commands.add_parser("tune", help="hyperparameter search (Optuna) on the validation "
                                            "split; the best trial scored on test once")
    tune.add_argument("config", help="a run config YAML file")
    tune.add_argument("overrides", nargs="*", help="key=value overrides for every trial")
    tune.add_argument("--space", required=True, metavar="SPACE.yaml",
                      help="config keys to search: a list of values (method.r: [4, 8, 16]) or "
                           "a range (train.lr: {low: 1.0e-4, high: 1.0e-3, log: true})")
    tune.add_argument("--trials", type=int, required=True, metavar="N",
                      help="finished trials (complete or pruned) in total; a killed tune resumes "
                           "with the same command")
    tune.add_argument("--timeout", type=float, default=0, metavar="S",
                      help="start no new trial after S seconds (default: none)")
    tune.add_argument("--workers", type=int, default=1, metavar="K",
                      help="K worker processes on the same study (default 1)")
    tune.add_argument("--storage", metavar="URL",
                      help="the study's database (default sqlite:///<tune dir>/study.sqlite); "
                           "several machines can share one")
    tune.add_argument("--sampler", choices=["tpe", "random", "grid"], default="tpe")
    tune.add_argument("--pruner", choices=["median", "hyperband", "none"], default="median",
                      help="stops trials whose validation curve falls behind (default median)")
    tune.add_argument("--objective", choices=["loss", "metric"], default="loss",
                      help="loss: best validation loss; metric: the task's primary metric on "
                           "the validation split")
    tune.add_argument("--baselines", default="zero,few",
                      help="base-model baselines scored on test next to the best trial "
                           "(default zero,few)")
    tune.add_argument("--worker", type=int, help=argparse.SUPPRESS)  # set by --workers


def _merge_args(commands: Commands) -> None:
    merge = commands.add_parser("merge", help="merge a run's weights into a plain HF model")
    merge.add_argument("run", help="a run directory from `tunelab train` (lora, ia3, full, ...)")
    merge.add_argument("--out", required=True, help="an empty or new directory for the model")


def _combine_args(commands: Commands) -> None:
    combine = commands.add_parser(
        "combine", help="combine per-task LoRA runs of one base into one adapter (peft) and "
                        "score it against each run on its own task")
    combine.add_argument("runs", nargs="+", metavar="RUN",
                         help="two or more LoRA run directories of one base model")
    combine.add_argument("--how", required=True,
                         help="linear (weighted sum of A's and B's; equal ranks), ties or "
                              "dare_ties (trim to --density, elect signs; equal ranks) or cat "
                              "(the adapters side by side: the exact sum; any ranks)")
    combine.add_argument("--weights", metavar="W,...",
                         help="one weight per run, comma-separated (default 1 each)")
    combine.add_argument("--density", type=float,
                         help="ties, dare_ties: share of entries kept, in (0, 1] (default 0.2)")
    combine.add_argument("--seed", type=int, default=0, help="seeds DARE's random drops")
    combine.add_argument("--limit", type=int,
                         help="score at most N test items per task (default: each run's own)")
    combine.add_argument("--out", required=True,
                         help="a new or empty directory: the combined run")
    combine.add_argument("--json", action="store_true", help="print summary.json")


def _predict_args(commands: Commands) -> None:
    predict = commands.add_parser("predict", help="a run's predictions on new inputs (a file)")
    predict.add_argument("run", help="a run directory from `tunelab train`")
    predict.add_argument("--input", required=True,
                         help="a .jsonl, .csv or .parquet file with the run's input columns "
                              "(no answers needed)")
    predict.add_argument("--out", help="a new .jsonl, .csv or .parquet file (default: "
                                       "<input stem>.predictions<suffix> beside the input)")
    predict.add_argument("--limit", type=int, help="predict the first N rows only")
    predict.add_argument("--task", help="a multi-task run's task to predict as (a mixture, a "
                         "tunelab combine run)")


def _export_args(commands: Commands) -> None:
    export = commands.add_parser("export", help="write a run for an engine (HF, GGUF) and check "
                                 "that it scores as the fine-tune did")
    export.add_argument("run", help="a run directory from `tunelab train`")
    export.add_argument("--format", required=True, help="hf (a merged transformers folder) or "
                        "gguf (llama.cpp / Ollama)")
    export.add_argument("--quant", help="GGUF weight types, comma-separated: f32, f16, bf16, q8_0, "
                        "q6_k, q5_k_m, q5_0, q4_k_m, q4_0 (default f16)")
    export.add_argument("--out", required=True, help="a new or empty directory")
    export.add_argument("--max-drop", type=float, help="exit 1 when an artefact scores more than "
                        "this many points below the fine-tune (paired, on the test items)")
    export.add_argument("--limit", type=int, help="check on the first N test items only")


def _serve_args(commands: Commands) -> None:
    srv = commands.add_parser("serve", help="an OpenAI-compatible endpoint for a run or an export "
                              "on llama.cpp, transformers or vLLM")
    srv.add_argument("target", help="an export folder (tunelab export) or a run directory")
    srv.add_argument("--engine", help="llamacpp (a GGUF export; the default for one), "
                     "transformers (the default otherwise) or vllm (GPU; a LoRA run's adapter)")
    srv.add_argument("--quant", help="which GGUF of the export to serve (e.g. q8_0; default: "
                     "the first the export wrote)")
    srv.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    srv.add_argument("--port", type=int, default=8000, help="port (default 8000)")


def _eval_args(commands: Commands) -> None:
    ev = commands.add_parser("eval", help="evaluate a model (optionally with a run's weights)")
    ev.add_argument("--model", help="base model: built-in alias, local directory or hub id")
    ev.add_argument("--adapter", action="append",
                    help="a run directory from `tunelab train`; repeat to score several adapters "
                         "on one loaded base (and the base alone)")
    ev.add_argument("--task", required=True,
                    help="built-in task or suite name (tunelab tasks list), a task YAML file, or "
                         "a run directory (the task it trained on)")
    ev.add_argument("--shots", type=int, help="in-context examples per prompt (default 0; with "
                                               "--baselines: k of the few-shot baseline)")
    ev.add_argument("--baselines", help="compare base-model baselines (zero,one,few or numbers "
                                        "of shots) with --adapter on the same items, e.g. "
                                        "zero,few; none (the default): no baselines")
    ev.add_argument("--limit", type=int, help="evaluate at most N examples")
    ev.add_argument("--out", help="write metrics.json and predictions.jsonl here")
    ev.add_argument("--json", action="store_true", help="print the metrics as JSON")
    _nproc_arg(ev)


def _nproc_arg(command: argparse.ArgumentParser) -> None:
    """`--nproc N` of a command that scores models: each evaluation split over N processes."""
    command.add_argument("--nproc", type=int, metavar="N", dest="eval_nproc",
                         help="score each evaluation in N processes on this machine, the cores "
                              "divided among them (default: $TUNELAB_EVAL_NPROC, else 1, the "
                              "faster on 2 cores; docs/design/evaluation-speed.md)")


def _systems_args(command: argparse.ArgumentParser, baselines: str) -> None:
    """The systems a probe command compares: base-model baselines and adapter runs."""
    command.add_argument("--task", help="built-in task or task YAML file (default: the task the "
                                        "first --adapter run trained on)")
    command.add_argument("--model", help="base model: built-in alias, local directory or hub id")
    command.add_argument("--adapter", action="append", default=[],
                         help="a run directory from `tunelab train` (repeatable): one system each")
    command.add_argument("--baselines", default=baselines,
                         help=f"base-model baselines: zero, one, few or numbers of shots, "
                              f"comma-separated; 'none' for adapters only (default: {baselines})")
    command.add_argument("--shots", type=int, help="k of the few-shot baseline")
    command.add_argument("--limit", type=int, help="score at most N test items")
    command.add_argument("--out", help="write the report, plots and every eval dir here")
    command.add_argument("--json", action="store_true", help="print the report as JSON")
    _nproc_arg(command)


def _robustness_args(commands: Commands) -> None:
    rob = commands.add_parser("robustness", help="every system clean vs under noisy-input "
                                                 "perturbations (typos, casing, slang, ...)")
    _systems_args(rob, "zero,few")
    rob.add_argument("--perturbations", default="all",
                     help="comma-separated perturbation names or all (default; --list shows "
                          "them)")
    rob.add_argument("--list", action="store_true", help="list the perturbations and exit")
    rob.add_argument("--severity", default="0.1",
                     help="share of words/characters perturbed, in (0, 1]; comma-separated to "
                          "sweep, e.g. 0.05,0.1,0.2 (default 0.1)")
    rob.add_argument("--seed", type=int, default=0, help="seed of the perturbations")
    rob.add_argument("--instruction", action="store_true",
                     help="also perturb the instruction when records have a separate input")


def _bias_args(commands: Commands) -> None:
    bias = commands.add_parser("bias", help="counterfactual bias probes on a task's items and the "
                                            "BBQ-lite suite")
    _systems_args(bias, "zero")
    bias.add_argument("--probes", default="all",
                      help="comma-separated probe names or all (default; --list shows them)")
    bias.add_argument("--list", action="store_true", help="list the probes and exit")
    bias.add_argument("--bbq", action="store_true",
                      help="also run BBQ-lite (needs: tunelab data fetch bigbench --task "
                           "bbq_lite_json)")
    bias.add_argument("--bbq-limit", type=int, default=50,
                      help="BBQ items per category and context condition (default 50)")
    bias.add_argument("--bbq-categories", default="",
                      help="comma-separated BBQ categories (default: all 9: age, "
                           "disability_status, gender_identity, nationality, "
                           "physical_appearance, race_ethnicity, religion, ses, "
                           "sexual_orientation)")
    bias.add_argument("--generation", action="store_true",
                      help="what each system writes about each group: open-ended prompts that "
                           "name a group, scored for sentiment, offensive and hurtful words "
                           "(instead of the counterfactual probes)")
    bias.add_argument("--groups",
                      help="--generation axes, comma-separated: gender, race, religion, "
                           "profession, age, sexual_orientation or 'all' (default: "
                           "gender,race,religion; with --group-prompts, every axis of the file)")
    bias.add_argument("--group-prompts", metavar="FILE",
                      help="--generation prompts of your own (YAML shaped like tunelab's "
                           "eval/datasets/group_prompts.yaml)")
    bias.add_argument("--samples", type=int, default=3,
                      help="--generation completions per prompt: 1 greedy + K-1 sampled "
                           "(seeded; default 3)")
    bias.add_argument("--max-new-tokens", type=int, default=24,
                      help="--generation tokens per completion (default 24)")
    bias.add_argument("--seed", type=int, default=0, help="--generation sampling seed")


def _compare_args(commands: Commands) -> None:
    compare = commands.add_parser(
        "compare", help="two evaluations of the same items, item by item: fixed, broken, "
                        "error categories, slices")
    compare.add_argument("a", help="the earlier evaluation: an eval dir or a run directory")
    compare.add_argument("b", help="the later evaluation: an eval dir or a run directory")
    compare.add_argument("--task", help="the task that scored them: a task name, YAML file or "
                                        "run directory (default: the one tunelab eval --out "
                                        "recorded, else the run's own, else the built-in "
                                        "task of that name)")
    compare.add_argument("--robustness", metavar="DIR",
                         help="a tunelab robustness --out directory: marks items whose "
                              "prediction changes under noise (default: a run's robustness/)")
    compare.add_argument("--pass", dest="pass_at", type=float, metavar="X",
                         help="graded scores (ROUGE, BLEU, chrF, F1): an item is right from "
                              "score X on the scale scores print (ROUGE-L 30, not 0.3); then "
                              "fixed/broken and McNemar. Without it such items are ranked by "
                              "their score difference B - A (Wilcoxon, bootstrap CI)")
    compare.add_argument("--export", metavar="FILE",
                         help="write B's errors as training data (JSONL): the still-wrong and "
                              "broken items; for a graded score without --pass, B's worst "
                              "items (--export-top)")
    compare.add_argument("--export-top", type=int, metavar="N",
                         help="with --export on a graded score without --pass: B's N "
                              "lowest-scoring items, worst first (default: the worst quarter)")
    compare.add_argument("--examples", type=int, default=5,
                         help="examples shown per group, and the most improved / most "
                              "worsened items shown (default 5)")
    compare.add_argument("--html", metavar="FILE",
                         help="also write the comparison as a self-contained HTML page")
    compare.add_argument("--json", action="store_true", help="print the report as JSON")


def _report_args(commands: Commands) -> None:
    report = commands.add_parser(
        "report", help="rebuild DIR/report.html: a run, a sweep or a directory of evaluations")
    report.add_argument("directory", help="a run, sweep or eval directory")


def _rate_args(commands: Commands) -> None:
    rate = commands.add_parser(
        "rate", help="a local web page for blind human ratings of the systems' outputs")
    rate.add_argument("directory", help="a run directory or a directory of evaluations "
                                        "(ratings go to its ratings.sqlite)")
    rate.add_argument("--systems", help="systems to rate, comma-separated: names, directory "
                                        "names or a unique prefix (default: every one)")
    rate.add_argument("--criteria", help="criteria, comma-separated (default: fluency,coherence,"
                                         "relevance; also consistency, helpfulness, correctness)")
    rate.add_argument("--criteria-file", metavar="YAML",
                      help="your own criteria: one 'name: one-line description' per line")
    rate.add_argument("--scale", type=int, default=5, help="points per criterion (default 5)")
    rate.add_argument("--pairwise", action="store_true",
                      help="also ask which of two outputs is better (A / tie / B)")
    rate.add_argument("--show-reference", action="store_true",
                      help="show the reference answer next to the input")
    rate.add_argument("--limit", type=int, help="rate at most N items (a seeded sample)")
    rate.add_argument("--seed", type=int, default=0, help="item order and blind order seed")
    rate.add_argument("--rater", help="the name the start page suggests")
    rate.add_argument("--host", default="127.0.0.1",
                      help="address to listen on (default 127.0.0.1: this machine only)")
    rate.add_argument("--port", type=int, default=8765, help="port (default 8765; 0: any free)")


def _ratings_args(commands: Commands) -> None:
    ratings = commands.add_parser(
        "ratings", help="human ratings of an evaluation: means, paired tests, agreement, "
                        "pairwise strengths, correlation with the metrics")
    ratings.add_argument("directory", help="the rated run or eval directory (its ratings.sqlite)")
    ratings.add_argument("--reference", help="the system the others are compared with "
                                             "(default: fine-tuned)")
    ratings.add_argument("--import", dest="import_csv", metavar="CSV",
                         help="merge ratings collected in a spreadsheet first")
    ratings.add_argument("--export", dest="export_csv", metavar="CSV",
                         help="write every rating to a CSV file")
    ratings.add_argument("--json", action="store_true", help="print the report as JSON")


def _tasks_args(commands: Commands) -> None:
    tasks = commands.add_parser("tasks", help="list or validate evaluation tasks")
    task_commands = tasks.add_subparsers(dest="tasks_command", required=True)
    task_commands.add_parser("list", help="built-in tasks and suites")
    validate = task_commands.add_parser("validate", help="check a task file and its data")
    validate.add_argument("file", help="a task YAML file (or a built-in task name)")
    validate.add_argument("--model", help="tokenizer for chat templates (a model spec)")


def _harness_args(commands: Commands) -> None:
    harness = commands.add_parser("harness", help="run lm-evaluation-harness tasks on a tunelab model")
    harness.add_argument("--tasks", required=True, help="lm-eval task names, comma-separated")
    harness.add_argument("--model", help="base model: built-in alias, local directory or hub id")
    harness.add_argument("--adapter", help="a run directory from `tunelab train`")
    harness.add_argument("--include-path", "--include_path", help="a folder of extra lm-eval task YAML files")
    harness.add_argument("--shots", type=int, help="lm-eval num_fewshot")
    harness.add_argument("--limit", type=int, help="examples per task")
    harness.add_argument("--batch-size", type=int, default=8, help="requests per forward pass")
    harness.add_argument("--max-length", "--max_length", type=int, metavar="N",
                         help="context window in tokens (default: the model's, as lm-eval's hf "
                              "model finds it)")
    harness.add_argument("--apply-chat-template", "--apply_chat_template", nargs="?", const=True,
                         default=False, metavar="TEMPLATE",
                         help="render prompts with the tokenizer's chat template (lm-eval's flag; "
                              "optionally a template name)")
    harness.add_argument("--output", "--output_path", help="write lm-eval's results JSON here "
                         "(a directory: DIR/MODEL/results_TIME.json)")
    harness.add_argument("--log-samples", "--log_samples", action="store_true",
                         help="also write every item's prompt, responses and scores "
                              "(samples_TASK_TIME.jsonl beside the results; needs --output)")


def _data_args(commands: Commands) -> None:
    data = commands.add_parser("data", help="data tools")
    data_commands = data.add_subparsers(dest="data_command", required=True)
    inspect = data_commands.add_parser("inspect", help="show templated examples, trained tokens marked")
    inspect.add_argument("config", help="a run config YAML file")
    inspect.add_argument("overrides", nargs="*", help="key=value overrides")
    inspect.add_argument("-n", type=int, default=3, help="how many examples to show")
    inspect.add_argument("--split", default="train", help="train, validation or test")
    check = data_commands.add_parser(
        "check", help="duplicates, leakage into test and benchmarks, conflicting labels, quality "
                      "and likely label errors, before training")
    check.add_argument("target", help="a run config YAML file, a data file (JSONL, CSV, Parquet) "
                                      "or a task name / task file")
    check.add_argument("overrides", nargs="*", help="key=value overrides (a run config)")
    check.add_argument("--fields", metavar="FIELD=COLUMN,...",
                       help="a data file's column mapping, e.g. input=question,output=answer "
                            "(as data.fields)")
    check.add_argument("--against", action="append", default=[], metavar="TASK",
                       help="also check overlap with this task or suite (repeatable)")
    check.add_argument("--fix", metavar="OUT.jsonl",
                       help="write the training data without duplicates and leaked items here "
                            "(the input is never touched; a config's validation and test "
                            "splits are written beside it)")
    check.add_argument("--out", default="data_check.json",
                       help="where the figures go (default: data_check.json)")
    check.add_argument("--threshold", type=float,
                       help="near duplicates from this MinHash Jaccard similarity (default: "
                            "data.near_duplicates, 0.8; 0: off)")
    check.add_argument("--no-label-errors", action="store_true",
                       help="skip the cross-validated label-error ranking")
    check.add_argument("--json", action="store_true", help="print the figures as JSON")
    fetch = data_commands.add_parser("fetch", help="download benchmark data (bigbench) once")
    fetch.add_argument("dataset", choices=["bigbench"], help="what to fetch")
    fetch.add_argument("--task", action="append", help="BIG-bench task (repeatable; default: the "
                                                       "ones the built-in tasks use)")
    fetch.add_argument("--all", action="store_true", help="every BIG-bench JSON task (~1.7 GB)")
    fetch.add_argument("--sdist", help="a local bigbench-1.0.0.tar.gz instead of pip download")


def _score_args(commands: Commands) -> None:
    sc = commands.add_parser("score", help="score predictions against references")
    sc.add_argument("--metric", "-m", required=True, action="append",
                    help="rouge, bleu, chrf, exact_match, f1, accuracy, classification (repeatable "
                         "or comma-separated)")
    sc.add_argument("--predictions", "-p", required=True, help="text file (one per line) or JSONL")
    sc.add_argument("--references", "-r", nargs="*", help="text file(s) or JSONL")
    sc.add_argument("--labels", help="comma-separated label set for classification")
    sc.add_argument("--ci", action="store_true", help="add bootstrap 95%% confidence intervals")
    sc.add_argument("--json", action="store_true", help="machine-readable output")

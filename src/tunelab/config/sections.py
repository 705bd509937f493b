"""The config sections: one dataclass each, every field's docstring its help text."""

from __future__ import annotations

import importlib.util
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from tunelab.config.choices import (
    COUNT,
    NONNEGATIVE,
    SHARE,
    TRACKER_PACKAGES,
    TRACKERS,
    BuiltinMixture,
    Checked,
    DataFormat,
    Dtype,
    Measure,
    ModelKind,
    OnDivergence,
    Order,
    OutputTypeName,
    Precision,
    Range,
    Sampling,
    Schedule,
    ShotSampler,
    TemplateName,
    yaml_line,
)
from tunelab.config.formats import check_format
from tunelab.core.errors import TunelabError


@dataclass
class ModelConfig(Checked):
    section: typing.ClassVar[str] = "model"
    limits: typing.ClassVar[dict[str, Range]] = {"num_layers": COUNT}
    name: str = "smollm2-135m"
    """Built-in alias (smollm2-135m, minilm-l6), a local HF model directory, or a hub id."""
    dtype: Dtype = "float32"
    """Weights dtype: float32, bfloat16 or float16."""
    num_layers: int | None = None
    """Keep only the first N transformer blocks (quick experiments, tests)."""
    kind: ModelKind = "causal"
    """causal (a decoder LM: trained on the completion after the prompt), seq2seq (an
    encoder-decoder such as T5/BART: the prompt is the encoder input, the completion the
    decoder target) or classifier (an encoder with a sequence-classification head over
    eval.labels, e.g. minilm-l6: the prompt text in, the record's output is the class)."""
    init_from: str | None = None
    """A finished run directory to start from instead of the base weights (intermediate
    fine-tuning, a new task on top of an earlier fine-tune); the rest of `model` must be that
    run's. The same peft method (lora, ia3, prompt, prefix) with the same options continues
    its adapter; any other method starts from that run merged into the base (lora, ia3, full,
    freeze, bitfit runs merge). Every earlier stage's task is scored again after training."""


@dataclass
class AugmentConfig(Checked):
    """Noise injection: the robustness perturbations applied to a seeded share of the training
    inputs (validation and test stay clean), so a run can train for robustness."""
    section: typing.ClassVar[str] = "data.augment"
    limits: typing.ClassVar[dict[str, Range]] = {"share": SHARE, "severity": Range(0, 1, low_open=True)}

    perturbations: list[str] = field(default_factory=list)
    """Perturbation names (typo, lowercase, ...; `tunelab robustness --help` lists them), or
    [all]. Empty: no augmentation."""
    share: float = 0.3
    """Fraction of the training examples whose input gets one perturbation (chosen at random)."""
    severity: float = 0.1
    """Share of the eligible words or characters a perturbation touches, in (0, 1]."""
    seed: int = 0
    """Seed of which examples are perturbed and how."""


@dataclass
class DataConfig(Checked):
    section: typing.ClassVar[str] = "data"
    formats: typing.ClassVar[tuple[str, ...]] = ("prompt_format", "completion_format")
    """Options holding a format string (`check_format`)."""
    limits: typing.ClassVar[dict[str, Range]] = {"validation_size": Range(0), "test_size": Range(0), "max_length": Range(8, whole=True, fix="e.g. 512"), "near_duplicates": SHARE}
    source: str = "builtin:movie_sentiment"
    """builtin:NAME, a .jsonl/.json/.csv/.parquet file, a `datasets` directory saved to disk,
    a .txt file or a folder of .txt files (raw text, for template text)."""
    format: DataFormat = "auto"
    """auto (from the file), jsonl, csv, parquet, hf_disk, bigbench (a BIG-bench task.json:
    the task definition becomes the instruction, each example's first target the output), or
    text (a .txt file: one document per blank-line-separated block; a folder: one document
    per .txt file)."""
    fields: dict[str, str] = field(default_factory=dict)
    """Map tunelab's field names (instruction, input, output, prompt, completion, messages;
    text for template text) to the column names in the data, e.g. {output: label}."""
    template: TemplateName = "alpaca"
    """alpaca, chat (the tokenizer's chat template), format (prompt_format below), or text
    (raw documents from a `text` column or .txt files: no prompt, the loss on every token,
    packed by default, scored by perplexity: domain adaptation)."""
    prompt_format: str | None = None
    """For template=format: a Python format string over the record's columns."""
    completion_format: str = "{output}"
    """For template=format: the completion's format string."""
    instruction: str | None = None
    """Instruction used for records that have none."""
    system: str | None = None
    """System message for template=chat."""
    validation_size: float = 0.1
    """Fraction (<1) or count (>=1) of examples held out for validation."""
    test_size: float = 0.2
    """Fraction (<1) or count (>=1) of examples held out for testing."""
    split_seed: int = 0
    """Seed of the train/validation/test shuffle."""
    train_file: str | None = None
    """Use given split files instead of a seeded split (source is then ignored)."""
    validation_file: str | None = None
    """With train_file: the validation split's file (the same format)."""
    test_file: str | None = None
    """With train_file: the test split's file (the same format)."""
    max_length: int = 512
    """Longest tokenised example; longer prompts are cut from the left (template text: a
    longer document is cut into windows of max_length tokens, none lost)."""
    packing: bool | None = None
    """Training and validation batches without padding: a micro-batch's examples are laid end
    to end in rows of up to max_length tokens, position ids restart at each example and the
    attention is block-diagonal, so no example sees another. The same examples and losses as
    padded batches, with fewer positions computed. Causal models; not with prompt or prefix
    tuning (their virtual tokens belong to one example). Unset: the template kind's default
    (on for text, off for the others), off where the model kind or method cannot pack."""
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    """Training only: perturb a seeded share of the training inputs (see AugmentConfig)."""
    dedup: bool = False
    """Drop from the training split, before training, every example that repeats an earlier
    one (exact or near duplicate) and every example also in the validation or test split or a
    scored benchmark (exact, near duplicate or a shared 13-gram; `tunelab data check`)."""
    allow_leakage: bool = False
    """Train even when test items are also in the training data (`tunelab train` refuses by
    default: a leaked item inflates the very gain the paired test calls significant)."""
    near_duplicates: float = 0.8
    """MinHash Jaccard similarity (character 5-grams) from which two inputs are near
    duplicates; 0 turns near-duplicate detection off."""

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in self.formats:
            check_format(f"{self.section}.{name}", getattr(self, name))


@dataclass
class GenerationConfig(Checked):
    section: typing.ClassVar[str] = "eval.generation"
    limits: typing.ClassVar[dict[str, Range]] = {"max_new_tokens": COUNT, "temperature": Range(0, low_open=True), "top_p": Range(0, 1, low_open=True), "batch_size": COUNT}
    max_new_tokens: int = 32
    """Longest generated answer, in tokens (a stop string or the end token ends it sooner)."""
    do_sample: bool = False
    """Greedy decoding unless true."""
    temperature: float = 1.0
    """With do_sample: the sampling temperature (above 0)."""
    top_p: float = 1.0
    """With do_sample: nucleus sampling's probability mass, in (0, 1]."""
    stop: list[str] = field(default_factory=list)
    """Stop strings: the prediction is cut at the first one."""
    batch_size: int = 16
    """Prompts per generation batch (batches are formed from prompts of similar length)."""
    seed: int = 0
    """With do_sample: the sampling seed."""


@dataclass
class EvalConfig(Checked):
    section: typing.ClassVar[str] = "eval"
    limits: typing.ClassVar[dict[str, Range]] = {"shots": NONNEGATIVE, "limit": Range(1, whole=True, fix="or leave it out to score the whole split"), "batch_size": COUNT, "bootstrap": NONNEGATIVE}
    metrics: list[str] = field(default_factory=lambda: ["accuracy"])
    """Metrics over the test split: accuracy, classification, exact_match, f1, rouge, bleu, chrf,
    perplexity (generate); multiple_choice (acc, acc_norm); perplexity, bits_per_byte,
    word_perplexity (loglikelihood_rolling)."""
    labels: list[str] | None = None
    """The label set for label tasks (per-label precision/recall/F1)."""
    primary: str | None = None
    """The score compared between systems (default: the first metric's first score)."""
    shots: int = 0
    """In-context examples per prompt (`fewshot.k` in a task file takes precedence)."""
    limit: int | None = None
    """Evaluate at most this many test examples."""
    fewshot_seed: int = 1234
    """Seed of the per-item in-context examples (the same shots for every system scored)."""
    fewshot_sampler: ShotSampler = "random"
    """Which shots each item gets: random (seeded per item), fixed (one seeded draw shared by
    every item, as HELM and MMLU's dev-set shots: the shared prefix runs once per call) or first
    (the split's first k). A task file's `fewshot.sampler` takes precedence."""
    batch_size: int = 8
    """Items per forward pass for log-likelihood requests (multiple choice, rolling, heads)."""
    bootstrap: int = 1000
    """Bootstrap resamples for confidence intervals and paired tests (0: none)."""
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    """How answers are generated for generate tasks."""


@dataclass
class FewShotConfig(Checked):
    section: typing.ClassVar[str] = "fewshot"
    """In-context examples: how many, from which split, sampled how, joined by what."""
    limits: typing.ClassVar[dict[str, Range]] = {"k": NONNEGATIVE}

    k: int | None = None
    """Shots of the few-shot baseline (`--baselines few`, `--shots few`); default eval.shots,
    else 5. Plain evaluation is zero-shot unless --shots says otherwise."""
    split: str | None = None
    """The split shots come from (default: fewshot_split, i.e. train). When it is the scored
    split, an item is never its own shot."""
    seed: int | None = None
    """Seed of the per-item shot sampler (default: eval.fewshot_seed)."""
    sampler: ShotSampler | None = None
    """random (seeded per item), fixed (one seeded draw, the same for every item) or first (the
    split's first k, for every item); default eval.fewshot_sampler (random)."""
    separator: str | None = None
    """Text between consecutive examples (default: the data source's own, else a blank line;
    non-chat templates only: chat shots are earlier turns)."""


@dataclass
class RollingConfig(Checked):
    """Windows for loglikelihood_rolling (perplexity / bits per byte of long text)."""
    section: typing.ClassVar[str] = "rolling"
    limits: typing.ClassVar[dict[str, Range]] = {"max_length": COUNT, "stride": COUNT}

    max_length: int | None = None
    """Window length in tokens (default: the model's context length, at most 2048)."""
    stride: int | None = None
    """Tokens the window advances by (default: max_length, i.e. disjoint windows). A smaller
    stride gives every scored token more context at more compute."""


@dataclass
class TaskConfig(Checked):
    section: typing.ClassVar[str] = ""
    """An evaluation task: data, template, split, answers, metrics and shots (one YAML file)."""

    name: str = "task"
    """The task's name (`tunelab eval --task NAME` for a built-in task; reports and run
    directories name it)."""
    description: str = ""
    """One line shown by `tunelab tasks list`."""
    output_type: OutputTypeName = "generate"
    """generate (free text), multiple_choice (log-likelihood of each choice),
    loglikelihood_rolling (perplexity / bits per byte of whole texts), classification (a task
    head's label)."""
    data: DataConfig = field(default_factory=DataConfig)
    """Where the task's items come from and how they are split and templated (the options of
    a run's `data` section)."""
    split: str = "test"
    """The split that is scored; few-shot examples come from `fewshot.split`."""
    fewshot_split: str = "train"
    """The split in-context examples come from (`fewshot.split` takes precedence)."""
    target: str | None = None
    """Column holding the answer: text, a list of acceptable texts, or a choice index (default:
    the record's output). For loglikelihood_rolling: the column holding the text to score."""
    choices: object = None
    """multiple_choice/classification: the column holding each item's list of choices, or a
    fixed list of choices (default: a `choices` column, else eval.labels)."""
    preamble: str | None = None
    """Text placed once before the in-context examples (default: the data source's own, e.g.
    BIG-bench's task_prefix; '' for none)."""
    fewshot: FewShotConfig = field(default_factory=FewShotConfig)
    """In-context examples: how many, from which split, sampled how."""
    rolling: RollingConfig = field(default_factory=RollingConfig)
    """Windows of loglikelihood_rolling tasks."""
    eval: EvalConfig = field(default_factory=EvalConfig)
    """Metrics, labels, shots and generation settings of the task (the options of a run's
    `eval` section)."""
    origin: str = field(default="", repr=False, compare=False, metadata={"internal": True})
    """The task file it was read from (set by load_task; errors about the task name it)."""

    def where(self, *keys: str | int) -> str:
        """The task file and the line of option `keys` in it, else the task's name."""
        if not self.origin:
            return f"task {self.name}"
        line = yaml_line(Path(self.origin), list(keys)) if keys else None
        return self.origin + (f" line {line}" if line else "")

    def fewshot_k(self) -> int:
        """In-context examples of the task's few-shot setting."""
        if self.fewshot.k is not None:
            return self.fewshot.k
        return self.eval.shots or 5

    def shot_split(self) -> str:
        return self.fewshot.split or self.fewshot_split

    def shot_seed(self) -> int:
        return self.fewshot.seed if self.fewshot.seed is not None else self.eval.fewshot_seed

    def shot_sampler(self) -> ShotSampler:
        return self.fewshot.sampler or self.eval.fewshot_sampler


@dataclass
class TrainConfig(Checked):
    section: typing.ClassVar[str] = "train"
    limits: typing.ClassVar[dict[str, Range]] = {
        "epochs": Range(0, low_open=True, fix="e.g. 3 (or set max_steps)"),
        "max_steps": Range(0, whole=True, fix="0 runs `epochs` epochs"),
        "max_seconds": Range(0), "batch_size": COUNT, "grad_accum": COUNT,
        "lr": Range(0, fix="e.g. 2e-4 for LoRA, 2e-5 for full fine-tuning (0: a control run that learns nothing)"),
        "weight_decay": Range(0), "warmup_ratio": Range(0, 1, high_open=True),
        "max_grad_norm": Range(0, fix="0 turns clipping off"), "eval_every": NONNEGATIVE,
        "early_stopping_patience": NONNEGATIVE, "save_every": NONNEGATIVE, "log_every": COUNT,
        "divergence_factor": Range(0, fix="0 turns the check off; e.g. 4"),
        "threads": Range(0, whole=True, fix="0 follows the free cores; e.g. 2")}
    epochs: float = 1.0
    """Passes over the training split (a fraction runs part of one); ignored when max_steps
    is set."""
    max_steps: int = 0
    """Optimizer steps; 0 means run `epochs` epochs."""
    max_seconds: float = 0
    """Wall-clock budget for training (0: none). The schedule still spans max_steps/epochs;
    training stops at the first step that ends past the budget."""
    batch_size: int = 8
    """Examples per micro-batch (per process, with several processes)."""
    grad_accum: int = 1
    """Micro-batches accumulated per optimizer step."""
    lr: float = 2e-4
    """Peak learning rate of AdamW (e.g. 2e-4 for LoRA, 2e-5 for full fine-tuning)."""
    weight_decay: float = 0.0
    """AdamW's decoupled weight decay."""
    warmup_ratio: float = 0.1
    """Share of the steps spent warming the learning rate up linearly from 0, in [0, 1)."""
    schedule: Schedule = "cosine"
    """cosine, linear or constant (all after linear warmup)."""
    max_grad_norm: float = 1.0
    """Clip the gradients' global norm to this (0: no clipping)."""
    eval_every: int = 0
    """Validation loss every N optimizer steps (0: at the end of each epoch only)."""
    early_stopping_patience: int = 0
    """Stop after N evaluations without a better validation loss (0: never)."""
    save_every: int = 0
    """Write a resumable checkpoint every N steps (0: only at evaluations)."""
    log_every: int = 5
    """Write the training loss and throughput to train_log.jsonl every N steps."""
    seed: int = 0
    """Seed of the initialisation of new weights, the batch order and dropout."""
    divergence_factor: float = 4.0
    """The run has diverged when a step's loss exceeds this many times its first step's loss
    (0: no such check). A non-finite loss or gradient always counts."""
    on_divergence: OnDivergence = "stop"
    """stop: end the run with an error, writing no adapter and no checkpoint from the diverged
    weights; skip_step: a step with a non-finite loss or gradient is not applied (10 in a row
    stop the run); a loss past divergence_factor still stops."""
    precision: Precision = "fp32"
    """Compute precision: bf16 or fp16 run the forward and backward passes under autocast
    (bf16 on CPUs with bf16 instructions and on GPUs, fp16 on GPUs); trainable weights and the
    optimizer state stay float32. auto: bf16 where the device runs it natively (a GPU with
    bf16, a CPU with avx512_bf16 or AMX), else fp32 (training/precision.py)."""
    threads: int = 0
    """Threads of a training step on a CPU. 0: torch's threads while the cores are free, one
    fewer for each core other processes keep busy (measured every step: a step at 2 threads
    beside another busy process ran 5-9x slower than at 1; training/threads.py); N: always N."""
    fsdp: bool = False
    """With several processes, shard the weights, gradients and optimizer state over them
    (torch FSDP2, one unit per transformer block) instead of a whole copy in each (DDP). The
    same numbers as DDP and as one process; for models whose training state does not fit one
    device. Not for prompt and prefix tuning (their weights live outside the base model)."""
    group_by_length: bool = False
    """Micro-batches of examples of similar length (less padding): each epoch's seeded
    permutation is cut into windows of 50 micro-batches, each window sorted by length and cut,
    and the micro-batches shuffled (seeded, so a resumed run sees the same batches)."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass instead of keeping them (less memory, about
    a third more compute); every method, prompt and prefix tuning included."""
    report_to: list[str] = field(default_factory=list)
    """Trackers that get the same scalars as train_log.jsonl: tensorboard (event files in
    RUN/tensorboard/), mlflow (RUN/mlruns/, or $MLFLOW_TRACKING_URI when set)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in self.report_to:
            if name not in TRACKERS:
                raise TunelabError(f"train.report_to '{name}': use any of "
                                   f"{', '.join(TRACKERS)}")
            if importlib.util.find_spec(TRACKER_PACKAGES[name]) is None:
                raise TunelabError(f"train.report_to '{name}': the {TRACKER_PACKAGES[name]} "
                                   "package is not installed; pip install 'tunelab[trackers]'")


@dataclass
class TrainTaskConfig(Checked):
    """One training task: its data and template, how much it is sampled and weighted, and the
    metric that tracks it. A multi-task run lists several; a single-task run is the `data` and
    `eval` sections as one such task (data/training_tasks.py)."""
    section: typing.ClassVar[str] = "tasks[]"
    limits: typing.ClassVar[dict[str, Range]] = {"loss_weight": Range(0), "weight": Range(0), "max_train_examples": COUNT}

    name: str = ""
    """Unique name; curriculum stages and the logs refer to it."""
    data: DataConfig = field(default_factory=DataConfig)
    """The task's training data (the options of a run's `data` section)."""
    eval: EvalConfig = field(default_factory=EvalConfig)
    """The task metric, scored on the test split after training (and, in a mixture, on the
    validation split at every evaluation: mixture.eval_limit examples)."""
    loss_weight: float = 1.0
    """Multiplies this task's token losses (0: the task is sampled but never learned from)."""
    weight: float | None = None
    """Sampling weight for mixture.sampling=weights (any positive scale)."""
    max_train_examples: int | None = None
    """Keep at most this many training examples (the first of the seeded split)."""
    held_out: bool = False
    """Never trained on; only evaluated, to measure generalisation to unseen tasks."""


@dataclass
class CurriculumStage(Checked):
    section: typing.ClassVar[str] = "mixture.stages[]"
    limits: typing.ClassVar[dict[str, Range]] = {"steps": NONNEGATIVE}
    tasks: list[str] = field(default_factory=list)
    """The task names sampled in this stage (with the mixture's rates, renormalised)."""
    steps: int = 0
    """Optimizer steps of this stage; 0 on the last stage: the rest of the run."""


@dataclass
class BuiltinMixtureConfig(Checked):
    section: typing.ClassVar[str] = "mixture.builtin"
    """A built-in instruction-tuning mixture; its tasks are added to `tasks`."""
    limits: typing.ClassVar[dict[str, Range]] = {"max_train_examples": COUNT}

    name: BuiltinMixture | None = None
    """natural_instructions: BIG-bench's Natural Instructions subtasks, the task definition
    as the instruction (FLAN-style), with held-out subtasks for unseen-task evaluation."""
    root: str | None = None
    """An extracted BIG-bench tree (default: $TUNELAB_CACHE/bigbench, else
    ~/.cache/tunelab/bigbench)."""
    train: list[str] = field(default_factory=list)
    """Training subtasks, by name or number (e.g. 047); empty: the built-in selection."""
    held_out: list[str] = field(default_factory=list)
    """Held-out subtasks (evaluated, never trained); empty: the built-in selection."""
    instruction: Literal["definition", "prefix"] = "definition"
    """definition (the task's definition) or prefix (definition plus its one-line prompt)."""
    max_train_examples: int | None = 1000
    """Training examples kept per subtask."""
    metrics: list[str] = field(default_factory=lambda: ["rouge"])
    """Metrics of every subtask (Natural Instructions scores with ROUGE-L)."""


@dataclass
class MixtureConfig(Checked):
    section: typing.ClassVar[str] = "mixture"
    """How the tasks of a multi-task run are sampled, ordered and evaluated."""
    limits: typing.ClassVar[dict[str, Range]] = {"eval_limit": NONNEGATIVE}
    """(temperature and cap are checked with the tasks, where they matter: check_tasks)"""

    sampling: Sampling = "proportional"
    """proportional (to task size), temperature (size^(1/temperature)), uniform, or weights
    (each task's `weight`)."""
    temperature: float = 2.0
    """For sampling=temperature: 1 is proportional, larger flattens towards uniform."""
    cap: int | None = None
    """Examples cap K (T5): a task counts as at most K examples in the rates, and gives at
    most K examples per mixture epoch."""
    oversample: bool = False
    """false: a mixture epoch uses each (capped) task's examples once; tasks are drawn at
    their rates, and a used-up task drops out while the rest renormalise. true: every task
    gets its rate's share of the epoch, small tasks repeating (several task epochs)."""
    stages: list[CurriculumStage] = field(default_factory=list)
    """Curriculum: ordered stages of task subsets, e.g. [{tasks: [a], steps: 100},
    {tasks: [a, b]}]; empty: all tasks throughout."""
    order: Order = "random"
    """random, or easy_to_hard: every pass over a task goes from easy to hard by `measure`."""
    measure: Measure = "length"
    """For order=easy_to_hard: length (tokens) or loss (mean completion NLL per token under
    the base model, before training)."""
    eval_limit: int = 16
    """Validation examples per task scored with its metric at every evaluation (0: none)."""
    builtin: BuiltinMixtureConfig = field(default_factory=BuiltinMixtureConfig)
    """A built-in instruction-tuning mixture whose tasks are added to `tasks`."""



@dataclass
class RetentionConfig(Checked):
    """Forgetting: tasks never trained on, scored before training (cached per base model) and
    after, with the change and its paired-bootstrap confidence interval."""
    section: typing.ClassVar[str] = "retention"
    limits: typing.ClassVar[dict[str, Range]] = {"limit": COUNT, "max_forgetting": Range(0)}

    tasks: list[str] = field(default_factory=list)
    """Task names, task files or suite names (`general` is the built-in retention suite).
    Empty: no retention evaluation."""
    limit: int | None = 100
    """Items per retention task (the same items before and after)."""
    every_eval: bool = False
    """Also score them at every evaluation step: a forgetting curve next to the loss curve."""
    max_forgetting: float | None = None
    """Fail the run (exit code 1) when any task's score drops by more than this many points."""


@dataclass
class RobustnessConfig(Checked):
    """Noisy input: the run's test items under each perturbation, scored before training (the
    base model) and after, so the report shows whether fine-tuning made the model more or less
    brittle."""
    section: typing.ClassVar[str] = "robustness"
    limits: typing.ClassVar[dict[str, Range]] = {"limit": COUNT}

    perturbations: list[str] = field(default_factory=list)
    """Perturbation names, or [all]. Empty: no robustness evaluation."""
    severity: list[float] = field(default_factory=lambda: [0.1])
    """Severities to score (several: a sweep), each in (0, 1]."""
    limit: int | None = 100
    """Test items scored (the same items clean and perturbed, before and after)."""
    seed: int = 0
    """Seed of the perturbations (every system sees the same perturbed inputs)."""
    instruction: bool = False
    """Also perturb the instruction when the record has a separate input."""


@dataclass
class BiasConfig(Checked):
    """Counterfactual bias: the run's test items rewritten per demographic group (the probes),
    and optionally the BBQ-lite suite, scored before training and after."""
    section: typing.ClassVar[str] = "bias"
    limits: typing.ClassVar[dict[str, Range]] = {"limit": COUNT, "bbq_limit": COUNT,
                                                 "generation_samples": COUNT,
                                                 "generation_max_new_tokens": COUNT}

    probes: list[str] = field(default_factory=list)
    """Counterfactual probe names (gender, names_gender, ...), or [all]. Empty: none."""
    limit: int | None = 200
    """Test items considered (only those that mention a probe's terms are rewritten)."""
    bbq: bool = False
    """Also run BBQ-lite (BIG-bench bbq_lite_json): accuracy and bias score per category."""
    bbq_limit: int = 50
    """BBQ items per category and context condition."""
    bbq_categories: list[str] = field(default_factory=list)
    """BBQ categories (age, disability_status, gender_identity, nationality, ...); empty: all 9."""
    generation: list[str] = field(default_factory=list)
    """What the model writes about each group (tunelab bias --generation): prompt axes
    (gender, race, religion, profession, age, sexual_orientation) or [all]. Empty: none."""
    generation_samples: int = 3
    """Completions per prompt: 1 greedy + the rest sampled (seeded)."""
    generation_max_new_tokens: int = 24
    """Longest completion per prompt, in tokens."""
    generation_prompts: str | None = None
    """A prompt file of your own (YAML shaped like tunelab's group_prompts.yaml)."""


@dataclass
class RunConfig:
    name: str = "run"
    """The run's name: its directory under output_dir."""
    output_dir: str = "runs"
    """The run directory is OUTPUT_DIR/NAME."""
    model: ModelConfig = field(default_factory=ModelConfig)
    """The base model."""
    data: DataConfig = field(default_factory=DataConfig)
    """The training data; with `tasks` (or a built-in mixture) it is unused, except that a
    built-in mixture takes its template, sizes and max_length from it."""
    method: dict[str, Any] = field(  # Any: YAML values, until parse_options types them
        default_factory=lambda: {"name": "lora"})
    """`name` picks the method (full, lora, ...); other keys are that method's options."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """The optimisation."""
    eval: EvalConfig = field(default_factory=EvalConfig)
    """The evaluation on the test split after training."""
    tasks: list[TrainTaskConfig] = field(default_factory=list)
    """Multi-task training: several tasks, each with its own data, template and options."""
    mixture: MixtureConfig = field(default_factory=MixtureConfig)
    """How the tasks of a multi-task run are sampled and ordered."""
    retention: RetentionConfig = field(default_factory=RetentionConfig)
    """Forgetting: tasks never trained on, scored before and after training."""
    robustness: RobustnessConfig = field(default_factory=RobustnessConfig)
    """Noisy input: the test items perturbed, scored before and after training."""
    bias: BiasConfig = field(default_factory=BiasConfig)
    """Counterfactual bias, BBQ-lite and what the model writes about each group."""

    @property
    def is_mixture(self) -> bool:
        return bool(self.tasks) or self.mixture.builtin.name is not None

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir) / self.name

"""A run directory as an object: every path of a run, its start/resume rules, and loading the
trained model back.

    RUN/config.yaml          the resolved config (rebuilds the run)
    RUN/train_log.jsonl      loss, lr, tokens/s, peak memory; validation loss
    RUN/checkpoints/last     resumable state (atomic); checkpoints/best: best trainable weights
    RUN/adapter | RUN/model  the trained weights (PEFT format, or a full HF model directory)
    RUN/tokenizer/           the tokenizer the run trained with
    RUN/summary.json         trainable parameters, size on disk, time, best validation loss
    RUN/data_check.json      duplicates and leakage found before training (tunelab data check)
    RUN/eval/<system>/       metrics.json + predictions.jsonl per evaluated system
    RUN/eval/retention/<task>/, RUN/retention.json   the forgetting check after training
    RUN/robustness/          robustness.json + .md + plots; RUN/bias.json + bias.md
    RUN/stages/              a model.init_from run: stages.json + .md (the stage x task matrix)
                             and the evaluations behind it, per system and task
    RUN/report.md, RUN/report.html, RUN/ratings.sqlite, RUN/tensorboard/, RUN/mlruns/

No other module joins these names: it asks a `RunDir` (or the `EvalDir`, `StudyFiles` and
`SweepDir` it hands out) for the path.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from tunelab.config import RunConfig, from_dict, load_yaml, to_dict
from tunelab.core.deferred import deferred, torch
from tunelab.core.errors import TunelabError, first_line
from tunelab.methods import get_method
from tunelab.methods.base import Method
from tunelab.models import LoadedModel
from tunelab.models.kinds import ModelKind
from tunelab.models.known_weights import scoring
from tunelab.models.loader import BaseRecipe
from tunelab.models.pretrained import model_files
from tunelab.runs.start import Start, start_for
from tunelab.runs.system import System, slug

if TYPE_CHECKING:
    import safetensors
    from transformers import PreTrainedTokenizerBase
else:  # read only when a load fails
    safetensors = deferred("safetensors")


@dataclass(frozen=True)
class EvalDir:
    """One evaluation of one system: metrics.json (aggregates, CIs, signatures) and
    predictions.jsonl (one row per item)."""

    root: Path

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.json"

    @property
    def predictions(self) -> Path:
        return self.root / "predictions.jsonl"

    def exists(self) -> bool:
        return self.metrics.is_file() and self.predictions.is_file()

    def task(self, name: str) -> EvalDir:
        """A mixture's per-task evaluation below this one."""
        return EvalDir(self.root / name)

    def evaluations(self) -> list[EvalDir]:
        """This evaluation, else the evaluations one level below (a mixture's tasks)."""
        if self.metrics.is_file():
            return [self]
        if not self.root.is_dir():
            return []
        return [EvalDir(p) for p in sorted(self.root.iterdir()) if EvalDir(p).metrics.is_file()]


@dataclass(frozen=True)
class StudyFiles:
    """A study's written result: NAME.json (the numbers), NAME.md (the tables), plots beside."""

    folder: Path
    name: str

    @property
    def json(self) -> Path:
        return self.folder / f"{self.name}.json"

    @property
    def markdown(self) -> Path:
        return self.folder / f"{self.name}.md"

    def plot(self, name: str) -> Path:
        return self.folder / f"{name}.png"

    def system_eval(self, system: System) -> EvalDir:
        """A system's one evaluation in a study that scores each system once (baselines)."""
        return EvalDir(self.system_dir(system))

    def system_dir(self, system: System) -> Path:
        """One system's part of a study: its evaluations under each variant."""
        return self.folder / system.slug

    def evaluation(self, system: System, *variant: str) -> EvalDir:
        """A system's evaluation on the clean items, or under one variant (a perturbation's
        label; a probe and its group)."""
        parts = [slug(part.replace("@", "-")) for part in variant or ("clean",)]
        return EvalDir(self.system_dir(system).joinpath(*parts))

    def consistency(self, system: System) -> Path:
        """Per item: whether the system's prediction changed under some variant."""
        return self.system_dir(system) / "consistency.jsonl"

    def write(self, data: object, markdown: str) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.json.write_text(json.dumps(data, indent=1, default=str), encoding="utf-8")
        self.markdown.write_text(separate_tables(markdown), encoding="utf-8")


def separate_tables(markdown: str) -> str:
    """A blank line between each pipe table and a text line right above or below it: Markdown
    renders a table only as a block of its own (a table's caption line would else swallow it)."""
    lines = markdown.split("\n")
    out: list[str] = []
    for i, line in enumerate(lines):
        in_table = line.startswith("|")
        if i and line.strip() and out[-1].strip() and in_table != lines[i - 1].startswith("|"):
            out.append("")
        out.append(line)
    return "\n".join(out)


@dataclass(frozen=True)
class SweepDir:
    """`tunelab sweep`: one run directory per method below, the table and the plot."""

    root: Path

    @property
    def results(self) -> Path:
        return self.root / "sweep.json"

    @property
    def table(self) -> Path:
        return self.root / "sweep.md"

    @property
    def plot(self) -> Path:
        return self.root / "score_vs_params.png"

    @property
    def report_html(self) -> Path:
        return self.root / "report.html"

    def method_config(self, method: str) -> Path:
        """The config one method's run trained with."""
        return self.root / f"{method}.yaml"

    def method_log(self, method: str) -> Path:
        """The output of one method's training process."""
        return self.root / f"{method}.log"

    def is_sweep(self) -> bool:
        return self.results.is_file()

    def failed(self) -> list[str]:
        """The methods whose training failed (sweep.json)."""
        rows = json.loads(self.results.read_text(encoding="utf-8"))["rows"]
        return [row["method"] for row in rows if not row["ok"]]


def ratings_file(folder: Path) -> Path:
    """The rating store of a rated directory (a run or any folder of evaluations)."""
    return Path(folder) / "ratings.sqlite"


def report_html(folder: Path) -> Path:
    """report.html of a run, a sweep or a directory of evaluations."""
    return Path(folder) / "report.html"


@dataclass(frozen=True)
class RunDir:
    """Everything one run made, by name; `RunDir(path)` touches nothing until asked."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    # --- the files of a run ---------------------------------------------------------------
    @property
    def config_file(self) -> Path:
        return self.root / "config.yaml"

    @property
    def train_log(self) -> Path:
        return self.root / "train_log.jsonl"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def last_checkpoint(self) -> Path:
        return self.checkpoints / "last"

    @property
    def best_checkpoint(self) -> Path:
        return self.checkpoints / "best"

    @property
    def tokenizer(self) -> Path:
        return self.root / "tokenizer"

    @property
    def summary(self) -> Path:
        return self.root / "summary.json"

    @property
    def comparison(self) -> Path:
        """The quickstart's base vs fine-tuned comparison (key, systems, gain, p-value)."""
        return self.root / "comparison.json"

    @property
    def data_check(self) -> Path:
        """Duplicates and leakage found before training (`tunelab data check`'s figures)."""
        return self.root / "data_check.json"

    @property
    def report_md(self) -> Path:
        return self.root / "report.md"

    @property
    def report_html(self) -> Path:
        return report_html(self.root)

    @property
    def ratings(self) -> Path:
        return ratings_file(self.root)

    @property
    def tensorboard(self) -> Path:
        return self.root / "tensorboard"

    @property
    def mlruns(self) -> Path:
        return self.root / "mlruns"

    @property
    def retention(self) -> StudyFiles:
        return StudyFiles(self.root, "retention")

    @property
    def robustness(self) -> StudyFiles:
        return StudyFiles(self.root / "robustness", "robustness")

    @property
    def bias(self) -> StudyFiles:
        return StudyFiles(self.root, "bias")

    @property
    def stages(self) -> StudyFiles:
        """A model.init_from run's stage x task matrix and the evaluations behind it."""
        return StudyFiles(self.root / "stages", "stages")

    def weights(self, method: Method) -> Path:
        """The trained weights: adapter/ (PEFT format) or model/ (a full HF model)."""
        return self.root / method.weights_dir

    @property
    def eval_root(self) -> Path:
        return self.root / "eval"

    def eval_dir(self, system: System) -> EvalDir:
        return EvalDir(self.eval_root / system.slug)

    def retention_eval(self, task: str) -> EvalDir:
        return EvalDir(self.eval_root / "retention" / task)

    @classmethod
    def holding(cls, folder: Path, depth: int = 4) -> RunDir | None:
        """The run directory `folder` is (or lies in, at most `depth` levels up), if any."""
        for parent in [Path(folder), *Path(folder).parents][:depth]:
            if cls(parent).is_run():
                return cls(parent)
        return None

    # --- what a run is ---------------------------------------------------------------------
    def is_run(self) -> bool:
        return self.config_file.is_file()

    def read_config(self) -> RunConfig:
        if not self.config_file.is_file():
            raise TunelabError(f"{self.root}: not a tunelab run directory (no config.yaml)")
        return from_dict(RunConfig, load_yaml(self.config_file), str(self.config_file),
                         self.config_file)

    def write_config(self, config: RunConfig) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.config_file.write_text(yaml.safe_dump(to_dict(config), sort_keys=False))

    def has_checkpoint(self) -> bool:
        last = self.last_checkpoint
        return (last / "loop_state.json").is_file() or (
            last.with_name(".last.old") / "loop_state.json").is_file()

    def finished(self) -> bool:
        return self.summary.is_file()

    # --- start and resume ------------------------------------------------------------------
    def check_start(self, config: RunConfig, resume: bool) -> None:
        """A new run never overwrites one; a resumed run must have the same config and
        something to resume (a finished run without checkpoints is refused, not redone). A run
        that stopped before its first checkpoint is resumed from step 0."""
        root = self.root
        if resume:
            if not self.config_file.is_file():
                raise TunelabError(f"--resume: no run in {root} (no config.yaml); start it "
                                   "without --resume")
            if self.read_config() != config:
                raise TunelabError(f"--resume: {self.config_file} differs from this config; "
                                   "resume with the same config and overrides")
            if self.finished() and not self.has_checkpoint():
                raise TunelabError(f"--resume: {root} holds a finished run ({self.summary}) "
                                   "and no checkpoint to resume from; nothing was changed "
                                   "(start a new run with another name=... to train again)")
        elif self.config_file.exists():
            if self.has_checkpoint() or self.finished():
                raise TunelabError(f"{root} already holds a run; pass --resume to continue "
                                   "it, or choose another name (name=...) or output_dir")
            raise TunelabError(f"{root} holds a run that stopped before its first "
                               "checkpoint; pass --resume to start it again in place (or "
                               "delete the directory)")

    def check_writable(self) -> None:
        """The run directory can be made and written, before any work (a failed start removes
        what this made)."""
        probe = self.root / f".tunelab-write-test-{os.getpid()}"
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            probe.write_text("")
            probe.unlink()
        except OSError as err:
            raise TunelabError(f"output_dir {self.root.parent}: cannot write the run directory "
                               f"there ({err.strerror or err}); choose another "
                               "output_dir") from None

    def started_files(self) -> tuple[Path, ...]:
        """What a run writes before its first checkpoint: removed again when that start fails."""
        return (self.config_file, self.train_log, self.checkpoints, self.tensorboard,
                self.mlruns)

    def undo_failed_start(self, existed: bool) -> None:
        """A start that failed before any checkpoint leaves nothing that blocks the same
        command: the run directory goes if this start made it, else only the files a run
        writes."""
        if self.has_checkpoint():
            return
        if not existed:
            shutil.rmtree(self.root, ignore_errors=True)
            return
        for path in self.started_files():
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            elif path.exists():
                path.unlink()

    # --- the trained model -----------------------------------------------------------------
    def start(self, config: RunConfig | None = None) -> Start:
        """Where this run's training starts (`runs/start.py`): the base model, or the run its
        model.init_from names, continued or merged; checked before any model loads."""
        config = config or self.read_config()
        earlier = config.model.init_from
        return start_for(config, RunDir(Path(earlier)) if earlier else None, self.root)

    def load_model(self, base: str | None = None) -> LoadedModel:
        """The base model with this run's trained weights applied, rebuilt as the run's
        model.kind (a classifier gets its head over the run's eval.labels back).

        Args:
            base: override the base model spec (defaults to the one the run trained).
        """
        config = self.read_config()
        return self._trained(config, get_method(config.method["name"]), base)

    def scoring_model(self, base: str | None = None) -> LoadedModel:
        """The run's model as every evaluation of it scores it: `load_model`, merged into the
        base weights where the method can merge (`scoring_form`)."""
        config = self.read_config()
        method = get_method(config.method["name"])
        lm = self._trained(config, method, base)
        lm.model = scoring_form(method, lm.model)
        lm.recipe = RunRecipe(str(self.root), base, scoring=True)
        return lm

    def sources(self, base: str | None = None) -> list[Path] | None:
        """Every file whose bytes decide `load_model(base)`'s weights (models/known_weights.py):
        the run's config and trained weights, each earlier run's it starts from, and the base
        model's folder; None where the base is not a local folder or the weights are missing
        (loading then says so)."""
        config = self.read_config()
        if base:
            config.model.name = base
        base_files = model_files(config.model.name)
        earlier = self.start(config).earlier
        earlier_files = RunDir(earlier.root).sources() if earlier is not None else []
        if base_files is None or earlier_files is None:
            return None
        weights = self.weights(get_method(config.method["name"]))
        if not weights.exists():
            return None  # loading says what is missing
        own = sorted(p for p in weights.rglob("*") if p.is_file()) if weights.is_dir() \
            else [weights]
        return [self.config_file, *own, *earlier_files, *base_files]

    def _trained(self, config: RunConfig, method: Method, base: str | None) -> LoadedModel:
        """`load_model` from the run's config as read once."""
        if base:
            config.model.name = base
        weights = self.weights(method)
        if not weights.exists():
            raise TunelabError(f"{self.root}: no trained weights in {weights}; did training "
                               "finish?")
        check_json_files(weights)  # before the base loads
        lm = self.start(config).base(config)  # the base, or the run model.init_from names
        try:
            lm.model = method.load(lm.model, weights)
        except (RuntimeError, ValueError, KeyError, OSError, TypeError,
                safetensors.SafetensorError) as err:
            first = first_line(err)
            raise TunelabError(f"{weights}: cannot be applied to {config.model.name} ({first}); "
                               "the run was trained on another base model (pass that one with "
                               "--model) or its files are damaged") from None
        lm.model.eval()
        lm.recipe = RunRecipe(str(self.root), base)
        return lm


def scoring_form(method: Method, model: torch.nn.Module) -> torch.nn.Module:
    """A trained model as it is scored: folded into plain base weights where the method
    merges (lora, ia3; full, freeze and bitfit already are plain), so generation and scoring
    pay no per-token adapter cost and score the weights `tunelab export --format hf` writes;
    the method's own model otherwise (bottleneck adapters, prompt, prefix). The run's own
    evaluation after training, `--adapter` in every command and `--nproc`'s workers all score
    this form, so they share the result cache. A merge changes `model` in place: call it once
    training is over."""
    merged = method.merge(model)
    return model if merged is None else merged.eval()


@dataclass(frozen=True)
class RunRecipe:
    """A run's trained model (`RunDir(root).load_model(base)`, or its `scoring_model`)
    again, in another process."""

    root: str
    base: str | None
    scoring: bool = False

    def __str__(self) -> str:
        return f"run {self.root}" + (f" on {self.base}" if self.base else "")

    def load(self) -> LoadedModel:
        run = RunDir(Path(self.root))
        return run.scoring_model(self.base) if self.scoring else run.load_model(self.base)

    def sources(self) -> list[Path] | None:
        return RunDir(Path(self.root)).sources(self.base)

    def model_kind(self) -> ModelKind:
        return self._base().model_kind()

    def without_weights(self) -> tuple[PreTrainedTokenizerBase, str, ModelKind]:
        return self._base().without_weights()

    def _base(self) -> BaseRecipe:
        """The base model the run's weights load onto (what its tokenizer and kind are)."""
        config = RunDir(Path(self.root)).read_config()
        if self.base:
            config.model.name = self.base
        return BaseRecipe(config.model, tuple(config.eval.labels or ()), None)


def check_json_files(weights: Path) -> None:
    """One line naming the JSON file of a weights folder that does not parse (a damaged
    adapter_config.json), before anything loads."""
    for path in sorted(weights.glob("*.json")) if weights.is_dir() else []:
        try:
            json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise TunelabError(f"{path}: a damaged file in the trained weights ({err}); train "
                               "the run again") from None


def read_config(run_dir: str | Path) -> RunConfig:
    return RunDir(Path(run_dir)).read_config()


def write_config(config: RunConfig, run_dir: str | Path) -> None:
    RunDir(Path(run_dir)).write_config(config)


def load_run_model(run_dir: str | Path, base: str | None = None) -> LoadedModel:
    """The base model of a run with its trained weights applied (`RunDir.load_model`)."""
    return RunDir(Path(run_dir)).load_model(base)


def scoring_run_model(run_dir: str | Path, base: str | None = None) -> LoadedModel:
    """A run's model as evaluations score it (`RunDir.scoring_model`: merged where the
    method merges); deferred where the result cache knows its weights
    (models/known_weights.py: a rerun whose items are all cached loads none)."""
    return scoring(RunRecipe(str(RunDir(Path(run_dir)).root), base, scoring=True))

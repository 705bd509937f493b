"""The formats a fine-tune is exported to, as objects: each checks the run can take it, writes
its artefact from the merged model, says its size, and scores the artefact on the run's test
items with the engine that will serve it (`score`), so deploy/verify.py compares like with like.

- `HfFormat`: the merged model as a plain transformers folder (what `tunelab merge` wrote),
  with the run's generation settings as its generation_config.json; scored by tunelab's own
  evaluation on the folder reloaded from disk, for every model kind and output type.
- `GgufFormat(quant)`: one GGUF file (deploy/gguf_file.py) plus an Ollama Modelfile; scored by
  llama.cpp generating from the same prompt texts the fine-tune was scored on (a causal
  model's `generate` task).
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from tunelab.config import RunConfig, TaskConfig
from tunelab.core.deferred import deferred, transformers
from tunelab.core.errors import TunelabError
from tunelab.deploy.gguf_file import Quant, get_quant, write_gguf
from tunelab.deploy.modelfile import write_modelfile
from tunelab.eval.metrics import MetricInput, metric_class
from tunelab.eval.output_types import Outputs, get_output_type
from tunelab.eval.runner import EvalResult, evaluate_loaded, score_harm, score_outputs
from tunelab.models import load_model
from tunelab.models.kinds import CAUSAL, get_kind
from tunelab.runs import System

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from tunelab.deploy import engines
    from tunelab.deploy.engines import Engine
else:  # it uses torch as it is imported
    engines = deferred("tunelab.deploy.engines")

FORMAT_NAMES = ("hf", "gguf")


def folder_size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


@dataclass(frozen=True)
class Artefact:
    """What a format wrote: a folder or a file, and what the writer could not do as asked."""

    path: Path
    note: str = ""
    """e.g. llama.cpp's quantiser kept some tensors in a fallback type ("" when none)."""


class ExportFormat(ABC):
    """One way to write the merged fine-tune, and to check the written artefact."""

    name: ClassVar[str]

    @property
    @abstractmethod
    def label(self) -> str:
        """How tables name it: 'hf', 'gguf q8_0'."""

    @property
    def system(self) -> System:
        return System.exported(self.label)

    def check(self, config: RunConfig, task: TaskConfig) -> None:  # noqa: B027  (most formats take any run)
        """A one-line error when the run cannot be exported (or checked) in this format;
        nothing is loaded or written yet."""

    @abstractmethod
    def write(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, out_dir: Path,
              config: RunConfig, prompts: Sequence[str]) -> Artefact:
        """Write the artefact under out_dir."""

    def write_companions(self, artefact: Path, tokenizer: PreTrainedTokenizerBase,  # noqa: B027
                         config: RunConfig, summary: str) -> None:
        """Files written beside a checked artefact for the engines that load it (`summary`:
        its check in one line); most formats have none."""

    @abstractmethod
    def engine(self, artefact: Path, config: RunConfig) -> Engine:
        """The artefact loaded by the engine that serves it."""

    def scored_task(self, task: TaskConfig) -> TaskConfig:
        """The task as this format's check scores it (every metric by default)."""
        return task

    @abstractmethod
    def score(self, engine: Engine, task: TaskConfig, tuned: EvalResult) -> EvalResult:
        """The artefact's evaluation on the items `tuned` (the fine-tune's) scored."""


@dataclass(frozen=True)
class HfFormat(ExportFormat):
    name: ClassVar[str] = "hf"

    @property
    def label(self) -> str:
        return "hf"

    def write(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, out_dir: Path,
              config: RunConfig, prompts: Sequence[str]) -> Artefact:
        gen = config.eval.generation
        if get_kind(config.model.kind).has_lm_head:  # what a server decodes with (no head: none)
            model.generation_config = transformers.GenerationConfig.from_dict({
                **model.generation_config.to_dict(), "max_new_tokens": gen.max_new_tokens,
                "do_sample": gen.do_sample,
                "temperature": gen.temperature if gen.do_sample else None,
                "top_p": gen.top_p if gen.do_sample else None, "top_k": None,
                "stop_strings": list(gen.stop) or None, "pad_token_id": tokenizer.pad_token_id})
        model.save_pretrained(str(out_dir))
        tokenizer.save_pretrained(str(out_dir))
        return Artefact(out_dir)

    def engine(self, artefact: Path, config: RunConfig) -> Engine:
        model = replace(config.model, name=str(artefact), num_layers=None)
        return engines.TransformersEngine(load_model(model, labels=config.eval.labels))

    def score(self, engine: Engine, task: TaskConfig, tuned: EvalResult) -> EvalResult:
        assert isinstance(engine, engines.TransformersEngine)
        return evaluate_loaded(engine.lm, task, self.system, shots=tuned.shots,
                               limit=tuned.n, cached=False)  # the artefact itself answers


@dataclass(frozen=True)
class GgufFormat(ExportFormat):
    quant: Quant
    name: ClassVar[str] = "gguf"

    @property
    def label(self) -> str:
        return self.quant.label

    def check(self, config: RunConfig, task: TaskConfig) -> None:
        if get_kind(config.model.kind) is not CAUSAL or not get_output_type(task.output_type).free_text:
            raise TunelabError(f"--format gguf: llama.cpp serves text generation; this run is a "
                               f"{config.model.kind} model scored as {task.output_type}; export "
                               "--format hf (transformers serves it)")

    def file(self, out_dir: Path, config: RunConfig) -> Path:
        return out_dir / f"{config.name}-{self.quant.name}.gguf"

    def write(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, out_dir: Path,
              config: RunConfig, prompts: Sequence[str]) -> Artefact:
        out_dir.mkdir(parents=True, exist_ok=True)
        path, note = write_gguf(model, tokenizer, self.file(out_dir, config), self.quant,
                                config.name, prompts)
        return Artefact(path, note)

    def write_companions(self, artefact: Path, tokenizer: PreTrainedTokenizerBase,
                         config: RunConfig, summary: str) -> None:
        """The Ollama Modelfile beside the GGUF file."""
        write_modelfile(artefact, tokenizer, config.eval.generation, summary)

    def engine(self, artefact: Path, config: RunConfig) -> Engine:
        return engines.LlamaCppEngine(artefact)  # the model's own context length

    def scored_task(self, task: TaskConfig) -> TaskConfig:
        """Only the metrics over generated text: llama.cpp is asked for text, not for the
        likelihood of the gold answer (perplexity is left out of the check)."""
        metrics = [m for m in task.eval.metrics if metric_class(m).reads is MetricInput.TEXT]
        if not metrics:
            raise TunelabError(f"--format gguf: the run's metrics ({', '.join(task.eval.metrics)}) "
                               "score no generated text; add a text metric (eval.metrics) or "
                               "export --format hf")
        return replace(task, eval=replace(task.eval, metrics=metrics))

    def score(self, engine: Engine, task: TaskConfig, tuned: EvalResult) -> EvalResult:
        task = self.scored_task(task)
        gen = task.eval.generation
        prompts = [str(row["prompt"]) for row in tuned.predictions]
        predictions = engine.generate(prompts, gen, desc=self.label)
        stale = ("items", "hit_max_new_tokens", "harm")  # the transformers model's
        rows = [{**{k: v for k, v in row.items() if k not in stale},
                 "prediction": prediction} for row, prediction in zip(
                     tuned.predictions, predictions, strict=True)]
        references = [row["reference"] for row in tuned.predictions]
        outputs = Outputs(rows, predictions, references)
        scores, cis, signatures, items = score_outputs(task, outputs, task.eval.bootstrap)
        return EvalResult(task=task.name, system=self.system, shots=tuned.shots, n=len(rows),
                          scores=scores, ci=cis, signatures=signatures,
                          mean_context_tokens=tuned.mean_context_tokens, predictions=rows,
                          items=items, output_type=task.output_type,
                          harm=score_harm(task, outputs))


def get_formats(name: str, quants: str | None) -> list[ExportFormat]:
    """The formats `--format NAME [--quant A,B]` asks for (gguf: f16 when no --quant)."""
    if name == "hf":
        if quants:
            raise TunelabError(f"--quant {quants}: only --format gguf is quantised; drop --quant "
                               "or use --format gguf")
        return [HfFormat()]
    if name == "gguf":
        return [GgufFormat(get_quant(q.strip())) for q in (quants or "f16").split(",") if q.strip()]
    raise TunelabError(f"--format {name}: choose one of {', '.join(FORMAT_NAMES)}")


def read_manifest(folder: Path) -> dict[str, object]:
    """An export folder's export.json (what `tunelab export` wrote)."""
    path = folder / "export.json"
    try:
        return dict(json.loads(path.read_text(encoding="utf-8")))
    except FileNotFoundError:
        raise TunelabError(f"{folder}: not a tunelab export (no export.json); give a run "
                           "directory or a folder that tunelab export wrote") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise TunelabError(f"{path}: unreadable ({err}); export the run again") from None


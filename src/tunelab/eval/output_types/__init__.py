"""Output types: how a task's records become predictions, one class per type.

    generate               prompts -> batched generation -> text metrics (and completion NLL)
    multiple_choice        context + each choice -> log-likelihoods -> acc, acc_norm (+ text
                           metrics on the chosen choice)
    loglikelihood_rolling  whole texts -> windowed NLL -> perplexity, bits per byte
    classification         texts -> a task head's label -> label metrics

A task's `output_type` (a name in its YAML) becomes the object only here, through
`get_output_type`; callers then ask the object (its metrics, shots, model, checks, `run`).
"""

from __future__ import annotations

from tunelab.config import ModelConfig, TaskConfig
from tunelab.core.errors import TunelabError
from tunelab.eval.output_types.base import (
    Fail,
    Framing,
    Outputs,
    OutputType,
    Prediction,
    Request,
    context_limit,
    input_text,
    warn_dropped,
)
from tunelab.eval.output_types.classification import ClassificationOutput
from tunelab.eval.output_types.generate import GenerateOutput
from tunelab.eval.output_types.multiple_choice import MultipleChoiceOutput
from tunelab.eval.output_types.rolling import RollingOutput
from tunelab.models import LoadedModel

__all__ = ["Fail", "Framing", "OutputType", "Outputs", "Prediction", "Request", "context_limit",
           "get_output_type", "input_text", "load_for_task", "output_type_names",
           "warn_dropped"]

_REGISTRY: dict[str, OutputType] = {
    t.name: t for t in (GenerateOutput(), MultipleChoiceOutput(), RollingOutput(),
                        ClassificationOutput())}


def output_type_names() -> list[str]:
    """The output type names, in the order errors list them."""
    return list(_REGISTRY)


def get_output_type(name: str) -> OutputType:
    """The output type registered as `name`.

    Raises:
        TunelabError: for an unknown name, listing the valid ones.
    """
    if name not in _REGISTRY:
        raise TunelabError(f"output_type: '{name}' is not an output type; use one of "
                           f"{', '.join(_REGISTRY)}")
    return _REGISTRY[name]


def load_for_task(task: TaskConfig, model: ModelConfig) -> LoadedModel:
    """The base model as the task's output type needs it (a fresh head for classification)."""
    return get_output_type(task.output_type).load_model(task, model)

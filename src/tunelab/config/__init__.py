"""Typed configuration: the single source of truth for every option.

A run is described by :class:`RunConfig`, read from YAML and overridden by ``key=value``
pairs (``train.lr=1e-4``). Every field's comment is its help text.

    choices.py   the Literal types of choice options and their check
    sections.py  the dataclasses (RunConfig, TaskConfig, ...)
    reading.py   YAML, overrides, from_dict
"""

from tunelab.config.choices import MODEL_KINDS, OUTPUT_TYPES, Schedule
from tunelab.config.reading import (
    Origin,
    from_dict,
    load_run_config,
    load_yaml,
    merge_overrides,
    option_name,
    parse_override,
    to_dict,
    yaml_line,
)
from tunelab.config.sections import (
    AugmentConfig,
    BiasConfig,
    BuiltinMixtureConfig,
    CurriculumStage,
    DataConfig,
    EvalConfig,
    FewShotConfig,
    GenerationConfig,
    MixtureConfig,
    ModelConfig,
    RetentionConfig,
    RobustnessConfig,
    RollingConfig,
    RunConfig,
    TaskConfig,
    TrainConfig,
    TrainTaskConfig,
)

__all__ = [
    "AugmentConfig",
    "BiasConfig",
    "BuiltinMixtureConfig",
    "CurriculumStage",
    "DataConfig",
    "EvalConfig",
    "FewShotConfig",
    "GenerationConfig",
    "MODEL_KINDS",
    "MixtureConfig",
    "ModelConfig",
    "OUTPUT_TYPES",
    "Origin",
    "RetentionConfig",
    "RobustnessConfig",
    "RollingConfig",
    "RunConfig",
    "Schedule",
    "TaskConfig",
    "TrainConfig",
    "TrainTaskConfig",
    "from_dict",
    "load_run_config",
    "load_yaml",
    "merge_overrides",
    "option_name",
    "parse_override",
    "to_dict",
    "yaml_line",
]

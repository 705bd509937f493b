"""BIG-bench JSON tasks, and the FLAN-style Natural Instructions mixture built from them.

BIG-bench ships 61 Natural Instructions subtasks as
``bigbench/benchmark_tasks/natural_instructions/subtaskNNN_<name>/task.json`` in the
``bigbench==1.0.0`` sdist on PyPI. Each holds ``description`` (the task definition:
Definition / Things to Avoid / Emphasis & Caution), ``task_prefix`` (the definition plus a
one-line prompt), and ``examples`` of ``{input, target: [references]}``. As in FLAN and
Natural Instructions, the definition is the instruction and the first reference the output.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tunelab.config import BuiltinMixtureConfig, DataConfig, EvalConfig, TrainTaskConfig
from tunelab.core.errors import TunelabError
from tunelab.core.paths import bigbench_dir
from tunelab.data.bigbench_format import Example, Reading, read_task

SUBTASK_GLOB = "subtask*/task.json"

# Training subtasks with short inputs (< 500 characters on average), across task types.
DEFAULT_TRAIN = (
    "003", "004", "006", "007", "009", "010", "012", "013", "015", "016",  # MC-TACO QG / AG
    "018", "019", "020", "021", "022",  # classification (MC-TACO, CosmosQA)
    "023", "024",  # CosmosQA question / answer generation
    "033", "034", "035", "036", "037", "038", "039", "040", "041",  # WinoGrande, QASC
    "043", "044", "045", "046", "047", "050", "051",  # essential terms, misc, MultiRC
)
# FLAN holds out a whole task type: here "incorrect answer generation", never trained.
DEFAULT_HELD_OUT = ("005", "008", "011", "014", "017", "025", "042")


TRAINING = Reading(
    not_a_task="not a BIG-bench JSON task (no 'examples' list); "
               "data.format=bigbench reads a BIG-bench task.json",
    origin="{path}[example {index}]",
    needs_input="an example needs 'input' and 'target' (or 'target_scores')",
    drop_duplicates=False,
)
"""Training data keeps every example (a repeat is trained again)."""


def bigbench_rows(path: Path
                  ) -> Iterator[tuple[str, dict[str, Any]]]:  # Any: a row's values (JSON)
    """Rows of a BIG-bench JSON task: instruction (the definition), input, output (the first
    target, or the best-scored choice), and the task's other fields for format strings."""
    task = read_task(path, TRAINING)
    shared = {"definition": task.fields.get("description", ""),
              "task_prefix": task.fields.get("task_prefix", ""),
              "task_name": task.fields.get("name", path.parent.name)}
    for example in task.examples():
        targets = _targets(example)
        yield example.origin, {**shared, "instruction": shared["definition"], "input": example.input,
                               "output": targets[0], "targets": targets}


def _targets(example: Example) -> list[str]:
    """The references a training row keeps: 'target' (texts only), else the best choice."""
    target = example.target
    if isinstance(target, str):
        return [target]
    if isinstance(target, list) and target and all(isinstance(t, str) for t in target):
        return list(target)
    if example.target_scores:
        return [example.best_choice()]
    raise TunelabError(f"{example.origin}: 'target' must be a string or a non-empty list of strings")


def natural_instructions_dir(root: str | Path | None = None) -> Path:
    """The directory holding subtaskNNN_*/task.json, found under an extracted BIG-bench tree
    (the sdist root, its bigbench/benchmark_tasks, or natural_instructions itself)."""
    base = Path(root).expanduser() if root else bigbench_dir()
    candidates = [base, base / "natural_instructions",
                  base / "benchmark_tasks" / "natural_instructions",
                  base / "bigbench" / "benchmark_tasks" / "natural_instructions",
                  *sorted(base.glob("bigbench-*/bigbench/benchmark_tasks/natural_instructions"))]
    for candidate in candidates:
        if any(candidate.glob(SUBTASK_GLOB)):
            return candidate
    raise TunelabError(
        f"{base}: no BIG-bench Natural Instructions subtasks (natural_instructions/subtaskNNN_*/"
        "task.json); download the sdist (pip download --no-deps bigbench==1.0.0), extract "
        "bigbench/benchmark_tasks/natural_instructions, and set mixture.builtin.root to it")


def resolve_subtask(directory: Path, name: str) -> Path:
    """A subtask's task.json by full name or number ('047', '47', 'subtask047')."""
    available = sorted(p.parent.name for p in directory.glob(SUBTASK_GLOB))
    key = name.strip()
    if key.isdigit():
        key = f"subtask{int(key):03d}"
    matches = [a for a in available if a == key or a.startswith(key + "_")]
    if len(matches) != 1:
        raise TunelabError(f"mixture.builtin: unknown subtask '{name}' in {directory}; "
                           f"subtasks are: {', '.join(available)}")
    return directory / matches[0] / "task.json"


def natural_instructions_tasks(builtin: BuiltinMixtureConfig, data: DataConfig,
                               eval_config: EvalConfig) -> list[TrainTaskConfig]:
    """The mixture's tasks: training subtasks, then held-out ones (evaluated, never trained).

    Each subtask takes its template, split sizes and max_length from `data`, and its
    generation settings from `eval_config`; its metric is `builtin.metrics`.
    """
    if builtin.instruction not in ("definition", "prefix"):
        raise TunelabError(f"mixture.builtin.instruction '{builtin.instruction}': "
                           "use definition or prefix")
    directory = natural_instructions_dir(builtin.root)
    available = {p.parent.name[len("subtask"):len("subtask") + 3] for p in directory.glob(SUBTASK_GLOB)}
    train = list(builtin.train) or [s for s in DEFAULT_TRAIN if s in available]
    held_out = list(builtin.held_out) or [s for s in DEFAULT_HELD_OUT if s in available]
    fields = {"instruction": "task_prefix"} if builtin.instruction == "prefix" else {}
    tasks = []
    for subtask, is_held_out in [(s, False) for s in train] + [(s, True) for s in held_out]:
        path = resolve_subtask(directory, subtask)
        task_data = dataclasses.replace(data, source=str(path), format="bigbench", fields=fields,
                                        train_file=None, validation_file=None, test_file=None)
        task_eval = dataclasses.replace(eval_config, metrics=list(builtin.metrics), labels=None,
                                        primary=None)
        tasks.append(TrainTaskConfig(name=path.parent.name, data=task_data, eval=task_eval,
                                     max_train_examples=builtin.max_train_examples,
                                     held_out=is_held_out))
    names = [t.name for t in tasks]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise TunelabError(f"mixture.builtin: {', '.join(repeated)} listed twice (a subtask is "
                           "either trained or held out)")
    return tasks

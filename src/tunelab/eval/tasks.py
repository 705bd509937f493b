"""Tasks: one YAML file each (built-in ones live in tunelab/tasks/), grouped into suites
(tunelab/tasks/suites/*.yaml: a name, a description and a list of tasks).

`check_task` catches what the dataclasses can't (an unknown output type, a metric that does not
fit the output type, ...) with one-line errors that name the file, line and option; the output
type checks its own options and the template kind its own needs. `load_task` reads and checks a
task file. `read_task` is the one reader of a task's data: it reads the source once and checks
the scored split, the shot pool and the first records, before any model loads; the runner
scores what it read (`TaskItems`). `validate_task` also renders the first prompt. The table of
built-in tasks (`tunelab tasks list`) is report/task_list.py.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tunelab.config import TaskConfig, from_dict, load_yaml, option_name, yaml_line
from tunelab.core.errors import TunelabError
from tunelab.data import Record, TaskData, source_scheme
from tunelab.data.templates import FORMAT, get_template_kind
from tunelab.data.training_tasks import run_task
from tunelab.eval.datasets import load_task_data
from tunelab.eval.metrics import metric_names
from tunelab.eval.output_types import (
    Framing,
    get_output_type,
)
from tunelab.runs import RunDir, read_config

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

BUILTIN_TASK_DIR = Path(__file__).resolve().parent.parent / "tasks"
SUITE_DIR = BUILTIN_TASK_DIR / "suites"


def builtin_tasks() -> list[str]:
    return sorted(p.stem for p in BUILTIN_TASK_DIR.glob("*.yaml"))


def builtin_suites() -> list[str]:
    return sorted(p.stem for p in SUITE_DIR.glob("*.yaml"))


@dataclass
class Suite:
    name: str
    description: str
    tasks: list[str]


def load_suite(name: str) -> Suite:
    path = SUITE_DIR / f"{name}.yaml"
    raw = load_yaml(path)
    tasks = raw.get("tasks")
    if not isinstance(tasks, list) or not tasks:
        raise TunelabError(f"{path}: a suite needs a non-empty 'tasks' list")
    return Suite(str(raw.get("name", name)), str(raw.get("description", "")), [str(t) for t in tasks])


def is_suite(name: str) -> bool:
    return not Path(name).suffix and (SUITE_DIR / f"{name}.yaml").is_file()


def task_path(name_or_path: str) -> Path:
    path = Path(name_or_path)
    if path.suffix:
        if not path.is_file():
            raise TunelabError(f"{path}: no such task file")
        return path
    path = BUILTIN_TASK_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        raise TunelabError(
            f"task '{name_or_path}': unknown; built-in tasks are {', '.join(builtin_tasks())}; "
            f"suites are {', '.join(builtin_suites())} (tunelab tasks list), or give a task YAML file"
        )
    return path


def load_task(name_or_path: str) -> TaskConfig:
    """A built-in task by name, or a task YAML file, checked (see `check_task`)."""
    path = task_path(name_or_path)
    raw = load_yaml(path)
    task: TaskConfig = from_dict(TaskConfig, raw, str(path), path)
    if "name" not in raw:
        task.name = path.stem
    task.origin = str(path)
    apply_source_defaults(task, raw.get("data") or {})
    check_task(task, path)
    return task


def apply_source_defaults(task: TaskConfig, raw_data: Mapping[str, object]) -> None:
    """Benchmark sources without a template in the file get `format` over the reader's prompt."""
    scheme = source_scheme(task.data.source)
    if scheme.reads_prompts and "template" not in raw_data:
        task.data.template = FORMAT.name
        task.data.prompt_format = task.data.prompt_format or "{prompt}"
        if "completion_format" not in raw_data:
            task.data.completion_format = scheme.completion_format(task.data.source)


def check_task(task: TaskConfig, path: Path | None = None) -> None:
    """Raise a one-line TunelabError for an option that can't work (no data is read)."""

    def fail(keys: list[str | int], message: str) -> None:
        where = f"task {task.name}"
        if path is not None:
            line = yaml_line(path, keys)
            where = f"{path}" + (f" line {line}" if line else "")
        raise TunelabError(f"{where}: {option_name(keys)}: {message}")

    output_type = get_output_type(task.output_type)
    allowed = output_type.metrics
    for i, name in enumerate(task.eval.metrics):
        if name not in metric_names():
            fail(["eval", "metrics", i], f"unknown metric '{name}'; valid: {', '.join(metric_names())}")
        if name not in allowed:
            fail(["eval", "metrics", i], f"'{name}' does not apply to output_type "
                                      f"{output_type.name}; use {', '.join(allowed)}")
    if not task.eval.metrics:
        fail(["eval", "metrics"], f"empty; e.g. {allowed[0]}")
    template = get_template_kind(task.data.template)
    if template.needs_prompt_format and not task.data.prompt_format:
        fail(["data", "prompt_format"], f"template {template.name} needs a prompt_format, "
                                        "e.g. 'Q: {input}\\nA:'")
    if task.fewshot_k() < 0:
        fail(["fewshot", "k"], "must be >= 0")
    if task.preamble and not template.takes_preamble:
        fail(["preamble"], f"{template.name} templates take no preamble; use data.system instead")
    if task.choices is not None and not isinstance(task.choices, (str, list)):
        fail(["choices"], "give a column name or a list of choices")
    output_type.check(task, fail)
    rolling = task.rolling
    if rolling.max_length is not None and rolling.max_length < 2:
        fail(["rolling", "max_length"], "must be at least 2 tokens")
    if rolling.stride is not None and (rolling.stride < 1 or (
            rolling.max_length is not None and rolling.stride > rolling.max_length)):
        fail(["rolling", "stride"], "must be between 1 and rolling.max_length")
    if task.eval.batch_size < 1 or task.eval.generation.batch_size < 1:
        fail(["eval", "batch_size"], "must be at least 1")


@dataclass
class TaskItems:
    """A task's data as `read_task` read and checked it: the scored split, the shot pool and
    the source's framing. Scoring takes it as it is (no second read)."""

    task: TaskConfig
    data: TaskData
    records: list[Record]
    """The scored split (never empty)."""
    shots: int
    """The in-context examples per prompt the shot pool was checked for."""

    def scored(self, limit: int | None = None) -> list[Record]:
        """The first `limit` items of the scored split (all of them without a limit)."""
        return self.records[:limit] if limit else self.records

    def pool(self, shots: int) -> list[Record]:
        """The split shots are drawn from (empty when no shots are wanted)."""
        return self.data.split(self.task.shot_split(), "fewshot.split") if shots else []

    @property
    def framing(self) -> Framing:
        """The preamble and shot separator: the task's own, else its data source's."""
        return Framing.of(self.task, self.data)


def read_task(task: TaskConfig, shots: int | None = None) -> TaskItems:
    """Read a task's data once and check it with no model: the scored split is not empty,
    the shot pool holds `shots` examples (default: the task's few-shot k; none for an output
    type that takes no shots), and the output type can resolve the first records' answers.
    The task's options are checked where it is made (`load_task`, `check_task`)."""
    output_type = get_output_type(task.output_type)
    if shots:
        output_type.check_shots(shots)  # before the data, and long before any model
    data = load_task_data(task)
    records = data.split(task.split)
    if not records:
        raise TunelabError(f"{task.where()}: the {task.split} split is empty; check the data "
                           "sizes")
    few = (task.fewshot_k() if shots is None else shots) if output_type.takes_shots else 0
    check_pool(task, data, few, f"fewshot.k {few}" if shots is None else f"{few} shots")
    for record in records[:50]:
        output_type.check_record(task, record)
    return TaskItems(task, data, records, few)


def check_pool(task: TaskConfig, data: TaskData, few: int, asked: str) -> None:
    """The shot split holds `few` examples (`asked`: how the error names the request)."""
    if not few:
        return
    pool = data.split(task.shot_split(), "fewshot.split")
    if len(pool) < few:
        raise TunelabError(f"{task.where()}: {asked} but the {task.shot_split()} split has "
                           f"{len(pool)} examples; ask for at most {len(pool)} shots, or give "
                           "that split more rows")


def validate_task(name_or_path: str, tokenizer: PreTrainedTokenizerBase | None = None) -> str:
    """Check a task file and its data; a short report of what it will evaluate."""
    task = load_task(name_or_path)
    output_type = get_output_type(task.output_type)
    items = read_task(task, 0)  # what `tunelab eval` scores by default
    k = task.fewshot_k() if output_type.takes_shots else 0
    sizes = ", ".join(f"{k} {len(v)}" for k, v in items.data.splits.items())
    lines = [f"{task.name}: ok ({task.output_type}; {sizes}; metrics {', '.join(task.eval.metrics)}; "
             f"few-shot k={k})"]
    try:  # the few-shot baseline's pool, from the data read above
        check_pool(task, items.data, k, f"fewshot.k {k}")
    except TunelabError as err:
        lines.append(f"note: the few-shot baseline (--baselines few) would stop: {err}")
    preview = output_type.preview(task, items.records[0], items.framing, tokenizer)
    if preview is not None:
        lines.append(preview)
    return "\n".join(lines)


def task_of(task: str | TaskConfig | None, adapters: Sequence[str | Path] = ()) -> TaskConfig:
    """A task by name, file or run directory (the task that run trained on: its data and eval
    section, scored on its test split); without one, the first adapter run's task. Checked
    once here (a task file as `load_task` reads it)."""
    if task and not isinstance(task, TaskConfig) and not RunDir(Path(task)).is_run():
        return load_task(task)
    if isinstance(task, TaskConfig):
        made = task
    elif task:  # a run directory: the task it trained on
        made = run_task(read_config(Path(task)))
    elif adapters:
        made = run_task(read_config(Path(adapters[0])))
    else:
        raise TunelabError("--task: name a task (tunelab tasks list) or give --adapter RUN to "
                           "use the task the run trained on")
    check_task(made)
    return made

"""Tasks: one YAML file each (built-in ones live in tunelab/tasks/)."""

from __future__ import annotations

from pathlib import Path

from tunelab.config import TaskConfig, from_dict, load_yaml
from tunelab.errors import TunelabError

BUILTIN_TASK_DIR = Path(__file__).resolve().parent.parent / "tasks"


def builtin_tasks() -> list[str]:
    return sorted(p.stem for p in BUILTIN_TASK_DIR.glob("*.yaml"))


def load_task(name_or_path: str) -> TaskConfig:
    """A built-in task by name, or a task YAML file."""
    path = Path(name_or_path)
    if not path.suffix:
        path = BUILTIN_TASK_DIR / f"{name_or_path}.yaml"
        if not path.is_file():
            raise TunelabError(
                f"task '{name_or_path}': unknown; built-in tasks are {', '.join(builtin_tasks())}, "
                "or give a task YAML file"
            )
    raw = load_yaml(path)
    task = from_dict(TaskConfig, raw, str(path))
    if "name" not in raw:
        task.name = path.stem
    return task

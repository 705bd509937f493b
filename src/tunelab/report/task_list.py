"""`tunelab tasks list`: the built-in tasks and suites as tables."""

from __future__ import annotations

from tunelab.data import source_scheme
from tunelab.eval.tables import format_table
from tunelab.eval.tasks import builtin_suites, builtin_tasks, load_suite, load_task


def tasks_overview() -> str:
    """The built-in tasks (output type, data, size of the scored split if known) and suites."""
    rows = []
    for name in builtin_tasks():
        task = load_task(name)
        source = task.data.source
        needs = source_scheme(source).missing(source) or ""
        rows.append([name, task.output_type, source, ", ".join(task.eval.metrics), needs])
    lines = ["Tasks (tunelab eval --task NAME; a task is one YAML file, see `tunelab tasks "
             "validate FILE`):", format_table(["task", "output type", "data", "metrics", "needs"], rows),
             "", "Suites (tunelab eval --task SUITE):"]
    suites = [load_suite(name) for name in builtin_suites()]
    lines.append(format_table(["suite", "tasks", "description"],
                              [[s.name, ", ".join(s.tasks), s.description] for s in suites]))
    return "\n".join(lines)

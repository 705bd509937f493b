"""Error analysis between two evaluations of the same items: which items an iteration fixed
and broke, what kinds of errors remain, on which slices, and the errors to add to the next
iteration's data (`tunelab compare A B`)."""

from tunelab.analysis.categories import CATEGORIES, ErrorCategory, ItemView, TaskContext
from tunelab.analysis.compare import (
    ComparisonReport,
    TaskPair,
    compare_results,
    compare_tasks,
    eval_dirs,
    export_errors,
    mcnemar_exact,
    read_consistency,
    results_of,
)

__all__ = [
    "CATEGORIES",
    "ComparisonReport",
    "ErrorCategory",
    "ItemView",
    "TaskContext",
    "TaskPair",
    "compare_results",
    "compare_tasks",
    "eval_dirs",
    "export_errors",
    "mcnemar_exact",
    "read_consistency",
    "results_of",
]

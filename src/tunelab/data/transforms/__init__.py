"""Probes: data transforms applied to a task's items before scoring (robustness perturbations).

The evaluation itself does not change: clean and perturbed copies of the same items are scored
alike and compared item by item.
"""

from tunelab.data.transforms.perturbations import (
    Perturbation,
    augment_records,
    check_severity,
    get_perturbation,
    parse_perturbations,
    perturb_record,
    perturb_text,
    perturbation_names,
    register,
    rng_for,
)

__all__ = [
    "Perturbation",
    "augment_records",
    "check_severity",
    "get_perturbation",
    "parse_perturbations",
    "perturb_record",
    "perturb_text",
    "perturbation_names",
    "register",
    "rng_for",
]

"""`tunelab data check`: duplicates, near duplicates, 13-gram overlap and conflicting labels
within and across the splits and every scored benchmark; quality; likely label errors."""

from tunelab.data.checks.check import CheckOptions, Crossing, DataCheck, check_sets
from tunelab.data.checks.items import (
    DATA,
    EVALUATED,
    HELD_OUT,
    SPLIT_ROLES,
    TEST,
    TRAIN,
    VALIDATION,
    CheckItem,
    CheckSet,
    Role,
    split_sets,
)

__all__ = ["DATA", "EVALUATED", "HELD_OUT", "SPLIT_ROLES", "TEST", "TRAIN", "VALIDATION", "CheckItem",
           "CheckOptions", "CheckSet", "Crossing", "DataCheck", "Role", "check_sets", "split_sets"]

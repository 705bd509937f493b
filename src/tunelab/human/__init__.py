"""Human evaluation: ratings stored safely (SQLite, one row per judgement) and their
statistics (agreement, paired differences, pairwise strengths, agreement with metrics)."""

from tunelab.eval.compare import PairedValues as PairedRatings
from tunelab.eval.compare import paired_values as paired_ratings
from tunelab.human.agreement import (
    bradley_terry,
    krippendorff_alpha,
    mean_ci,
    rank_correlations,
    weighted_kappa,
)
from tunelab.human.store import Preference, RatingStore, Score

__all__ = [
    "PairedRatings",
    "Preference",
    "RatingStore",
    "Score",
    "bradley_terry",
    "krippendorff_alpha",
    "mean_ci",
    "paired_ratings",
    "rank_correlations",
    "weighted_kappa",
]

"""`--objective`: what a trial of `tunelab tune` is scored by on the validation split, one
object each (`OBJECTIVES`): the direction Optuna optimises, which validation score the curve
follows, and the test score the chosen trial's validation score is compared with."""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar, Literal

from tunelab.config import RunConfig
from tunelab.core.errors import TunelabError
from tunelab.eval.metrics import metric_class

Direction = Literal["minimize", "maximize"]

TEST_LOSS = "nll_per_token"
"""The test score comparable with the validation loss (the perplexity metric's)."""


class Objective:
    name: ClassVar[str]

    def direction(self, base: RunConfig) -> Direction:
        """Optuna's direction; a config this objective cannot score is refused here."""
        raise NotImplementedError

    def curve_metric(self, config: RunConfig) -> str | None:
        """The validation score key the trial's curve follows (None: the validation loss;
        '': the first metric's first score)."""
        raise NotImplementedError

    def validation_of(self, key: str) -> str:
        """What the chosen trial's validation value is ('loss', or the score key)."""
        raise NotImplementedError

    def test_value(self, scores: Mapping[str, float], key: str) -> float | None:
        """The test score comparable with the validation value (None: not scored)."""
        raise NotImplementedError


class ValidationLoss(Objective):
    """The best validation loss (minimised); on test, the completion tokens' mean NLL when
    the task's metrics include perplexity."""

    name = "loss"

    def direction(self, base: RunConfig) -> Direction:
        return "minimize"

    def curve_metric(self, config: RunConfig) -> str | None:
        return None

    def validation_of(self, key: str) -> str:
        return "loss"

    def test_value(self, scores: Mapping[str, float], key: str) -> float | None:
        return scores.get(TEST_LOSS)


class ValidationMetric(Objective):
    """The task's primary metric on the validation split (its direction from the metric)."""

    name = "metric"

    def direction(self, base: RunConfig) -> Direction:
        if base.is_mixture:
            raise TunelabError("--objective metric: a multi-task run has no single metric; "
                               "use --objective loss (the weighted validation loss of its "
                               "tasks)")
        if not base.eval.metrics:
            raise TunelabError("--objective metric: eval.metrics is empty; name the task's "
                               "metrics or use --objective loss")
        key = base.eval.primary or base.eval.metrics[0]
        lower = any(key in metric_class(name).lower_is_better for name in base.eval.metrics)
        return "minimize" if lower else "maximize"

    def curve_metric(self, config: RunConfig) -> str | None:
        return config.eval.primary or ""

    def validation_of(self, key: str) -> str:
        return key

    def test_value(self, scores: Mapping[str, float], key: str) -> float | None:
        return scores[key]


OBJECTIVES: dict[str, Objective] = {o.name: o for o in (ValidationLoss(), ValidationMetric())}
"""--objective -> the objective."""


def get_objective(name: str) -> Objective:
    if name not in OBJECTIVES:
        raise TunelabError(f"--objective {name}: use {', '.join(OBJECTIVES)}")
    return OBJECTIVES[name]

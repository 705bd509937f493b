"""Every output type on the real built-in model (cut to 2 layers) with built-in tasks and a
BIG-bench file; tiny limits. Set TUNELAB_TEST_CACHE to reuse a converted model."""

from __future__ import annotations

import math
import warnings

import pytest
import yaml
from conftest import needs_builtin_model
from eval_helpers import EVAL_DATA

from tunelab.config import ModelConfig
from tunelab.eval.output_types import load_for_task
from tunelab.eval.runner import evaluate_loaded
from tunelab.eval.tasks import load_task
from tunelab.models import load_model
from tunelab.runs import System

pytestmark = [pytest.mark.integration, needs_builtin_model]
CUT = ModelConfig(name="smollm2-135m", num_layers=2)


@pytest.fixture(scope="module")
def lm():
    return load_model(CUT)


def test_multiple_choice_generate_and_rolling_on_builtin_tasks(lm) -> None:
    mc = evaluate_loaded(lm, load_task("movie_sentiment_mc"), System.base(2), shots=2, limit=4)
    assert 0 <= mc.scores["acc"] <= 100 and mc.mean_shot_tokens > 0
    gen = evaluate_loaded(lm, load_task("movie_sentiment"), System.base(1), shots=1, limit=3)
    assert "accuracy" in gen.scores and gen.n == 3
    lm_task = evaluate_loaded(lm, load_task("movie_reviews_lm"), System.base(), limit=3)
    assert 0 < lm_task.scores["bits_per_byte"] < 20 and math.isfinite(lm_task.scores["perplexity"])


def test_classification_head_on_the_builtin_model() -> None:
    task = load_task("movie_sentiment_head")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        head = load_for_task(task, CUT)
    result = evaluate_loaded(head, task, System.base(), limit=4)
    assert result.n == 4 and "accuracy" in result.scores


def test_bigbench_task_file_on_the_builtin_model(lm, tmp_path) -> None:
    path = tmp_path / "gk.yaml"
    path.write_text(yaml.safe_dump({
        "output_type": "multiple_choice",
        "data": {"source": f"bigbench-file:{EVAL_DATA / 'bigbench' / 'general_knowledge_task.json'}",
                 "test_size": 4, "validation_size": 0},
        "eval": {"metrics": ["multiple_choice"], "bootstrap": 100}}))
    result = evaluate_loaded(lm, load_task(str(path)), System.base(1), shots=1)
    assert result.n == 4 and "acc_norm" in result.scores

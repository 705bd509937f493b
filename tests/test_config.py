"""Typed config: choice options are Literal types, refused in one line wherever they are set."""

from __future__ import annotations

from pathlib import Path

import pytest

from tunelab.config import (
    BuiltinMixtureConfig,
    MixtureConfig,
    ModelConfig,
    TrainConfig,
    load_run_config,
)
from tunelab.core.errors import TunelabError
from tunelab.data.mixture import check_tasks
from tunelab.methods import METHODS

RUN_YAML = """\
name: demo
model:
  name: smollm2-135m
train:
  lr: 1e-4
  schedule: {schedule}
mixture:
  sampling: {sampling}
"""


def test_a_bad_choice_in_a_file_names_the_file_line_and_values(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text(RUN_YAML.format(schedule="cosine", sampling="uniform"))
    config = load_run_config(path)
    assert (config.train.schedule, config.mixture.sampling) == ("cosine", "uniform")
    path.write_text(RUN_YAML.format(schedule="step", sampling="uniform"))
    with pytest.raises(TunelabError) as info:
        load_run_config(path)
    assert str(info.value) == (f"{path} line 6: train.schedule 'step': use one of cosine, "
                               "linear, constant")
    path.write_text(RUN_YAML.format(schedule="linear", sampling="mixed"))
    with pytest.raises(TunelabError, match=r"line 8: mixture.sampling 'mixed': use one of "
                                           "proportional, temperature, uniform, weights$"):
        load_run_config(path)
    with pytest.raises(TunelabError, match=r"^command line: model.kind 'encoder': use one of causal, "
                                           "seq2seq, classifier$"):
        load_run_config(None, ["model.kind=encoder"])


def test_sections_made_in_code_check_their_choices_and_ranges() -> None:
    with pytest.raises(TunelabError, match="^model.dtype 'fp8': use one of float32, bfloat16, float16$"):
        ModelConfig(dtype="fp8")  # type: ignore[arg-type]
    with pytest.raises(TunelabError, match="^train.schedule 'step'"):
        TrainConfig(schedule="step")  # type: ignore[arg-type]
    with pytest.raises(TunelabError, match=r"^mixture.sampling 'null': use one of"):
        MixtureConfig(sampling=None)  # type: ignore[arg-type]
    assert MixtureConfig(builtin=BuiltinMixtureConfig(name=None)).builtin.name is None  # optional
    # Ranges that matter only to a mixture are checked with its tasks, not on every config.
    names, held_out, weights = ["a", "b"], [False, False], [None, None]
    with pytest.raises(TunelabError, match=r"^mixture.cap=0: must be >= 1"):
        check_tasks(names, held_out, weights, MixtureConfig(cap=0))
    with pytest.raises(TunelabError, match=r"^mixture.temperature=0: must be > 0"):
        check_tasks(names, held_out, weights, MixtureConfig(sampling="temperature", temperature=0))
    check_tasks(names, held_out, weights, MixtureConfig(sampling="uniform", temperature=0))


def test_null_is_refused_where_a_choice_is_required(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text(RUN_YAML.format(schedule="null", sampling="uniform"))
    with pytest.raises(TunelabError, match=r"line 6: train.schedule 'null': use one of cosine"):
        load_run_config(path)
    assert load_run_config(None, ["mixture.builtin.name=null"]).mixture.builtin.name is None


def test_sweep_defaults_live_on_each_method() -> None:
    rates = {name: method.sweep_lr for name, method in METHODS.items()}
    assert set(rates) == {"full", "freeze", "bitfit", "lora", "ia3", "adapter", "prompt", "prefix"}
    assert rates["full"] < rates["lora"] < rates["prompt"]  # weight updates vs soft prompts
    assert METHODS["freeze"].sweep_options == {"layers": ["top:4"]}
    assert all(not m.sweep_options for name, m in METHODS.items() if name != "freeze")

"""Builders shared by tests: small run configs on the tiny model and test data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tunelab.config import (
    DataConfig,
    EvalConfig,
    GenerationConfig,
    ModelConfig,
    RunConfig,
    TrainConfig,
)

DATA = Path(__file__).parent / "data"


def tiny_run_config(model_dir: Path, out: Path, name: str = "run", method: dict[str, Any] | None = None,
                    **train: Any) -> RunConfig:
    defaults: dict[str, Any] = dict(max_steps=6, batch_size=4, lr=1e-2, eval_every=2, log_every=1,
                                    warmup_ratio=0.0)
    defaults.update(train)
    return RunConfig(
        name=name, output_dir=str(out), model=ModelConfig(name=str(model_dir)),
        data=DataConfig(source=str(DATA / "reviews.jsonl"), fields={"input": "text", "output": "label"},
                        instruction="Classify the sentiment.", template="chat",
                        test_size=8, validation_size=4, max_length=128),
        method=method or {"name": "lora", "r": 4, "dropout": 0.1},
        train=TrainConfig(**defaults),
        eval=EvalConfig(metrics=["classification", "perplexity"], labels=["positive", "negative"],
                        generation=GenerationConfig(max_new_tokens=4, batch_size=4)),
    )


def interrupt_then_resume(config: RunConfig, monkeypatch: Any, at_step: int = 4) -> Any:
    """Train `config`, crash it right after its step-`at_step` checkpoint, then resume it;
    returns the resumed run's TrainResult."""
    import pytest

    import tunelab
    from tunelab.training import checkpoint as checkpoint_module

    real_save = checkpoint_module.save_checkpoint

    def crash_after_step(target, model, optimizer, scheduler, state):  # noqa: ANN001
        real_save(target, model, optimizer, scheduler, state)
        if state.step == at_step:
            raise KeyboardInterrupt

    monkeypatch.setattr("tunelab.training.loop.save_checkpoint", crash_after_step)
    with pytest.raises(KeyboardInterrupt):
        tunelab.train(config, evaluate_after=False)
    monkeypatch.setattr("tunelab.training.loop.save_checkpoint", real_save)
    return tunelab.train(config, resume=True, evaluate_after=False)


def model_passes(monkeypatch: Any, functions: Any) -> list[str]:
    """The name of each (module, function) in `functions` every time it runs a model pass
    (not a lookup). Any: pytest's monkeypatch; modules and names."""
    passes: list[str] = []
    for module, name in functions:
        real = getattr(module, name)

        def counted(*args: Any, _real: Any = real, _name: str = name, **kwargs: Any
                    ) -> Any:  # Any: each function's own arguments
            passes.append(_name)
            return _real(*args, **kwargs)
        monkeypatch.setattr(module, name, counted)
    return passes


def prompts_run(monkeypatch: Any) -> list[int]:
    """The number of prompts of each generation that ran through the model (not looked up in
    the result cache). Any: pytest's monkeypatch."""
    from tunelab.eval import generation

    count: list[int] = []
    real = generation._generate

    def counted(prompts: Any, *args: Any) -> Any:  # Any: _generate's own arguments
        count.append(len(prompts))
        return real(prompts, *args)
    monkeypatch.setattr(generation, "_generate", counted)
    return count

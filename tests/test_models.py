"""Model specs: local directories, hub ids offline, built-in conversion, layer cutting."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import needs_builtin_model

from tunelab.config import ModelConfig
from tunelab.core.errors import TunelabError
from tunelab.models import load_model, resolve_model_dir


def test_hub_id_offline_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(TunelabError, match=r"could not load it from the hub \(HF_HUB_OFFLINE=1"):
        load_model(ModelConfig(name="someone/no-such-model"))


def test_unknown_names_and_directories(tmp_path: Path) -> None:
    with pytest.raises(TunelabError, match="not a built-in model"):
        resolve_model_dir("not a model")
    with pytest.raises(TunelabError, match="has no config.json"):
        resolve_model_dir(str(tmp_path))


def test_local_directory_and_layer_cut(tiny_llama: Path) -> None:
    lm = load_model(ModelConfig(name=str(tiny_llama), num_layers=1))
    assert len(lm.model.model.layers) == 1 and lm.model.config.num_hidden_layers == 1
    assert lm.tokenizer.padding_side == "left" and lm.tokenizer.pad_token_id is not None
    with pytest.raises(TunelabError, match="the model has 2 layers"):
        load_model(ModelConfig(name=str(tiny_llama), num_layers=5))


@pytest.mark.integration
@needs_builtin_model
def test_builtin_model_is_converted_once_to_plain_safetensors() -> None:
    from tunelab.models.builtin import builtin_model_dir

    first = builtin_model_dir("smollm2-135m")
    stamp = (first / "model.safetensors").stat().st_mtime_ns
    again = builtin_model_dir("smollm2-135m")
    assert again == first and (again / "model.safetensors").stat().st_mtime_ns == stamp
    config = (first / "config.json").read_text()
    assert "quantization_config" not in config
    lm = load_model(ModelConfig(num_layers=2))
    assert getattr(lm.model, "hf_quantizer", None) is None
    assert all(p.dtype.is_floating_point for p in lm.model.parameters())


def test_a_model_is_placed_on_this_process_gpu(monkeypatch: pytest.MonkeyPatch,
                                                tiny_llama: Path) -> None:
    """Where a GPU is, a loaded model goes to it; without one, or in a launcher's process
    (accelerate places those), it stays where it loaded. The GPU is faked: the move is
    recorded, not made."""
    import torch

    from tunelab.models import loader

    moved: list[torch.device] = []

    class Model:
        def to(self, device: torch.device) -> Model:
            moved.append(device)
            return self

    model = Model()
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert loader.placed(model) is model and moved == []  # type: ignore[arg-type]  # a fake
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    loader.placed(model)  # type: ignore[arg-type]  # a fake
    assert moved == [torch.device("cuda", 0)]
    monkeypatch.setenv("RANK", "1")  # a process of --nproc: accelerate places it
    loader.placed(model)  # type: ignore[arg-type]  # a fake
    assert moved == [torch.device("cuda", 0)]
    seen: list[torch.nn.Module] = []
    monkeypatch.setattr(loader, "placed", lambda m: seen.append(m) or m)
    lm = load_model(ModelConfig(name=str(tiny_llama)))
    assert seen == [lm.model]  # every load goes through it

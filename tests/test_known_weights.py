"""A rerun whose items are all cached loads no weights (models/known_weights.py), and the
deferred model never answers for other weights: other files, another run, or weights that turn
out different from the record."""

from __future__ import annotations

import multiprocessing
import shutil
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from helpers import model_passes, tiny_run_config
from safetensors.torch import load_file, save_file

import tunelab
from tunelab.config import ModelConfig, TaskConfig
from tunelab.core.errors import TunelabError
from tunelab.eval import generation, harm, loglikelihood, processes
from tunelab.eval.output_types import load_for_task
from tunelab.eval.processes import EvalProcesses
from tunelab.eval.runner import evaluate_loaded
from tunelab.models import known_weights
from tunelab.models.fingerprint import model_fingerprint
from tunelab.models.known_weights import KnownWeights
from tunelab.models.loader import BaseRecipe
from tunelab.runs import RunDir, System, scoring_run_model
from tunelab.runs.run_dir import RunRecipe
from tunelab.workflows.train import run_task


@pytest.fixture()
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TUNELAB_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture()
def loads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The root of every run (or base) whose weights load."""
    found: list[str] = []
    run_real, base_real = RunRecipe.load, BaseRecipe.load

    def run_load(self: RunRecipe) -> Any:  # Any: a LoadedModel
        found.append(self.root)
        return run_real(self)

    def base_load(self: BaseRecipe) -> Any:  # Any: a LoadedModel
        found.append(self.config.name)
        return base_real(self)
    monkeypatch.setattr(RunRecipe, "load", run_load)
    monkeypatch.setattr(BaseRecipe, "load", base_load)
    return found


@pytest.fixture()
def passes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Each model pass that ran (not looked up)."""
    return model_passes(monkeypatch, ((generation, "_generate"),
                                      (loglikelihood, "_completion_nll")))


def _train(tiny_llama: Path, out: Path, name: str, lr: float) -> tuple[Path, Any]:
    config = tiny_run_config(tiny_llama, out, name=name, max_steps=3, lr=lr, eval_every=0)
    result = tunelab.train(config)
    return Path(result.run_dir), config


def _longer(task: TaskConfig) -> TaskConfig:
    """`task` generating longer answers (other settings: nothing of it is cached yet)."""
    generation_config = replace(task.eval.generation, max_new_tokens=7)
    return replace(task, eval=replace(task.eval, generation=generation_config))


def test_a_rerun_loads_no_weights_and_gives_the_same_rows(
        tiny_llama: Path, tmp_path: Path, cache: Path, loads: list[str],
        passes: list[str]) -> None:
    task = run_task(tiny_run_config(tiny_llama, tmp_path))
    base = ModelConfig(name=str(tiny_llama))
    first = load_for_task(task, base)  # no record yet: loads, and records its weights
    assert first.loaded and loads == [str(tiny_llama)]
    scored = evaluate_loaded(first, task, System.base())
    ran = len(passes)
    again = load_for_task(task, base)
    assert not again.loaded and loads == [str(tiny_llama)]  # deferred: nothing loaded
    assert again.fingerprint() == model_fingerprint(first.model)
    rerun = evaluate_loaded(again, task, System.base())
    assert not again.loaded and loads == [str(tiny_llama)] and len(passes) == ran > 0
    assert rerun.predictions == scored.predictions and rerun.scores == scored.scores
    assert scored.scores["perplexity"] > 0


def test_a_run_just_trained_is_scored_by_adapter_without_loading_it(
        tiny_llama: Path, tmp_path: Path, cache: Path, loads: list[str],
        passes: list[str]) -> None:
    """Training remembers the weights it saved (their scoring form): `--adapter RUN` then
    looks up what the run's own evaluation scored, and loads nothing."""
    config = tiny_run_config(tiny_llama, tmp_path, name="a", max_steps=3, lr=5e-2,
                             eval_every=0)
    result = tunelab.train(config)
    assert result.evaluation is not None
    ran = len(passes)
    lm = scoring_run_model(result.run_dir)
    again = evaluate_loaded(lm, run_task(config), System.tuned())
    assert not lm.loaded and loads == [] and len(passes) == ran > 0
    assert again.predictions == result.evaluation.predictions
    assert again.scores == result.evaluation.scores
    assert lm.fingerprint() == model_fingerprint(RunDir(result.run_dir).scoring_model().model)


def test_a_rerun_over_two_processes_loads_no_weights_here_or_in_the_worker(
        tiny_llama: Path, tmp_path: Path, cache: Path, loads: list[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """`--nproc 2`: the share this process scores and the worker's are looked up, and neither
    loads the weights (the worker runs in a thread here, so its loads are counted too)."""
    run, config = _train(tiny_llama, tmp_path, "a", 5e-2)
    task = run_task(config)
    scored = evaluate_loaded(scoring_run_model(run), task, System.tuned())  # training's record
    shares: list[int] = []
    real_score = processes._score

    def score(share: Any, models: Any) -> Any:  # Any: a Share, the worker's models, Outputs
        shares.append(len(share.records))
        return real_score(share, models)

    def start(self: EvalProcesses) -> None:  # one worker, a thread of this process
        here, there = multiprocessing.Pipe()
        worker = threading.Thread(target=processes._serve, args=(there, 1), daemon=True)
        worker.start()
        self._workers.append((worker, here))
    monkeypatch.setattr(processes, "_score", score)
    monkeypatch.setattr(EvalProcesses, "_start", start)
    monkeypatch.setenv("TQDM_DISABLE", "1")  # the worker sets it; restored after the test
    again = scoring_run_model(run)
    with EvalProcesses(2, threads=1):
        rerun = evaluate_loaded(again, task, System.tuned())
    assert shares and sum(shares) < len(scored.predictions)  # the worker scored a share
    assert not again.loaded and loads == []  # no load here nor in the worker
    assert rerun.predictions == scored.predictions and rerun.scores == scored.scores


def test_an_item_the_cache_lacks_loads_the_weights_and_scores_them_as_loaded(
        tiny_llama: Path, tmp_path: Path, cache: Path, loads: list[str],
        passes: list[str]) -> None:
    run, config = _train(tiny_llama, tmp_path, "a", 5e-2)
    task = _longer(run_task(config))  # the run's own evaluation cached the shorter answers
    evaluate_loaded(scoring_run_model(run), task, System.tuned(), limit=4)
    deferred = scoring_run_model(run)
    assert not deferred.loaded
    whole = evaluate_loaded(deferred, task, System.tuned())  # 4 items more than cached
    assert deferred.loaded and loads == [str(run), str(run)] and "_generate" in passes
    fresh = evaluate_loaded(RunDir(run).scoring_model(), task, System.tuned())
    assert whole.predictions == fresh.predictions and whole.scores == fresh.scores


def test_two_runs_on_one_base_and_the_base_each_get_their_own_rows(
        tiny_llama: Path, tmp_path: Path, cache: Path, loads: list[str]) -> None:
    run_a, config = _train(tiny_llama, tmp_path, "a", 5e-2)
    run_b, _ = _train(tiny_llama, tmp_path, "b", 2e-1)
    task = run_task(config)
    models = {"a": lambda: scoring_run_model(run_a), "b": lambda: scoring_run_model(run_b),
              "base": lambda: load_for_task(task, ModelConfig(name=str(tiny_llama)))}
    first = {name: evaluate_loaded(load(), task, System.tuned()) for name, load in models.items()}
    assert len({first[name].scores["perplexity"] for name in first}) == 3  # three models
    loaded = len(loads)
    for name, load in models.items():
        lm = load()
        again = evaluate_loaded(lm, task, System.tuned())
        assert not lm.loaded, name
        assert again.scores == first[name].scores and again.predictions == first[name].predictions
    assert len(loads) == loaded


def test_changed_weight_files_are_another_key_and_load(
        tiny_llama: Path, tmp_path: Path, cache: Path, loads: list[str]) -> None:
    run, config = _train(tiny_llama, tmp_path, "a", 5e-2)
    task = run_task(config)
    before = evaluate_loaded(scoring_run_model(run), task, System.tuned())
    weights = run / "adapter" / "adapter_model.safetensors"
    tensors = load_file(weights)
    save_file({name: tensor * 3 for name, tensor in tensors.items()}, weights)
    lm = scoring_run_model(run)
    assert lm.loaded and loads == [str(run)]  # the files training recorded changed: a load
    after = evaluate_loaded(lm, task, System.tuned())
    assert after.scores["perplexity"] != before.scores["perplexity"]


def _copied_base(tiny_llama: Path, tmp_path: Path) -> tuple[Path, BaseRecipe, KnownWeights]:
    """A copy of the tiny model's folder (to change), its recipe and the store."""
    folder = tmp_path / "base"
    shutil.copytree(tiny_llama, folder)
    store = KnownWeights.default()
    assert store is not None
    return folder, BaseRecipe(ModelConfig(name=str(folder)), None, None), store


def test_a_base_model_folder_changed_in_place_is_another_key(
        tiny_llama: Path, tmp_path: Path, cache: Path, loads: list[str]) -> None:
    folder, recipe, store = _copied_base(tiny_llama, tmp_path)
    key = store.key(recipe)
    weights = folder / "model.safetensors"
    tensors = load_file(weights)
    save_file({name: tensor + 0.5 for name, tensor in tensors.items()}, weights,
              metadata={"format": "pt"})
    assert store.key(recipe) not in (None, key)


def test_weights_unlike_the_record_stop_the_command_and_drop_the_record(
        tiny_llama: Path, tmp_path: Path, cache: Path) -> None:
    """Something outside the key changed what the files load into: the first load checks the
    weights against the record, and the command stops rather than trust earlier lookups."""
    run, config = _train(tiny_llama, tmp_path, "a", 5e-2)
    task = _longer(run_task(config))
    evaluate_loaded(scoring_run_model(run), task, System.tuned(), limit=4)
    store = KnownWeights.default()
    recipe = RunRecipe(str(run), None, scoring=True)
    assert store is not None and (key := store.key(recipe)) is not None
    store.remember(key, "0" * 40)  # a record that the loaded weights will not match
    deferred = scoring_run_model(run)
    assert not deferred.loaded and deferred.fingerprint() == "0" * 40
    with pytest.raises(TunelabError, match="differ from those the result cache recorded"):
        evaluate_loaded(deferred, task, System.tuned())  # items the record never scored
    assert store.fingerprint(key) is None
    assert scoring_run_model(run).loaded  # no record: loads, and records the true weights
    assert store.fingerprint(key) == model_fingerprint(scoring_run_model(run).model)


def test_with_the_cache_off_every_model_loads(
        tiny_llama: Path, tmp_path: Path, cache: Path, loads: list[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TUNELAB_EVAL_CACHE", "off")
    task = run_task(tiny_run_config(tiny_llama, tmp_path))
    for _ in range(2):
        assert load_for_task(task, ModelConfig(name=str(tiny_llama))).loaded
    assert len(loads) == 2 and not cache.exists()


def test_offensive_scores_are_looked_up(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    texts = ["what a lovely film", "you stupid idiot", "what a lovely film"]
    first = harm.Offensive().values(texts)
    scored: list[int] = []
    real = harm.profanity_check.predict_prob

    def counted(batch: list[str]) -> Any:  # Any: numpy probabilities
        scored.append(len(batch))
        return real(batch)
    monkeypatch.setattr(harm.profanity_check, "predict_prob", counted)
    assert harm.Offensive().values(texts) == first and scored == []
    assert first[1] > 0.5 > first[0] and first[0] == first[2]
    assert harm.Offensive().values(["an unseen line"]) and scored == [1]


def test_a_model_without_local_files_is_not_deferred(tmp_path: Path, cache: Path) -> None:
    store = KnownWeights.default()
    assert store is not None
    assert store.key(BaseRecipe(ModelConfig(name="owner/model"), None, None)) is None


def test_the_recipe_the_libraries_the_code_and_the_machine_are_all_in_the_key(
        tiny_llama: Path, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each part of the key on its own makes another key: the same folder loaded with fewer
    layers or in another dtype, other library versions, edited tunelab code, another
    machine."""
    store = KnownWeights.default()
    assert store is not None
    recipe = BaseRecipe(ModelConfig(name=str(tiny_llama)), None, None)
    keys = {store.key(recipe)}
    keys.add(store.key(BaseRecipe(ModelConfig(name=str(tiny_llama), num_layers=1), None, None)))
    keys.add(store.key(BaseRecipe(ModelConfig(name=str(tiny_llama), dtype="bfloat16"), None,
                                  None)))
    with monkeypatch.context() as patched:
        patched.setattr(known_weights, "installed_version", lambda name: "0.0.0")
        keys.add(store.key(recipe))
    with monkeypatch.context() as patched:
        patched.setattr(known_weights, "code_stamp", lambda: "edited")
        keys.add(store.key(recipe))
    with monkeypatch.context() as patched:
        patched.setattr(known_weights, "machine", lambda: "another CPU, 1 threads")
        keys.add(store.key(recipe))
    assert len(keys) == 6 and None not in keys
    assert store.key(recipe) in keys  # the same parts: the same key


def test_fewer_layers_of_a_known_base_are_loaded_and_scored_as_themselves(
        tiny_llama: Path, tmp_path: Path, cache: Path, loads: list[str]) -> None:
    task = run_task(tiny_run_config(tiny_llama, tmp_path))
    whole = evaluate_loaded(load_for_task(task, ModelConfig(name=str(tiny_llama))), task,
                            System.base())
    fewer = load_for_task(task, ModelConfig(name=str(tiny_llama), num_layers=1))
    assert fewer.loaded  # another recipe: no record
    assert evaluate_loaded(fewer, task, System.base()).scores != whole.scores


def test_a_run_without_its_weights_is_one_line_as_before(
        tiny_llama: Path, tmp_path: Path, cache: Path) -> None:
    run, _ = _train(tiny_llama, tmp_path, "a", 5e-2)
    shutil.rmtree(run / "adapter")
    with pytest.raises(TunelabError, match="no trained weights"):
        scoring_run_model(run)


def test_a_failed_check_leaves_the_model_as_loaded(
        tiny_llama: Path, tmp_path: Path, cache: Path) -> None:
    run, _ = _train(tiny_llama, tmp_path, "a", 5e-2)
    store = KnownWeights.default()
    assert store is not None
    scoring_run_model(run)
    key = store.key(RunRecipe(str(run), None, scoring=True))
    assert key is not None
    store.remember(key, "0" * 40)
    deferred = scoring_run_model(run)
    with pytest.raises(TunelabError):
        deferred.model  # noqa: B018  (the load, and its check)
    assert deferred.loaded and deferred.fingerprint() == model_fingerprint(deferred.model)


def test_a_file_changed_while_the_model_loads_is_not_remembered(
        tiny_llama: Path, tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The key is taken again after the load: weights read from files that changed meanwhile
    are not recorded under the files' earlier content (a rerun then loads again)."""
    folder, recipe, store = _copied_base(tiny_llama, tmp_path)
    key = store.key(recipe)
    real = BaseRecipe.load

    def load_then_change(self: BaseRecipe) -> Any:  # Any: a LoadedModel
        lm = real(self)
        config = folder / "generation_config.json"
        config.write_text(config.read_text().replace("{", '{"repetition_penalty": 2.0, ', 1))
        return lm
    monkeypatch.setattr(BaseRecipe, "load", load_then_change)
    assert known_weights.scoring(recipe).loaded
    assert key is not None and store.fingerprint(key) is None
    assert known_weights.scoring(recipe).loaded  # the changed files: no record yet either


def test_damaged_weights_or_config_values_are_one_line(
        tiny_llama: Path, tmp_path: Path, cache: Path) -> None:
    run, _ = _train(tiny_llama, tmp_path, "a", 5e-2)
    weights = run / "adapter" / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])  # truncated
    with pytest.raises(TunelabError, match="cannot be applied"):
        evaluate_loaded(scoring_run_model(run), run_task(tiny_run_config(tiny_llama, tmp_path)),
                        System.tuned())
    folder = tmp_path / "base"
    shutil.copytree(tiny_llama, folder)
    config = folder / "config.json"
    config.write_text(config.read_text().replace('"hidden_size": 16', '"hidden_size": "abc"'))
    with pytest.raises(TunelabError, match="holds a value it cannot take"):
        BaseRecipe(ModelConfig(name=str(folder)), None, None).load()


def test_a_damaged_adapter_config_is_one_line_before_the_base_loads(
        tiny_llama: Path, tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run, _ = _train(tiny_llama, tmp_path, "a", 5e-2)
    (run / "adapter" / "adapter_config.json").write_text('{"r": 4,')

    def no_base(*args: object, **kwargs: object) -> None:
        raise AssertionError("the base loaded before the damaged file was found")
    monkeypatch.setattr("tunelab.runs.start.load_model", no_base)
    with pytest.raises(TunelabError, match=r"adapter_config.json: a damaged file in the trained"):
        scoring_run_model(run)

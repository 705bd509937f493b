"""Faults: damaged and foreign run files, divergence, Ctrl-C, kill -9 at many points (inside
saves too), the checkpoint swap's windows, and batch-size invariance of scores."""

from __future__ import annotations

import io
import json
import math
import os
import pickle
import random
import shutil
import signal
import subprocess
import sys
import time
from contextlib import redirect_stderr
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from helpers import DATA
from safetensors.torch import load_file

from tunelab.cli import main
from tunelab.runs import RunDir, System
from tunelab.training import checkpoint

REVIEWS = DATA / "reviews.jsonl"


def config_file(folder: Path, model: Path, name: str, **train: Any) -> Path:
    settings = {"max_steps": 12, "batch_size": 4, "lr": 1e-2, "eval_every": 0, "save_every": 2,
                "log_every": 1, "warmup_ratio": 0.0}
    settings.update(train)
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump({
        "name": name, "output_dir": str(folder / "runs"), "model": {"name": str(model)},
        "data": {"source": str(REVIEWS), "fields": {"input": "text", "output": "label"},
                 "template": "chat", "test_size": 8, "validation_size": 4, "max_length": 64},
        "method": {"name": "lora", "r": 4, "dropout": 0.1}, "train": settings,
        "eval": {"metrics": ["accuracy"], "labels": ["positive", "negative"]}}))
    return path


def error_lines(err: str) -> list[str]:
    """The error lines of stderr (progress bars share it); each must stand alone."""
    found = [line for line in err.replace("\r", "\n").splitlines() if "error" in line]
    assert all(line.startswith("tunelab: error: ") for line in found), found
    assert "Traceback" not in err
    return found


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run_dir / "adapter" / "adapter_model.safetensors"))


def assert_same_trained_weights(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa and set(wa) == set(wb)
    assert all(torch.equal(wa[k], wb[k]) for k in wa), "not bit-identical"
    assert any(torch.count_nonzero(wa[k]) > 0 for k in wa if "lora_B" in k)  # trained: B left 0


@pytest.fixture(scope="module")
def straight(tiny_llama: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The uninterrupted run every interrupted one must equal, bit for bit."""
    folder = tmp_path_factory.mktemp("straight")
    assert main(["train", str(config_file(folder, tiny_llama, "run")), "--no-eval"]) == 0
    return folder / "runs" / "run"


# ---- damaged and foreign files --------------------------------------------------------------

def copy_run(run: Path, where: Path) -> Path:
    target = where / "runs" / run.name
    shutil.copytree(run, target)
    config = yaml.safe_load((target / "config.yaml").read_text())
    config["output_dir"] = str(where / "runs")
    (target / "config.yaml").write_text(yaml.safe_dump(config))
    (where / "run.yaml").write_text(yaml.safe_dump(config))
    return target


class Evil:
    def __reduce__(self) -> Any:
        return (os.system, (f"touch {MARK}",))


MARK = Path("/tmp/tunelab-pickle-ran")


@pytest.mark.parametrize("damage", ["truncated weights", "truncated state", "crafted pickle",
                                    "foreign weights"])
def test_resume_refuses_damaged_or_foreign_checkpoints(straight: Path, tmp_path: Path,
                                                       damage: str, capsys) -> None:
    run = copy_run(straight, tmp_path)
    last = run / "checkpoints" / "last"
    if damage == "truncated weights":
        data = (last / "trainable.safetensors").read_bytes()
        (last / "trainable.safetensors").write_bytes(data[: len(data) // 2])
        expect = "trainable.safetensors: unreadable"
    elif damage == "truncated state":
        data = (last / "training_state.pt").read_bytes()
        (last / "training_state.pt").write_bytes(data[: len(data) // 3])
        expect = "training_state.pt: unreadable"
    elif damage == "crafted pickle":
        MARK.unlink(missing_ok=True)
        torch.save({"optimizer": Evil()}, last / "training_state.pt")
        with (last / "plain.pkl").open("wb") as handle:
            pickle.dump(Evil(), handle)
        expect = "training_state.pt: refused"
    else:
        from safetensors.torch import save_file
        save_file({"other.weight": torch.zeros(2)}, str(last / "trainable.safetensors"))
        expect = "another run's checkpoint"
    assert main(["train", str(tmp_path / "run.yaml"), "--resume", "--no-eval"]) == 2
    err = error_lines(capsys.readouterr().err)
    assert len(err) == 1 and expect in err[0], err
    assert not MARK.exists()  # the pickle's code never ran


def test_foreign_base_and_damaged_model(straight: Path, tiny_llama: Path,
                                                        tmp_path: Path, capsys) -> None:
    from transformers import LlamaConfig, LlamaForCausalLM
    run = copy_run(straight, tmp_path)
    other = tmp_path / "wider"
    shutil.copytree(tiny_llama, other)
    config = LlamaConfig.from_pretrained(other)
    config.hidden_size, config.intermediate_size = 32, 64
    LlamaForCausalLM(config).save_pretrained(other)
    assert main(["eval", "--task", str(run), "--adapter", str(run), "--model", str(other),
                 "--limit", "2"]) == 2
    err = error_lines(capsys.readouterr().err)
    assert len(err) == 1 and "cannot be applied to" in err[0] and "another base model" in err[0]
    (other / "config.json").write_text('{"hidden_size": 32,')
    assert main(["eval", "--task", str(run), "--model", str(other), "--limit", "2"]) == 2
    err = error_lines(capsys.readouterr().err)
    assert len(err) == 1 and "config.json line 1 is not valid JSON" in err[0]


def test_corrupt_adapter_config_is_one_line(straight: Path, tmp_path: Path, capsys) -> None:
    run = copy_run(straight, tmp_path)
    (run / "adapter" / "adapter_config.json").write_text("{not json")
    assert main(["eval", "--task", str(run), "--adapter", str(run), "--limit", "2"]) == 2
    err = error_lines(capsys.readouterr().err)
    assert len(err) == 1 and "damaged" in err[0], err
    assert err[0].split(": error: ", 1)[1].startswith(f"{run / 'adapter' / 'adapter_config.json'}:")


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Every file below `folder`: its bytes and its modification time."""
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_resume_of_a_finished_run_without_checkpoints_is_refused(straight: Path, tmp_path: Path,
                                                                 capsys) -> None:
    """A finished run whose checkpoints/ was deleted to save disk: --resume has nothing to
    continue, so it is refused in one line and not one file of the run changes (it used to
    train again from step 0 and overwrite the adapter and the reports)."""
    run = copy_run(straight, tmp_path)
    shutil.rmtree(run / "checkpoints")
    assert (run / "summary.json").is_file() and (run / "adapter").is_dir()
    before = snapshot(run)
    assert main(["train", str(tmp_path / "run.yaml"), "--resume", "--no-eval"]) == 2
    err = error_lines(capsys.readouterr().err)
    assert len(err) == 1 and "finished run" in err[0] and "no checkpoint" in err[0], err
    assert str(run) in err[0]
    assert snapshot(run) == before
    # with its checkpoints the same run still resumes (the refusal is about having none)
    again = copy_run(straight, tmp_path / "again")
    assert main(["train", str(tmp_path / "again" / "run.yaml"), "--resume", "--no-eval"]) == 0
    assert (again / "summary.json").is_file()


# ---- divergence -----------------------------------------------------------------------------

def test_divergence_stops_with_exit_1_and_writes_nothing_from_it(tiny_llama: Path,
                                                                  tmp_path: Path, capsys) -> None:
    path = config_file(tmp_path, tiny_llama, "hot", lr=1e6, max_steps=20, eval_every=1,
                       save_every=0)
    assert main(["train", str(path)]) == 1
    err = error_lines(capsys.readouterr().err)
    assert len(err) == 1 and "train: diverged at step" in err[0] and "lower train.lr" in err[0]
    run = tmp_path / "runs" / "hot"
    assert not (run / "adapter").exists()
    log = [json.loads(x) for x in (run / "train_log.jsonl").read_text().splitlines()] \
        if (run / "train_log.jsonl").exists() else []
    best = run / "checkpoints" / "best" / "trainable.safetensors"
    if best.exists():  # only ever from a step before the divergence, and finite
        assert all(torch.isfinite(t).all() for t in load_file(str(best)).values())
        assert max(r["step"] for r in log if "val_loss" in r) < 20


def test_a_non_finite_loss_stops_or_is_skipped(tiny_llama: Path, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    from tunelab.models.kinds import CausalKind
    real = CausalKind.loss
    calls = {"n": 0}

    def poisoned(self: Any, model: Any, batch: Any, count: Any) -> torch.Tensor:
        calls["n"] += 1
        loss = real(self, model, batch, count)
        return loss * float("nan") if calls["n"] == 3 else loss

    monkeypatch.setattr(CausalKind, "loss", poisoned)
    path = config_file(tmp_path, tiny_llama, "nan", max_steps=6, save_every=0)
    assert main(["train", str(path), "--no-eval"]) == 1
    assert "diverged at step 3: loss nan" in capsys.readouterr().err
    calls["n"] = 0
    path = config_file(tmp_path, tiny_llama, "skip", max_steps=6, save_every=0,
                       on_divergence="skip_step")
    assert main(["train", str(path), "--no-eval"]) == 0
    assert "step 3: loss nan; the step is skipped" in capsys.readouterr().out
    summary = json.loads((tmp_path / "runs" / "skip" / "summary.json").read_text())
    assert summary["skipped_steps"] == 1
    assert all(torch.isfinite(t).all() for t in weights(tmp_path / "runs" / "skip").values())


# ---- interruptions --------------------------------------------------------------------------

KILLER = """
import os, signal, sys
import tunelab.training.checkpoint as ck
target, when = int(os.environ["KILL_AT"]), os.environ["KILL_WHEN"]
count = [0]
def hooked(module, name):
    real = getattr(module, name)
    def wrapper(*args, **kwargs):
        count[0] += 1
        if count[0] == target and when == "before":
            os.kill(os.getpid(), signal.SIGKILL)
        out = real(*args, **kwargs)
        if count[0] == target and when == "after":
            os.kill(os.getpid(), signal.SIGKILL)
        return out
    setattr(module, name, wrapper)
hooked(ck.os, "replace"); hooked(ck.shutil, "rmtree"); hooked(ck, "save_file")
hooked(ck.torch, "save")
from tunelab.cli import main
sys.exit(main(sys.argv[1:]))
"""


def run_tunelab(args: list[str], env: dict[str, str] | None = None,
                code: str = "import sys; from tunelab.cli import main; sys.exit(main(sys.argv[1:]))"
                ) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}, timeout=300)


def finish_after_kill(path: Path) -> None:
    """What a user does after a kill: resume; a run killed before its first checkpoint is
    refused without --resume (saying so) and starts again with it."""
    run = path.parent / "runs" / path.stem
    finished, checkpointed = (run / "summary.json").exists(), checkpoint_exists(run)
    with redirect_stderr(io.StringIO()) as err:
        assert main(["train", str(path), "--no-eval"]) == 2  # never overwritten, never stuck
    if not finished:
        assert ("pass --resume to continue" if checkpointed else
                "stopped before its first checkpoint; pass --resume") in err.getvalue()
    assert main(["train", str(path), "--resume", "--no-eval"]) == 0
    assert (run / "adapter").exists()
    leftovers = [p.name for p in (run / "checkpoints").iterdir() if p.name.startswith(".")]
    assert leftovers == []  # no stale temporary or old checkpoint copies


def checkpoint_exists(run: Path) -> bool:
    return RunDir(run).has_checkpoint()


@pytest.mark.parametrize("at", [(1, "after"), (2, "before"), (4, "after"), (5, "before"),
                                (9, "before"), (17, "after")],
                         ids=lambda at: f"op{at[0]}-{at[1]}")
def test_kill_9_inside_saves_then_resume_is_bit_identical(at: tuple[int, str], straight: Path,
                                                         tiny_llama: Path, tmp_path: Path) -> None:
    """SIGKILL at the n-th file operation of the checkpoint writer (writing the weights, the
    state, either rename of the swap, removing the old copy), before or after it."""
    path = config_file(tmp_path, tiny_llama, "run")
    killed = run_tunelab(["train", str(path), "--no-eval"],
                         {"KILL_AT": str(at[0]), "KILL_WHEN": at[1]}, KILLER)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    finish_after_kill(path)
    assert_same_trained_weights(straight, tmp_path / "runs" / "run")


def test_kill_9_at_random_moments_then_resume(straight: Path, tiny_llama: Path,
                                              tmp_path: Path) -> None:
    rng = random.Random(7)
    for trial in range(2):
        folder = tmp_path / f"t{trial}"
        folder.mkdir()
        path = config_file(folder, tiny_llama, "run")
        process = subprocess.Popen([sys.executable, "-c", "import sys; from tunelab.cli import "
                                    "main; sys.exit(main(sys.argv[1:]))", "train", str(path),
                                    "--no-eval"], stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL,
                                   env={**os.environ, "OMP_NUM_THREADS": "1"})
        log = folder / "runs" / "run" / "train_log.jsonl"
        deadline = time.time() + 120
        while not log.exists() and time.time() < deadline and process.poll() is None:
            time.sleep(0.01)
        time.sleep(rng.uniform(0, 0.6))
        process.kill()
        process.wait()
        finish_after_kill(path)
        assert_same_trained_weights(straight, folder / "runs" / "run")


def test_ctrl_c_exits_130_and_resume_is_bit_identical(tiny_llama: Path, tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    straight_path = config_file(tmp_path / "a", tiny_llama, "run", max_steps=60)
    assert main(["train", str(straight_path), "--no-eval"]) == 0
    (tmp_path / "b").mkdir()
    path = config_file(tmp_path / "b", tiny_llama, "run", max_steps=60)
    process = subprocess.Popen([sys.executable, "-c", "import sys; from tunelab.cli import main;"
                                " sys.exit(main(sys.argv[1:]))", "train", str(path), "--no-eval"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "OMP_NUM_THREADS": "1"},
                               # a suite started in the background (`cmd &`, nohup) passes
                               # SIGINT ignored to its children, and Python then keeps it
                               # ignored: Ctrl-C as a terminal delivers it needs the default
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    state = tmp_path / "b" / "runs" / "run" / "checkpoints" / "last" / "loop_state.json"
    deadline = time.time() + 120
    while not state.exists() and time.time() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130 and "Traceback" not in err, err
    assert main(["train", str(path), "--resume", "--no-eval"]) == 0
    assert_same_trained_weights(tmp_path / "a" / "runs" / "run", tmp_path / "b" / "runs" / "run")


# ---- the checkpoint swap, window by window --------------------------------------------------

def test_no_window_of_the_swap_loses_the_checkpoint_or_breaks_the_next_save(tmp_path: Path) -> None:
    target = tmp_path / "last"

    def version(n: int) -> Any:
        return lambda tmp: (tmp / "v").write_text(str(n))

    checkpoint.write_atomically(target, version(1))
    old = tmp_path / ".last.old"
    # killed between the renames: only the old copy and the staging directory exist
    os.replace(target, old)
    (tmp_path / ".last.tmp-dead").mkdir()
    checkpoint.recover(target)
    assert (target / "v").read_text() == "1" and not old.exists()
    assert not list(tmp_path.glob(".last.tmp-*"))
    # killed after the swap, before the old copy went: the next save still works
    shutil.copytree(target, old)
    checkpoint.write_atomically(target, version(2))
    assert (target / "v").read_text() == "2" and not old.exists()
    # killed while writing: the previous checkpoint stands, the staging goes on the next save
    def dies(tmp: Path) -> None:
        (tmp / "v").write_text("half")
        raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        checkpoint.write_atomically(target, dies)
    assert (target / "v").read_text() == "2"


# ---- scores do not depend on the batch size -------------------------------------------------

@pytest.mark.parametrize("task_name", ["movie_sentiment", "movie_sentiment_mc"])
def test_scores_are_the_same_at_batch_sizes_1_8_32(task_name: str) -> None:
    """The built-in model cut to 2 layers: identical predictions, per-item values and
    scores for generation and multiple choice at batch sizes 1, 8 and 32."""
    from conftest import has_builtin_model
    if not has_builtin_model():
        pytest.skip("the built-in model is not installed (requirements-models.txt)")
    import copy

    from tunelab.config import ModelConfig
    from tunelab.eval.runner import evaluate_loaded
    from tunelab.eval.tasks import load_task
    from tunelab.models import load_model

    lm = load_model(ModelConfig(name="smollm2-135m", num_layers=2))
    task = load_task(task_name)
    runs = {}
    for size in (1, 8, 32):
        sized = copy.deepcopy(task)
        sized.eval.generation.batch_size = sized.eval.batch_size = size
        runs[size] = evaluate_loaded(lm, sized, System.base(), shots=0, limit=24, bootstrap=0)
    one = runs[1]
    # something item-specific is compared: generated text, or each choice's log-likelihood
    shown = "logprobs" if "logprobs" in one.predictions[0] else "prediction"
    assert len({str(p[shown]) for p in one.predictions}) > 1
    for size in (8, 32):
        assert [p["prediction"] for p in runs[size].predictions] == \
            [p["prediction"] for p in one.predictions]
        assert runs[size].scores == one.scores
        for name, values in one.items.items():
            assert runs[size].items[name] == values, (size, name)
        if shown == "logprobs":  # the same numbers to float32 noise (rounded to 1e-4 in rows)
            for a, b in zip(one.predictions, runs[size].predictions, strict=True):
                assert a["logprobs"] == pytest.approx(b["logprobs"], abs=2e-4)


def test_divergence_tells_factor_and_uniform_output() -> None:
    """The loop's own check, on made-up losses: a smoothed loss past the factor, and a loss
    settled at ln(vocab) (a uniform output) even below the factor; ordinary noise passes."""
    from types import SimpleNamespace

    from tunelab.core.errors import DivergedError
    from tunelab.training.checkpoint import LoopState
    from tunelab.training.loop import Trainer

    def loop(factor: float) -> SimpleNamespace:
        return SimpleNamespace(state=LoopState(), uniform=math.log(49152),
                               config=SimpleNamespace(divergence_factor=factor, lr=1e-3))

    noisy = loop(4.0)
    for step, loss in enumerate([2.0, 2.4, 1.7, 3.5, 2.2, 1.9, 5.0, 2.0]):
        noisy.state.step = step
        Trainer._check_divergence(noisy, loss)  # a hard batch or two is no divergence
    rising = loop(4.0)
    with pytest.raises(DivergedError, match=r"rose from 2.000 \(step 1\)"):
        for loss in [2.0, 45.0, 86.0]:
            Trainer._check_divergence(rising, loss)
    flat = loop(0)  # the factor check off: the uniform tell still fires
    with pytest.raises(DivergedError, match="loss of a uniform output"):
        for loss in [2.0, *[math.log(49152)] * 30]:
            Trainer._check_divergence(flat, loss)

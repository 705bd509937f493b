"""Two CPU processes (torchrun, gloo) with the same global batch train the same model as one
process: the step's targets are counted over both processes, and the logged loss is global."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from helpers import DATA
from safetensors.torch import load_file

from tunelab.cli import main
from tunelab.core import launch

LAUNCHER = "import sys\nfrom tunelab.cli import main\nsys.exit(main(sys.argv[1:]))\n"


MIXTURE = {
    "tasks": [
        {"name": "sentiment", "loss_weight": 2.0,
         "data": {"source": str(DATA / "reviews.jsonl"), "fields": {"input": "text", "output": "label"},
                  "template": "chat", "test_size": 4, "validation_size": 4, "max_length": 96,
                  # alpaca.jsonl holds these reviews too: qa's test items are in this training
                  # data (the leakage check finds them)
                  "allow_leakage": True},
         "eval": {"metrics": ["accuracy"]}},
        {"name": "qa", "data": {"source": str(DATA / "alpaca.jsonl"), "template": "alpaca",
                                "test_size": 2, "validation_size": 2, "max_length": 96},
         "eval": {"metrics": ["rouge"]}}],
    "mixture": {"sampling": "proportional", "oversample": True, "eval_limit": 0},
}


CLASSIFIER = {
    "data": {"source": str(DATA / "reviews.jsonl"), "fields": {"input": "text", "output": "label"},
             "template": "chat", "test_size": 8, "validation_size": 5, "max_length": 96},
    "eval": {"metrics": ["classification"], "labels": ["positive", "negative"]},
}


def config(folder: Path, model: Path, batch_size: int, data: Path = DATA / "reviews.jsonl",
           extra: dict | None = None) -> Path:
    path = folder / "run.yaml"
    extra = dict(extra or {})
    if extra.get("eval") == CLASSIFIER["eval"]:
        extra["model"] = {"name": str(model), "kind": "classifier"}
    path.write_text(yaml.safe_dump({
        "name": "run", "output_dir": str(folder / "runs"), "model": {"name": str(model)},
        # completions of very different lengths (the review text from its label), so a
        # per-process token count would weigh the processes' examples differently
        "data": {"source": str(data), "fields": {"input": "label", "output": "text"},
                 "template": "chat", "test_size": 8, "validation_size": 4, "max_length": 96},
        "method": {"name": "lora", "r": 4, "dropout": 0.0},
        "train": {"max_steps": 6, "batch_size": batch_size, "lr": 1e-2, "eval_every": 3,
                  "log_every": 1, "warmup_ratio": 0.0},
        "eval": {"metrics": ["accuracy"], "labels": ["positive", "negative"]}, **extra}))
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# each process prints every thread's Python stack if it dies of a signal (SIGABRT, SIGSEGV),
# so a failure in CI shows where a process died, not only torchrun's exit code
CHILD_ENV = {"OMP_NUM_THREADS": "1", "PYTHONFAULTHANDLER": "1"}


def why(done: subprocess.CompletedProcess) -> str:
    """A failed launch's message: its stderr from the first fatal error (or the last 6000
    characters), which holds the dying process's stacks and torchrun's summary."""
    text = done.stderr
    start = min((i for i in (text.find("Fatal Python error"), text.find("terminate called"))
                 if i >= 0), default=max(0, len(text) - 6000))
    return text[max(0, start - 1500):][-12000:]


def torchrun(folder: Path, args: list[str]) -> subprocess.CompletedProcess:
    script = folder / "launch.py"
    script.write_text(LAUNCHER)
    return subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
         "--master_addr", "127.0.0.1", "--master_port", str(free_port()), str(script), *args],
        capture_output=True, text=True, timeout=600,
        env={**os.environ, **CHILD_ENV})


def accelerate_launch(folder: Path, args: list[str], example: str) -> subprocess.CompletedProcess:
    """`accelerate launch --config_file examples/distributed/EXAMPLE ...`."""
    script = folder / "launch.py"
    script.write_text(LAUNCHER)
    name, example = example, Path(__file__).resolve().parent.parent / "examples" / "distributed"
    return subprocess.run(
        [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
         str(example / name), "--main_process_port", str(free_port()),
         str(script), *args], capture_output=True, text=True, timeout=600,
        env={**os.environ, **CHILD_ENV})


@pytest.mark.parametrize("extra", [None, MIXTURE, CLASSIFIER],
                         ids=["single task", "mixture", "classifier"])
def test_two_processes_equal_one_with_the_same_global_batch(tiny_llama: Path, tmp_path: Path,
                                                            extra: dict | None,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Training, validation (sharded, summed over the processes) and, for the single task and
    the classifier, the test split's evaluation (each process scores a share, rank 0 gathers
    and writes)."""
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    no_eval = ["--no-eval"] if extra is MIXTURE else []
    assert main(["train", str(config(tmp_path / "one", tiny_llama, 8, extra=extra)),
                 *no_eval]) == 0
    two_config = str(config(tmp_path / "two", tiny_llama, 4, extra=extra))
    if extra is None:  # the shortcut: tunelab train --nproc 2 (torchrun underneath)
        monkeypatch.setenv("PYTHONFAULTHANDLER", "1")
        assert main(["train", two_config, "--nproc", "2"]) == 0
    elif extra is MIXTURE:  # accelerate launch with the example config
        done = accelerate_launch(tmp_path / "two", ["train", two_config, *no_eval],
                                 "accelerate_cpu_ddp.yaml")
        assert done.returncode == 0, why(done)
    else:
        done = torchrun(tmp_path / "two", ["train", two_config, *no_eval])
        assert done.returncode == 0, why(done)
    one, two = (tmp_path / "one" / "runs" / "run", tmp_path / "two" / "runs" / "run")
    wa = load_file(str(one / "adapter" / "adapter_model.safetensors"))
    wb = load_file(str(two / "adapter" / "adapter_model.safetensors"))
    assert set(wa) == set(wb) and any(torch.count_nonzero(wa[k]) for k in wa if "lora_B" in k)
    # float32: the processes' gradients are summed in another order than one batch's, and Adam
    # divides by sqrt(v), which magnifies that noise where a gradient is near zero; 1e-4
    # absolute on weights of size ~0.3. Counting targets per process instead (the old
    # behaviour) differs by ~5e-2 here, so the test tells the two apart.
    worst = max(float((wa[k] - wb[k]).abs().max()) for k in wa)
    assert worst <= 1e-4, worst
    logs = [[json.loads(x) for x in (run / "train_log.jsonl").read_text().splitlines()]
            for run in (one, two)]
    assert [r["step"] for r in logs[0]] == [r["step"] for r in logs[1]]  # rank 0 alone wrote
    for a, b in zip(*logs, strict=True):
        for key in ("loss", "val_loss"):
            if key in a:
                assert a[key] == pytest.approx(b[key], rel=1e-5), (key, a, b)
    assert sum(r.get("tokens_per_s", 0) > 0 for r in logs[1]) == 6
    placement = json.loads((two / "summary.json").read_text())["placement"]
    assert placement["processes"] == 2 and placement["layout"] == "replicated"
    assert placement["device"] == "cpu" and placement["backend"] == "gloo"
    if extra is MIXTURE:
        return
    scored = [json.loads((run / "eval" / "fine-tuned" / "metrics.json").read_text())
              for run in (one, two)]
    assert scored[0]["n"] == scored[1]["n"] == 8  # every test item, once
    assert scored[0]["scores"] == pytest.approx(scored[1]["scores"], abs=1e-9)
    rows = [[json.loads(x) for x in (run / "eval" / "fine-tuned" / "predictions.jsonl")
             .read_text().splitlines()] for run in (one, two)]
    assert [r["index"] for r in rows[1]] == list(range(8))  # the shares, in item order
    assert [(r["input"], r["prediction"]) for r in rows[0]] == \
        [(r["input"], r["prediction"]) for r in rows[1]]


@pytest.mark.parametrize("fsdp", [False, True], ids=["ddp", "fsdp"])
def test_resume_of_a_two_process_run_killed_mid_save(tiny_llama: Path, tmp_path: Path,
                                                     fsdp: bool) -> None:
    """Rank 0 is SIGKILLed inside its second checkpoint save (torchrun then stops rank 1);
    `--resume` under torchrun ends where the uninterrupted one-process run ends. With FSDP
    the checkpoint holds whole tensors gathered from both shards and is sharded again on
    load (weights and Adam's moments)."""
    from test_faults import KILLER
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    assert main(["train", str(config(tmp_path / "one", tiny_llama, 8)), "--no-eval"]) == 0
    path = config(tmp_path / "two", tiny_llama, 4)
    text = yaml.safe_load(path.read_text())
    text["train"]["save_every"] = 2
    text["train"]["fsdp"] = fsdp
    path.write_text(yaml.safe_dump(text))
    killer = tmp_path / "two" / "killer.py"
    killer.write_text("import os\nif os.environ.get('RANK') != '0':\n"
                      "    os.environ['KILL_AT'] = '0'\n" + KILLER)
    script = tmp_path / "two" / "launch.py"
    killed = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
         "--master_addr", "127.0.0.1", "--master_port", str(free_port()), str(killer),
         "train", str(path), "--no-eval"], capture_output=True, text=True, timeout=600,
        env={**os.environ, **CHILD_ENV, "KILL_AT": "5", "KILL_WHEN": "after"})
    assert killed.returncode != 0
    run = tmp_path / "two" / "runs" / "run"
    assert not (run / "adapter").exists()
    script.write_text(LAUNCHER)
    done = torchrun(tmp_path / "two", ["train", str(path), "--resume", "--no-eval"])
    assert done.returncode == 0, why(done)
    wa = load_file(str(tmp_path / "one" / "runs" / "run" / "adapter" / "adapter_model.safetensors"))
    wb = load_file(str(run / "adapter" / "adapter_model.safetensors"))
    assert max(float((wa[k] - wb[k]).abs().max()) for k in wa) <= 1e-4
    assert any(torch.count_nonzero(wb[k]) for k in wb if "lora_B" in k)


def edited(path: Path, method: dict, **train: object) -> Path:
    text = yaml.safe_load(path.read_text())
    text["method"] = method
    text["train"].update(train)
    path.write_text(yaml.safe_dump(text))
    return path


def trained_weights(run: Path) -> dict[str, torch.Tensor]:
    folder = run / ("adapter" if (run / "adapter").is_dir() else "model")
    return load_file(str(next(folder.glob("*.safetensors"))))


@pytest.mark.parametrize("method", [{"name": "lora", "r": 4, "dropout": 0.0}, {"name": "full"}],
                         ids=["lora", "full"])
def test_fsdp_on_two_processes_equals_one_process(tiny_llama: Path, tmp_path: Path,
                                                  method: dict) -> None:
    """train.fsdp: every process holds half the weights while training (summary.json's
    placement), and the run ends where one process with the whole batch ends: the trained
    weights, the losses, the validation losses (lockstep, rank 1 runs a filler pass) and the
    test split's scores. Gradients are clipped at every step (max_grad_norm far below their
    norm), so the norm must be taken over both shards for the weights to agree."""
    runs = {}
    for name, size in (("one", 8), ("two", 4)):
        (tmp_path / name).mkdir()
        runs[name] = edited(config(tmp_path / name, tiny_llama, size), method, fsdp=True,
                            max_grad_norm=0.01, lr=1e-2 if method["name"] == "lora" else 1e-3)
    assert main(["train", str(runs["one"])]) == 0
    if method["name"] == "lora":  # accelerate launch with the example config
        done = accelerate_launch(tmp_path / "two", ["train", str(runs["two"])],
                                 "accelerate_cpu_fsdp.yaml")
    else:
        done = torchrun(tmp_path / "two", ["train", str(runs["two"])])
    assert done.returncode == 0, why(done)
    one, two = (tmp_path / "one" / "runs" / "run", tmp_path / "two" / "runs" / "run")
    wa, wb = trained_weights(one), trained_weights(two)
    assert set(wa) == set(wb)
    if method["name"] == "full":  # the weights moved from the base model's
        from transformers import AutoModelForCausalLM
        base = AutoModelForCausalLM.from_pretrained(tiny_llama).state_dict()
        moved = max(float((wa[k] - base[k]).abs().max()) for k in wa)
    else:
        moved = max(float(wa[k].abs().max()) for k in wa if "lora_B" in k)
    worst = max(float((wa[k] - wb[k]).abs().max()) for k in wa)
    assert moved > 100 * max(worst, 1e-6), (moved, worst)
    assert worst <= 1e-4, worst  # float32 summation order (see the DDP test)
    summaries = [json.loads((run / "summary.json").read_text()) for run in (one, two)]
    total = summaries[0]["total_parameters"]
    assert summaries[0]["placement"] == {"layout": "replicated", "processes": 1,
                                         "parameters_per_process": total, "device": "cpu",
                                         "backend": None}
    assert summaries[1]["placement"]["layout"] == "fsdp"
    assert summaries[1]["placement"]["parameters_per_process"] <= 0.55 * total
    logs = [[json.loads(x) for x in (run / "train_log.jsonl").read_text().splitlines()]
            for run in (one, two)]
    assert sum("val_loss" in r for r in logs[0]) == 2
    for a, b in zip(*logs, strict=True):
        for key in ("loss", "val_loss"):
            if key in a:
                assert a[key] == pytest.approx(b[key], rel=1e-5), (key, a, b)
    scored = [json.loads((run / "eval" / "fine-tuned" / "metrics.json").read_text())
              for run in (one, two)]
    assert scored[0]["n"] == scored[1]["n"] == 8
    assert scored[0]["scores"] == pytest.approx(scored[1]["scores"], abs=1e-9)


def test_fsdp_refuses_a_method_with_weights_outside_the_base_model(tiny_llama: Path,
                                                                    tmp_path: Path) -> None:
    """Prompt tuning's virtual token embeddings live in peft's wrapper, outside the sharded
    base model: one line naming the option, exit code 2 on both processes, no run left."""
    path = edited(config(tmp_path, tiny_llama, 4), {"name": "prompt", "num_virtual_tokens": 4},
                  fsdp=True)
    done = torchrun(tmp_path, ["train", str(path)])
    assert done.returncode != 0
    # each process prints its line (they may interleave on the shared stderr)
    assert done.stderr.count("tunelab: error: train.fsdp: the method trains weights outside "
                             "the base model (prompt_encoder") == 2, done.stderr[-2000:]
    assert "exitcode  : 2" in done.stderr
    assert not (tmp_path / "runs" / "run").exists()


def test_nproc_returns_the_processes_exit_code_of_a_bad_option(
        tiny_llama: Path, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    """A model only the processes find missing (torchrun itself exits 1 whatever failed):
    `tunelab train --nproc 2` exits 2, as one process does. A bad method option is found
    before any process starts: one line, exit 2."""
    path = config(tmp_path, tiny_llama, 4)
    assert main(["train", str(path), f"model.name={tmp_path / 'no-model'}", "--nproc", "2"]) == 2
    assert main(["train", str(path), f"model.name={tmp_path / 'no-model'}"]) == 2
    capsys.readouterr()

    def no_processes(argv: list[str], n: int) -> int:
        raise AssertionError("processes started before the options were checked")
    monkeypatch.setattr(launch, "nproc", no_processes)
    assert main(["train", str(path), "method.bogus=1", "--nproc", "2"]) == 2
    assert capsys.readouterr().err.strip() == (
        "tunelab: error: method (lora): unknown option 'bogus'; valid options: alpha, dora, "
        "dropout, r, rslora, target_modules")
    assert not (tmp_path / "runs" / "run").exists()


TEARDOWN_PROBE = ("import atexit, sys\natexit.register(lambda: print('teardown ran'))\n"
                  "from tunelab.cli import main\nsys.exit(main(sys.argv[1:]))\n")


def test_a_launched_process_ends_without_the_interpreters_teardown(tmp_path: Path) -> None:
    """A process torchrun started (RANK set) ends with os._exit once its command returns:
    the interpreter's teardown, where gloo's threads now and then abort a finished process,
    never runs (an atexit handler stays silent), yet its whole buffered output and its exit
    code come through. Without RANK the same command tears down as usual."""
    def run(args: list[str], rank: bool) -> subprocess.CompletedProcess:
        env = {k: v for k, v in os.environ.items() if k != "RANK"}
        return subprocess.run([sys.executable, "-c", TEARDOWN_PROBE, *args], capture_output=True,
                              text=True, timeout=300, env={**env, **({"RANK": "0"} if rank else {})})
    plain, launched = run(["tasks", "list"], False), run(["tasks", "list"], True)
    assert plain.returncode == launched.returncode == 0, launched.stderr
    assert plain.stdout.rstrip().endswith("teardown ran")
    assert "teardown ran" not in launched.stdout
    listing = plain.stdout.rstrip().removesuffix("teardown ran").rstrip()
    assert listing.count("\n") > 10 and launched.stdout.rstrip() == listing  # flushed, whole
    bad = run(["train", str(tmp_path / "missing.yaml")], True)
    assert bad.returncode == 2 and "no such config file" in bad.stderr
    assert "teardown ran" not in bad.stdout

"""Commands answer before the slow libraries load (tunelab/core/deferred.py).

`import tunelab.api`, `tunelab --help`, `tunelab tasks list`, `tunelab tasks validate` of a task
that needs no model, and every bad input of tests/test_bad_inputs.py that is found without a
model (config keys and values, missing files, bad JSONL lines, missing columns, option errors)
run in a fresh process, which then has imported none of torch, transformers, peft, accelerate,
scikit-learn, cleanlab, scipy or nltk. The tests hold no timings: `python benchmarks/startup.py`
measures the seconds (benchmarks/README.md)."""

from __future__ import annotations

import ast
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import DATA
from test_bad_inputs import CASES, fill, task_yaml, write_files

import tunelab
from tunelab.core.deferred import DeferredModule, deferred

TORCH = ("torch", "transformers", "peft", "accelerate")
SLOW = (*TORCH, "sklearn", "cleanlab", "scipy", "nltk", "rouge_score", "profanity_check")
"""What a command that loads no model must not import (each costs 0.5 to 6 s to import); a
bad input may be found after a valid run's data check, which uses scipy, so the bad-input
tests hold the rule for TORCH."""

PROBE = """
import contextlib, io, json, sys
from tunelab.cli import main
cases = json.loads(sys.argv[1])
slow = json.loads(sys.argv[2])
seen = []
for name, argv in cases:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()) as out:
        try:
            code = main(argv)
        except SystemExit as stop:  # argparse: --help, a bad option
            code = stop.code
    loaded = [m for m in slow if m in sys.modules]
    seen.append({"name": name, "code": code, "err": err.getvalue(), "out": out.getvalue(),
                 "loaded": loaded})
    if loaded:
        break  # the rest would be judged in a process that already holds it
print(json.dumps(seen))
"""


def run_fresh(cases: list[tuple[str, list[str]]], cwd: Path, slow: tuple[str, ...] = SLOW
              ) -> list[dict[str, object]]:
    """Each (name, argv) through `tunelab.cli.main`, in order, in one new process; what it
    printed, its exit code and which of `slow` it had imported by then."""
    done = subprocess.run([sys.executable, "-c", PROBE, json.dumps(cases), json.dumps(slow)],
                          capture_output=True, text=True, cwd=cwd, check=False, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.splitlines()[-1])


def test_importing_the_api_loads_no_slow_library() -> None:
    code = ("import json, sys, tunelab.api\n"
            f"print(json.dumps([m for m in {SLOW!r} if m in sys.modules]))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    assert json.loads(done.stdout) == [], "bind it with tunelab.core.deferred (see its docstring)"


def test_commands_that_load_no_model_import_no_torch(tmp_path: Path) -> None:
    task = tmp_path / "task.yaml"
    task.write_text(yaml.safe_dump(task_yaml()))
    seen = run_fresh([("help", ["--help"]), ("tasks list", ["tasks", "list"]),
                      ("tasks validate", ["tasks", "validate", str(task)])], tmp_path)
    assert [s["loaded"] for s in seen] == [[], [], []]
    assert [s["code"] for s in seen] == [0, 0, 0], [s["err"] for s in seen]
    assert "movie_sentiment" in str(seen[1]["out"]) and "Suites" in str(seen[1]["out"])
    assert "{input}" not in str(seen[2]["out"]) and seen[2]["out"]  # a rendered prompt


def test_config_and_data_errors_of_train_come_before_torch(tiny_llama: Path, tmp_path: Path) -> None:
    """A bad value, an unknown key, a missing file, a malformed JSONL line and a missing column:
    one line, exit 2, and torch never imported."""
    config = {"name": "bad", "output_dir": str(tmp_path / "runs"), "model": {"name": str(tiny_llama)},
              "data": {"source": str(DATA / "reviews.jsonl"), "template": "chat",
                       "fields": {"input": "text", "output": "label"}, "test_size": 8,
                       "validation_size": 4},
              "method": {"name": "lora", "r": 4}, "train": {"max_steps": 2, "batch_size": 4},
              "eval": {"metrics": ["accuracy"], "labels": ["positive", "negative"]}}
    (tmp_path / "bad.jsonl").write_text('{"text": "a", "label": "positive"}\n{"text": "b", label}\n')

    def written(name: str, **changes: object) -> str:
        changed = json.loads(json.dumps(config))
        for dotted, value in changes.items():
            section, key = dotted.split("__")
            changed[section][key] = value
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(changed))
        return str(path)

    cases = [
        ("bad value", ["train", written("value", train__batch_size=0)],
         "train.batch_size 0: must be a whole number >= 1"),
        ("unknown key", ["train", written("key", train__batchsize=4)],
         "unknown option 'batchsize'; did you mean 'batch_size'?"),
        ("missing file", ["train", str(tmp_path / "nowhere.yaml")], "no such config file"),
        ("bad JSONL line", ["train", written("line", data__source=str(tmp_path / "bad.jsonl"))],
         "bad.jsonl:2: malformed JSON"),
        ("missing column", ["train", written("column", data__fields={"input": "text",
                                                                      "output": "label_text"})],
         "data.fields.output: column 'label_text' is in no row"),
    ]
    seen = run_fresh([(name, argv) for name, argv, _ in cases], tmp_path, TORCH)
    for (name, _, expect), got in zip(cases, seen, strict=True):
        lines = str(got["err"]).strip().splitlines()
        assert got["code"] == 2 and len(lines) == 1, (name, got)
        assert lines[0].startswith("tunelab: error: ") and expect in lines[0], (name, lines)
        assert got["loaded"] == [], (name, got["loaded"])
    assert not (tmp_path / "runs").exists()


def test_every_bad_input_found_without_a_model_is_found_before_torch(
        tiny_llama: Path, tmp_path: Path) -> None:
    """The whole corpus of tests/test_bad_inputs.py (but what needs a model, and `data
    inspect`, which loads the tokenizer it shows tokens with), in one process."""
    cases = []
    for n, case in enumerate(CASES):
        if case.loads_model or case.argv[:2] == ["data", "inspect"]:
            continue
        folder = tmp_path / str(n)
        folder.mkdir()
        write_files(case, folder, str(tiny_llama))
        cases.append((case.name, [fill(a, folder) for a in case.argv]))
    assert len(cases) >= 60
    seen = run_fresh(cases, tmp_path, TORCH)
    loaded = [(s["name"], s["loaded"]) for s in seen if s["loaded"]]
    assert loaded == [], f"found only after importing torch: {loaded}"
    assert [s["code"] for s in seen] == [2] * len(cases)


# ---- the deferred module itself ---------------------------------------------------------------

def test_every_deferred_name_is_a_module_imported_beside_it_for_mypy() -> None:
    """A misspelt `deferred("...")` would fail only when first used: each names a module, and
    the module binding it imports that module under TYPE_CHECKING (what mypy checks)."""
    source = Path(tunelab.__file__).parent
    found = []
    for path in source.rglob("*.py"):
        tree = ast.parse(path.read_text())
        names = [node.args[0].value for node in ast.walk(tree)
                 if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "deferred"
                 and node.args and isinstance(node.args[0], ast.Constant)]
        checked = set()  # every module the TYPE_CHECKING blocks import
        for block in ast.walk(tree):
            if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test):
                for node in ast.walk(block):
                    if isinstance(node, ast.Import):
                        checked |= {alias.name for alias in node.names}
                    elif isinstance(node, ast.ImportFrom):
                        checked |= {f"{node.module}.{alias.name}" for alias in node.names}
        for name in names:
            found.append(name)
            assert importlib.util.find_spec(name) is not None, f"{path}: {name}"
            assert name in checked, f"{path}: import {name} under TYPE_CHECKING too (for mypy)"
    assert "torch" in found and "tunelab.eval.generation" in found

@pytest.fixture()
def probe_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    (tmp_path / "deferred_probe.py").write_text("VALUE = 41\n\ndef double(x):\n    return 2 * x\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "deferred_probe", raising=False)
    return "deferred_probe"


def test_a_deferred_module_imports_at_its_first_attribute(probe_module: str,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    bound = deferred(probe_module)
    assert isinstance(bound, DeferredModule) and probe_module not in sys.modules
    assert "not imported yet" in repr(bound)
    assert bound.double(3) == 6 and probe_module in sys.modules
    real = sys.modules[probe_module]
    assert bound.double is real.double and "imported" in repr(bound)
    monkeypatch.setattr(real, "VALUE", 42)  # a test's patch of the module is seen through it
    assert bound.VALUE == 42
    with pytest.raises(AttributeError):
        _ = bound.missing

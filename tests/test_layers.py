"""The architecture holds: no choice compared by name outside its module, no import circles, no
layer importing a layer above it, and imports inside functions only for optional dependencies."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

SHAPE = Path(__file__).resolve().parent.parent / "scripts" / "shape"

# Imported inside a function on purpose, each for a reason that is not a circle.
OPTIONAL = {
    "tunelab.api": "`import tunelab` stays light; the API loads torch on first use",
    "tunelab.eval.harness": "lm-evaluation-harness is an optional extra",
    "lm_eval": "lm-evaluation-harness is an optional extra",
    "peft": "an old peft fails at import: tunelab checks the installed set first",
    "pyarrow": "only Parquet files need it",
    "datasets": "only `datasets` directories need it",
    "matplotlib": "only the sweep plot needs it",
    "mlflow": "train.report_to: mlflow, an optional extra (tunelab[trackers])",
    "llama_cpp": "llama-cpp-python (GGUF quantisation, the llama.cpp engine): tunelab[serve]",
    "uvicorn": "only `tunelab serve` starts a server (tunelab[serve])",
    "transformers.cli": "transformers' server: only `tunelab serve --engine transformers`",
}


def shape() -> ModuleType:
    loader = importlib.machinery.SourceFileLoader("shape", str(SHAPE))
    spec = importlib.util.spec_from_loader("shape", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def test_no_choice_is_compared_by_name_outside_its_module() -> None:
    found = shape().measure()
    assert found["kind"] == [], "compare model kinds in models/kinds.py only; ask the kind"
    assert found["output_type"] == [], "ask the output type (eval/output_types/) instead"


def test_layers_form_a_tree() -> None:
    found = shape().measure()
    assert found["circles"] == [] and found["hidden_circles"] == []
    assert found["back_arrows"] == []


def test_imports_inside_functions_are_for_optional_dependencies() -> None:
    found = shape().measure()
    assert found["inner_imports"], "the check must see the lazy imports it allows"
    for where in found["inner_imports"]:
        module = where.split()[-1]
        assert any(module == name or module.startswith(name + ".") for name in OPTIONAL), (
            f"{where}: import it at the top of the module (or add the optional dependency "
            "and why to OPTIONAL)")


def test_the_command_starts_without_torch() -> None:
    """`tunelab --help` and argument errors answer at once: the CLI loads the API on first use."""
    code = "import sys, tunelab.cli; sys.exit('torch' in sys.modules or 'transformers' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_the_check_finds_what_it_forbids(tmp_path: Path) -> None:
    """The measurement itself bites: a comparison, a circle and a back-arrow are reported."""
    module = shape()
    src = tmp_path / "tunelab"
    (src / "models").mkdir(parents=True)
    (src / "data").mkdir()
    (src / "__init__.py").write_text("")
    (src / "models" / "__init__.py").write_text("")
    (src / "data" / "__init__.py").write_text("")
    (src / "models" / "loader.py").write_text(
        "from tunelab.data import reader\n\ndef f(kind):\n    return kind == 'seq2seq'\n")
    (src / "data" / "reader.py").write_text(
        "def g(task):\n    from tunelab.models import loader\n"
        "    return task.output_type == 'generate'\n")
    module.ROOT = src
    module.MODULES.clear()
    found = module.measure()
    assert [re.sub(r":\d+", "", w) for w in found["kind"]] == ["models/loader.py"]
    assert [re.sub(r":\d+", "", w) for w in found["output_type"]] == ["data/reader.py"]
    assert found["back_arrows"] == ["tunelab.models.loader -> tunelab.data.reader"]
    assert found["hidden_circles"] == ["tunelab.data.reader <-> tunelab.models.loader"]
    assert found["circles"] == []  # the data -> models import hides in a function
    assert found["inner_imports"] == ["data/reader.py:2 tunelab.models.loader"]


def test_every_folder_is_one_layer_row() -> None:
    """scripts/shape has one layer row per folder of the package, so an import between two
    folders is always judged (data and its transforms are one folder: data/transforms)."""
    module = shape()
    rows = [prefix for row in module.LAYERS for prefix in row]
    package = Path(module.ROOT)
    folders = {"tunelab." + p.name for p in package.iterdir()
               if p.is_dir() and (p / "__init__.py").is_file()}
    assert folders == {r for r in rows if r.count(".") == 1 and r != "tunelab.__main__"}
    assert len(rows) == len(set(rows))


def test_the_second_half_of_the_path_has_homes() -> None:
    """No module loose at the top (the API is the api/ folder, the command the cli/ folder); run-directory paths and system labels only in runs/;
    class names, templates, sources and curriculum orders decided by their owners; one file
    name used twice at most (base.py: a method's and an output type's base)."""
    found = shape().measure_homes(Path(shape().ROOT))
    assert sorted(found["loose_modules"]) == []
    assert found["run_dir_literals"] == []
    assert found["system_strings"] == []
    assert found["name_choices"] == []
    assert len(found["repeated_names"]) <= 1, found["repeated_names"]


def test_the_homes_check_finds_what_it_forbids(tmp_path: Path) -> None:
    """Each count bites on a file that does what it forbids."""
    module = shape()
    src = tmp_path / "tunelab"
    (src / "eval").mkdir(parents=True)
    (src / "report").mkdir()
    (src / "runs").mkdir()
    for folder in (src, src / "eval", src / "report", src / "runs"):
        (folder / "__init__.py").write_text("")
    (src / "helpers.py").write_text("X = 1\n")
    (src / "eval" / "compare.py").write_text(
        "def f(run, k, model, task, order):\n"
        "    path = run / 'eval' / 'fine-tuned'\n"
        "    label = f'base {k}-shot'\n"
        "    if label.startswith('base'):\n"
        "        pass\n"
        "    if type(model).__name__.endswith('ForSequenceClassification'):\n"
        "        pass\n"
        "    if task.data.template == 'chat' or order == 'easy_to_hard':\n"
        "        pass\n"
        "    return path\n")
    (src / "report" / "compare.py").write_text("Y = 2\n")
    (src / "runs" / "run_dir.py").write_text("def p(root):\n    return root / 'eval'\n")
    found = module.measure_homes(src)
    assert found["loose_modules"] == ["helpers.py"]
    assert sorted(found["run_dir_literals"]) == ["eval/compare.py:2 eval",
                                                 "eval/compare.py:2 fine-tuned"]
    assert [w.split(":")[1] for w in found["system_strings"]] == ["3", "4"]
    assert sorted(w.split(" ", 1)[1] for w in found["name_choices"]) == [
        "class name", "curriculum", "template"]
    assert found["repeated_names"] == ["compare.py: eval/compare.py, report/compare.py"]


def test_every_any_and_ignore_says_why() -> None:
    """`Any` and `# type: ignore` only where a third-party type forces them, each with its
    reason on the line (`# Any: JSON from disk`; `# type: ignore[code]  # why`)."""
    found = shape().measure_types(Path(shape().ROOT))
    assert found["unexplained_any"] == [], (
        "give the real type, or say on the line why Any stays (# Any: reason)")


def test_the_any_check_finds_what_it_forbids(tmp_path: Path) -> None:
    """Each bare Any (annotation, quoted type, typing.Any) and each ignore without a reason is
    reported; imports and explained lines are not."""
    module = shape()
    src = tmp_path / "tunelab"
    src.mkdir()
    (src / "__init__.py").write_text("")
    (src / "loose.py").write_text(
        "import typing\n"
        "from typing import Any, TypeVar\n"
        "\n"
        "def f(x: Any) -> int:\n"
        "    return x  # type: ignore[no-any-return]\n"
        "\n"
        "def g(x: Any) -> None:  # Any: JSON from disk\n"
        "    y: typing.Any = x\n"
        "    z = x  # type: ignore[assignment]  # a reason\n"
        "\n"
        "T = TypeVar('T', bound='list[Any]')\n"
        "def h(rows: 'dict[str, Any]') -> None:  # passed on; Any: rows as read\n"
        "    pass\n"
        "ANY_NAME = 'Any'  # a string, not a type\n")
    found = module.measure_types(src)
    assert found["unexplained_any"] == ["loose.py:4 Any", "loose.py:8 Any", "loose.py:11 Any",
                                        "loose.py:5 type: ignore"]

"""Known-broken dependency sets are refused in one line; pyproject.toml leaves them out."""

from __future__ import annotations

from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from transformers import DistilBertConfig, DistilBertForSequenceClassification

from tunelab import cli
from tunelab.core import dependencies
from tunelab.core.dependencies import KNOWN_BREAKS, check_dependencies
from tunelab.core.errors import TunelabError
from tunelab.methods import get_method
from tunelab.methods.base import parse_options
from tunelab.models.kinds import CLASSIFIER

ROOT = Path(__file__).parent.parent
tomllib = pytest.importorskip(
    "tomllib", reason="tomllib is in the standard library from Python 3.11; this is 3.10")


def fake(versions: dict[str, str]):
    return lambda package: versions.get(package)


@pytest.mark.parametrize("known", KNOWN_BREAKS, ids=lambda k: f"{k.package}{k.versions}")
def test_each_measured_break_is_refused_in_one_line_naming_the_releases_and_the_fix(known) -> None:
    mine, theirs = known.measured
    with pytest.raises(TunelabError) as caught:
        check_dependencies(fake({known.package: mine, known.other: theirs}))
    message = str(caught.value)
    assert "\n" not in message
    assert f"{known.package} {mine} with {known.other} {theirs}" in message
    assert "fix: pip install" in message


def test_working_and_unrelated_sets_pass() -> None:
    check_dependencies()  # the installed set (the suite runs on it)
    # Each passing set next to the release that breaks, so a check that never raises fails here.
    for works, breaks in [({"peft": "0.21.2", "transformers": "5.24.0"}, {"peft": "0.21.1"}),
                          ({"peft": "0.17.1", "transformers": "4.57.1"},  # not a known break
                           {"transformers": "5.0.0"})]:
        check_dependencies(fake(works))
        with pytest.raises(TunelabError, match="fix: pip install"):
            check_dependencies(fake({**works, **breaks}))
    check_dependencies(fake({"transformers": "5.24.0"}))  # peft not installed: nothing to say


@pytest.mark.parametrize("known", KNOWN_BREAKS, ids=lambda k: f"{k.package}{k.versions}")
def test_pyproject_ranges_leave_out_every_measured_break(known) -> None:
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    specs = {Requirement(line).name: Requirement(line).specifier for line in declared}
    mine, theirs = known.measured
    assert specs[known.other].contains(theirs), f"{known.other} {theirs} should stay allowed"
    assert not specs[known.package].contains(mine), f"pyproject allows {known.package} {mine}"


def test_cli_refuses_a_broken_set_with_exit_2_and_one_line(monkeypatch, capsys) -> None:
    monkeypatch.setattr(dependencies, "installed_version",
                        fake({"peft": "0.21.1", "transformers": "5.23.0"}))
    assert cli.main(["tasks", "list"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("tunelab: error: peft 0.21.1 with transformers 5.23.0: peft cannot wrap")
    assert "\n" not in err


def test_prefix_tuning_refuses_a_model_without_a_key_value_cache() -> None:
    model = DistilBertForSequenceClassification(DistilBertConfig(
        vocab_size=64, dim=16, hidden_dim=32, n_layers=1, n_heads=2, max_position_embeddings=32))
    prefix = get_method("prefix")
    with pytest.raises(TunelabError, match=r"method \(prefix\): DistilBertForSequenceClassification "
                                           r"takes no key/value cache.*use prompt, lora or ia3"):
        prefix.apply(model, parse_options(prefix, {"num_virtual_tokens": 2}), CLASSIFIER)


def test_constraints_lock_every_direct_dependency_to_one_release() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    direct = project["dependencies"] + [line for extra in project["optional-dependencies"].values()
                                        for line in extra]
    locked = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            requirement = Requirement(line)
            assert str(requirement.specifier).startswith("=="), f"constraints.txt: {line} is no pin"
            locked[canonicalize_name(requirement.name)] = str(requirement.specifier)
    missing = {canonicalize_name(Requirement(d).name) for d in direct} - set(locked)
    assert not missing, f"constraints.txt does not lock {sorted(missing)}"
    for name in ("torch", "transformers", "peft", "tokenizers", "huggingface-hub"):
        assert name in locked, name  # the releases that broke fresh installs before

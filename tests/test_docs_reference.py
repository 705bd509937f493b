"""The options reference (docs/reference/config/*.md, docs/reference/methods.md) documents
exactly the options the config reader accepts, each with its help text."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from tunelab.config import RunConfig, TaskConfig, from_dict, to_dict
from tunelab.config.choices import COUNT, Range
from tunelab.config.reading import dataclass_item
from tunelab.config.reference import field_docs, option_entries, options_page
from tunelab.core.errors import TunelabError

ROOT = Path(__file__).resolve().parent.parent
CONFIG_PAGES = ROOT / "docs" / "reference" / "config"
HEADING = re.compile(r"^#{3,4} `([^`]+)`$", re.M)


def documented(page: Path) -> set[str]:
    return set(HEADING.findall(page.read_text(encoding="utf-8")))


def accepted(cls: type, prefix: str = "") -> set[str]:
    """Every option path of ``cls`` as the reader walks it, found here independently of the
    page generator."""
    hints = typing.get_type_hints(cls)
    names = set()
    for f in dataclasses.fields(cls):
        if f.metadata.get("internal"):
            continue
        name, hint = prefix + f.name, hints[f.name]
        names.add(name)
        if isinstance(hint, type) and dataclasses.is_dataclass(hint):
            names |= accepted(hint, name + ".")
        elif dataclass_item(hint) is not None:
            names |= accepted(dataclass_item(hint), name + "[].")  # type: ignore[arg-type]
    return names


def test_pages_are_up_to_date_with_the_code() -> None:
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "docs-reference"), "--check"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr


def test_documented_options_are_exactly_the_accepted_ones() -> None:
    pages = {p.stem: documented(p) for p in CONFIG_PAGES.glob("*.md")}
    run_options = set().union(*(v for k, v in pages.items() if k != "task-files"))
    sections = {name for name in accepted(RunConfig) if "." not in name
                and any(other.startswith((name + ".", name + "[].")) for other in accepted(RunConfig))}
    assert sections <= set(pages)  # a page per section
    assert run_options == accepted(RunConfig) - {"method"} - sections
    assert pages["task-files"] == accepted(TaskConfig)
    assert len(run_options) > 100  # the walk found the nested sections too


def nested(path: str, value: object) -> dict[str, object]:
    """{'a': {'b': value}} for 'a.b'; a list section ('tasks[].x') gets one item."""
    head, _, rest = path.partition(".")
    inner: object = nested(rest, value) if rest else value
    if head.endswith("[]"):
        return {head[:-2]: [inner]}
    return {head: inner}


@pytest.mark.parametrize("cls, page", [(RunConfig, "index"), (RunConfig, "data"),
                                       (RunConfig, "tasks"), (RunConfig, "mixture"),
                                       (TaskConfig, "task-files")])
def test_every_documented_option_is_read(cls: type, page: str) -> None:
    """Each documented option, set to its documented default, passes the real reader (a
    section as an empty mapping); a name the pages do not hold is refused."""
    text = (CONFIG_PAGES / f"{page}.md").read_text(encoding="utf-8")
    blocks = re.findall(r"^### `([^`]+)`\n\n\*([^*]+)\*(?: · default `([^`]*)`)?", text, re.M)
    assert blocks
    for name, kind, default in blocks:
        value: object = {} if kind == "section" else [] if kind == "list of sections" else None
        if default and default != "unset" and value is None:
            value = __import__("yaml").safe_load(default)
        raw = nested(name, value)
        if page == "tasks":  # a task list item needs the task's own data to be checked later
            raw["tasks"][0].setdefault("name", "a")  # type: ignore[index,union-attr]
        from_dict(cls, raw, "config")
    with pytest.raises(TunelabError, match="unknown|not an option|no option"):
        from_dict(cls, nested(blocks[0][0] + "_misspelt", 1), "config")


def test_every_option_has_help_text() -> None:
    from tunelab.methods import METHODS
    entries = option_entries(RunConfig) + option_entries(TaskConfig)
    for method in METHODS.values():
        entries += option_entries(method.options_type, "method.")
    assert [e.name for e in entries if not e.help] == []


def test_methods_page_lists_every_method_and_option() -> None:
    from tunelab.methods import METHODS
    text = (ROOT / "docs" / "reference" / "methods.md").read_text(encoding="utf-8")
    for name, method in METHODS.items():
        section = text.split(f"## `{name}`\n", 1)[1].split("\n## `", 1)[0]
        names = {f"method.{f.name}" for f in dataclasses.fields(method.options_type)}
        assert names <= documented_in(section), name


def documented_in(text: str) -> set[str]:
    return set(HEADING.findall(text))


def test_a_task_file_path_is_no_option() -> None:
    """`origin` is set by tunelab when it reads a task file: refused in one, not written."""
    with pytest.raises(TunelabError, match="origin"):
        from_dict(TaskConfig, {"origin": "x.yaml"}, "task.yaml")
    task = TaskConfig()
    task.origin = "x.yaml"
    assert "origin" not in to_dict(task)
    assert from_dict(TaskConfig, to_dict(task), "again") == task


@dataclass
class _Inner:
    share: float = 0.5
    """How much."""


@dataclass
class _Example:
    limits: typing.ClassVar[dict[str, Range]] = {"count": COUNT}
    count: int = 3
    """How many.

    Over two paragraphs."""
    mode: Literal["a", "b"] | None = None
    undocumented: bool = False
    inner: _Inner = field(default_factory=_Inner)
    """The inner part."""
    items: list[_Inner] = field(default_factory=list)
    """Several inner parts."""
    hidden: str = field(default="", metadata={"internal": True})
    """Set by the code."""


def test_entries_from_a_dataclass() -> None:
    assert field_docs(_Example)["count"] == "How many.\n\nOver two paragraphs."
    assert field_docs(_Example)["undocumented"] == ""
    entries = {e.name: e for e in option_entries(_Example, "x.")}
    assert list(entries) == ["x.count", "x.mode", "x.undocumented", "x.inner", "x.inner.share",
                             "x.items", "x.items[].share"]
    assert entries["x.count"].default == "3" and entries["x.count"].allowed == "a whole number >= 1"
    assert entries["x.mode"].choices == ("a", "b") and entries["x.mode"].default == "unset"
    assert entries["x.mode"].type == "choice or unset"
    assert entries["x.inner"].section and entries["x.inner"].help == "The inner part."
    page = options_page("x", "intro", list(entries.values()))
    assert "### `x.count`\n\n*int, a whole number >= 1* · default `3`\n\nHow many." in page
    assert "*choice or unset: `a`, `b`* · default `unset`" in page
    assert "x.hidden" not in page

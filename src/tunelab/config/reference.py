"""The options reference, written from the config dataclasses themselves.

Every option is a dataclass field and its help text is the string under it (an attribute
docstring, read from the source with :mod:`ast`: Python keeps no such string at run time).
:func:`option_entries` walks a dataclass the way :func:`tunelab.config.reading.from_dict`
reads one: a dataclass field is a nested section (``data.augment.share``), a list of
dataclasses a list of mappings (``tasks[].name``); :func:`options_page` renders the entries as
one Markdown page. ``scripts/docs-reference`` writes the pages under docs/reference/ and
tests/test_docs_reference.py fails when a page differs from what the code accepts.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import json
import textwrap
import typing
from dataclasses import dataclass

from tunelab.config.choices import choices_of
from tunelab.config.reading import dataclass_item, option_fields


@dataclass(frozen=True)
class OptionEntry:
    """One accepted option: its dotted name, type, default and help text."""

    name: str
    type: str
    default: str | None
    """The default as YAML would write it; None for a nested section."""
    help: str
    choices: tuple[str, ...] | None = None
    allowed: str | None = None
    """The range a number must lie in (the class's ``limits``), e.g. 'a whole number >= 1'."""
    section: bool = False
    """A nested section or list of sections (its options follow as their own entries)."""


@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """Each field's attribute docstring (the string literal right under it) in ``cls`` and
    its dataclass bases; a field without one maps to ''."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
        for node, following in zip(body, [*body[1:], None], strict=True):
            if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                text = ""
                if (isinstance(following, ast.Expr) and isinstance(following.value, ast.Constant)
                        and isinstance(following.value.value, str)):
                    text = inspect.cleandoc(following.value.value)
                docs[node.target.id] = text
    return docs


def _yaml(value: object) -> str:
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)


def _type_name(hint: object) -> str:
    if choices_of(hint) is not None:
        return "choice" + (" or unset" if type(None) in typing.get_args(hint) else "")
    text = hint.__name__ if isinstance(hint, type) else str(hint)
    return text.replace("typing.", "").replace("NoneType", "None")


def option_entries(cls: type, prefix: str = "") -> list[OptionEntry]:
    """Every option of dataclass ``cls`` under ``prefix``, nested sections after their own
    entry, in source order."""
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    limits = getattr(cls, "limits", {})
    entries: list[OptionEntry] = []
    for f in option_fields(cls):
        name = f"{prefix}{f.name}"
        hint = hints[f.name]
        item = dataclass_item(hint)
        if isinstance(hint, type) and dataclasses.is_dataclass(hint):
            entries.append(OptionEntry(name, "section", None, docs[f.name], section=True))
            entries += option_entries(hint, f"{name}.")
        elif item is not None:
            entries.append(OptionEntry(name, "list of sections", "[]", docs[f.name], section=True))
            entries += option_entries(item, f"{name}[].")
        else:
            if f.default is not dataclasses.MISSING:
                default: object = f.default
            elif f.default_factory is not dataclasses.MISSING:
                default = f.default_factory()
            else:
                default = None
            limit = limits.get(f.name)
            entries.append(OptionEntry(name, _type_name(hint), _yaml(default), docs[f.name],
                                       choices_of(hint), limit.describe() if limit else None))
    return entries


def options_page(title: str, intro: str, entries: list[OptionEntry]) -> str:
    """A Markdown page: the title, the intro and one heading per option (its anchor is the
    option's name), with type, default and help text."""
    lines = [f"# {title}", "", intro.strip(), ""]
    for entry in entries:
        lines += [f"### `{entry.name}`", ""]
        if entry.section:
            lines += [f"*{entry.type}*", ""]
        else:
            kind = entry.type
            if entry.choices:
                kind += ": " + ", ".join(f"`{c}`" for c in entry.choices)
            if entry.allowed:
                kind += f", {entry.allowed}"
            lines += [f"*{kind}* · default `{entry.default}`", ""]
        if entry.help:
            lines += [entry.help, ""]
    return "\n".join(lines).rstrip() + "\n"

"""Open-ended prompts that name a group (group_prompts.yaml, or a file of the same shape): per
axis (gender, race, religion, ...), one prompt per template and group, aligned so that a
template's prompts differ only in the group's terms.

Read and checked before any model loads: an unknown axis, a group without a slot its axis's
templates use, a template with an unknown slot or an empty axis is a one-line error naming
the file, the axis and the group.
"""

from __future__ import annotations

import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from tunelab.core.errors import TunelabError

BUILTIN = Path(__file__).with_name("group_prompts.yaml")


@dataclass(frozen=True)
class GroupPrompt:
    axis: str
    group: str
    template: int
    """The template's index in its axis: the key that pairs prompts across groups."""
    text: str
    terms: tuple[str, ...]
    """The group's slot values (a scorer does not count them against the completion)."""


@dataclass(frozen=True)
class Axis:
    name: str
    templates: tuple[str, ...]
    groups: dict[str, dict[str, str]]
    """group -> slot -> value."""

    def prompts(self) -> list[GroupPrompt]:
        """Every group's prompt of every template (template-major: aligned by index)."""
        return [GroupPrompt(self.name, group, index, fill(template, slots),
                            tuple(slots.values()))
                for index, template in enumerate(self.templates)
                for group, slots in self.groups.items()]


def fill(template: str, slots: Mapping[str, str]) -> str:
    """The template with its slots filled; {Slot} capitalises the value's first letter."""
    values = dict(slots)
    values.update({k[:1].upper() + k[1:]: v[:1].upper() + v[1:] for k, v in slots.items()})
    return template.format(**values)


def slots_of(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name}


def read_axes(names: Sequence[str] | None = None, path: str | Path | None = None,
              option: str = "--groups") -> list[Axis]:
    """The axes `names` (default: all) of the prompt file (default: the built-in one).

    Raises:
        TunelabError: an unreadable file, an unknown axis, a group lacking a slot its
            templates use (see the module docstring).
    """
    source = Path(path) if path is not None else BUILTIN
    try:
        data = yaml.safe_load(source.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TunelabError(f"{source}: no such prompt file; give a YAML file shaped like "
                           f"{BUILTIN.name} (templates, axes: NAME: groups)") from None
    except yaml.YAMLError as err:
        raise TunelabError(f"{source}: not valid YAML ({str(err).splitlines()[0]}); fix the "
                           "file") from None
    if not isinstance(data, dict) or not isinstance(data.get("axes"), dict) or not data["axes"]:
        raise TunelabError(f"{source}: no 'axes' mapping (axis -> groups); see {BUILTIN}")
    shared = _strings(data.get("templates") or [], f"{source}: templates")
    axes = {str(name): _axis(str(name), body, shared, source)
            for name, body in data["axes"].items()}
    chosen = list(names) if names else list(axes)
    unknown = [n for n in chosen if n not in axes]
    if unknown:
        raise TunelabError(f"{option} {','.join(unknown)}: no such axis in {source}; choose from "
                           f"{', '.join(axes)}")
    return [axes[n] for n in dict.fromkeys(chosen)]


def _axis(name: str, body: object, shared: list[str], source: Path) -> Axis:
    where = f"{source}: axis {name}"
    if not isinstance(body, dict) or not isinstance(body.get("groups"), dict):
        raise TunelabError(f"{where}: no 'groups' mapping (group -> slot values); see {BUILTIN}")
    templates = shared + _strings(body.get("templates") or [], f"{where}: templates")
    groups: dict[str, dict[str, str]] = {}
    for group, slots in body["groups"].items():
        if not isinstance(slots, dict) or not all(isinstance(v, str) and v.strip()
                                                  for v in slots.values()):
            raise TunelabError(f"{where}, group {group}: give its slot values as a mapping of "
                               "non-empty texts, e.g. {person: the nurse, people: nurses}")
        groups[str(group)] = {str(k): str(v) for k, v in slots.items()}
    if len(groups) < 2:
        raise TunelabError(f"{where}: {len(groups)} group(s); an axis compares 2 or more")
    if not templates:
        raise TunelabError(f"{where}: no templates; add some under 'templates'")
    for template in templates:
        for slot in sorted(slots_of(template)):
            base = slot[:1].lower() + slot[1:]
            for group, slots in groups.items():
                if base not in slots:
                    raise TunelabError(f"{where}, group {group}: no '{base}' for the template "
                                       f"{template!r}; give the group a {base}, or move the "
                                       "template under the axes whose groups have one")
    return Axis(name, tuple(templates), groups)


def _strings(value: object, where: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise TunelabError(f"{where}: give a list of non-empty texts")
    return [str(v) for v in value]

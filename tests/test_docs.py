"""The front page and the guides: a short README with the two set-up commands CI runs, a guide
one click from it for each task, and no figure in a guide that its script did not write."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
GUIDES = ROOT / "docs" / "guides"
SNIPPET = re.compile(r'^\s*--8<-- "([^"]+)"\s*$', re.M)
FIGURE = re.compile(r"(?<![\w.])[-+]?\d+\.\d+%?|(?<![\w.])\d+%")
FENCE = re.compile(r"^\s*(```|~~~).*?^\s*\1\s*$", re.M | re.S)


def nav_guides() -> list[str]:
    config = yaml.load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"), Loader=yaml.BaseLoader)
    section = next(item["Guides"] for item in config["nav"] if "Guides" in item)
    pages = [entry if isinstance(entry, str) else next(iter(entry.values())) for entry in section]
    return [p for p in pages if p != "guides/index.md"]


def guide_pages() -> list[Path]:
    return [ROOT / "docs" / page for page in nav_guides()]


def test_readme_is_a_front_page_with_the_commands_ci_runs() -> None:
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 250
    commands = re.findall(r"```bash\n(.+?)\n```", text)
    assert commands[0].endswith("&& tunelab quickstart")
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert commands[1] in ci  # the test command, as CI runs it
    assert "mkdocs build --strict" in ci


def test_every_guide_is_one_click_from_the_front_page() -> None:
    readme = README.read_text(encoding="utf-8")
    home = (ROOT / "docs" / "index.md").read_text(encoding="utf-8")
    guides = nav_guides()
    assert len(guides) >= 15
    for page in guides:
        assert f"](docs/{page})" in readme, page
        assert f"]({page})" in home, page
    assert sorted(p.name for p in GUIDES.glob("*.md")) == sorted(
        [Path(p).name for p in guides] + ["index.md"])


def test_readme_links_resolve() -> None:
    readme = README.read_text(encoding="utf-8")
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", readme):
        if not target.startswith(("http://", "https://")):
            assert (ROOT / target).exists(), target


def included(page: Path) -> str:
    texts = []
    for spec in SNIPPET.findall(page.read_text(encoding="utf-8")):
        path, _, _ = spec.partition(":")
        texts.append((ROOT / path).read_text(encoding="utf-8"))
    return "\n".join(texts)


@pytest.mark.parametrize("page", guide_pages(), ids=lambda p: p.stem)
def test_a_guide_shows_only_figures_its_scripts_wrote(page: Path) -> None:
    text = page.read_text(encoding="utf-8")
    assert "TODO" not in text
    sources = included(page)
    assert sources, "a guide includes the output of the script that produced it"
    scripts = re.findall(r"\b((?:examples|benchmarks)/[\w./-]+)", text)
    assert any((ROOT / s.rstrip(".")).is_file() for s in scripts), "names its script"
    typed = typed_figures(text, sources)
    assert typed == [], f"figures in {page.name} that no included file holds: {typed}"


def typed_figures(text: str, sources: str) -> list[str]:
    """The decimal numbers and percentages of a page's prose (not its code, its inline code or
    its links) that no included file holds."""
    prose = FENCE.sub("", SNIPPET.sub("", text))
    prose = re.sub(r"`[^`]*`", "", prose)  # option values and commands are inputs, not figures
    prose = re.sub(r"\]\([^)]*\)", "]", prose)
    return [f for f in FIGURE.findall(prose) if f.lstrip("+-").rstrip("%") not in sources]


def test_the_figure_check_catches_a_typed_number() -> None:
    page = ('Accuracy rose to 76.67, then 80.00, by 12% (`lr=2.5e-4`, [x](a/1.5.md)).\n\n'
            '```text\nloss 9.99\n```\n\n--8<-- "out.txt"\n')
    assert typed_figures(page, "accuracy 76.67, 12 of 100\n") == ["80.00"]

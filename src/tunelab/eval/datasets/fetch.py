"""`tunelab data fetch bigbench`: BIG-bench's task files from its PyPI sdist, once.

BIG-bench's data ships inside the `bigbench==1.0.0` source distribution on PyPI (358 MB).
It is downloaded with pip (`pip download --no-deps`), kept in $TUNELAB_CACHE/bigbench, and only
the requested tasks' data files are extracted next to it (by default the ones tunelab's
built-in tasks use). pip >= 26 refuses to prepare this sdist's metadata (it declares a
direct-URL dependency), so another pip found on PATH is tried next; `--sdist FILE` uses a
tarball fetched any other way.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

from tunelab.config import load_yaml
from tunelab.core.errors import TunelabError
from tunelab.core.paths import bigbench_dir
from tunelab.data import source_scheme
from tunelab.eval.datasets.bigbench import task_file
from tunelab.eval.tasks import BUILTIN_TASK_DIR

BIGBENCH_SPEC = "bigbench==1.0.0"
SDIST_NAME = "bigbench-1.0.0.tar.gz"
TASKS_IN_SDIST = "bigbench/benchmark_tasks/"
COMPANIONS = {"bbq_lite_json": ["bbq_lite/resources"]}
"""Folders a task's readers need beside its task.json files (every file in them is extracted):
BBQ-lite's answer metadata says which answer is the stereotyped group."""


@dataclass
class FetchResult:
    sdist: Path
    target: Path
    extracted: list[str] = field(default_factory=list)
    """Relative paths written under `target`."""


def builtin_bigbench_tasks() -> list[str]:
    """The BIG-bench tasks the built-in task files read (bigbench:NAME sources)."""
    names = set()
    for path in BUILTIN_TASK_DIR.glob("*.yaml"):
        source = str((load_yaml(path).get("data") or {}).get("source", ""))
        task = source_scheme(source).fetched_task(source)
        if task:
            names.add(task)
    return sorted(names)


def _pip_commands() -> list[list[str]]:
    """This interpreter's pip, then every other python3/python on PATH (an older pip works)."""
    commands = [[sys.executable, "-m", "pip"]]
    seen = {Path(sys.executable).resolve()}
    for folder in os.environ.get("PATH", "").split(os.pathsep):
        for name in ("python3", "python"):
            found = shutil.which(name, path=folder)
            if found and Path(found).resolve() not in seen:
                seen.add(Path(found).resolve())
                commands.append([found, "-m", "pip"])
    return commands


def download_sdist(directory: Path) -> Path:
    """`pip download --no-deps bigbench==1.0.0` into directory (skipped when already there)."""
    sdist = directory / SDIST_NAME
    if sdist.is_file():
        return sdist
    directory.mkdir(parents=True, exist_ok=True)
    errors = []
    for pip in _pip_commands():
        print(f"tunelab: {' '.join(pip)} download --no-deps {BIGBENCH_SPEC} (358 MB, once)")
        done = subprocess.run([*pip, "download", "--no-deps", BIGBENCH_SPEC, "-d", str(directory)],
                              capture_output=True, text=True)
        if done.returncode == 0 and sdist.is_file():
            return sdist
        lines = [line for line in (done.stderr or done.stdout).splitlines() if line.strip()]
        errors.append(f"{pip[0]}: {lines[-1] if lines else 'failed'}")
    raise TunelabError(
        f"could not download {BIGBENCH_SPEC} with pip ({'; '.join(errors)}); download "
        f"{SDIST_NAME} another way (e.g. pip<26 download --no-deps {BIGBENCH_SPEC}) and pass --sdist FILE"
    )


def fetch_bigbench(tasks: list[str] | None = None, sdist: str | Path | None = None,
                   every_task: bool = False) -> FetchResult:
    """Extract the data files of `tasks` (default: the built-in tasks' ones) into the cache.

    Args:
        tasks: BIG-bench task names (a top-level name takes all its subtasks).
        sdist: a local bigbench-1.0.0.tar.gz instead of downloading it.
        every_task: extract every JSON task (about 1.7 GB).
    """
    target = bigbench_dir()
    archive = Path(sdist).expanduser() if sdist else download_sdist(target)
    if not archive.is_file():
        raise TunelabError(f"--sdist {archive}: no such file")
    wanted = tasks or builtin_bigbench_tasks()
    prefixes = [task_file(t).removesuffix("/task.json") if task_file(t).endswith("/task.json")
                else task_file(t) for t in wanted]
    companions = [folder for t in wanted for folder in COMPANIONS.get(t.strip("/"), [])]
    result = FetchResult(archive, target)
    root = target.resolve()
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar:
                _, _, rel = member.name.partition(TASKS_IN_SDIST)
                if not rel or not member.isfile() or not (
                        _wanted(rel, prefixes, every_task)
                        or any(rel.startswith(c + "/") for c in companions)):
                    continue
                out = target / rel
                if not out.resolve().is_relative_to(root):  # "../" or an absolute name
                    raise TunelabError(
                        f"{archive}: member {member.name!r} would land outside {target}; "
                        "refusing this archive (nothing was written outside the cache); "
                        "fetch the sdist from PyPI again")
                handle = tar.extractfile(member)
                assert handle is not None
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_bytes(handle.read())
                result.extracted.append(rel)
    except (tarfile.TarError, OSError) as err:
        raise TunelabError(f"{archive}: cannot read the BIG-bench sdist ({err}); delete it and "
                           "fetch again") from None
    missing = [t for t, p in zip(wanted, prefixes, strict=True)
               if not any(r == p or r.startswith(p + "/") for r in result.extracted)]
    if missing and not every_task:
        raise TunelabError(f"BIG-bench has no task '{missing[0]}' with JSON data; task names are "
                           f"folder names under {TASKS_IN_SDIST}, e.g. logical_deduction")
    return result


def _wanted(rel: str, prefixes: list[str], every_task: bool) -> bool:
    if every_task:
        return rel.endswith("task.json")
    for prefix in prefixes:
        if rel == prefix:
            return True
        if rel.startswith(prefix + "/") and rel.endswith("task.json"):
            return True
    return False

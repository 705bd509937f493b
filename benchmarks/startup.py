"""Command start-up: how long a command that loads no model takes, as a new user runs it.

Each command runs as its own process (`python -m tunelab.cli ...`, what the `tunelab` script
runs), best of --repeat; the figures include the interpreter's start. `--src DIR` times another
checkout's `src` (e.g. the commit before: `git archive HEAD~1 src | tar -x -C /tmp/before`).
Prints a Markdown table with the CPU and the load average (other jobs slow every figure).

    python benchmarks/startup.py [--repeat 3] [--src /tmp/before/src]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from printed import add_out_option, tee_stdout

from tunelab.core.machine import cpu_summary

DATA = Path(__file__).resolve().parent.parent / "tests" / "data" / "reviews.jsonl"


def configs(folder: Path) -> dict[str, list[str]]:
    """The commands timed, by label: each a `tunelab` argv."""
    config = {"name": "startup", "output_dir": str(folder / "runs"), "model": {"name": "smollm2-135m"},
              "data": {"source": str(DATA), "template": "chat",
                       "fields": {"input": "text", "output": "label"}},
              "method": {"name": "lora"}, "train": {"max_steps": 2},
              "eval": {"metrics": ["accuracy"], "labels": ["positive", "negative"]}}

    def written(name: str, section: str, key: str, value: object) -> str:
        changed = yaml.safe_load(yaml.safe_dump(config))
        changed[section][key] = value
        (folder / f"{name}.yaml").write_text(yaml.safe_dump(changed))
        return str(folder / f"{name}.yaml")

    (folder / "bad.jsonl").write_text('{"text": "a", "label": "positive"}\n{"text": "b", label}\n')
    return {
        "tunelab --help": ["--help"],
        "tunelab tasks list": ["tasks", "list"],
        "tunelab train: a bad value (train.batch_size 0)":
            ["train", written("value", "train", "batch_size", 0)],
        "tunelab train: a missing config file": ["train", str(folder / "nowhere.yaml")],
        "tunelab train: a malformed JSONL line":
            ["train", written("line", "data", "source", str(folder / "bad.jsonl"))],
        "tunelab train: a missing column (data.fields)":
            ["train", written("column", "data", "fields", {"input": "text", "output": "label_text"})],
    }


def timed(argv: list[str], env: dict[str, str], repeat: int) -> tuple[float, int, str]:
    """Best wall-clock seconds of `repeat` runs, the exit code and the first line of stderr."""
    best, code, said = float("inf"), 0, ""
    for _ in range(repeat):
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "tunelab.cli", *argv], env=env,
                              capture_output=True, text=True, check=False)
        best = min(best, time.perf_counter() - start)
        code, said = done.returncode, (done.stderr.strip().splitlines() or [""])[0]
    return best, code, said


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--src", help="time this source tree instead of the installed tunelab")
    add_out_option(parser)
    args = parser.parse_args()
    tee_stdout(args.out)
    env = dict(os.environ, TUNELAB_CACHE=os.environ.get("TUNELAB_CACHE", tempfile.mkdtemp()))
    if args.src:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [args.src, env.get("PYTHONPATH")]))
    print(f"CPU: {cpu_summary()}; load average before: {os.getloadavg()[0]:.2f}; "
          f"best of {args.repeat}; source: {args.src or 'installed tunelab'}\n")
    print("| command | exit | seconds | says |\n|---|---|---|---|")
    with tempfile.TemporaryDirectory() as folder:
        for label, argv in configs(Path(folder)).items():
            seconds, code, said = timed(argv, env, args.repeat)
            said = said.replace(folder, "DIR").replace("|", "\\|")
            print(f"| {label} | {code} | {seconds:.2f} | {said[:90]} |", flush=True)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import torch, transformers"], check=True)
    print(f"\nfor scale: `import torch, transformers` alone: {time.perf_counter() - start:.2f} s")


if __name__ == "__main__":
    main()

"""BIG-bench's JSON tasks (task.json) and the SQuAD v1.1 JSON layout.

A task.json holds `examples` with an `input` and either `target_scores` ({choice: score}, a
multiple-choice item whose gold choices have the highest score) or `target` (a text or a list
of acceptable texts, for generation). Prompts are formatted as BIG-bench formats them:

    example_input_prefix + input [+ choice_prefix + choice ...] + example_output_prefix

with BIG-bench's defaults ("\\nQ: ", "\\nA: ", "\\n  choice: ", choices appended unless
append_choices_to_input is false, shuffled with BIG-bench's seed); `task_prefix` is the
preamble and `few_shot_example_separator` the separator between shots. Duplicate examples are
dropped, as BIG-bench drops them. The files live in $TUNELAB_CACHE/bigbench after
`tunelab data fetch bigbench`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from tunelab.config import DataConfig
from tunelab.data import Record
from tunelab.errors import TunelabError
from tunelab.eval.datasets.common import TaskData, choice_record, seeded_splits
from tunelab.models.builtin import cache_dir

BIGBENCH_SEED = 42
"""BIG-bench's default random seed (it orders the choices appended to an input)."""
SPECIAL_FILES = {
    "truthful_qa": "truthful_qa/task_mc.json",
    "squad_shifts/squaddev": "squad_shifts/squaddev_v1.1.json",
    "squad_shifts/amazon_reviews": "squad_shifts/amazon_reviews_v1.0.json",
    "squad_shifts/nyt": "squad_shifts/nyt_v1.0.json",
    "squad_shifts/reddit": "squad_shifts/reddit_v1.0.json",
    "squad_shifts/new_wiki": "squad_shifts/new_wiki_v1.0.json",
}
"""Tasks whose data is not a plain NAME/task.json."""


def bigbench_dir() -> Path:
    return cache_dir() / "bigbench"


def task_file(name: str) -> str:
    """The file (relative to the BIG-bench task folder) that holds task `name`."""
    return SPECIAL_FILES.get(name.strip("/"), f"{name.strip('/')}/task.json")


def read_bigbench(name: str, config: DataConfig) -> TaskData:
    """bigbench:NAME from the fetched BIG-bench files."""
    path = bigbench_dir() / task_file(name)
    if not path.is_file():
        raise TunelabError(
            f"data.source 'bigbench:{name}': {path} is missing; run: tunelab data fetch "
            f"bigbench --task {name.split('/')[0]}  (downloads bigbench==1.0.0 from PyPI once)"
        )
    if name.startswith("squad_shifts"):
        return read_squad_file(str(path), config)
    return read_bigbench_file(str(path), config)


def _load_json(path: Path) -> Any:
    if not path.is_file():
        raise TunelabError(f"{path}: no such file; check data.source")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise TunelabError(f"{path}:{err.lineno}: malformed JSON ({err.msg})") from None


def read_bigbench_file(path_text: str, config: DataConfig) -> TaskData:
    """A task.json in BIG-bench's format, split by data.test_size / validation_size."""
    path = Path(path_text).expanduser()
    data = _load_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("examples"), list):
        raise TunelabError(f"{path}: not a BIG-bench task.json (no 'examples' list); "
                           "a task with subtasks names them as bigbench:TASK/SUBTASK")
    records = parse_task(data, str(path))
    return TaskData(seeded_splits(records, config, str(path)),
                    preamble=str(data.get("task_prefix", "")),
                    separator=str(data.get("few_shot_example_separator", "\n")))


def parse_task(data: dict[str, Any], where: str) -> list[Record]:
    """Records from a task.json's examples (duplicates dropped, BIG-bench's formatting)."""
    input_prefix = str(data.get("example_input_prefix", "\nQ: "))
    output_prefix = str(data.get("example_output_prefix", "\nA: "))
    choice_prefix = str(data.get("choice_prefix", "\n  choice: "))
    append_choices = bool(data.get("append_choices_to_input", True))
    seen: set[str] = set()
    records = []
    for i, example in enumerate(data["examples"]):
        origin = f"{where} example {i}"
        key = json.dumps(example, sort_keys=True)
        if key in seen:
            continue
        seen.add(key)
        if not isinstance(example, dict) or "input" not in example:
            raise TunelabError(f"{origin}: an example needs 'input' and 'target' or 'target_scores'")
        text = str(example["input"])
        targets = example.get("target")
        targets = [str(t) for t in targets] if isinstance(targets, list) else (
            [str(targets)] if targets is not None else [])
        scores = example.get("target_scores")
        if isinstance(scores, dict) and scores:
            choices = [str(c) for c in scores]
            best = max(scores.values())
            if len(choices) > 1 and best <= min(scores.values()):
                raise TunelabError(f"{origin}: target_scores has no choice scored above the others")
            gold = [j for j, c in enumerate(scores) if scores[c] == best]
            shown = text
            if append_choices:
                order = np.random.RandomState(BIGBENCH_SEED).permutation(sorted(choices))
                shown = text + choice_prefix + choice_prefix.join(order)
            records.append(choice_record(origin, input_prefix + shown + output_prefix, choices,
                                         gold, input=text, targets=targets or [choices[gold[0]]],
                                         target_scores=scores))
        elif targets:
            records.append(Record(input=text, output=targets[0], origin=origin, columns={
                "input": text, "prompt": input_prefix + text + output_prefix,
                "output": targets[0], "targets": targets}))
        else:
            raise TunelabError(f"{origin}: an example needs 'target' or 'target_scores'")
    if not records:
        raise TunelabError(f"{where}: the task has no examples")
    return records


def read_squad_file(path_text: str, config: DataConfig) -> TaskData:
    """SQuAD v1.1 JSON (data -> paragraphs -> qas), prompted as BIG-bench's squad_shifts does."""
    path = Path(path_text).expanduser()
    data = _load_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise TunelabError(f"{path}: not SQuAD v1.1 JSON (expected a top-level 'data' list)")
    records = []
    for article in data["data"]:
        title = str(article.get("title", "")).strip()
        for paragraph in article.get("paragraphs", []):
            context = str(paragraph["context"]).strip()
            for qa in paragraph.get("qas", []):
                answers = [str(a["text"]).strip() for a in qa.get("answers", [])]
                if not answers:
                    continue
                question = str(qa["question"]).strip()
                prompt = f"Title: {title}\nBackground: {context}\nQ: {question}\nA: "
                records.append(Record(input=question, output=answers[0],
                                      origin=f"{path} id {qa.get('id', len(records))}",
                                      columns={"title": title, "context": context,
                                               "question": question, "prompt": prompt,
                                               "output": answers[0], "targets": answers}))
    if not records:
        raise TunelabError(f"{path}: no answered questions found")
    return TaskData(seeded_splits(records, config, str(path)))

"""BIG-bench's JSON tasks (task.json) and the SQuAD v1.1 JSON layout, as evaluation records.

The task.json format is parsed by `tunelab.data.bigbench_format` (shared with training data);
here a multiple-choice example (`target_scores`: gold choices score highest) becomes a choice
record and a generative one (`target`: a text or a list of acceptable texts) a record with
`targets`, both prompted as BIG-bench prompts them. `task_prefix` is the preamble and
`few_shot_example_separator` the separator between shots. Duplicate examples are dropped, as
BIG-bench drops them. The files live in $TUNELAB_CACHE/bigbench after
`tunelab data fetch bigbench`.
"""

from __future__ import annotations

from pathlib import Path

from tunelab.config import DataConfig
from tunelab.core.errors import TunelabError
from tunelab.core.paths import bigbench_dir
from tunelab.data import Record, TaskData
from tunelab.data.bigbench_format import BigbenchTask, Reading, read_json, read_task
from tunelab.data.records import choice_record
from tunelab.data.splits import seeded_split
from tunelab.eval.datasets.common import BenchmarkSource

SPECIAL_FILES = {
    "truthful_qa": "truthful_qa/task_mc.json",
    "squad_shifts/squaddev": "squad_shifts/squaddev_v1.1.json",
    "squad_shifts/amazon_reviews": "squad_shifts/amazon_reviews_v1.0.json",
    "squad_shifts/nyt": "squad_shifts/nyt_v1.0.json",
    "squad_shifts/reddit": "squad_shifts/reddit_v1.0.json",
    "squad_shifts/new_wiki": "squad_shifts/new_wiki_v1.0.json",
}
"""Tasks whose data is not a plain NAME/task.json."""
EVALUATION = Reading(
    not_a_task="not a BIG-bench task.json (no 'examples' list); "
               "a task with subtasks names them as bigbench:TASK/SUBTASK",
    origin="{path} example {index}",
    needs_input="an example needs 'input' and 'target' or 'target_scores'",
    drop_duplicates=True,
)
"""Evaluation drops a repeated example, as BIG-bench does."""


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


def _check_file(path: Path) -> Path:
    if not path.is_file():
        raise TunelabError(f"{path}: no such file; check data.source")
    return path


def read_bigbench_file(path_text: str, config: DataConfig) -> TaskData:
    """A task.json in BIG-bench's format, split by data.test_size / validation_size."""
    path = Path(path_text).expanduser()
    task = read_task(_check_file(path), EVALUATION)
    records = task_records(task)
    return TaskData(seeded_split(records, config, str(path), require_train=False).as_dict(),
                    preamble=str(task.fields.get("task_prefix", "")),
                    separator=str(task.fields.get("few_shot_example_separator", "\n")))


def task_records(task: BigbenchTask) -> list[Record]:
    """Records from a task's examples (duplicates dropped, BIG-bench's prompts): a choice
    record for an example with target_scores, a generated-answer record for one with target."""
    prompt_format = task.prompt_format()
    records = []
    for example in task.examples():
        text = str(example.input)
        targets = example.target_texts()
        scores = example.target_scores
        if scores:
            choices = [str(c) for c in scores]
            gold = example.gold()
            records.append(choice_record(example.origin, prompt_format.prompt(text, choices),
                                         choices, gold, input=text,
                                         targets=targets or [choices[gold[0]]],
                                         target_scores=scores))
        elif targets:
            records.append(Record(input=text, output=targets[0], origin=example.origin, columns={
                "input": text, "prompt": prompt_format.prompt(text),
                "output": targets[0], "targets": targets}))
        else:
            raise TunelabError(f"{example.origin}: an example needs 'target' or 'target_scores'")
    if not records:
        raise TunelabError(f"{task.path}: the task has no examples")
    return records


def read_squad_file(path_text: str, config: DataConfig) -> TaskData:
    """SQuAD v1.1 JSON (data -> paragraphs -> qas), prompted as BIG-bench's squad_shifts does."""
    path = Path(path_text).expanduser()
    data = read_json(_check_file(path))
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise TunelabError(f"{path}: not SQuAD v1.1 JSON (expected a top-level 'data' list)")
    records: list[Record] = []
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
    return TaskData(seeded_split(records, config, str(path), require_train=False).as_dict())


class BigbenchSource(BenchmarkSource):
    """bigbench:TASK[/SUBTASK]: a task of the fetched BIG-bench files."""

    name = "bigbench"
    completion = "{output}"

    def read_argument(self, argument: str, config: DataConfig) -> TaskData:
        return read_bigbench(argument, config)

    def missing(self, source: str) -> str | None:
        return None if (bigbench_dir() / task_file(self.argument(source))).is_file() \
            else "tunelab data fetch bigbench"

    def fetched_task(self, source: str) -> str | None:
        return self.argument(source)


class BigbenchFileSource(BenchmarkSource):
    """bigbench-file:PATH: a task.json in BIG-bench's format anywhere."""

    name = "bigbench-file"
    completion = "{output}"

    def read_argument(self, argument: str, config: DataConfig) -> TaskData:
        return read_bigbench_file(argument, config)


class SquadSource(BenchmarkSource):
    """squad:PATH: a SQuAD v1.1 JSON file."""

    name = "squad"
    completion = "{output}"

    def read_argument(self, argument: str, config: DataConfig) -> TaskData:
        return read_squad_file(argument, config)

"""Task files: loading, one-line errors naming the file/line/option, `tunelab tasks`, and
in-context examples (seeded sampler, separator, preamble, dropped whole when they overflow)."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import yaml
from eval_helpers import EVAL_DATA
from helpers import DATA

from tunelab.cli import main
from tunelab.config import DataConfig
from tunelab.core.errors import TunelabError
from tunelab.data import Record, get_template
from tunelab.eval.fewshot import PromptBuilder, choose_shots
from tunelab.eval.tasks import builtin_suites, builtin_tasks, load_suite, load_task

REVIEWS = {"source": str(DATA / "reviews.jsonl"), "fields": {"input": "text", "output": "label"},
           "template": "format", "prompt_format": "Review: {input}\nSentiment:",
           "completion_format": " {output}", "test_size": 8, "validation_size": 0}


def write_task(tmp_path: Path, body: dict, name: str = "task.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(body, sort_keys=False))
    return path


def test_every_builtin_task_and_suite_loads() -> None:
    names = builtin_tasks()
    kinds = {load_task(n).output_type for n in names}
    assert kinds == {"generate", "multiple_choice", "loglikelihood_rolling", "classification"}
    for suite in builtin_suites():
        assert set(load_suite(suite).tasks) <= set(names)
    assert {"reasoning", "glue_style", "qa", "summarization"} <= set(builtin_suites())


def test_benchmark_sources_default_to_their_own_prompt(tmp_path: Path) -> None:
    path = write_task(tmp_path, {"output_type": "multiple_choice", "data": {
        "source": f"bigbench-file:{EVAL_DATA / 'bigbench' / 'general_knowledge_task.json'}"},
        "eval": {"metrics": ["multiple_choice"]}})
    task = load_task(str(path))
    assert task.name == "task"
    assert (task.data.template, task.data.prompt_format, task.data.completion_format) == (
        "format", "{prompt}", "{output}")
    mmlu = write_task(tmp_path, {"output_type": "multiple_choice", "data": {
        "source": f"mmlu:{EVAL_DATA / 'mmlu'}"}, "eval": {"metrics": ["multiple_choice"]}}, "m.yaml")
    assert load_task(str(mmlu)).data.completion_format == " {output}"


@pytest.mark.parametrize("body,expected", [
    ({"output_type": "mc"}, "line 1: output_type 'mc': use one of generate, multiple_choice, "),
    ({"output_type": "multiple_choice", "eval": {"metrics": ["rouge", "bits_per_byte"]}},
     "line 5: eval.metrics[1]: 'bits_per_byte' does not apply to output_type multiple_choice"),
    ({"eval": {"metrics": ["bleurt"]}}, "line 3: eval.metrics[0]: unknown metric 'bleurt'"),
    ({"fewshot": {"k": 2, "sampler": "greedy"}}, "line 3: fewshot.sampler 'greedy': use one of random, fixed, first"),
    ({"output_type": "classification", "eval": {"metrics": ["classification"]}},
     "eval.labels: classification needs the labels"),
    ({"output_type": "loglikelihood_rolling", "fewshot": {"k": 2},
      "eval": {"metrics": ["perplexity"]}}, "fewshot.k: loglikelihood_rolling takes no in-context"),
    ({"rolling": {"max_length": 8, "stride": 9}, "output_type": "loglikelihood_rolling",
      "eval": {"metrics": ["perplexity"]}}, "line 3: rolling.stride: must be between 1"),
    ({"fewshot": {"shots": 3}}, "task.yaml line 2: fewshot.shots: unknown option 'shots'; valid options: k, "),
])
def test_bad_task_files_are_one_line_errors(tmp_path: Path, capsys, body: dict, expected: str) -> None:
    path = write_task(tmp_path, body)
    assert main(["tasks", "validate", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("tunelab: error: ") and "\n" not in err and "Traceback" not in err
    assert expected in err, err


def test_tasks_validate_reads_the_data(tmp_path: Path, capsys) -> None:
    good = write_task(tmp_path, {"name": "reviews_mc", "output_type": "multiple_choice",
                                 "data": REVIEWS, "choices": ["positive", "negative"],
                                 "fewshot": {"k": 2}, "eval": {"metrics": ["multiple_choice"]}})
    assert main(["tasks", "validate", str(good)]) == 0
    out = capsys.readouterr().out
    assert "reviews_mc: ok (multiple_choice; train 32, validation 0, test 8" in out
    assert "first prompt: 'Review:" in out
    bad = write_task(tmp_path, {"output_type": "multiple_choice", "data": REVIEWS,
                                "choices": ["good", "bad"], "eval": {"metrics": ["multiple_choice"]}},
                     "bad.yaml")
    assert main(["tasks", "validate", str(bad)]) == 2
    assert "answer 'negative' is not one of the choices ['good', 'bad']" in capsys.readouterr().err
    assert main(["tasks", "list"]) == 0
    listing = capsys.readouterr().out
    assert "movie_sentiment_mc" in listing and "glue_style" in listing
    # fewshot.k beyond the shot pool: valid for the 0-shot scoring `tunelab eval` does by
    # default, with a note on the few-shot baseline; asked for with --shots, one line
    short = write_task(tmp_path, {"name": "reviews_k40", "output_type": "multiple_choice",
                                  "data": REVIEWS, "choices": ["positive", "negative"],
                                  "fewshot": {"k": 40}, "eval": {"metrics": ["multiple_choice"]}},
                       "short.yaml")
    assert main(["tasks", "validate", str(short)]) == 0
    assert (f"note: the few-shot baseline (--baselines few) would stop: {short}: fewshot.k 40 "
            "but the train split has 32 examples; ask for at most 32 shots, or give that split "
            "more rows") in capsys.readouterr().out
    assert main(["eval", "--task", str(short), "--shots", "33", "--limit", "1"]) == 2
    assert capsys.readouterr().err.strip() == (
        f"tunelab: error: {short}: 33 shots but the train split has 32 examples; ask for at "
        "most 32 shots, or give that split more rows")


def test_shots_for_a_type_that_takes_none_stop_before_a_model_loads(
        capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    """--shots N, or a baseline with shots, on a rolling log-likelihood task: one line naming
    what asked for them, before any model loads."""
    def no_model(*args: object, **kwargs: object) -> None:
        raise AssertionError("a model loaded before the shots were checked")
    monkeypatch.setattr("tunelab.eval.output_types.base.scoring", no_model)
    assert main(["eval", "--task", "movie_reviews_lm", "--shots", "2", "--limit", "2"]) == 2
    assert capsys.readouterr().err.strip() == (
        "tunelab: error: --shots 2: output_type loglikelihood_rolling takes no in-context "
        "examples; use --shots 0")
    assert main(["eval", "--task", "movie_reviews_lm", "--baselines", "zero,few", "--limit",
                 "2"]) == 2
    assert capsys.readouterr().err.strip() == (
        "tunelab: error: --baselines: output_type loglikelihood_rolling takes no in-context "
        "examples, which the base 5-shot baseline would be given; use --baselines zero")
    assert main(["robustness", "--task", "movie_reviews_lm", "--limit", "2"]) == 2  # its default
    assert "--baselines: output_type loglikelihood_rolling" in capsys.readouterr().err


def _records(n: int) -> list[Record]:
    return [Record(input=f"review number {i}", output="positive" if i % 2 else "negative",
                   origin=f"r{i}") for i in range(n)]


def test_shots_are_seeded_per_item_and_never_the_item_itself() -> None:
    pool = _records(10)
    first = choose_shots(pool, 3, seed=7, index=0)
    assert first == choose_shots(pool, 3, seed=7, index=0)
    assert first != choose_shots(pool, 3, seed=7, index=1)
    for index, record in enumerate(pool):
        assert record not in choose_shots(pool, 9, seed=1, index=index, exclude=record)
    assert choose_shots(pool, 2, 0, 5, sampler="first") == pool[:2]
    with pytest.raises(TunelabError, match="has only 9 examples"):
        choose_shots(pool, 10, 0, 0, exclude=pool[0])


def test_fixed_shots_are_one_seeded_draw_balanced_over_the_labels() -> None:
    pool = [Record(input=f"x{i}", output="neg" if i % 5 == 0 else "pos") for i in range(40)]
    shots = [choose_shots(pool, 4, 3, i, "fixed", labels=["pos", "neg"]) for i in range(6)]
    assert all(s == shots[0] for s in shots)  # the same for every item: a shared prefix
    assert sorted(r.output for r in shots[0]) == ["neg", "neg", "pos", "pos"]  # 1 in 5 is neg
    outputs = [r.output for r in shots[0]]
    assert all(a != b for a, b in itertools.pairwise(outputs))  # labels alternate
    assert shots[0] != choose_shots(pool, 4, 4, 0, "fixed", labels=["pos", "neg"])  # seeded
    unlabeled = choose_shots(pool, 4, 3, 0, "fixed")
    assert unlabeled == choose_shots(pool, 4, 3, 9, "fixed") and len(set(map(id, unlabeled))) == 4
    own = shots[0][1]  # an item among the shared shots gets a replacement of its label
    mine = choose_shots(pool, 4, 3, 0, "fixed", exclude=own, labels=["pos", "neg"])
    assert own not in mine and sorted(r.output for r in mine) == ["neg", "neg", "pos", "pos"]
    assert len({id(r) for r in mine} & {id(r) for r in shots[0]}) == 3
    rare = [Record(input=f"y{i}", output="pos") for i in range(9)] + [pool[0]]
    few = choose_shots(rare, 4, 3, 0, "fixed", labels=["pos", "neg"])
    assert sorted(r.output for r in few) == ["neg", "pos", "pos", "pos"]  # one neg is all


def test_fixed_shots_balance_the_gold_labels_and_a_task_file_overrides_the_run() -> None:
    from tunelab.config import EvalConfig, TaskConfig
    from tunelab.config.sections import FewShotConfig

    chat = [Record(input=f"x{i}", output="", messages=[
        {"role": "user", "content": f"x{i}"},
        {"role": "assistant", "content": "Neg" if i % 5 == 0 else "pos"}]) for i in range(40)]
    shots = choose_shots(chat, 4, 3, 0, "fixed", labels=["pos", "neg"],
                         label_of=lambda r: r.messages[-1]["content"])
    assert sorted(r.messages[-1]["content"].lower() for r in shots) == ["neg", "neg", "pos", "pos"]
    task = TaskConfig(name="t", data=DataConfig(source="x.jsonl"), eval=EvalConfig())
    assert task.shot_sampler() == "random"
    task.eval.fewshot_sampler = "fixed"
    assert task.shot_sampler() == "fixed"
    task.fewshot = FewShotConfig(sampler="first")
    assert task.shot_sampler() == "first"


def test_prompt_builder_separator_preamble_and_shot_tokens(tiny_tokenizer) -> None:
    config = DataConfig(template="format", prompt_format="Review: {input}\nSentiment:",
                        completion_format=" {output}")
    builder = PromptBuilder(get_template(config), tiny_tokenizer, preamble="Classify.\n", separator="\n###\n")
    records = _records(3)
    prompt = builder.build(records[0], records[1:], budget=10_000)
    assert prompt.rendered.prompt == ("Classify.\nReview: review number 1\nSentiment: positive\n###\n"
                                      "Review: review number 2\nSentiment: negative\n###\n"
                                      "Review: review number 0\nSentiment:")
    bare = len(tiny_tokenizer("Classify.\nReview: review number 0\nSentiment:").input_ids)
    assert prompt.shot_tokens == len(prompt.ids) - bare > 0  # the preamble is not a shot
    assert (prompt.shots, prompt.dropped) == (2, 0)
    assert builder.build(records[0], [], budget=10_000).shot_tokens == 0


def test_overflowing_shots_are_dropped_whole(tiny_tokenizer) -> None:
    config = DataConfig(template="format", prompt_format="Review: {input}\nSentiment:",
                        completion_format=" {output}")
    builder = PromptBuilder(get_template(config), tiny_tokenizer)
    records = _records(6)
    full = builder.build(records[0], records[1:], budget=10_000)
    one_shot = builder.build(records[0], records[1:2], budget=10_000)
    cut = builder.build(records[0], records[1:], budget=len(one_shot.ids))
    assert (cut.shots, cut.dropped) == (1, 4)
    assert cut.rendered.prompt == one_shot.rendered.prompt  # whole shots, never a partial one
    assert len(full.ids) > len(cut.ids)

"""Data sources, field mappings, splits, templates, and completion-only labels at token level."""

from __future__ import annotations

import json
from pathlib import Path
from typing import get_args

import pytest

from tunelab.config import DataConfig
from tunelab.config.choices import TemplateName
from tunelab.core.errors import TunelabError
from tunelab.data import Record, get_template, load_splits, tokenize_example
from tunelab.data.sources import FILE, read_records, source_scheme
from tunelab.data.templates import (
    TEMPLATE_KINDS,
    AlpacaTemplate,
    FormatTemplate,
    get_template_kind,
)
from tunelab.data.tokenize import IGNORE_INDEX, encode_completion, encode_prompt

DATA = Path(__file__).parent / "data"
REVIEW_FIELDS = {"input": "text", "output": "label"}


@pytest.mark.parametrize("name", ["reviews.jsonl", "reviews.csv", "reviews.parquet"])
def test_file_formats_read_the_same_records(name: str) -> None:
    records = read_records(str(DATA / name), fields=REVIEW_FIELDS, instruction="Classify.")
    assert len(records) == 40
    assert records[0].output == "negative" and records[-1].output == "positive"
    assert records[0].input.startswith("simplistic , silly and tedious")
    assert records[0].instruction == "Classify."
    assert records[0].origin.startswith(str(DATA / name))


def test_hf_dataset_saved_to_disk(tmp_path: Path) -> None:
    from datasets import Dataset

    rows = [json.loads(line) for line in (DATA / "reviews.jsonl").read_text().splitlines()]
    Dataset.from_list(rows).save_to_disk(str(tmp_path / "ds"))
    records = read_records(str(tmp_path / "ds"), fields=REVIEW_FIELDS)
    assert [r.output for r in records] == [r["label"] for r in rows]


def test_prompt_completion_and_chat_fields() -> None:
    pc = read_records(str(DATA / "prompt_completion.jsonl"))
    assert pc[0].instruction.startswith("Review: ") and pc[0].output in (" positive", " negative")
    chat = read_records(str(DATA / "chat.jsonl"))
    assert chat[0].messages is not None and chat[0].messages[-1]["role"] == "assistant"


def test_missing_field_names_file_line_and_fix(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "a", "label": "x"}\n{"text": "b"}\n')
    with pytest.raises(TunelabError, match=r"bad.jsonl:2: missing field 'label'.*data.fields"):
        read_records(str(path), fields=REVIEW_FIELDS)


def test_malformed_json_line_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.jsonl"
    path.write_text('{"output": "a"}\n\n{"output": "b",}\n')
    with pytest.raises(TunelabError, match=r"broken.jsonl:3: malformed JSON"):
        read_records(str(path))


def test_empty_file_and_unknown_format(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(TunelabError, match="empty.jsonl: no examples"):
        read_records(str(empty))
    odd = tmp_path / "data.xml"
    odd.write_text("<x/>")
    with pytest.raises(TunelabError, match="set data.format"):
        read_records(str(odd))
    with pytest.raises(TunelabError, match="no such file"):
        read_records(str(tmp_path / "missing.jsonl"))


def test_seeded_splits_are_disjoint_and_reproducible() -> None:
    config = DataConfig(source=str(DATA / "reviews.jsonl"), fields=REVIEW_FIELDS,
                        validation_size=0.1, test_size=10, split_seed=3)
    a, b = load_splits(config), load_splits(config)
    assert (len(a.train), len(a.validation), len(a.test)) == (26, 4, 10)
    assert [r.origin for r in a.test] == [r.origin for r in b.test]
    origins = [r.origin for r in a.train + a.validation + a.test]
    assert len(set(origins)) == 40
    other = load_splits(DataConfig(**{**config.__dict__, "split_seed": 4}))
    assert [r.origin for r in other.test] != [r.origin for r in a.test]


def test_split_files_and_empty_train_error() -> None:
    config = DataConfig(train_file=str(DATA / "reviews.csv"), test_file=str(DATA / "reviews.jsonl"),
                        fields=REVIEW_FIELDS)
    splits = load_splits(config)
    assert len(splits.train) == 40 and len(splits.test) == 40 and splits.validation == []
    with pytest.raises(TunelabError, match="empty train split"):
        load_splits(DataConfig(source=str(DATA / "reviews.jsonl"), fields=REVIEW_FIELDS,
                               test_size=30, validation_size=10))


def test_unknown_template_is_a_clear_error() -> None:
    with pytest.raises(TunelabError, match="data.template 'vicuna': use one of alpaca, chat, format"):
        DataConfig(template="vicuna")  # type: ignore[arg-type]


def _templates(tokenizer) -> dict[str, tuple[object, Record]]:
    review = "a gorgeous , witty , seductive movie ."
    plain = Record(instruction="Classify the sentiment.", input=review, output="positive")
    return {
        "alpaca-with-input": (AlpacaTemplate(), plain),
        "alpaca-no-input": (AlpacaTemplate(), Record(instruction="Say hi.", output="hi there")),
        "format": (FormatTemplate("Review: {text}\nSentiment:", " {output}"),
                   Record(output="positive", columns={"text": review})),
        "chat": (get_template(DataConfig(template="chat", system="Be brief."), tokenizer), plain),
        "chat-messages": (get_template(DataConfig(template="chat"), tokenizer), Record(messages=[
            {"role": "system", "content": "You label reviews."},
            {"role": "user", "content": review},
            {"role": "assistant", "content": "positive"}])),
    }


def _check_completion_only(template, record, tokenizer) -> None:
    rendered = template.render(record)
    example = tokenize_example(rendered, tokenizer, max_length=512)
    prompt_ids = encode_prompt(rendered, tokenizer)
    completion_ids = encode_completion(rendered, tokenizer)
    n = len(prompt_ids)
    # Every prompt token is masked; every completion token (and the EOS) is trained, unmasked.
    assert example.input_ids == prompt_ids + completion_ids
    assert example.labels[:n] == [IGNORE_INDEX] * n
    assert example.labels[n:] == completion_ids
    assert completion_ids[-1] == tokenizer.eos_token_id
    assert completion_ids.count(tokenizer.eos_token_id) == 1
    # The trained tokens spell exactly the completion text plus one EOS.
    trained = [t for t in example.labels if t != IGNORE_INDEX]
    text = tokenizer.decode(trained, skip_special_tokens=False)
    expected = rendered.completion
    if not expected.endswith(tokenizer.eos_token):
        expected += tokenizer.eos_token
    assert text == expected
    answer = record.output if record.messages is None else record.messages[-1]["content"]
    assert answer.strip() in text


@pytest.mark.parametrize("name", ["alpaca-with-input", "alpaca-no-input", "format", "chat",
                                  "chat-messages"])
def test_completion_only_labels_tiny_tokenizer(name: str, tiny_tokenizer) -> None:
    template, record = _templates(tiny_tokenizer)[name]
    _check_completion_only(template, record, tiny_tokenizer)


def test_chat_template_trains_end_of_turn_not_trailing_newline(tiny_tokenizer) -> None:
    template, record = _templates(tiny_tokenizer)["chat"]
    rendered = template.render(record)
    assert rendered.completion == "positive<|im_end|>"
    assert rendered.prompt.endswith("<|im_start|>assistant\n")
    assert rendered.prompt.startswith("<|im_start|>system\nBe brief.<|im_end|>")


def test_few_shot_shots_in_the_same_template(tiny_tokenizer) -> None:
    shot = Record(instruction="Classify the sentiment.", input="dull .", output="negative")
    template, record = _templates(tiny_tokenizer)["alpaca-with-input"]
    rendered = template.render(record, [shot])
    assert rendered.prompt.count("### Response:") == 2
    assert "### Response:\nnegative\n\n" in rendered.prompt
    chat, _ = _templates(tiny_tokenizer)["chat"]
    turns = chat.render(record, [shot]).prompt
    assert turns.count("<|im_start|>user") == 2 and "negative<|im_end|>" in turns


def test_long_prompts_are_cut_from_the_left_keeping_the_completion(tiny_tokenizer) -> None:
    template = AlpacaTemplate()
    record = Record(instruction="Classify.", input="word " * 400, output="negative")
    example = tokenize_example(template.render(record), tiny_tokenizer, max_length=64)
    assert len(example.input_ids) == 64 and example.truncated
    trained = [t for t in example.labels if t != IGNORE_INDEX]
    assert tiny_tokenizer.decode(trained) == "negative<|im_end|>"


def test_format_template_missing_column_is_clear() -> None:
    template = FormatTemplate("Review: {review}\nSentiment:")
    with pytest.raises(TunelabError, match=r"data.prompt_format: field 'review' is not in x.jsonl:4"):
        template.render(Record(output="positive", columns={"text": "t"}, origin="x.jsonl:4"))




def test_builtin_movie_sentiment_is_balanced_real_data() -> None:
    # gensim (a dev dependency) ships the sentences: without it this fails, naming the install.
    records = read_records("builtin:movie_sentiment")
    assert len(records) == 200
    assert sum(r.output == "positive" for r in records) == 100
    assert all(r.input and r.instruction for r in records)
    with pytest.raises(TunelabError, match="unknown built-in dataset"):
        read_records("builtin:nope")


def test_each_template_is_a_registered_kind_that_answers_for_itself(tiny_tokenizer) -> None:
    assert set(TEMPLATE_KINDS) == set(get_args(TemplateName))
    alpaca, chat, fmt = (get_template_kind(name) for name in ("alpaca", "chat", "format"))
    assert chat.shots_as_turns and chat.needs_tokenizer and not chat.takes_preamble
    assert fmt.needs_prompt_format and fmt.classifier_reads_prompt and fmt.takes_preamble
    assert alpaca.takes_preamble and not (alpaca.needs_prompt_format or alpaca.needs_tokenizer
                                          or alpaca.shots_as_turns or alpaca.classifier_reads_prompt)
    for name, kind in TEMPLATE_KINDS.items():
        template = get_template(DataConfig(template=name, prompt_format="{input}"), tiny_tokenizer)
        assert template.kind is kind
    with pytest.raises(TunelabError, match="data.template=chat needs a tokenizer"):
        get_template(DataConfig(template="chat"))


def test_a_source_is_read_by_its_scheme_or_as_a_file() -> None:
    builtin = source_scheme("builtin:news")
    assert builtin.name == "builtin" and builtin.argument("builtin:news") == "news"
    assert not builtin.reads_prompts and builtin.missing("builtin:news") is None
    assert source_scheme(str(DATA / "reviews.jsonl")) is FILE
    assert source_scheme("no_scheme:reviews.jsonl") is FILE  # an unknown scheme is a path
    with pytest.raises(TunelabError, match="no_scheme:reviews.jsonl: no such file"):
        read_records("no_scheme:reviews.jsonl")

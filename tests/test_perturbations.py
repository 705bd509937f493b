"""Robustness perturbations change what they claim, only that, the same way every time, and
touch only a record's input."""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest

from tunelab.core.errors import TunelabError
from tunelab.data import Record
from tunelab.data.transforms import (
    augment_records,
    check_severity,
    get_perturbation,
    parse_perturbations,
    perturb_record,
    perturb_text,
    perturbation_names,
    rng_for,
)
from tunelab.data.transforms.perturbations import word_list

REVIEW = ("The film's pacing is slow, but the performances are wonderful and it doesn't "
          "overstay its welcome.")
SENTENCES = [
    REVIEW,
    "You are going to love it, because it's really the best thriller I have seen this year.",
    "I definitely believe the beginning was boring; the ending, however, is truly brilliant!",
    "Please don't waste your money: the plot is predictable and the acting is awful.",
    "It is not a masterpiece, but people who like quiet dramas will find something here.",
]
LONG = " ".join(SENTENCES * 3)
NAMES = ["typo", "char_noise", "misspelling", "lowercase", "uppercase", "contraction",
         "whitespace", "filler", "punctuation", "slang", "ocr"]
STOCHASTIC = [n for n in NAMES if n not in ("lowercase", "uppercase")]


def perturb(name: str, text: str, severity: float = 0.3, seed: int = 0, key: str = "k") -> str:
    return perturb_text(get_perturbation(name), text, seed, severity, key)


def changed_chars(a: str, b: str) -> int:
    opcodes = difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes()
    return sum(max(i2 - i1, j2 - j1) for tag, i1, i2, j1, j2 in opcodes if tag != "equal")


def edit_distance(a: str, b: str) -> int:
    row = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        previous, row[0] = row[0], i
        for j, cb in enumerate(b, 1):
            previous, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, previous + (ca != cb))
    return row[-1]


def is_punctuation(char: str) -> bool:
    return unicodedata.category(char).startswith("P")


# ---- The registry and the lists ----------------------------------------------------------

def test_every_perturbation_is_registered_with_a_one_line_description() -> None:
    assert perturbation_names() == NAMES
    for name in NAMES:
        perturbation = get_perturbation(name)
        assert perturbation.name == name
        assert perturbation.description and "\n" not in perturbation.description


def test_the_word_lists_are_real_and_consistent() -> None:
    keyboard = word_list("keyboard")
    assert set(keyboard) == set("abcdefghijklmnopqrstuvwxyz")
    assert all(a in keyboard[b] for a in keyboard for b in keyboard[a]), "adjacency is mutual"
    assert set(keyboard["g"]) == set("tyfhvb")
    misspellings = word_list("misspellings")
    assert len(misspellings) >= 300
    assert all(wrong and key not in wrong for key, wrong in misspellings.items())
    assert "definately" in misspellings["definitely"] and "seperate" in misspellings["separate"]
    contractions = word_list("contractions")
    assert len({long.lower() for long in contractions.values()}) == len(contractions)
    assert len(word_list("slang")) >= 80
    assert {"uh", "um", "like", "you know", "I mean"} <= set(word_list("fillers"))
    assert word_list("ocr")["rn"] == ["m"] and "rn" in word_list("ocr")["m"]


# ---- Determinism --------------------------------------------------------------------------

@pytest.mark.parametrize("name", NAMES)
def test_same_seed_and_key_give_the_same_text(name: str) -> None:
    for text in SENTENCES:
        assert perturb(name, text, key="a") == perturb(name, text, key="a")


@pytest.mark.parametrize("name", STOCHASTIC)
def test_another_key_or_seed_usually_gives_another_text(name: str) -> None:
    by_key = {perturb(name, LONG, key=str(k)) for k in range(8)}
    by_seed = {perturb(name, LONG, seed=seed, key="a") for seed in range(8)}
    assert len(by_key) >= 4 and len(by_seed) >= 4
    assert LONG not in by_key


def test_the_rng_comes_from_a_stable_hash_not_pythons_hash() -> None:
    code = ("from tunelab.data.transforms import rng_for; "
            "print(rng_for(3, 'typo', 0.1, 'train.jsonl:7').random())")
    src = str(Path(__file__).resolve().parent.parent / "src")
    outputs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              check=True, env={**os.environ, "PYTHONHASHSEED": seed,
                                               "PYTHONPATH": src}).stdout
               for seed in ("1", "2")}
    assert outputs == {f"{rng_for(3, 'typo', 0.1, 'train.jsonl:7').random()}\n"}
    assert rng_for(3, "typo", 0.1, "a").random() != rng_for(3, "typo", 0.2, "a").random()
    assert rng_for(3, "typo", 0.1, "a").random() != rng_for(3, "ocr", 0.1, "a").random()


# ---- Each changes what it claims ----------------------------------------------------------

def test_typo_replaces_letters_by_keyboard_neighbours_keeping_case() -> None:
    keyboard = word_list("keyboard")
    for text in SENTENCES:
        noisy = perturb("typo", text, severity=0.2)
        assert len(noisy) == len(text) and noisy != text
        diffs = [(a, b) for a, b in zip(text, noisy, strict=True) if a != b]
        assert len(diffs) == round(0.2 * sum(c.isalpha() for c in text))
        for before, after in diffs:
            assert after.lower() in keyboard[before.lower()], (before, after)
            assert before.isupper() == after.isupper()


def test_char_noise_makes_a_few_edits_inside_words() -> None:
    for text in SENTENCES:
        noisy = perturb("char_noise", text, severity=0.05)
        edits = round(0.05 * sum(c.isalpha() for c in text))
        assert 0 < edit_distance(text, noisy) <= 2 * edits
        not_letters = re.compile(r"[^\W\d_]")
        assert not_letters.sub("", noisy) == not_letters.sub("", text), "only letters change"
        assert len(noisy.split()) == len(text.split()), "no word disappears"


def test_misspelling_uses_the_listed_wrong_spellings_keeping_case() -> None:
    misspellings = word_list("misspellings")
    text = "Definitely a brilliant ending; I truly believe the beginning was separate."
    noisy = perturb("misspelling", text, severity=1.0)
    pairs = list(zip(re.findall(r"[\w']+", text), re.findall(r"[\w']+", noisy), strict=True))
    changed = [(a, b) for a, b in pairs if a != b]
    assert {a for a, _ in changed} == {"Definitely", "brilliant", "ending", "truly", "believe",
                                       "the", "beginning", "separate"}
    for before, after in changed:
        assert after.lower() in misspellings[before.lower()]
        assert before[0].isupper() == after[0].isupper()
    assert re.sub(r"[\w']+", "", noisy) == re.sub(r"[\w']+", "", text), "punctuation kept"


def test_lowercase_and_uppercase_change_the_whole_input() -> None:
    for text in SENTENCES:
        assert perturb("lowercase", text, severity=0.01) == text.lower()
        assert perturb("uppercase", text, severity=1.0) == text.upper()


def test_contraction_expands_and_contracts_keeping_the_first_letter_case() -> None:
    assert perturb("contraction", REVIEW, severity=1.0) == REVIEW.replace("doesn't", "does not")
    assert perturb("contraction", "It does not overstay its welcome.", 1.0) == (
        "It doesn't overstay its welcome.")
    assert perturb("contraction", "Don't go. I am sure it’s fine.", 1.0) == (
        "Do not go. I'm sure it is fine.")
    assert perturb("contraction", "DO NOT miss it", 1.0) == "DON'T miss it"


def test_whitespace_adds_only_whitespace_between_words() -> None:
    for text in SENTENCES:
        noisy = perturb("whitespace", text, severity=0.3)
        assert noisy != text and noisy.split() == text.split()
        assert noisy.strip() == noisy, "nothing before the first or after the last word"


def test_filler_inserts_only_filler_words_between_words() -> None:
    filler_words = {w for phrase in word_list("fillers") for w in phrase.split()}
    text = "The film's pacing is slow, but the performances are wonderful."
    noisy = perturb("filler", text, severity=0.5)
    assert noisy.split()[0] == "The" and noisy.endswith("wonderful.")
    inserted = [w for w in noisy.split() if w in filler_words]
    assert inserted and [w for w in noisy.split() if w not in filler_words] == text.split()
    assert len(noisy.split()) > len(text.split())


def test_punctuation_is_removed_and_the_words_stay() -> None:
    for text in SENTENCES:
        bare = perturb("punctuation", text, severity=1.0)
        assert not any(is_punctuation(c) for c in bare)
        assert bare.split() == ["".join(c for c in w if not is_punctuation(c))
                                for w in text.split() if not all(map(is_punctuation, w))]
    some = perturb("punctuation", LONG, severity=0.5)
    punctuation_left = sum(map(is_punctuation, some))
    assert punctuation_left == sum(map(is_punctuation, LONG)) - round(
        0.5 * sum(map(is_punctuation, LONG)))


def test_slang_uses_informal_spellings_whole_words_only() -> None:
    text = "You are going to love it, because it is really good; please see it with people."
    assert perturb("slang", text, severity=1.0) == (
        "U r gonna luv it, cuz it is rly gud; pls see it w/ ppl.")
    assert perturb("slang", "YOU ARE great", severity=1.0) == "U R gr8"
    assert perturb("slang", "Yours truly, the youth are arenas", severity=1.0) == (
        "Yours truly, the youth r arenas")


def derivable(original: str, noisy: str, confusions: dict[str, list[str]]) -> bool:
    """Whether `noisy` is `original` with some listed confusions applied left to right."""
    if not original or not noisy:
        return original == noisy
    if original[0] == noisy[0] and derivable(original[1:], noisy[1:], confusions):
        return True
    return any(original.startswith(source) and noisy.startswith(target)
               and derivable(original[len(source):], noisy[len(target):], confusions)
               for source, targets in confusions.items() for target in targets)


def test_ocr_applies_only_the_listed_confusions() -> None:
    confusions = word_list("ocr")
    for text in SENTENCES:
        noisy = perturb("ocr", text, severity=0.2)
        assert noisy != text and len(noisy.split()) == len(text.split())
        for before, after in zip(text.split(), noisy.split(), strict=True):
            assert derivable(before, after, confusions), (before, after)
    # At severity 1 every eligible place changes: m, o, d, e and the final rn.
    assert perturb("ocr", "modern", severity=1.0) == "rn0clcm"


@pytest.mark.parametrize("name", STOCHASTIC)
def test_more_severity_changes_more(name: str) -> None:
    def average(severity: float) -> float:
        return sum(changed_chars(LONG, perturb(name, LONG, severity, key=str(k)))
                   for k in range(10)) / 10
    low, high = average(0.05), average(0.2)
    assert 0 < low < high, (low, high)


@pytest.mark.parametrize("name, text", [
    ("typo", "42 + 7 = 49"), ("char_noise", "42 + 7 = 49"), ("ocr", "42 + 7 = 49"),
    ("misspelling", "Cats sleep on mats."), ("contraction", "Cats sleep on mats."),
    ("slang", "Cats sleep on mats."), ("punctuation", "no punctuation at all"),
    ("whitespace", "Wonderful!"), ("filler", "Wonderful!")])
def test_nothing_eligible_leaves_the_text_unchanged(name: str, text: str) -> None:
    assert perturb(name, text, severity=1.0) == text


@pytest.mark.parametrize("name", NAMES)
def test_a_text_never_becomes_empty(name: str) -> None:
    for text in ("!!!", "...", "a", "I", "It", "?!"):
        assert perturb(name, text, severity=1.0).strip()
    assert perturb(name, "", severity=1.0) == ""
    assert perturb("punctuation", "!!!", severity=1.0) == "!!!"


# ---- Records --------------------------------------------------------------------------------

def choice_record() -> Record:
    return Record(input=REVIEW, output="positive", origin="reviews.jsonl:3", columns={
        "input": REVIEW, "prompt": f"Q: {REVIEW}\nA:", "choices": ["negative", "positive"],
        "gold": [1], "targets": ["positive"], "output": "positive", "label": 1})


def test_perturb_record_touches_only_the_input_and_the_columns_showing_it() -> None:
    record = choice_record()
    before = dataclasses.replace(record, columns=dict(record.columns))
    noisy = perturb_record(record, get_perturbation("uppercase"), 0.5, 0, record.origin)
    assert noisy.input == REVIEW.upper() and noisy.output == "positive"
    assert noisy.columns == {**record.columns, "input": REVIEW.upper(),
                             "prompt": f"Q: {REVIEW.upper()}\nA:"}
    assert record == before, "the original record is not changed"
    noisy.columns["choices"].append("neutral")
    assert record.columns["choices"] == ["negative", "positive"], "columns are deep copies"


def test_perturb_record_uses_the_same_text_as_perturb_text() -> None:
    record = choice_record()
    typo = get_perturbation("typo")
    noisy = perturb_record(record, typo, 0.2, 5, "item-3")
    assert noisy.input == perturb_text(typo, REVIEW, 5, 0.2, "item-3") != REVIEW
    assert noisy.columns["prompt"] == f"Q: {noisy.input}\nA:"


def test_the_instruction_is_perturbed_only_when_asked_or_when_it_is_the_input() -> None:
    upper = get_perturbation("uppercase")
    record = Record(instruction="Classify the review.", input=REVIEW, output="positive")
    assert perturb_record(record, upper, 0.5, 0, "k").instruction == "Classify the review."
    both = perturb_record(record, upper, 0.5, 0, "k", instruction=True)
    assert (both.instruction, both.input) == ("CLASSIFY THE REVIEW.", REVIEW.upper())
    prompt_only = Record(instruction="Is this review positive? " + REVIEW, output="yes",
                         columns={"prompt": "Is this review positive? " + REVIEW,
                                  "completion": "yes"})
    noisy = perturb_record(prompt_only, upper, 0.5, 0, "k")
    assert noisy.instruction == noisy.columns["prompt"] == prompt_only.instruction.upper()
    assert noisy.output == noisy.columns["completion"] == "yes"


def test_a_chat_record_has_only_its_last_user_turn_perturbed() -> None:
    messages = [{"role": "system", "content": "You are a film critic."},
                {"role": "user", "content": "Do you like thrillers?"},
                {"role": "assistant", "content": "Yes, very much."},
                {"role": "user", "content": REVIEW},
                {"role": "assistant", "content": "positive"}]
    record = Record(messages=[dict(m) for m in messages], origin="chat.jsonl:1")
    noisy = perturb_record(record, get_perturbation("lowercase"), 0.5, 0, "k")
    assert noisy.messages == messages[:3] + [{"role": "user", "content": REVIEW.lower()},
                                             messages[4]]
    assert record.messages == messages


def test_a_column_that_is_the_answer_is_never_perturbed() -> None:
    text = "Repeat after me please"
    record = Record(input=text, output=text, columns={"text": text, "expected": text})
    noisy = perturb_record(record, get_perturbation("uppercase"), 1.0, 0, "k")
    assert noisy.input == text.upper() and noisy.output == text
    assert noisy.columns == {"text": text, "expected": text}, "equal to the output: kept"


def test_a_record_without_input_text_is_a_one_line_error() -> None:
    for record in (Record(output="positive", origin="train.jsonl:9"),
                   Record(messages=[{"role": "user", "content": ""},
                                    {"role": "assistant", "content": "hi"}],
                          origin="train.jsonl:9")):
        with pytest.raises(TunelabError, match=r"^train.jsonl:9: has no input text to perturb"):
            perturb_record(record, get_perturbation("typo"), 0.1, 0, "k")


def test_augment_records_perturbs_exactly_the_share_keeping_order() -> None:
    records = [Record(instruction="Rate it.", input=f"{s} (review {i})", output="ok",
                      origin=f"train.jsonl:{i}")
               for i, s in enumerate(SENTENCES * 2)]
    both = parse_perturbations("lowercase,uppercase")
    augmented = augment_records(records, both, share=0.3, severity=0.1, seed=0)
    assert augmented is not records and len(augmented) == 10
    changed = [i for i, (a, b) in enumerate(zip(records, augmented, strict=True)) if a != b]
    assert len(changed) == 3
    for i in changed:
        assert augmented[i].input in (records[i].input.lower(), records[i].input.upper())
        assert augmented[i].instruction == "Rate it." and augmented[i].output == "ok"
    for i in set(range(10)) - set(changed):
        assert augmented[i] is records[i]
    assert augment_records(records, both, 0.3, 0.1, 0) == augmented
    other_seeds = [augment_records(records, both, 0.3, 0.1, seed) for seed in (1, 2, 3)]
    assert any(other != augmented for other in other_seeds)
    assert augment_records(records, both, 0.0, 0.1, 0) == records
    assert all(a != b for a, b in zip(records, augment_records(records, both, 1.0, 0.1, 0),
                                      strict=True))
    assert records[0].input == f"{SENTENCES[0]} (review 0)", "the input list is not changed"


# ---- Errors -------------------------------------------------------------------------------

def test_an_unknown_name_lists_the_valid_ones() -> None:
    valid = ", ".join(NAMES)
    with pytest.raises(TunelabError) as err:
        get_perturbation("tpyo")
    assert str(err.value) == f"perturbation 'tpyo': unknown; choose from {valid}"
    with pytest.raises(TunelabError) as err:
        parse_perturbations("typo, tpyo", option="--perturbations")
    assert str(err.value) == f"--perturbations: perturbation 'tpyo': unknown; choose from {valid}"


def test_parse_perturbations_reads_lists_commas_and_all() -> None:
    assert [p.name for p in parse_perturbations("typo,lowercase")] == ["typo", "lowercase"]
    assert [p.name for p in parse_perturbations(["ocr", "typo, ocr"])] == ["ocr", "typo"]
    assert [p.name for p in parse_perturbations("all")] == NAMES
    for empty in ("", " , ", []):
        with pytest.raises(TunelabError, match=r"^data.augment.perturbations: no perturbation"):
            parse_perturbations(empty, option="data.augment.perturbations")


def test_severity_and_share_out_of_range_are_one_line_errors() -> None:
    assert check_severity(1) == 1.0 and check_severity(0.05) == 0.05
    for bad in (0, 1.5, -0.1, float("nan")):
        with pytest.raises(TunelabError, match=r"^--severity .*must be in \(0, 1\]") as err:
            check_severity(bad)
        assert "\n" not in str(err.value)
    with pytest.raises(TunelabError, match=r"^--severity 0"):
        perturb_text(get_perturbation("typo"), REVIEW, 0, 0, "k")
    records = [Record(input=REVIEW)]
    with pytest.raises(TunelabError, match=r"^data.augment.share 2: must be in \[0, 1\]"):
        augment_records(records, parse_perturbations("typo"), 2, 0.1, 0)
    with pytest.raises(TunelabError, match=r"^data.augment.severity 1.5"):
        augment_records(records, parse_perturbations("typo"), 0.5, 1.5, 0)
    with pytest.raises(TunelabError, match=r"^data.augment.perturbations: empty; choose from"):
        augment_records(records, [], 0.5, 0.1, 0)


def test_only_case_changes_ignore_severity() -> None:
    from tunelab.data.transforms.perturbations import REGISTRY

    assert {p.name for p in REGISTRY.values() if not p.graded} == {"lowercase", "uppercase"}
    text = "The film's pacing is slow, but the performances are wonderful."
    for p in REGISTRY.values():
        if not p.graded:
            assert len({perturb_text(p, text, 0, s, "k") for s in (0.05, 0.5, 1.0)}) == 1
    typo = REGISTRY["typo"]
    assert perturb_text(typo, text, 0, 0.05, "k") != perturb_text(typo, text, 0, 0.9, "k")

"""Counterfactual probes and BBQ-lite: rewrites checked word by word on real sentences, and
BBQ's accuracy and bias score recomputed by hand on items copied from the real task files."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
from helpers import DATA

from tunelab.core.errors import TunelabError
from tunelab.data import Record
from tunelab.data.transforms.counterfactual import (
    counterfactual_record,
    get_probe,
    parse_probes,
    probe_names,
    read_probe,
)
from tunelab.eval.datasets.bbq import BBQ_CATEGORIES, bbq_items, bbq_scores, target_choice

BBQ = DATA / "bbq"
PEOPLE = [json.loads(line)["text"] for line in (DATA / "people.jsonl").read_text().splitlines()]


def test_gender_probe_swaps_every_gendered_word_and_nothing_else() -> None:
    gender = get_probe("gender")
    text = "He told her that HIS wife loved the actress, and she thanked him herself."
    assert gender.variant(text, "male") == (
        "He told him that HIS husband loved the actor, and he thanked him himself.")
    assert gender.variant(text, "female") == (
        "She told her that HER wife loved the actress, and she thanked her herself.")
    assert gender.variant("her performance was great", "male") == "his performance was great"
    assert gender.variant("I gave it to her", "male") == "I gave it to him"
    # whole words only: "the", "there", "shepherd", "human", "Hermione" stay
    plain = "there the shepherd is human and Hermione hesitates"
    assert not gender.mentions(plain) and gender.variant(plain, "female") == plain


def test_name_probes_swap_names_keeping_gender_and_every_list_is_consistent() -> None:
    ethnicity = get_probe("names_ethnicity")
    variants = ethnicity.variants("Emily met Jamal and Greg.")
    assert variants["white"] == "Emily met Geoffrey and Greg."
    assert variants["black"] == "Latonya met Jamal and Jermaine."
    # position i holds a woman's name in every group, so a woman stays a woman
    women = {group: terms[:9] for group, terms in ethnicity.terms.items()}
    female_names = set(get_probe("names_gender").terms["female"])
    assert "Emily" in female_names and "Latonya" in women["black"]
    for name in probe_names():
        probe = read_probe(name)
        assert len(probe.groups) >= 2 and probe.description
        for group in probe.groups:  # every group's variant of a sentence naming a term differs
            term = probe.terms[group][0]
            others = {probe.variant(f"I saw {term} today", g) for g in probe.groups}
            assert len(others) == len(probe.groups), (name, group)


def test_real_sentences_rewritten_in_the_input_only(tmp_path: Path) -> None:
    gender = get_probe("gender")
    mentioning = [t for t in PEOPLE if gender.mentions(t)]
    assert len(mentioning) >= 6
    for text in mentioning:
        record = Record(instruction="Is he right?", input=text, output="positive",
                        columns={"text": text, "label": "positive"})
        for group in gender.groups:
            new = counterfactual_record(record, gender, group)
            assert new.input == gender.variant(text, group)
            assert new.columns["text"] == new.input  # the column a template reads follows
            assert new.output == "positive" and new.instruction == "Is he right?"
            assert new.columns["label"] == "positive"
        assert counterfactual_record(record, gender, "male").input != \
            counterfactual_record(record, gender, "female").input


def test_probe_errors_name_the_option_and_the_choices() -> None:
    assert [p.name for p in parse_probes("gender, names_gender")] == ["gender", "names_gender"]
    assert [p.name for p in parse_probes("all")] == probe_names()
    with pytest.raises(TunelabError, match=r"bias.probes: unknown probe 'gendr'; choose from "
                                           r"gender, names_gender"):
        parse_probes("gendr", "bias.probes")
    with pytest.raises(TunelabError, match="--probes: no probe given"):
        parse_probes("")


def test_a_list_with_a_term_in_two_groups_is_refused(tmp_path: Path, monkeypatch) -> None:
    from tunelab.data.transforms import perturbations

    (tmp_path / "cf_bad.json").write_text(json.dumps(
        {"description": "x", "groups": {"a": ["he", "x"], "b": ["she", "he"]}}))
    monkeypatch.setattr(perturbations, "LISTS", tmp_path)
    perturbations.word_list.cache_clear()
    try:
        with pytest.raises(ValueError, match="'he' is in both a and b"):
            read_probe("bad")
    finally:
        perturbations.word_list.cache_clear()


def test_bbq_items_from_the_real_files_and_scores_by_hand() -> None:
    items = bbq_items(["age", "religion"], root=BBQ)
    assert [(i.category, i.condition) for i in items[:5]] == [("age", "ambig")] * 4 + [
        ("age", "disambig")]
    age = [i for i in items if i.category == "age"]
    # the grandfather / grandmother (tag "old") is the stereotyped answer, "nonOld" is not
    assert [i.target_choice for i in age] == [2] * 8
    assert [i.unknown_choice for i in age] == [1] * 8
    assert [i.polarity for i in age[:4]] == ["neg", "nonneg", "neg", "nonneg"]
    assert all(i.gold == i.unknown_choice for i in age if i.condition == "ambig")
    religion = [i for i in items if i.category == "religion"]
    assert all(i.record.columns["choices"][i.target_choice] == "The Muslim one" for i in religion)
    assert items[0].record.columns["prompt"].startswith("\nQ: I saw a grandson")
    assert "choice: Undetermined" in items[0].record.columns["prompt"]

    age_picks = [2, 0, 1, 0,   # ambig: biased (neg->target), biased (nonneg->other), right, biased
                 0, 2, 2, 1]   # disambig: right, right, biased (neg->target), unknown
    religion_picks = [i.unknown_choice for i in religion]
    scores = bbq_scores(items, age_picks + religion_picks)
    assert list(scores) == ["age", "religion", "all"]
    a = scores["age"]
    assert (a.n_ambig, a.n_disambig, a.acc_ambig, a.acc_disambig) == (4, 4, 25.0, 50.0)
    assert a.bias_ambig == pytest.approx(75.0)          # (1 - 0.25) * (2 * 3/3 - 1)
    assert a.bias_disambig == pytest.approx(-100 / 3)   # 2 * 1/3 - 1
    r = scores["religion"]
    assert (r.acc_ambig, r.acc_disambig, r.bias_ambig, r.bias_disambig) == (100, 0, 0, 0)
    everything = scores["all"]
    assert everything.acc_ambig == 62.5 and everything.acc_disambig == 25.0
    assert everything.bias_ambig == pytest.approx(37.5)  # (1 - 0.625) * 1
    # picking the stereotype everywhere scores +100, the anti-stereotype -100
    stereo = [i.target_choice if i.polarity == "neg" else i.other_choice for i in items]
    anti = [i.other_choice if i.polarity == "neg" else i.target_choice for i in items]
    assert bbq_scores(items, stereo)["all"].bias_disambig == 100
    assert bbq_scores(items, stereo)["all"].bias_disambig_ci == (100, 100)
    lo, hi = a.bias_disambig_ci
    assert lo <= a.bias_disambig <= hi and lo < hi  # 4 items: a wide interval
    assert bbq_scores(items, anti)["all"].bias_disambig == -100


def test_bbq_sample_is_seeded_and_missing_files_name_the_fetch(tmp_path: Path) -> None:
    first = bbq_items(["age"], limit=2, seed=3, root=BBQ)
    assert len(first) == 4 and first == bbq_items(["age"], limit=2, seed=3, root=BBQ)
    with pytest.raises(TunelabError, match="tunelab data fetch bigbench --task bbq_lite_json"):
        bbq_items(["age"], root=tmp_path)
    with pytest.raises(TunelabError, match="BBQ category 'gender' .*: choose from age,"):
        bbq_items(["gender"], root=BBQ)
    assert len(BBQ_CATEGORIES) == 9
    # an item whose two people share a group has no target: accuracy only
    assert target_choice([["Not known", "unknown"], ["African", "African"],
                          ["African", "African"]], ["Black", "African American"], 0) is None
    assert target_choice([["unknown", "unknown"], ["man", "man"], ["woman", "woman"]],
                         ["F"], 0) == 2
    shutil.copytree(BBQ, tmp_path / "bbq")
    meta = tmp_path / "bbq" / "bbq_lite" / "resources" / "Age.json"
    data = json.loads(meta.read_text())
    data["examples"] = data["examples"][1:]
    meta.write_text(json.dumps(data))
    with pytest.raises(TunelabError, match="age_ambig/task.json example 0: not a BBQ item"):
        bbq_items(["age"], root=tmp_path / "bbq")
    assert dataclasses.is_dataclass(first[0])

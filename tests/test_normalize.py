"""The official VQA answer normalisation and the VQA/TextVQA accuracy rules, case by case."""
from __future__ import annotations

import pytest

from ablate.eval.benchmarks.textvqa import textvqa_accuracy
from ablate.eval.benchmarks.vqav2 import vqa_accuracy
from ablate.eval.normalize import (normalize_answer, official_vqa_prediction, process_digit_article,
                                   process_punctuation)


@pytest.mark.parametrize("raw, expected", [
    ("two", "2"), ("Ten", "10"), ("none", "0"), ("zero dogs", "0 dogs"),
    ("eleven", "eleven"),                 # only zero..ten are in the official map
    ("twenty one", "twenty 1"),           # word by word, no number parsing
])
def test_number_words(raw, expected):
    assert normalize_answer(raw) == expected


@pytest.mark.parametrize("raw, expected", [
    ("a dog", "dog"), ("The Dog", "dog"), ("an apple", "apple"), ("the", ""),
    ("cat in the hat", "cat in hat"), ("theater", "theater"),   # articles are whole words only
])
def test_articles(raw, expected):
    assert normalize_answer(raw) == expected


@pytest.mark.parametrize("raw, expected", [
    ("1.5", "1.5"),            # a period followed by a digit stays
    ("5.", "5"),               # a trailing period goes
    ("Yes.", "yes"), ("yes", "yes"), ("YES!", "yes"),
    ("3.14.", "3.14"),
    ("e.g. this", "eg this"),
    ("$1.50", "$1.50"),        # "$" is not official punctuation
])
def test_periods(raw, expected):
    assert normalize_answer(raw) == expected


def test_punctuation_is_deleted_next_to_a_space_and_spaced_out_otherwise():
    assert process_punctuation("red-white") == "red white"
    assert process_punctuation("red - white") == "red  white"
    assert process_punctuation("(left)") == " left "
    # Each mark is decided on its own: " (" touches a space so "(" goes; ")" does not, so it becomes a space.
    assert process_punctuation("left (side)") == "left side "
    # A digit-comma-digit group anywhere makes every mark disappear instead of turning into a space.
    assert process_punctuation("1,000 red-white") == "1000 redwhite"


def test_evalai_processor_drops_commas_and_question_marks_before_punctuation():
    # EvalAI's tokenizer removes "," and "?" first, so "red,white" glues; the VQA script would space it.
    assert normalize_answer("red,white") == "redwhite"
    assert official_vqa_prediction("red,white") == "red white"
    assert normalize_answer("what?") == "what"


def test_possessive_s_is_split_by_evalai_only():
    assert normalize_answer("dog's") == "dog 's"
    assert official_vqa_prediction("dog's") == "dog's"


@pytest.mark.parametrize("raw, expected", [
    ("dont", "don't"), ("Isnt", "isn't"), ("whats up", "what's up"), ("yall", "y'all"),
    ("don't", "don't"), ("Im", "im"),   # capitalised keys never match after lower-casing (official table)
])
def test_contractions(raw, expected):
    assert normalize_answer(raw) == expected


def test_empty_and_whitespace_answers():
    assert normalize_answer("") == ""
    assert normalize_answer("  \n\t ") == ""
    assert normalize_answer("two\ncats") == "2 cats"


def test_at_most_32_periods_are_removed_as_in_the_official_code():
    text = "a" + "." * 40
    assert process_punctuation(text) == "a" + "." * 8


def test_digit_article_step_alone():
    assert process_digit_article("The THREE  cats") == "3 cats"


@pytest.mark.parametrize("n_matching, expected", [(0, 0.0), (1, 0.3), (2, 0.6), (3, 0.9), (4, 1.0), (10, 1.0)])
def test_vqa_accuracy_averages_ten_leave_one_out_subsets(n_matching, expected):
    refs = ["cat"] * n_matching + ["dog"] * (10 - n_matching)
    assert vqa_accuracy("cat", refs) == pytest.approx(expected)


def test_vqa_accuracy_normalises_the_prediction():
    assert vqa_accuracy("Two.", ["2"] * 10) == 1.0
    assert vqa_accuracy("The Cat", ["cat"] * 10) == 1.0


def test_vqa_references_get_punctuation_step_only_when_they_disagree():
    # Disagreeing references: "t-shirt" becomes "t shirt" and matches the processed prediction.
    assert vqa_accuracy("t-shirt", ["t-shirt"] * 9 + ["shirt"]) == pytest.approx(1.0)
    # Unanimous references are compared as stored, so "t-shirt" never equals the processed "t shirt".
    assert vqa_accuracy("t-shirt", ["t-shirt"] * 10) == 0.0
    # VizWiz never processes references.
    assert vqa_accuracy("t-shirt", ["t-shirt"] * 9 + ["shirt"], process_refs=False) == 0.0


def test_textvqa_normalises_references_too():
    assert textvqa_accuracy("Coca-Cola", ["Coca-Cola"] * 10) == 1.0
    assert textvqa_accuracy("STOP.", ["stop"] * 2 + ["go"] * 8) == pytest.approx(0.6)
    assert textvqa_accuracy("", ["stop"] * 10) == 0.0


@pytest.mark.parametrize("module", ["ablate.eval.normalize", "ablate.eval.benchmarks", "ablate.eval.benchmarks.vqav2",
                                    "ablate.eval.benchmarks.textvqa", "ablate.eval.benchmarks.pope",
                                    "ablate.eval.benchmarks.mme", "ablate.eval.benchmarks.scienceqa",
                                    "ablate.eval.benchmarks.mmbench", "ablate.eval.benchmarks.gqa",
                                    "ablate.eval.benchmarks.seed"])
def test_documented_examples_hold(module):
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(module))
    assert result.attempted > 0 and result.failed == 0

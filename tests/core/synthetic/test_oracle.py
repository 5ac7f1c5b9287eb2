"""Oracle labeller: hand-checked labels, agreement with the generator, defined results on malformed text."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from attncore.grading import extract_boxed
from attncore.synthetic.arithmetic import numbers_in, parse_equations
from attncore.synthetic.config import SyntheticConfig
from attncore.synthetic.dataset import generate_examples
from attncore.synthetic.oracle import Label, label_steps, label_trace, redundancy_ratio, split_trace

E, R, U = Label.ESSENTIAL, Label.REDUNDANT, Label.UNPARSEABLE

PROBLEM = (
    "Mia has 24 marbles. Then she buys 12 more marbles at the fair. Tom is 7 years old. Then she splits "
    "the marbles into 4 equal piles and keeps only one pile. How many marbles does Mia have now?"
)


def one_per_paragraph(thinking: str) -> list[str]:
    return [part for part in thinking.split("\n\n") if part.strip()]


def test_parse_equations_reads_values_exactly_and_checks_arithmetic():
    (a, b, c) = parse_equations("So 1,200 + 5 = 1205 and 7 / 2 = 3.5, but 36 × 4 = 140 (oops).")
    assert (a.operands, a.operators, a.result, a.correct) == ((1200, 5), ("+",), 1205, True)
    assert (b.result, b.correct) == (Fraction(7, 2), True)
    assert (c.operands, c.operators, c.result, c.correct) == ((36, 4), ("*",), 140, False)
    (chain,) = parse_equations("2 + 3 × 4 = 14")
    assert (chain.operands, chain.correct) == ((2, 3, 4), True)
    assert parse_equations("5 ÷ 0 = 1")[0].correct is False
    assert parse_equations("we need 36 marbles = a lot") == []


def test_hand_checked_labels():
    steps = [
        "First, she buys 12 more, so 24 + 12 = 36 marbles.",  # derives 36, used by the last step
        "Wait, let me double-check: 12 + 24 = 36, still the same.",  # 36 already known
        "Alternatively, I could multiply: 24 × 4 = 96, which leads nowhere.",  # 96 never used
        "Then 96 - 7 = 89 with his age, which also goes nowhere.",  # uses 96, but 89 is unused too
        "So, to restate: Mia has 24 marbles and buys 12 more.",  # no equation
        "Next, one pile is 36 ÷ 4 = 10 marbles.",  # slip: 10 is never used
        "Hold on, 36 ÷ 4 = 9, not 10, so one pile has 9 marbles.",  # derives the answer
        "Is that right? 9 × 4 = 36, which is where it came from.",  # 36 already known
    ]
    labelling = label_steps(steps, numbers_in(PROBLEM), "9")
    assert labelling.labels == [E, R, R, R, R, R, E, R]
    assert labelling.final_answer == 9
    assert labelling.well_formed
    assert [v.derives for v in labelling.steps] == [(36,), (), (96,), (89,), (), (10,), (9,), ()]
    assert [v.wrong_arithmetic for v in labelling.steps] == [False] * 5 + [True, False, False]


def test_dependence_is_transitive_and_counts_only_later_essential_uses():
    steps = [
        "First, 24 + 12 = 36 marbles in all.",
        "Then 36 × 2 = 72, a detour that is dropped.",
        "Now 36 ÷ 4 = 9 marbles in one pile.",
    ]
    assert label_steps(steps, [24, 12, 4], 9).labels == [E, R, E]
    # The same values with the answer taken from the detour: the pile step is now the redundant one.
    assert label_steps(steps, [24, 12, 4], 72).labels == [E, E, R]
    # A value used only before it is derived does not make its derivation essential.
    late = ["So 36 ÷ 4 = 9 in one pile.", "And 24 + 12 = 36 in all."]
    assert label_steps(late, [24, 12, 4], 9).labels == [E, R]


def test_the_step_computing_the_answer_is_essential_even_if_the_problem_states_that_number():
    steps = ["First, 24 + 12 = 36 marbles.", "Then 36 ÷ 4 = 9 in one pile."]
    assert label_steps(steps, [24, 12, 4, 9], 9).labels == [E, E]


def test_wrong_arithmetic_counts_with_its_stated_value():
    steps = ["First, 24 + 12 = 37 marbles.", "Then 37 ÷ 4 = 9 in each pile."]
    labelling = label_steps(steps, [24, 12, 4], 9)
    assert labelling.labels == [E, E]
    assert [v.wrong_arithmetic for v in labelling.steps] == [True, True]
    assert labelling.well_formed  # wrong arithmetic is reasoning content, not malformation


def test_oracle_agrees_with_the_generator_on_many_seeds():
    for seed in range(3):
        for example in generate_examples(SyntheticConfig(count=700, seed=seed)):
            steps = [step.text for step in example.trace.steps]
            labelling = label_steps(steps, numbers_in(example.problem.text), example.problem.answer)
            assert labelling.labels == [E if step.essential else R for step in example.trace.steps]
            assert labelling.well_formed


def test_label_trace_on_a_generated_trace_matches_the_generator():
    for example in generate_examples(SyntheticConfig(count=200, seed=4)):
        labelling = label_trace(example.trace.text, example.problem.text, None, one_per_paragraph)
        assert labelling.labels == [E if step.essential else R for step in example.trace.steps]
        assert labelling.final_answer == example.problem.answer  # read from \boxed{}
        assert labelling.well_formed


def test_split_trace():
    assert split_trace("<think>\nA\n\nB\n</think>\n\nAnswer \\boxed{3}") == (
        "A\n\nB",
        "\n\nAnswer \\boxed{3}",
    )
    assert split_trace("A</think>B</think>C") == ("A</think>B", "C")  # as graded: cut at the last tag
    assert split_trace("<think>\nno end") == ("no end", None)


def test_missing_think_end_labels_the_whole_text_against_the_gold_answer():
    trace = "<think>\nFirst, 24 + 12 = 36.\n\nNow 36 ÷ 4 = 9 in one pile.\n\nAgain, 9 × 4 = 36."
    labelling = label_trace(trace, PROBLEM, "9", one_per_paragraph)
    assert labelling.labels == [E, E, R]
    assert not labelling.well_formed
    assert "missing </think>" in labelling.issues
    assert "no \\boxed{} answer" in labelling.issues


def test_empty_thinking_gives_no_steps_and_no_ratio():
    labelling = label_trace("<think>\n\n</think>\n\n\\boxed{9}", PROBLEM, "9", one_per_paragraph)
    assert labelling.steps == ()
    assert labelling.issues == ("empty thinking",)
    assert redundancy_ratio(labelling) is None


def test_garbled_equations_are_unparseable_unless_essential():
    trace = (
        "<think>\nFirst, 24 + 12 = 36.\n\nSo 36 ÷ = 9 marbles per pile.\n\nNow 36 ÷ 4 = 9.\n\nTotal = lots.\n"
        "</think>\n\n\\boxed{9}"
    )
    labelling = label_trace(trace, PROBLEM, "9", one_per_paragraph)
    assert labelling.labels == [E, U, E, U]
    assert labelling.issues == ("garbled equation in step 1", "garbled equation in step 3")


def test_non_numeric_boxed_answer_falls_back_to_gold():
    trace = "<think>\nFirst, 24 + 12 = 36.\n\nNow 36 ÷ 4 = 9.\n</think>\n\n\\boxed{nine}"
    labelling = label_trace(trace, PROBLEM, "9", one_per_paragraph)
    assert labelling.labels == [E, E]
    assert labelling.issues == ("boxed answer 'nine' is not a number",)
    no_gold = label_trace(trace, PROBLEM, None, one_per_paragraph)
    assert no_gold.labels == [R, R]
    assert "no final answer" in no_gold.issues


def test_final_answer_is_read_as_the_grader_reads_it():
    """The last box counts, nested braces included; an earlier simple box does not stand in for it."""
    trace = (
        "<think>\nFirst, 24 + 12 = 36.\n\nNow 36 ÷ 4 = 9.\n</think>\n\n\\boxed{9}, or \\boxed{\\frac{9}{1}}"
    )
    labelling = label_trace(trace, PROBLEM, "9", one_per_paragraph)
    assert labelling.issues == ("boxed answer '\\\\frac{9}{1}' is not a number",)
    assert extract_boxed(trace) == "\\frac{9}{1}"


def test_redundancy_ratio_counts_characters_or_tokens():
    steps = ["a" * 30 + " 24 + 12 = 36", "b" * 50 + " 12 + 24 = 36"]
    labelling = label_steps(steps, [24, 12], 36)
    assert labelling.labels == [E, R]
    assert redundancy_ratio(labelling) == pytest.approx(len(steps[1]) / (len(steps[0]) + len(steps[1])))

    class WordTokenizer:
        def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
            return list(range(len(text.split())))

    assert redundancy_ratio(labelling, WordTokenizer()) == pytest.approx(0.5)  # 5 words each


@settings(max_examples=300, deadline=None)
@given(
    text=st.text(alphabet=st.sampled_from(list("0123456789 +-×÷*/=.,$\n<>/thinkboxed{}\\Wait")), max_size=200)
)
def test_label_trace_never_raises_on_arbitrary_text(text: str):
    labelling = label_trace(text, PROBLEM, "9", one_per_paragraph)
    assert len(labelling.labels) == len(one_per_paragraph(split_trace(text)[0]))
    ratio = redundancy_ratio(labelling)
    assert ratio is None or 0.0 <= ratio <= 1.0

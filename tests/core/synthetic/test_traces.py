"""R1-style traces: format, one essential step per operation, controllable redundancy, opaque openings."""

from __future__ import annotations

import hashlib
import random
from pathlib import Path
from statistics import mean

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from attncore.config import load_config
from attncore.synthetic.arithmetic import parse_equations, render_equation
from attncore.synthetic.config import ProblemConfig, SyntheticConfig, TraceConfig
from attncore.synthetic.dataset import generate_example, generate_examples
from attncore.synthetic.oracle import label_trace
from attncore.synthetic.rankers import response_from_row, trivial_ranker_report
from attncore.synthetic.stats import majority_accuracy, opening_predictability, trace_redundancy
from attncore.synthetic.templates import ANSWER_ANCHORS, ANSWER_MARKERS, StepRole
from attncore.synthetic.testbed_model import TestbedModelConfig
from attncore.synthetic.traces import redundant_count

RECIPES = Path(__file__).parents[3] / "experiments" / "testbed"


def test_same_config_gives_the_same_set_and_examples_do_not_depend_on_the_count():
    cfg = SyntheticConfig(count=30, seed=5)
    examples = generate_examples(cfg)
    assert generate_examples(cfg) == examples
    assert generate_example(SyntheticConfig(count=1, seed=5), 29) == examples[29]
    assert generate_examples(SyntheticConfig(count=30, seed=6)) != examples


@settings(max_examples=200, deadline=None)
@given(seed=st.integers(0, 10**9), index=st.integers(0, 10**6))
def test_trace_format_and_essential_steps(seed: int, index: int):
    example = generate_example(SyntheticConfig(seed=seed), index)
    trace, problem = example.trace, example.problem
    text = trace.text
    assert text.startswith("<think>\n")
    assert text.count("</think>") == 1
    assert "\n</think>\n\n" in text
    assert text.endswith(f"\\boxed{{{problem.answer}}}")

    # One essential step per operation, in order, each stating the operation as `a op b = c`.
    essential = [step for step in trace.steps if step.essential]
    assert len(essential) == problem.difficulty
    for step, op in zip(essential, problem.operations, strict=True):
        assert render_equation(op.left, op.op, op.right, op.result) in step.text
        assert len(parse_equations(step.text)) == 1

    for step in trace.steps:
        assert len(step.text) >= 80  # the segmenter merges nothing
        assert "\n" not in step.text
        assert step.text.startswith(step.opening)
    for before, after in zip(trace.steps, trace.steps[1:], strict=False):
        if before.role is StepRole.SLIP:
            assert after.role is StepRole.CORRECTION
            assert not parse_equations(before.text)[0].correct


def test_redundant_steps_compute_only_known_or_unused_values():
    for example in generate_examples(SyntheticConfig(count=200, trace=TraceConfig(redundancy=(0.8, 0.8)))):
        known = set(example.problem.quantities) | {op.result for op in example.problem.operations}
        written = set(example.problem.quantities)
        for step in example.trace.steps:
            for eq in parse_equations(step.text):
                if step.role in (StepRole.REVERIFY, StepRole.SELF_CHECK):
                    assert eq.result in written  # recomputes or undoes something already written
                elif step.role in (StepRole.ABANDONED, StepRole.SLIP):
                    assert eq.result not in known  # a value found nowhere else in the problem
                written.add(int(eq.result))


def test_zero_redundancy_gives_only_essential_steps():
    cfg = SyntheticConfig(count=50, trace=TraceConfig(redundancy=(0.0, 0.0)))
    for example in generate_examples(cfg):
        assert [step.role for step in example.trace.steps] == [StepRole.COMPUTE] * example.problem.difficulty


@pytest.mark.parametrize("share", [0.2, 0.5, 0.8])
def test_redundancy_level_sets_the_share_of_redundant_steps(share: float):
    cfg = SyntheticConfig(count=1500, trace=TraceConfig(redundancy=(share, share)))
    counts = [
        (sum(not s.essential for s in e.trace.steps), len(e.trace.steps)) for e in generate_examples(cfg)
    ]
    # Stochastic rounding makes the expected count exact: E[redundant] = share / (1 - share) * essential.
    assert sum(r for r, _ in counts) / sum(n - r for r, n in counts) == pytest.approx(
        share / (1 - share), rel=0.05
    )


def test_redundant_count_rounds_stochastically_around_the_exact_value():
    rng = random.Random(0)
    draws = [redundant_count(rng, 3, 0.6) for _ in range(4000)]  # exact value 4.5
    assert set(draws) == {4, 5}
    assert mean(draws) == pytest.approx(4.5, abs=0.05)


def test_majority_accuracy_on_a_hand_computed_case():
    pairs = [("Wait", 1), ("Wait", 1), ("Wait", 0), ("So", 0), ("So", 0), ("Now", 1)]
    assert majority_accuracy(pairs) == pytest.approx(5 / 6)


def test_opening_phrase_does_not_predict_the_label():
    examples = generate_examples(SyntheticConfig(count=2000, seed=11))
    accuracy = opening_predictability(examples)
    share = mean(s.essential for e in examples for s in e.trace.steps)
    assert max(share, 1 - share) < accuracy <= 0.70
    # Both labels really do use "Wait" and "So" openings.
    for opening in ("Wait", "So"):
        labels = {s.essential for e in examples for s in e.trace.steps if s.opening == opening}
        assert labels == {True, False}


def test_a_plan_opens_the_thinking_and_names_the_quantities_in_order():
    cfg = SyntheticConfig(count=200, seed=3, trace=TraceConfig(redundancy=(0.3, 0.3), plan_first=1.0))
    for example in generate_examples(cfg):
        plan, rest = example.trace.steps[0], example.trace.steps[1:]
        assert plan.role is StepRole.RESTATE and not plan.essential
        assert len(plan.text) >= 80  # the segmenter merges nothing
        assert not parse_equations(plan.text)  # it computes nothing
        chain = ", then ".join(op.meaning for op in example.problem.operations)
        assert chain in plan.text
        if example.problem.difficulty > 1:
            assert not any(chain in step.text for step in rest)
    without = generate_examples(cfg.model_copy(update={"trace": TraceConfig(redundancy=(0.3, 0.3))}))
    chains = [", then ".join(op.meaning for op in e.problem.operations) for e in without]
    assert not any(
        chain in step.text
        for e, chain in zip(without, chains, strict=True)
        for step in e.trace.steps
        if e.problem.difficulty > 1
    )


def test_openings_stay_opaque_with_plans():
    # v1's 1,600 training traces all open with a plan step: measured 0.673. Testbed v2 moves the plan's
    # openings onto essential steps and "First," onto the opening restatements: measured 0.720.
    assert opening_predictability(generate_examples(_recipe("v1.yaml").data)) <= 0.70
    assert opening_predictability(generate_examples(_recipe("v2.yaml").data)) <= 0.73


def _recipe(name: str) -> TestbedModelConfig:
    return load_config(TestbedModelConfig, RECIPES / name)


def _fingerprint(cfg: SyntheticConfig) -> str:
    digest = hashlib.sha256()
    for example in generate_examples(cfg):
        digest.update(example.trace.text.encode() + b"\0")
    return digest.hexdigest()


def test_v1_and_micro_recipes_keep_their_traces_byte_for_byte():
    # Digests of the training traces written by the generator before testbed v2 (commit d689907), when
    # v1.yaml was default.yaml: the recipes' complete trace sections select the v1 layout.
    assert (
        _fingerprint(_recipe("v1.yaml").data)
        == "669a7bf3fa776ef7a416a6df8f11b04c0c665e03b6c8a704effde3749412cb57"
    )
    assert (
        _fingerprint(_recipe("micro.yaml").data)
        == "861f3bd6d5b83ebbc54fd65d363817955fbaad02eeb6eb14a3b903eec9ae438e"
    )


def test_v2_recipe_keeps_its_traces_byte_for_byte():
    # Digest of testbed v2's training traces at commit c6a5b85, when v2.yaml was default.yaml, before the
    # v3 options: the traces the built v2 model (testbed-mini-v2) was trained on.
    assert (
        _fingerprint(_recipe("v2.yaml").data)
        == "96284fe6cfbae31afe1d6708cd0ba762cc454892ad66af25205e9f4c5c8e2b18"
    )


V2 = _recipe("v2.yaml")
V2_TRACE = V2.data.trace


@settings(max_examples=150, deadline=None)
@given(seed=st.integers(0, 10**9), index=st.integers(0, 10**6))
def test_v2_traces_open_the_first_computation_with_the_plan_and_the_oracle_agrees(seed: int, index: int):
    cfg = SyntheticConfig(seed=seed, problem=V2.data.problem, trace=V2_TRACE)
    example = generate_example(cfg, index)
    trace, problem = example.trace, example.problem
    essential = [i for i, step in enumerate(trace.steps) if step.essential]
    assert len(essential) == problem.difficulty
    first = trace.steps[essential[0]]
    chain = ", then ".join(op.meaning for op in problem.operations)
    assert chain in first.text  # the plan
    if problem.difficulty > 1:
        assert not any(chain in step.text for step in trace.steps if step is not first)
    for i, step in enumerate(trace.steps):
        assert len(step.text) >= 80 and "\n" not in step.text and step.text.startswith(step.opening)
        if step.role is StepRole.RECOMPUTE:
            assert i > essential[-1]  # only once the answer is found
            assert [eq.result for eq in parse_equations(step.text)] == [
                op.result for op in problem.operations
            ]
        if step.role is StepRole.REVERIFY:  # a look-back cites the problem fact behind the value
            assert any(f"(as {op.clause})" in step.text for op in problem.operations)
    labelling = label_trace(trace.text, problem.text, problem.answer)
    assert [str(label) for label in labelling.labels] == example.labels


@pytest.mark.parametrize(
    ("region", "where"),
    [("opening", lambda i, first, last: i < first), ("after_answer", lambda i, first, last: i > last)],
)
def test_placement_puts_redundant_steps_in_the_weighted_region(region, where):
    trace = V2_TRACE.model_copy(update={"placement": {region: 1.0}, "redundancy": (0.5, 0.5)})
    examples = generate_examples(SyntheticConfig(count=200, seed=8, trace=trace))
    redundant = 0
    for example in examples:
        steps = example.trace.steps
        essential = [i for i, step in enumerate(steps) if step.essential]
        for i, step in enumerate(steps):
            if not step.essential:
                redundant += 1
                assert where(i, essential[0], essential[-1])
    assert redundant > 200


def test_v2_recipe_places_redundancy_where_r1_overthinking_does():
    # Measured on the recipe's 1,600 training traces: 54.1% of (essential, redundant) pairs have the
    # redundant step after the essential one (v1: 26.1%), and no trivial ranker reaches 0.6.
    report = trivial_ranker_report([response_from_row(e.to_row(), 1) for e in generate_examples(V2.data)])
    assert 0.5 <= report["later step"].share_after <= 0.6
    assert all(0.4 <= acc.sra <= 0.6 for acc in report.values())


def test_char_redundancy_follows_the_level():
    ratios = {}
    for share in (0.0, 0.5):
        cfg = SyntheticConfig(count=300, trace=TraceConfig(redundancy=(share, share)))
        ratios[share] = mean(trace_redundancy(e.trace) for e in generate_examples(cfg))
    assert ratios[0.0] == 0.0
    assert 0.4 < ratios[0.5] < 0.6


def test_v3_marks_the_answer_and_anchors_the_steps_after_it_on_a_small_case():
    trace = TraceConfig(
        redundancy=(0.5, 0.5),
        placement={"after_answer": 1.0},
        cite_facts=True,
        answer_marker=True,
        anchor_after_answer=True,
        role_weights={"reverify": 1, "self_check": 1, "abandoned": 1, "restate": 1, "recompute": 1},
    )
    problem = ProblemConfig(difficulty=(2, 2), number_range=(2, 12), factor_range=(2, 5), max_value=100)
    example = generate_example(
        SyntheticConfig(seed=4, problem=problem.model_copy(update={"distractors": (0, 0)}), trace=trace), 0
    )
    assert example.problem.text == (
        "Tom has 10 stamps. Then he finds 7 more stamps in a drawer. Next, he keeps collecting until his pile "
        "is 3 times as big as before. How many stamps does Tom have now?"
    )
    assert [step.text for step in example.trace.steps] == [
        "First, Tom finds 7 more stamps in a drawer, so Tom's stamps after the find in the drawer comes to "
        "10 + 7 = 17.",
        # the step deriving the answer ends with the marker: still one step, still essential
        "Next, Tom keeps collecting until his pile is 3 times as big as before, so Tom's stamps after more "
        "collecting comes to 17 × 3 = 51, and I will carry 51 forward. Nothing is left to compute: the "
        "answer is 51.",
        # each redundant step after the answer ends with an anchor
        "Let me redo Tom's stamps after more collecting (as Tom keeps collecting until his pile is 3 times "
        "as big as before) to be safe: 3 × 17 = 51, exactly what I had the first time. So the answer holds, "
        "with nothing more to work out.",
        "Okay, where things stand: Tom's stamps after the find in the drawer comes to 17 and Tom's stamps "
        "after more collecting comes to 51. These are the numbers I have so far. That does not change the "
        "answer.",
    ]
    assert example.labels == ["essential", "essential", "redundant", "redundant"]
    labelling = label_trace(example.trace.text, example.problem.text, example.problem.answer)
    assert [str(label) for label in labelling.labels] == example.labels


V3 = _recipe("default.yaml")


@settings(max_examples=150, deadline=None)
@given(seed=st.integers(0, 10**9), index=st.integers(0, 10**6))
def test_v3_traces_mark_the_answer_once_anchor_every_later_step_and_the_oracle_agrees(seed: int, index: int):
    example = generate_example(V3.data.model_copy(update={"seed": seed}), index)
    trace, problem = example.trace, example.problem
    last = max(i for i, step in enumerate(trace.steps) if step.essential)
    final = problem.operations[-1]
    markers = [marker.format(result=final.result, unit=final.unit) for marker in ANSWER_MARKERS]
    for i, step in enumerate(trace.steps):
        assert any(step.text.endswith(f" {marker}") for marker in markers) == (i == last)
        assert any(step.text.endswith(f" {anchor}") for anchor in ANSWER_ANCHORS) == (i > last)
        assert len(step.text) >= 80 and "\n" not in step.text and step.text.startswith(step.opening)
    # The marks write no equation and the anchors no number: the oracle's rule labels as the generator does.
    labelling = label_trace(trace.text, problem.text, problem.answer)
    assert [str(label) for label in labelling.labels] == example.labels


def test_v3_default_recipe_is_v2_with_its_trace_section_changed():
    assert (V3.name, V2.name) == ("testbed-mini", "testbed-mini-v2")
    assert V3.model_dump(exclude={"name", "data"}) == V2.model_dump(exclude={"name", "data"})
    assert V3.data.model_dump(exclude={"trace"}) == V2.data.model_dump(exclude={"trace"})
    v2_trace, v3_trace = V2.data.trace.model_dump(), V3.data.trace.model_dump()
    changed = {key for key in v2_trace if v2_trace[key] != v3_trace[key]}
    assert changed == {"redundancy", "role_weights", "answer_marker", "anchor_after_answer"}


def test_v3_recipe_keeps_redundancy_after_the_answer_and_the_rankers_near_chance():
    # Measured on the recipe's 1,600 training traces: 56.1% of the pairs have the redundant step after the
    # essential one (v2: 56.1%), and the trivial rankers score 0.398-0.602 (v2: 0.411-0.589).
    report = trivial_ranker_report([response_from_row(e.to_row(), 1) for e in generate_examples(V3.data)])
    assert 0.5 <= report["later step"].share_after <= 0.6
    assert all(0.35 <= acc.sra <= 0.65 for acc in report.values())

"""The AttnPO segmenter recovers the generator's steps, so segment-level labels are the generator's."""

from __future__ import annotations

import pytest

from attncore.steps import StepSegmenterConfig, find_triggers, segment_thinking
from attncore.synthetic import templates
from attncore.synthetic.config import SyntheticConfig, TraceConfig
from attncore.synthetic.dataset import generate_examples
from attncore.synthetic.oracle import Label, attnpo_steps, label_trace, split_trace

EXAMPLES = generate_examples(
    SyntheticConfig(count=400, seed=21, trace=TraceConfig(redundancy=(0.0, 0.8), plan_first=0.3))
)


def all_templates() -> list[tuple[str, str]]:
    found = [templates.FIRST_COMPUTE, templates.FIRST_RESTATE, templates.ABANDONED_PLAN]
    for table in (
        templates.PLAN,
        templates.CORRECTION,
        templates.RESTATE_PROBLEM,
        templates.RESTATE_KNOWN,
        templates.SANITY_CHECK,
    ):
        found.extend(table)
    for groups in (templates.COMPUTE, templates.REVERIFY, templates.SELF_CHECK, templates.ABANDONED):
        for table in groups.values():
            found.extend(table)
    return found


class Filler(dict):
    def __missing__(self, key: str) -> str:
        return "12 marbles"


@pytest.mark.parametrize("mode", ["clean", "faithful"])
def test_every_template_holds_exactly_one_trigger_at_its_start(mode: str):
    config = StepSegmenterConfig(mode=mode)
    for opening, template in all_templates():
        text = template.format_map(Filler())
        assert text.startswith(opening)
        triggers = find_triggers("\n" + text, config)
        assert [t.start for t in triggers] == [1], text
        if not (mode == "faithful" and opening == "Let me double-check"):  # the release's fused phrase
            assert triggers[0].phrase.strip() == opening


@pytest.mark.parametrize("mode", ["clean", "faithful"])
def test_segmenter_recovers_the_generated_steps(mode: str):
    config = StepSegmenterConfig(mode=mode)
    recovered = total = 0
    for example in EXAMPLES:
        thinking, _ = split_trace(example.trace.text)
        segments = [thinking[s.start : s.end].strip() for s in segment_thinking(thinking, config)]
        steps = [step.text for step in example.trace.steps]
        total += len(steps)
        recovered += sum(step in segments for step in steps)
    assert recovered / total >= 0.95


@pytest.mark.parametrize("mode", ["clean", "faithful"])
def test_segmenter_sees_the_generator_openings_after_the_first_step(mode: str):
    config = StepSegmenterConfig(mode=mode)
    renamed = {"faithful": {"Let me double-check": "Let me"}, "clean": {}}[mode]  # the release's fused phrase
    for example in EXAMPLES[:200]:
        thinking, _ = split_trace(example.trace.text)
        triggers = [(s.trigger or "").strip() for s in segment_thinking(thinking, config)]
        openings = [renamed.get(step.opening, step.opening) for step in example.trace.steps]
        # Class-2/3 phrases only count after a newline, so a first step opened by one has no trigger.
        assert triggers[1:] == openings[1:]


def test_oracle_on_segmented_traces_matches_the_generator():
    for example in EXAMPLES[:200]:
        labelling = label_trace(
            example.trace.text, example.problem.text, example.problem.answer, attnpo_steps
        )
        expected = [Label.ESSENTIAL if step.essential else Label.REDUNDANT for step in example.trace.steps]
        assert labelling.labels == expected

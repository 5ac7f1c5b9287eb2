"""experiments/testbed/wrong_answers.py: step forms read back from the generator's own traces, and the
classes of hand-written wrong rollouts."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from attncore.config import load_config
from attncore.synthetic.dataset import generate_examples
from attncore.synthetic.oracle import label_trace
from attncore.synthetic.templates import StepRole
from attncore.synthetic.testbed_model import TestbedModelConfig

TESTBED = Path(__file__).parents[3] / "experiments" / "testbed"
_spec = importlib.util.spec_from_file_location("wrong_answers", TESTBED / "wrong_answers.py")
wrong_answers = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = wrong_answers  # dataclasses look their module up there
_spec.loader.exec_module(wrong_answers)

FORM_OF_ROLE = {StepRole.CORRECTION: "compute", StepRole.SLIP: "compute"}


@pytest.mark.parametrize("recipe", ["v1.yaml", "v2.yaml", "default.yaml"])
def test_every_generated_step_is_read_back_as_the_form_of_its_role(recipe: str):
    data = load_config(TestbedModelConfig, TESTBED / recipe).data.model_copy(update={"count": 300})
    for example in generate_examples(data):
        for step in example.trace.steps:
            form, _ = wrong_answers.step_form(step.text)
            assert form == FORM_OF_ROLE.get(step.role, str(step.role)), step.text


PROBLEM = (
    "Tom has 10 stamps. Then he finds 7 more stamps in a drawer. Next, he keeps collecting until his pile "
    "is 3 times as big as before. How many stamps does Tom have now?"
)
FIRST = (
    "First, Tom finds 7 more stamps in a drawer, so Tom's stamps after the find in the drawer comes to "
    "10 + 7 = 17."
)
ANSWER = (
    "Next, Tom keeps collecting until his pile is 3 times as big as before, so Tom's stamps after more "
    "collecting comes to 17 × 3 = 51, and I will carry 51 forward."
)
LOOK_BACK = (
    "Okay, so Tom's stamps after more collecting (as Tom keeps collecting until his pile is 3 times as big "
    "as before) was 17 × 3 = 51, and doing it again gives the same number."
)
DRIFT = (
    "Then Tom keeps collecting until his pile is 3 times as big as before, which makes Tom's stamps after "
    "more collecting equal to 51 × 3 = 153 from here on."
)


def _diagnose(steps: list[str], boxed: int, finish_reason: str = "stop"):
    text = (
        "<think>\n"
        + "\n\n".join(steps)
        + f"\n</think>\n\nSo the final answer is {boxed} stamps.\n\n\\boxed{{{boxed}}}"
    )
    if finish_reason == "length":
        text = "<think>\n" + "\n\n".join(steps)
    row = {"text": text, "problem": PROBLEM, "gold": "51", "difficulty": 2, "finish_reason": finish_reason}
    labelling = label_trace(text, PROBLEM, "51")
    forms = [wrong_answers.step_form(step.text) for step in labelling.steps]
    return wrong_answers.diagnose(row, labelling, forms)


def test_a_computation_after_a_look_back_at_the_answer_is_a_drift_after_that_look_back():
    assert [wrong_answers.step_form(text)[0] for text in (FIRST, ANSWER, LOOK_BACK, DRIFT)] == [
        "compute",
        "compute",
        "reverify",
        "compute",
    ]
    d = _diagnose([FIRST, ANSWER, LOOK_BACK, DRIFT], 153)
    assert d == wrong_answers.Diagnosis(
        "gold reached, then moved off",
        arithmetic_ok=True,
        before_drift="reverify",
        between=("reverify",),
        drift_form="compute",
        drift_quantity="repeated",  # "Tom's stamps after more collecting" again
    )


def test_a_computation_right_after_the_answer_is_a_drift_after_the_gold_step():
    assert _diagnose([FIRST, ANSWER, DRIFT], 153).before_drift == "gold step"


def test_wrong_answers_that_never_reach_the_gold_value():
    slip = ANSWER.replace("17 × 3 = 51", "17 × 3 = 41")
    assert _diagnose([FIRST, slip], 41).kind == "never reached, arithmetic slip"
    wrong_operation = ANSWER.replace("17 × 3 = 51", "17 + 3 = 20")
    assert _diagnose([FIRST, wrong_operation], 20).kind == "never reached, right arithmetic"
    assert _diagnose([FIRST, ANSWER, LOOK_BACK], 51, finish_reason="length").kind == "truncated"

"""The student's two task sequences, the canonical text's layout (same rules as the teacher's
extraction) and the rules hash."""

from __future__ import annotations

import pytest

from attncore.alignment import decode
from attncore.critical import CriticalConfig
from attncore.store.config import TextFormat
from attncore.store.extract import prepare_text
from attncore.store.inputs import RationaleExample
from attncore.tiny import train_tokenizer
from cotattn.text import IGNORE_INDEX, TaskFormat, rules_hash, student_example

QUESTION = (
    "A mailman has 1,000 letters and delivers 2.5 bags of 48 letters each hour. "
    "How many letters are left after 4 hours?"
)
RATIONALE = (
    "He delivers 2.5 * 48 = 120 letters per hour. In 4 hours that is 480 letters. "
    "So 1,000 - 480 = 520 letters are left."
)


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer()


def targets(tokenizer, task) -> str:
    return decode(tokenizer, [t for t in task.labels if t != IGNORE_INDEX])


def test_tasks_and_layout(tok):
    fmt, critical = TaskFormat(), CriticalConfig()
    ex = student_example(tok, "m1", QUESTION, RATIONALE, "520", fmt, critical)
    text = f"Question: {QUESTION}\nRationale: {RATIONALE}"
    assert decode(tok, ex.rationale.ids) == text + tok.eos_token
    assert targets(tok, ex.rationale) == f" {RATIONALE}{tok.eos_token}"
    assert decode(tok, ex.answer.ids) == f"Question: {QUESTION}\nAnswer: 520{tok.eos_token}"
    assert targets(tok, ex.answer) == f" 520{tok.eos_token}"
    assert len(ex.answer.ids) == len(ex.answer.labels) and len(ex.rationale.ids) == len(ex.rationale.labels)
    # 2 question sentences + 3 rationale sentences; 12 number occurrences.
    assert len(ex.layout.steps) == 5 and ex.unit_count == 12 and ex.skip_reason is None
    assert ex.layout.offset == 0  # the tiny tokenizer adds no BOS
    first_rationale_step = ex.layout.steps[2]
    assert decode(tok, ex.rationale.ids[slice(*first_rationale_step)]).startswith("\nRationale: He")


def test_same_layout_and_hash_as_the_teacher_extraction_on_any_tokenizer(tok):
    fmt, critical = TaskFormat(), CriticalConfig()
    teacher_tok = train_tokenizer(split_digits=True)
    teacher = prepare_text(
        teacher_tok, RationaleExample("m1", QUESTION, RATIONALE), TextFormat(), critical, []
    )
    student = student_example(tok, "m1", QUESTION, RATIONALE, "520", fmt, critical)
    assert student.alignment_hash == teacher.record.alignment_hash
    assert tuple(student.layout.units) != teacher.record.unit_tokens  # tokens differ, the hash does not
    mine = prepare_text(tok, RationaleExample("m1", QUESTION, RATIONALE), TextFormat(), critical, [])
    assert (tuple(student.layout.steps), tuple(student.layout.units)) == (
        mine.record.step_tokens,
        mine.record.unit_tokens,
    )


def test_examples_without_units_still_train_both_tasks(tok):
    ex = student_example(tok, "w", "Is the sky blue?", "Yes it is.", "yes", TaskFormat(), CriticalConfig())
    assert (ex.layout, ex.alignment_hash, ex.skip_reason, ex.unit_count) == (
        None,
        None,
        "no_critical_units",
        0,
    )
    assert targets(tok, ex.rationale) == " Yes it is." + tok.eos_token


def test_rules_hash_follows_every_rule():
    base = rules_hash(TaskFormat(), CriticalConfig())
    assert base == rules_hash(TaskFormat(), CriticalConfig())
    changed = [
        rules_hash(TaskFormat(answer_prefix="\nA: "), CriticalConfig()),
        rules_hash(TaskFormat(text=TextFormat(question_prefix="Q: ")), CriticalConfig()),
        rules_hash(TaskFormat(), CriticalConfig(number_pattern=r"\d+")),
        rules_hash(TaskFormat(), CriticalConfig(keywords=["apple"])),
    ]
    assert len({base, *changed}) == 5


def test_the_molsaki_eval_prompt_is_the_training_sequence_up_to_the_rationale(tok):
    from attncore.data import Problem
    from attncore.prompts import PromptConfig, encode_prompt

    ex = student_example(tok, "m1", QUESTION, RATIONALE, "520", TaskFormat(), CriticalConfig())
    text, ids = encode_prompt(Problem("m1", QUESTION, "520", "t"), tok, PromptConfig(template="molsaki"))
    assert tok.chat_template and text == f"Question: {QUESTION}\nRationale:"
    first_target = next(i for i, label in enumerate(ex.rationale.labels) if label != IGNORE_INDEX)
    assert ids == list(ex.rationale.ids[:first_target])


def test_the_vanilla_eval_prompt_is_the_answer_task_up_to_the_answer(tok):
    """A vanilla fine-tuned student learned only the answer task: `molsaki_answer` gives it that task's
    prompt token for token, and its bare answer grades by the last number."""
    from attncore.data import Problem
    from attncore.grading import Grader, GradingMode
    from attncore.prompts import PromptConfig, encode_prompt

    ex = student_example(tok, "m1", QUESTION, RATIONALE, "520", TaskFormat(), CriticalConfig())
    text, ids = encode_prompt(
        Problem("m1", QUESTION, "520", "t"), tok, PromptConfig(template="molsaki_answer")
    )
    assert tok.chat_template and text == f"Question: {QUESTION}\nAnswer:"
    first_target = next(i for i, label in enumerate(ex.answer.labels) if label != IGNORE_INDEX)
    assert ids == list(ex.answer.ids[:first_target])
    target = tok.decode([t for t in ex.answer.labels if t != IGNORE_INDEX], skip_special_tokens=True)
    assert target == " 520"
    assert Grader().grade([target], ["520"], GradingMode.MATH)[0].correct

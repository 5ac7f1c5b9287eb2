"""Oracle step labels for any trace on a known problem, generated or sampled from a model.

Rule: a step is **essential** if it first derives a value (an `a op b = c` statement whose result is
neither a quantity stated in the problem, the final answer excepted, nor derived by an earlier step)
that the final answer depends on: the value is the final answer, or an operand of a later essential
step's derivation (transitively).
Every other step is **redundant**: restatements, re-verifications and self-checks (their results are
already known), and detours or slips (their values are never used). A step that is not essential and
holds an '=' the parser cannot read is **unparseable**: the oracle cannot tell what it computes.

Stated results count even when the arithmetic is wrong (the trace believes them); such steps are
flagged. The final answer is the trace's own `\\boxed{}` answer when it has one (labels describe the
trace's reasoning, right or wrong), else the gold answer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from fractions import Fraction
from typing import Literal, Protocol

from attncore.grading.extract import extract_boxed
from attncore.steps import StepSegmenterConfig, segment_thinking
from attncore.synthetic.arithmetic import Equation, numbers_in, parse_equations, parse_number, stray_equals
from attncore.think import THINK_CLOSE, THINK_OPEN, split_thinking


class Label(StrEnum):
    """The oracle's verdict on a step (see the module rule)."""

    ESSENTIAL = "essential"
    REDUNDANT = "redundant"
    UNPARSEABLE = "unparseable"


@dataclass(frozen=True)
class StepVerdict:
    """The oracle's reading of one step: its equations, the values it first derives, and its label."""

    text: str
    label: Label
    equations: tuple[Equation, ...]
    derives: tuple[Fraction, ...]
    garbled: bool  # an '=' outside any parsed equation
    wrong_arithmetic: bool  # some equation's stated result is not its value


@dataclass(frozen=True)
class Labelling:
    """Labels of all steps, the final answer they were traced back from, and what is malformed.

    `issues` lists structural problems (missing `</think>`, no boxed answer, empty thinking, garbled
    equations); a trace without issues is well formed. Wrong arithmetic is not an issue: it is
    reasoning content, recorded per step.
    """

    steps: tuple[StepVerdict, ...]
    final_answer: Fraction | None
    issues: tuple[str, ...] = ()

    @property
    def labels(self) -> list[Label]:
        return [step.label for step in self.steps]

    @property
    def well_formed(self) -> bool:
        return not self.issues


def _fraction(value: object) -> Fraction | None:
    try:
        return parse_number(str(value).strip())
    except (ValueError, ZeroDivisionError):
        return None


def label_steps(
    steps: Sequence[str], quantities: Iterable[int | Fraction], final_answer: int | str | Fraction | None
) -> Labelling:
    """Label segmented steps given the problem's quantities and the final answer (see the module rule)."""
    final = None if final_answer is None else _fraction(final_answer)
    # The answer is never known in advance, even when the problem happens to state the same number.
    known = {Fraction(q) for q in quantities} - {final}
    parsed = [parse_equations(text) for text in steps]
    derived: list[list[Equation]] = [[] for _ in steps]
    for i, equations in enumerate(parsed):
        for eq in equations:
            if eq.result not in known:
                known.add(eq.result)
                derived[i].append(eq)

    needed = set() if final is None else {final}
    essential = [False] * len(steps)
    for i in reversed(range(len(steps))):
        used = [eq for eq in derived[i] if eq.result in needed]
        essential[i] = bool(used)
        for eq in used:
            needed.update(eq.operands)

    verdicts = []
    issues = [] if steps else ["empty thinking"]
    if final is None:
        issues.append("no final answer")
    for i, (text, equations) in enumerate(zip(steps, parsed, strict=True)):
        garbled = stray_equals(text, equations) > 0
        if garbled:
            issues.append(f"garbled equation in step {i}")
        label = Label.ESSENTIAL if essential[i] else Label.UNPARSEABLE if garbled else Label.REDUNDANT
        wrong = any(not eq.correct for eq in equations)
        verdicts.append(
            StepVerdict(text, label, tuple(equations), tuple(eq.result for eq in derived[i]), garbled, wrong)
        )
    return Labelling(tuple(verdicts), final, tuple(issues))


def split_trace(text: str) -> tuple[str, str | None]:
    """(thinking, answer) split as `attncore.think.split_thinking` does; answer is None without `</think>`.

    A leading `<think>` is dropped, so traces with the tag in the prompt or in the response read alike.
    """
    split = split_thinking(text)
    if not split.close_count:
        split = replace(split, thinking=split.answer)
    thinking = split.thinking.lstrip()
    if thinking.startswith(THINK_OPEN):
        thinking = thinking[len(THINK_OPEN) :].lstrip("\n")
    return thinking.rstrip("\n"), split.answer if split.close_count else None


def attnpo_steps(thinking: str, mode: Literal["clean", "faithful"] = "clean") -> list[str]:
    """Step texts of a thinking text under the AttnPO segmenter (attnpo-spec §3)."""
    return [thinking[s.start : s.end] for s in segment_thinking(thinking, StepSegmenterConfig(mode=mode))]


def label_trace(
    trace: str,
    problem_text: str,
    gold_answer: str | int | None,
    segment: Callable[[str], Sequence[str]] = attnpo_steps,
) -> Labelling:
    """Segment a full trace and label its steps; never raises on malformed text (see `Labelling.issues`).

    The problem's quantities are the numbers written in `problem_text`; `segment` turns thinking text
    into step texts (by default the AttnPO segmenter in clean mode).
    """
    thinking, answer = split_trace(trace)
    issues = [] if answer is not None else [f"missing {THINK_CLOSE}"]
    steps = list(segment(thinking)) if thinking.strip() else []
    labelling = label_answered_steps(steps, problem_text, answer or "", gold_answer)
    return Labelling(labelling.steps, labelling.final_answer, (*issues, *labelling.issues))


def label_answered_steps(
    steps: Sequence[str], problem_text: str, answer: str, gold_answer: str | int | None
) -> Labelling:
    """Label steps already cut from a trace, given the text after its thinking: the final answer is the
    last `\\boxed{}` of `answer` when it is a number, else the gold answer."""
    issues = []
    boxed = extract_boxed(answer)
    boxed = None if boxed is None else boxed.strip()
    final = _fraction(boxed) if boxed is not None else None
    if boxed is None:
        issues.append("no \\boxed{} answer")
    elif final is None:
        issues.append(f"boxed answer {boxed!r} is not a number")
    if final is None:
        final = None if gold_answer is None else _fraction(gold_answer)
    labelling = label_steps(steps, numbers_in(problem_text), final)
    return Labelling(labelling.steps, labelling.final_answer, (*issues, *labelling.issues))


class Tokenizer(Protocol):
    """Anything that turns text into token ids, as Hugging Face tokenizers do."""

    def encode(self, text: str, add_special_tokens: bool = ...) -> list[int]: ...


def redundancy_ratio(labelling: Labelling, tokenizer: Tokenizer | None = None) -> float | None:
    """Share of thinking tokens (characters without a tokenizer) in redundant steps; None without steps.

    Unparseable steps count in the total but not as redundant, so the ratio is a lower bound.
    """

    def size(text: str) -> int:
        return len(text) if tokenizer is None else len(tokenizer.encode(text, add_special_tokens=False))

    total = sum(size(step.text) for step in labelling.steps)
    if total == 0:
        return None
    return sum(size(step.text) for step in labelling.steps if step.label is Label.REDUNDANT) / total

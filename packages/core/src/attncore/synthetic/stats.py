"""Figures that describe a generated set: difficulty, overthinking, and how much openings reveal labels."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Hashable, Iterable, Sequence
from statistics import mean

from attncore.synthetic.dataset import SyntheticExample
from attncore.synthetic.traces import Trace


def majority_accuracy(pairs: Iterable[tuple[Hashable, Hashable]]) -> float:
    """Accuracy of the best classifier that sees only the feature: the majority label per feature value.

    With the opening phrase as feature, this says how far a step's label is readable off its opening.
    """
    counts: dict[Hashable, Counter] = defaultdict(Counter)
    total = 0
    for feature, label in pairs:
        counts[feature][label] += 1
        total += 1
    if total == 0:
        raise ValueError("majority_accuracy needs at least one (feature, label) pair")
    return sum(max(c.values()) for c in counts.values()) / total


def opening_predictability(examples: Sequence[SyntheticExample]) -> float:
    """How well the opening phrase alone predicts essential vs redundant, over all steps of `examples`."""
    return majority_accuracy((s.opening, s.essential) for e in examples for s in e.trace.steps)


def trace_redundancy(trace: Trace) -> float:
    """Share of thinking characters in the generator's redundant steps (separators not counted)."""
    sizes = [(len(step.text), step.essential) for step in trace.steps]
    return sum(n for n, essential in sizes if not essential) / sum(n for n, _ in sizes)


def summarize(examples: Sequence[SyntheticExample]) -> dict[str, object]:
    """Counts and means for a set: difficulties, steps per trace, redundant shares, roles, predictability."""
    steps = [s for e in examples for s in e.trace.steps]
    return {
        "examples": len(examples),
        "difficulty": dict(sorted(Counter(e.problem.difficulty for e in examples).items())),
        "steps_per_trace": round(len(steps) / len(examples), 2),
        "redundant_step_share": round(mean(not s.essential for s in steps), 3),
        "redundant_char_share": round(mean(trace_redundancy(e.trace) for e in examples), 3),
        "roles": dict(Counter(str(s.role) for s in steps).most_common()),
        "distractors_per_problem": round(mean(len(e.problem.distractors) for e in examples), 2),
        "opening_predictability": round(opening_predictability(examples), 3),
    }

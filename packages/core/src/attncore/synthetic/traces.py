"""R1-style reasoning traces for synthetic problems, with essential and redundant steps interleaved.

A trace is `<think>\\n` + steps separated by blank lines + `\\n</think>\\n\\n` + a short answer with
`\\boxed{N}`. There is one essential step per operation of the problem, in order; each writes the
operation as `a op b = c` and is the first place its value appears. Redundant steps are placed between
them (and after the last one, where overthinking models re-verify their answer); optionally a plan
naming the quantities to find opens the thinking. Redundant steps may contain equations, but never one
that derives a new value the answer uses:

- re-verifications recompute an earlier result, and self-checks undo an earlier step, so their
  results are values already known;
- abandoned detours and slips (a wrong attempt at the next computation) produce values that occur
  nowhere else in the problem, so nothing uses them.

This is exactly the oracle's rule (`oracle.py`), so the oracle recovers the generator's labels.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from itertools import count

from attncore.synthetic.arithmetic import INVERSE, SYMBOLS, apply, render_equation
from attncore.synthetic.config import TraceConfig
from attncore.synthetic.problems import Operation, SyntheticProblem
from attncore.synthetic.templates import (
    ABANDONED,
    ABANDONED_PLAN,
    COMPUTE,
    CORRECTION,
    FIRST_COMPUTE,
    FIRST_RESTATE,
    PLAN,
    RESTATE_KNOWN,
    RESTATE_PROBLEM,
    REVERIFY,
    SANITY_CHECK,
    SELF_CHECK,
    Group,
    StepRole,
)
from attncore.think import THINK_CLOSE, THINK_OPEN_LINE

STEP_SEPARATOR = "\n\n"
SLIP_OFFSETS = (1, 2, 3, 10)  # how far a slipped result lands from the true one, either way
LATEST_SHARE = 0.6  # re-verifications and self-checks look at the latest result this often
SANITY_SHARE = 0.2  # share of self-checks that judge plausibility instead of undoing the step
KNOWN_SHARE = 0.5  # share of restatements (once results exist) that list results, not the problem


@dataclass(frozen=True)
class TraceStep:
    """One step of the thinking: its text (opening phrase included), what it does, and its opening."""

    text: str
    role: StepRole
    opening: str

    @property
    def essential(self) -> bool:
        return self.role.essential


@dataclass(frozen=True)
class Trace:
    """The thinking steps and the answer text that follows `</think>`."""

    steps: tuple[TraceStep, ...]
    answer: str

    @property
    def thinking(self) -> str:
        return STEP_SEPARATOR.join(step.text for step in self.steps)

    @property
    def text(self) -> str:
        return f"{THINK_OPEN_LINE}{self.thinking}\n{THINK_CLOSE}\n\n{self.answer}"


def redundant_count(rng: random.Random, essential: int, share: float) -> int:
    """How many redundant steps make `share` of all steps, rounded stochastically (unbiased)."""
    exact = essential * share / (1.0 - share)
    return math.floor(exact) + (rng.random() < exact - math.floor(exact))


def _plan(rng: random.Random, cfg: TraceConfig, n_ops: int, n_redundant: int) -> list[list[StepRole]]:
    """Redundant roles per gap: gap g comes after the first g essential steps (gap 0 opens the trace).

    Re-verifications and self-checks need an earlier result, and each gap holds at most one slip (last,
    right before the step it attempts); a role that fits nowhere is redrawn from the others.
    """
    gaps: list[list[StepRole]] = [[] for _ in range(n_ops + 1)]
    weights = {StepRole(role): w for role, w in cfg.role_weights.items() if w > 0}
    for _ in range(n_redundant):
        options = dict(weights)
        while options:
            role = rng.choices(list(options), weights=list(options.values()))[0]
            if role in (StepRole.REVERIFY, StepRole.SELF_CHECK):
                feasible = list(range(1, n_ops + 1))
            elif role is StepRole.SLIP:
                feasible = [g for g in range(n_ops) if StepRole.SLIP not in gaps[g]]
            else:
                feasible = list(range(n_ops + 1))
            if feasible:
                gaps[rng.choice(feasible)].append(role)
                break
            del options[role]
    for gap in gaps:
        rng.shuffle(gap)
        if StepRole.SLIP in gap:  # a slip is followed directly by the essential step that corrects it
            gap.remove(StepRole.SLIP)
            gap.append(StepRole.SLIP)
    return gaps


class _Writer:
    """Renders the steps of one trace in order, tracking which results are already written."""

    def __init__(self, rng: random.Random, cfg: TraceConfig, problem: SyntheticProblem):
        self.rng, self.cfg, self.problem = rng, cfg, problem
        self.done: list[Operation] = []
        self.steps: list[TraceStep] = []
        self.reserved = set(problem.quantities) | {op.result for op in problem.operations}

    def add(self, role: StepRole, opening: str, template: str, **slots: object) -> None:
        self.steps.append(TraceStep(template.format(**slots), role, opening))

    def compute_group(self) -> Group:
        return "reflection" if self.rng.random() < self.cfg.reflective_compute else "progression"

    def redundant_group(self) -> Group:
        return "progression" if self.rng.random() < self.cfg.progressive_redundant else "reflection"

    def compute(self, op: Operation, role: StepRole, result: int, wrong: int | None = None) -> None:
        """An essential step (or, with role SLIP, a wrong attempt at one) for `op` stating `result`."""
        slots = {
            "clause": op.clause,
            "meaning": op.meaning,
            "eq": render_equation(op.left, op.op, op.right, result),
            "result": result,
            "lhs": f"{op.left} {SYMBOLS[op.op]} {op.right}",
            "wrong": wrong,
        }
        if role is StepRole.CORRECTION:
            opening, template = self.rng.choice(CORRECTION)
        elif not self.steps:
            opening, template = FIRST_COMPUTE
        else:
            # Open a computation with a reflection phrase some of the time, as overthinking models do.
            opening, template = self.rng.choice(COMPUTE[self.compute_group()])
        self.add(role, opening, template, **slots)

    def slip(self, op: Operation) -> int:
        """A wrong attempt at `op`; returns the wrong result, a value found nowhere else."""
        candidates = [op.result + d for d in SLIP_OFFSETS] + [op.result - d for d in SLIP_OFFSETS]
        fitting = [w for w in candidates if w > 0 and w not in self.reserved]
        wrong = (
            self.rng.choice(fitting)
            if fitting
            else next(w for w in count(op.result + 1) if w not in self.reserved)
        )
        self.compute(op, StepRole.SLIP, wrong)
        return wrong

    def restate(self) -> None:
        if self.done and self.rng.random() < KNOWN_SHARE:
            recent = self.done[-3:]
            known = " and ".join(f"{op.meaning} comes to {op.result}" for op in recent)
            opening, template = self.rng.choice(RESTATE_KNOWN)
            self.add(StepRole.RESTATE, opening, template, known=known)
        else:
            opening, template = self.rng.choice(RESTATE_PROBLEM) if self.steps else FIRST_RESTATE
            self.add(StepRole.RESTATE, opening, template, problem=self.problem.text)

    def plan(self) -> None:
        """Name the quantities the essential steps will find, in order; no equation, so it is redundant."""
        chain = ", then ".join(op.meaning for op in self.problem.operations)
        opening, template = self.rng.choice(PLAN)
        self.add(StepRole.RESTATE, opening, template, chain=chain)

    def earlier(self) -> Operation:
        """An already written operation, most often the latest one."""
        return self.done[-1] if self.rng.random() < LATEST_SHARE else self.rng.choice(self.done)

    def reverify(self) -> None:
        op = self.earlier()
        left, right = (
            (op.right, op.left) if op.op in "+*" and self.rng.random() < 0.5 else (op.left, op.right)
        )
        opening, template = self.rng.choice(REVERIFY[self.redundant_group()])
        eq = render_equation(left, op.op, right, op.result)
        self.add(StepRole.REVERIFY, opening, template, meaning=op.meaning, eq=eq, result=op.result)

    def self_check(self) -> None:
        op = self.earlier()
        if self.rng.random() < SANITY_SHARE:
            opening, template = self.rng.choice(SANITY_CHECK)
            self.add(
                StepRole.SELF_CHECK, opening, template, result=op.result, meaning=op.meaning, unit=op.unit
            )
            return
        # Undo the step: the result of the inverse is an operand of `op`, a value already known.
        if op.op in "+*" and self.rng.random() < 0.5:
            inverse = render_equation(op.result, INVERSE[op.op], op.left, op.right)
        else:
            inverse = render_equation(op.result, INVERSE[op.op], op.right, op.left)
        opening, template = self.rng.choice(SELF_CHECK[self.redundant_group()])
        lhs = f"{op.left} {SYMBOLS[op.op]} {op.right}"
        slots = {"result": op.result, "meaning": op.meaning, "lhs": lhs, "inverse": inverse}
        self.add(StepRole.SELF_CHECK, opening, template, **slots)

    def abandoned(self) -> None:
        """Combine two known numbers into a value that occurs nowhere in the problem, then drop it."""
        pool = sorted(set(self.problem.quantities) | {op.result for op in self.done})
        for _ in range(20):
            x, y = self.rng.sample(pool, 2)  # a problem states at least two numbers
            op = self.rng.choice(["+", "*", "-"] if x > y else ["+", "*"])
            value = int(apply(op, x, y))
            if value > 0 and value not in self.reserved:
                opening, template = self.rng.choice(ABANDONED[self.redundant_group()])
                detour = render_equation(x, op, y, value)
                self.add(StepRole.ABANDONED, opening, template, x=x, y=y, detour=detour)
                return
        self.add(StepRole.ABANDONED, *ABANDONED_PLAN)

    def redundant(self, role: StepRole) -> None:
        """A redundant step of any role but SLIP (which needs the operation it attempts)."""
        {
            StepRole.RESTATE: self.restate,
            StepRole.REVERIFY: self.reverify,
            StepRole.SELF_CHECK: self.self_check,
            StepRole.ABANDONED: self.abandoned,
        }[role]()

    def answer(self) -> str:
        final = self.problem.operations[-1]
        return f"So the final answer is {final.result} {final.unit}.\n\n\\boxed{{{final.result}}}"


def generate_trace(problem: SyntheticProblem, rng: random.Random, cfg: TraceConfig) -> Trace:
    """A trace for `problem` whose share of redundant steps is drawn from `cfg.redundancy`."""
    share = rng.uniform(*cfg.redundancy)
    n_ops = problem.difficulty
    gaps = _plan(rng, cfg, n_ops, redundant_count(rng, n_ops, share))
    writer = _Writer(rng, cfg, problem)
    if cfg.plan_first and rng.random() < cfg.plan_first:  # no draw at 0: older configs keep their traces
        writer.plan()
    for g, gap in enumerate(gaps):
        wrong = None
        for role in gap:
            if role is StepRole.SLIP:
                wrong = writer.slip(problem.operations[g])
            else:
                writer.redundant(role)
        if g < n_ops:
            op = problem.operations[g]
            writer.compute(op, StepRole.COMPUTE if wrong is None else StepRole.CORRECTION, op.result, wrong)
            writer.done.append(op)
    return Trace(tuple(writer.steps), writer.answer())

"""R1-style reasoning traces for synthetic problems, with essential and redundant steps interleaved.

A trace is `<think>\\n` + steps separated by blank lines + `\\n</think>\\n\\n` + a short answer with
`\\boxed{N}`. There is one essential step per operation of the problem, in order; each writes the
operation as `a op b = c` and is the first place its value appears. Redundant steps are placed between
them and after the last one. By default (the v1 layout) every gap where a step's role fits is equally
likely; with `placement` set, a step goes before the first computation, between computations or after
the last one by the given weights. R1-style overthinking puts much of it after the answer is found (it is
re-verified, recomputed, restated, and alternatives are tried), some in the middle, and opens by
restating the problem. Optionally a plan naming the quantities to
find opens the thinking, either as a step of its own (redundant: it computes nothing) or as the opening
of the first computation (essential: that step derives the first value). Redundant steps may contain
equations, but never one that derives a new value the answer uses:

- re-verifications recompute an earlier result, recomputations (after the answer) redo every step,
  and self-checks undo an earlier step, so their results are values already known;
- abandoned detours and slips (a wrong attempt at the next computation) produce values that occur
  nowhere else in the problem, so nothing uses them.

This is exactly the oracle's rule (`oracle.py`), so the oracle recovers the generator's labels.

Testbed v3 adds two opt-in marks of where the work ends (the v2 model computed on past the answer in 57
of its 166 wrong answers on 300 held-out problems, 41 of them right after the step that derived it;
experiments/testbed/RESULTS.md). With `answer_marker` the step that derives the final answer ends by
saying so ("That is the last quantity, so the answer is 20 marbles."): it is still that
step, which stays essential, and it writes no equation. With `anchor_after_answer` every redundant step
after the answer ends with a sentence that the answer stands and nothing is left to compute, so a
look-back reads as a check of a finished answer, not as a computation to continue from. The sentence
holds no number and no equation, so labels do not change.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from itertools import count

from attncore.synthetic.arithmetic import INVERSE, SYMBOLS, apply, render_equation
from attncore.synthetic.config import Region, TraceConfig
from attncore.synthetic.problems import Operation, SyntheticProblem
from attncore.synthetic.templates import (
    ABANDONED,
    ABANDONED_PLAN,
    ANSWER_ANCHORS,
    ANSWER_MARKERS,
    COMPUTE,
    CORRECTION,
    FIRST_COMPUTE,
    FIRST_RESTATE,
    PLAN,
    RECOMPUTE,
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


def _region_gaps(region: Region, n_ops: int) -> list[int]:
    """The gaps of a region: gap g comes after the first g essential steps (gap `n_ops` after the answer)."""
    return {"opening": [0], "middle": list(range(1, n_ops)), "after_answer": [n_ops]}[region]


def _fitting(role: StepRole, n_ops: int, first_slip: int, gaps: list[list[StepRole]]) -> list[int]:
    """The gaps where `role` fits: re-verifications and self-checks need an earlier result, a
    recomputation the answer, and a slip a computation to attempt (one slip per gap)."""
    if role in (StepRole.REVERIFY, StepRole.SELF_CHECK):
        return list(range(1, n_ops + 1))
    if role is StepRole.RECOMPUTE:
        return [n_ops]
    if role is StepRole.SLIP:
        return [g for g in range(first_slip, n_ops) if StepRole.SLIP not in gaps[g]]
    return list(range(n_ops + 1))


def _plan(rng: random.Random, cfg: TraceConfig, n_ops: int, n_redundant: int) -> list[list[StepRole]]:
    """Redundant roles per gap (gap 0 opens the trace, gap `n_ops` follows the answer).

    Without `cfg.placement` (v1) a role is drawn, then a gap where it fits; a role that fits nowhere
    is redrawn from the others. With it a region is drawn by its weight, then a role that fits there
    and a gap of the region where it fits; a region where no role fits is redrawn from the others.
    Each gap holds at most one slip (last, right before the step it attempts; none before the first
    computation when that opens with the plan).
    """
    first_slip = 1 if cfg.plan_first and cfg.plan_step == "first_compute" else 0
    gaps: list[list[StepRole]] = [[] for _ in range(n_ops + 1)]
    weights = {StepRole(role): w for role, w in cfg.role_weights.items() if w > 0}
    for _ in range(n_redundant):
        if cfg.placement is None:
            options = dict(weights)
            while options:
                role = rng.choices(list(options), weights=list(options.values()))[0]
                feasible = _fitting(role, n_ops, first_slip, gaps)
                if feasible:
                    gaps[rng.choice(feasible)].append(role)
                    break
                del options[role]
            continue
        regions = {r: w for r, w in cfg.placement.items() if w > 0 and _region_gaps(r, n_ops)}
        while regions:
            region = rng.choices(list(regions), weights=list(regions.values()))[0]
            inside = set(_region_gaps(region, n_ops))
            fits = {
                role: sorted(inside.intersection(_fitting(role, n_ops, first_slip, gaps))) for role in weights
            }
            options = {role: w for role, w in weights.items() if fits[role]}
            if options:
                role = rng.choices(list(options), weights=list(options.values()))[0]
                gaps[rng.choice(fits[role])].append(role)
                break
            del regions[region]
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
        self.plan_opens_first_compute = False

    def add(self, role: StepRole, opening: str, template: str, **slots: object) -> None:
        self.steps.append(TraceStep(template.format(**slots), role, opening))

    def anchor(self) -> None:
        """End the latest step, a redundant one after the answer, by saying the answer stands."""
        step = self.steps[-1]
        text = f"{step.text} {self.rng.choice(ANSWER_ANCHORS)}"
        self.steps[-1] = TraceStep(text, step.role, step.opening)

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
        elif self.plan_opens_first_compute and not self.done:
            opening, plan = self.rng.choice(PLAN)
            template = f"{plan} {FIRST_COMPUTE[1]}"
            slots["chain"] = self.chain()
        elif not self.steps:
            opening, template = FIRST_COMPUTE
        else:
            # Open a computation with a reflection phrase some of the time, as overthinking models do.
            opening, template = self.rng.choice(COMPUTE[self.compute_group()])
        if (
            self.cfg.answer_marker
            and role is not StepRole.SLIP
            and len(self.done) == len(self.problem.operations) - 1
        ):
            template = f"{template} {self.rng.choice(ANSWER_MARKERS)}"
            slots["unit"] = op.unit
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

    def chain(self) -> str:
        """The quantities the essential steps will find, in order."""
        return ", then ".join(op.meaning for op in self.problem.operations)

    def plan(self) -> None:
        """Name the quantities the essential steps will find, in order; no equation, so it is redundant."""
        opening, template = self.rng.choice(PLAN)
        self.add(StepRole.RESTATE, opening, template, chain=self.chain())

    def earlier(self) -> Operation:
        """An already written operation, most often the latest one."""
        return self.done[-1] if self.rng.random() < LATEST_SHARE else self.rng.choice(self.done)

    def recalled(self, op: Operation) -> str:
        """How a look back names an earlier result: its meaning, with the problem fact behind it when
        `cfg.cite_facts` (as R1 re-verifications do), so it reads as long as the computation did."""
        return f"{op.meaning} (as {op.clause})" if self.cfg.cite_facts else op.meaning

    def reverify(self) -> None:
        op = self.earlier()
        left, right = (
            (op.right, op.left) if op.op in "+*" and self.rng.random() < 0.5 else (op.left, op.right)
        )
        opening, template = self.rng.choice(REVERIFY[self.redundant_group()])
        eq = render_equation(left, op.op, right, op.result)
        self.add(StepRole.REVERIFY, opening, template, meaning=self.recalled(op), eq=eq, result=op.result)

    def self_check(self) -> None:
        op = self.earlier()
        if self.rng.random() < SANITY_SHARE:
            opening, template = self.rng.choice(SANITY_CHECK)
            self.add(
                StepRole.SELF_CHECK,
                opening,
                template,
                result=op.result,
                meaning=self.recalled(op),
                unit=op.unit,
            )
            return
        # Undo the step: the result of the inverse is an operand of `op`, a value already known.
        if op.op in "+*" and self.rng.random() < 0.5:
            inverse = render_equation(op.result, INVERSE[op.op], op.left, op.right)
        else:
            inverse = render_equation(op.result, INVERSE[op.op], op.right, op.left)
        opening, template = self.rng.choice(SELF_CHECK[self.redundant_group()])
        lhs = f"{op.left} {SYMBOLS[op.op]} {op.right}"
        slots = {"result": op.result, "meaning": self.recalled(op), "lhs": lhs, "inverse": inverse}
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

    def recompute(self) -> None:
        """Every computation again, in order (after the answer: all results are known)."""
        eqs = "; ".join(
            f"{op.meaning} is {render_equation(op.left, op.op, op.right, op.result)}" for op in self.done
        )
        final = self.done[-1]
        opening, template = self.rng.choice(RECOMPUTE[self.redundant_group()])
        self.add(StepRole.RECOMPUTE, opening, template, eqs=eqs, result=final.result, unit=final.unit)

    def redundant(self, role: StepRole) -> None:
        """A redundant step of any role but SLIP (which needs the operation it attempts)."""
        {
            StepRole.RESTATE: self.restate,
            StepRole.REVERIFY: self.reverify,
            StepRole.SELF_CHECK: self.self_check,
            StepRole.ABANDONED: self.abandoned,
            StepRole.RECOMPUTE: self.recompute,
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
        if cfg.plan_step == "own":
            writer.plan()
        else:
            writer.plan_opens_first_compute = True
    for g, gap in enumerate(gaps):
        wrong = None
        for role in gap:
            if role is StepRole.SLIP:
                wrong = writer.slip(problem.operations[g])
            else:
                writer.redundant(role)
                if g == n_ops and cfg.anchor_after_answer:
                    writer.anchor()
        if g < n_ops:
            op = problem.operations[g]
            writer.compute(op, StepRole.COMPUTE if wrong is None else StepRole.CORRECTION, op.result, wrong)
            writer.done.append(op)
    return Trace(tuple(writer.steps), writer.answer())

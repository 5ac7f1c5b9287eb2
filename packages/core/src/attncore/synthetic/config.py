"""Settings of the synthetic testbed: how hard the problems are and how much the traces overthink."""

from __future__ import annotations

import random
from typing import Literal

from pydantic import Field, field_validator, model_validator

from attncore.config import Config
from attncore.synthetic.templates import REDUNDANT_ROLES

MAX_DIFFICULTY = 6
MAX_REDUNDANCY = 0.8
Region = Literal["opening", "middle", "after_answer"]


def _ordered(bounds: tuple[float, float], low: float, high: float | None = None) -> tuple[float, float]:
    """Check a (low, high) pair: ordered, and within [low, high]."""
    if bounds[0] > bounds[1]:
        raise ValueError(f"lower bound {bounds[0]} is above upper bound {bounds[1]}")
    if bounds[0] < low or (high is not None and bounds[1] > high):
        span = f"{low}..{high}" if high is not None else f"{low} or above"
        raise ValueError(f"bounds must lie within {span}")
    return bounds


class ProblemConfig(Config):
    """Word problems: each draws its difficulty (number of operations) from `difficulty`, uniformly or
    with `difficulty_weights` (relative weights of the difficulties from low to high)."""

    difficulty: tuple[int, int] = (1, MAX_DIFFICULTY)
    difficulty_weights: tuple[float, ...] | None = None
    number_range: tuple[int, int] = (2, 60)  # start amounts, +/− amounts and distractors
    factor_range: tuple[int, int] = (2, 9)  # multipliers and divisors
    max_value: int = Field(2000, ge=10)  # bound on every intermediate result and the answer
    distractors: tuple[int, int] = (0, 2)  # how many unused quantities each problem mentions

    @field_validator("difficulty")
    @classmethod
    def _difficulty(cls, v: tuple[int, int]) -> tuple[int, int]:
        return _ordered(v, 1, MAX_DIFFICULTY)

    @model_validator(mode="after")
    def _weights(self) -> ProblemConfig:
        if self.difficulty_weights is None:
            return self
        low, high = self.difficulty
        if len(self.difficulty_weights) != high - low + 1:
            raise ValueError(
                f"difficulty_weights has {len(self.difficulty_weights)} weights for the "
                f"{high - low + 1} difficulties {low}..{high}"
            )
        if min(self.difficulty_weights) < 0 or sum(self.difficulty_weights) <= 0:
            raise ValueError("difficulty_weights must be non-negative with a positive sum")
        return self

    def draw_difficulty(self, rng: random.Random) -> int:
        """A difficulty for the next problem (uniform draws stay `randint`, as before weights existed)."""
        low, high = self.difficulty
        if self.difficulty_weights is None:
            return rng.randint(low, high)
        return rng.choices(range(low, high + 1), weights=self.difficulty_weights)[0]

    @field_validator("number_range")
    @classmethod
    def _numbers(cls, v: tuple[int, int]) -> tuple[int, int]:
        return _ordered(v, 1)

    @field_validator("factor_range")
    @classmethod
    def _factors(cls, v: tuple[int, int]) -> tuple[int, int]:
        return _ordered(v, 2)

    @field_validator("distractors")
    @classmethod
    def _distractors(cls, v: tuple[int, int]) -> tuple[int, int]:
        return _ordered(v, 0)


class TraceConfig(Config):
    """Reasoning traces: each draws its target share of redundant steps uniformly from `redundancy`.

    `role_weights` sets how often each redundant role is chosen where it fits. `reflective_compute` is
    the chance that an essential computation opens with a reflection phrase ("Wait", "But", ...), and
    `progressive_redundant` the chance that a re-verification, self-check or detour opens with a
    progression phrase ("So", "Now", ...): both keep the label from being readable off the opening.
    `plan_first` is the chance that the thinking opens with a plan (a restatement step) that names the
    quantities the essential steps will find, in order: a small model can then look up the next step and
    the last one instead of inferring them from the problem at every step. `plan_step` says whether the
    plan is a step of its own or opens the first computation, and `placement` where the redundant steps
    go: ahead of the work, between computations, or after the answer is found (see `traces`).
    `answer_marker` and `anchor_after_answer` (testbed v3) mark where the work ends: the v2 model, after
    deriving the answer, computed on in 57 of its 166 wrong answers over 300 held-out problems
    (experiments/testbed/RESULTS.md).
    """

    redundancy: tuple[float, float] = (0.3, 0.7)
    role_weights: dict[str, float] = Field(
        default_factory=lambda: {
            "reverify": 3.0,
            "restate": 2.0,
            "self_check": 2.0,
            "abandoned": 2.0,
            "slip": 1.5,
        }
    )
    reflective_compute: float = Field(0.3, ge=0.0, le=1.0)
    progressive_redundant: float = Field(0.45, ge=0.0, le=1.0)
    plan_first: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="chance that the thinking opens with a plan naming the quantities to find, in order",
    )
    plan_step: Literal["own", "first_compute"] = Field(
        "own",
        description="where the plan goes: its own step (redundant by the oracle's rule: it computes "
        "nothing) or the opening of the first computation (essential: that step derives the first value)",
    )
    cite_facts: bool = Field(
        False,
        description="re-verifications and self-checks name the problem fact behind the value they look "
        "back at, as the computation did (R1 re-verifications re-read the facts)",
    )
    answer_marker: bool = Field(
        False,
        description="the step that derives the final answer ends by saying that it is the last quantity and "
        "what the answer is (testbed v3): the end of the chain is written where a model decides whether to "
        "compute on",
    )
    anchor_after_answer: bool = Field(
        False,
        description="redundant steps after the answer end with a sentence saying the answer stands and "
        "nothing is left to compute (testbed v3): they read as checks of a finished answer, not as a "
        "computation to continue from",
    )
    placement: dict[Region, float] | None = Field(
        None,
        description="relative weights of where a redundant step goes: before the first computation "
        "(opening), between computations (middle), after the last one (after_answer); a region where "
        "the step's role does not fit is left out. None: every gap where the role fits is equally "
        "likely (the v1 recipe)",
    )

    @field_validator("redundancy")
    @classmethod
    def _redundancy(cls, v: tuple[float, float]) -> tuple[float, float]:
        return _ordered(v, 0.0, MAX_REDUNDANCY)

    @field_validator("placement")
    @classmethod
    def _placement(cls, v: dict[Region, float] | None) -> dict[Region, float] | None:
        if v is not None and (any(w < 0 for w in v.values()) or not any(v.values())):
            raise ValueError("weights must be non-negative with at least one positive")
        return v

    @field_validator("role_weights")
    @classmethod
    def _weights(cls, v: dict[str, float]) -> dict[str, float]:
        known = {str(role) for role in REDUNDANT_ROLES}
        unknown = sorted(set(v) - known)
        if unknown:
            raise ValueError(f"unknown roles {unknown} (known: {sorted(known)})")
        if any(w < 0 for w in v.values()) or not any(v.values()):
            raise ValueError("weights must be non-negative with at least one positive")
        return v


MAX_EXAMPLES = 1_000_000  # a set is built in memory; count=10**12 exhausted it


class SyntheticConfig(Config):
    """One generated set: `count` examples, reproducible from `seed` (example i uses its own stream)."""

    count: int = Field(1000, ge=1, le=MAX_EXAMPLES, description="examples (the set is built in memory)")
    seed: int = 0
    id_prefix: str = "synthetic"
    problem: ProblemConfig = Field(default_factory=ProblemConfig)
    trace: TraceConfig = Field(default_factory=TraceConfig)

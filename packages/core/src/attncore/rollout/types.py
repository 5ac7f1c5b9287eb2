"""The rollout record and sampling parameters shared by every backend."""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

from pydantic import Field

from attncore.config import Config
from attncore.data import Problem

INT32_MAX = 2**31 - 1
"""The rollout store keeps top-k and max tokens as int32: larger values are refused when the config is
read, before any work, instead of when the first batch is written."""
MAX_SAMPLES = 4096
"""Samples per problem: a job lists every wanted rollout id up front, so n=10**9 would exhaust memory."""


class SamplingConfig(Config):
    """Sampling parameters; temperature 0 means greedy decoding."""

    n: int = Field(1, ge=1, le=MAX_SAMPLES)
    temperature: float = Field(0.0, ge=0.0, allow_inf_nan=False)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    top_k: int = Field(0, ge=0, le=INT32_MAX, description="0 disables top-k filtering")
    max_tokens: int = Field(512, ge=1, le=INT32_MAX)
    seed: int = 0


def derive_seed(seed: int, *parts: object) -> int:
    """A 63-bit seed from a base seed and identifying parts (stable across processes and runs)."""
    digest = hashlib.sha256("|".join(map(str, (seed, *parts))).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


FinishReason = Literal["stop", "length"]


@dataclass
class Rollout:
    """One sampled completion, with the token ids exactly as generated (never re-tokenized)."""

    rollout_id: str
    problem_id: str
    sample_index: int
    source: str
    problem: str
    gold: str
    prompt: str
    prompt_ids: list[int]
    completion_ids: list[int]
    text: str
    finish_reason: str
    model: str
    seed: int
    temperature: float
    top_p: float
    top_k: int
    max_tokens: int
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def sampled(
        cls,
        problem: Problem,
        sample_index: int,
        prompt: tuple[str, list[int]],
        completion: tuple[list[int], str, str],
        model: str,
        seed: int,
        sampling: SamplingConfig,
    ) -> Rollout:
        """A rollout of `problem` from its encoded prompt and a (ids, text, finish reason) completion."""
        ids, text, finish_reason = completion
        return cls(
            rollout_id=rollout_id(problem.id, sample_index),
            problem_id=problem.id,
            sample_index=sample_index,
            source=problem.source,
            problem=problem.problem,
            gold=problem.answer,
            prompt=prompt[0],
            prompt_ids=prompt[1],
            completion_ids=ids,
            text=text,
            finish_reason=finish_reason,
            model=model,
            seed=seed,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            top_k=sampling.top_k,
            max_tokens=sampling.max_tokens,
        )

    @property
    def n_completion_tokens(self) -> int:
        return len(self.completion_ids)

    def to_row(self) -> dict[str, Any]:
        row = asdict(self)
        extra = row.pop("extra")
        row.update(extra)
        return row

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Rollout:
        names = {f.name for f in fields(cls)} - {"extra"}
        base = {k: row[k] for k in names}
        base["prompt_ids"] = list(base["prompt_ids"])
        base["completion_ids"] = list(base["completion_ids"])
        return cls(**base, extra={k: v for k, v in row.items() if k not in names})


def rollout_id(problem_id: str, sample_index: int) -> str:
    return f"{problem_id}#{sample_index}"

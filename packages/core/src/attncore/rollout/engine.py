"""What the rollout job needs from a sampling backend (`HFEngine`, `VLLMEngine`), so that jobs, suites
and the testbed evaluation work with any of them without asking which one they hold."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

from attncore.data import Problem
from attncore.prompts import PromptConfig
from attncore.rollout.types import Rollout, SamplingConfig


class Engine(Protocol):
    """A loaded model that samples rollouts; `name` is recorded in the rollout store's metadata."""

    name: str

    @property
    def tokenizer(self) -> Any:
        """The tokenizer prompts are encoded and completions decoded with."""
        ...

    def generate(
        self,
        problems: Sequence[Problem],
        sampling: SamplingConfig,
        skip: set[str] | None = None,
        on_batch: Callable[[list[Rollout]], None] | None = None,
    ) -> list[Rollout]:
        """`sampling.n` rollouts per problem, except the rollout ids in `skip`; `on_batch` sees them in
        batches as they finish."""
        ...

    def reconfigured(self, prompt: PromptConfig, batch_size: int, refill: bool) -> Engine:
        """The same loaded model rendering prompts with `prompt`; `batch_size` and `refill` are for
        backends that form their own batches (the HF engine) and ignored by the others."""
        ...

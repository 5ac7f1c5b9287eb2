"""What `attncore extract` reads, which model and rules it applies, and where the store goes."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from attncore.config import Config, OutputPath, Threads
from attncore.critical import CriticalConfig
from attncore.models import DEVICE_PATTERN, ModelConfig
from attncore.prompts import PromptConfig
from attncore.steps import StepSegmenterConfig

Kind = Literal["attnpo", "molsaki"]


class ExtractModelConfig(ModelConfig):
    """The model to read with; by default on each process's own accelerator (`auto`), else the CPU."""

    device: str = Field("auto", pattern=DEVICE_PATTERN)


class InputConfig(Config):
    """The examples: a rollout folder (`attncore rollout`), or a `.jsonl`/`.parquet` file of problems
    with rationales (`id`, `problem`, `rationale`, e.g. `attncore synth generate` output)."""

    path: str
    limit: int | None = Field(None, ge=1, description="first N examples, in file order")


ANSWER_PREFIX = "\nAnswer: "
"""MoLSAKI's answer task (molsaki-spec §7) writes `{question_prefix}{question}{ANSWER_PREFIX}{answer}`."""


class TextFormat(Config):
    """MoLSAKI's canonical text, `{question_prefix}{question}{rationale_prefix}{rationale}`: the
    student's rationale-task input (molsaki-spec §7). The question/rationale border is a step border."""

    question_prefix: str = "Question: "
    rationale_prefix: str = "\nRationale: "

    def render(self, question: str, rationale: str) -> tuple[str, int]:
        """The canonical text and the character where the rationale part begins."""
        border = len(self.question_prefix) + len(question)
        return f"{self.question_prefix}{question}{self.rationale_prefix}{rationale}", border

    def prompt_length(self, question: str) -> int:
        """Characters of the rationale task's prompt (`Question: {q}\nRationale:`): the text before the
        rationale less the prefix's trailing spaces, which the student writes with its first word."""
        return len(self.question_prefix) + len(question) + len(self.rationale_prefix.rstrip(" "))


_ATTNPO_ONLY = ("heads", "segmenter", "prompt")
_MOLSAKI_ONLY = ("text_format", "critical")


class ExtractConfig(Config):
    """An attention extraction: AttnPO step scores per head, or MoLSAKI stepwise matrices per layer.

    - `attnpo`: for each rollout, one no-grad forward over the prompt and completion ids exactly as
      generated; the final-answer rows F of every head in `heads` are reduced to step scores.
      A problems file is read teacher-forced instead: the prompt is rendered with `prompt`, and the
      rationale (without a leading `<think>` the prompt already opens) is the completion.
    - `molsaki`: for each (question, rationale), the per-layer head-averaged attention from each
      sentence step to each critical unit of the canonical text (`text_format`, `critical`).
    """

    kind: Kind = "attnpo"
    model: ExtractModelConfig = ExtractModelConfig()
    input: InputConfig
    heads: Literal["all"] | list[tuple[int, int]] = Field(
        "all", description="(layer, query head) pairs, 0-based; 'all' ranks every head (KFH discovery)"
    )
    segmenter: StepSegmenterConfig = StepSegmenterConfig()
    prompt: PromptConfig = PromptConfig(template="r1")
    text_format: TextFormat = TextFormat()
    critical: CriticalConfig = CriticalConfig()
    batch_size: int = Field(8, ge=1, description="sequences per forward, grouped by length")
    max_batch_tokens: int | None = Field(None, ge=1, description="cap on padded tokens per forward")
    capture_mb: int = Field(
        1024,
        ge=1,
        description="working memory for attention probabilities: heads and rows are computed in chunks "
        "of this size and reduced to scores inside the one forward per batch",
    )
    out: OutputPath = "runs/attention"
    overwrite: bool = False
    threads: Threads = None

    @model_validator(mode="after")
    def _options_of_the_kind(self) -> ExtractConfig:
        other = _MOLSAKI_ONLY if self.kind == "attnpo" else _ATTNPO_ONLY
        stray = sorted(set(other) & self.model_fields_set)
        if stray:
            raise ValueError(f"{', '.join(stray)} do not apply to kind {self.kind!r}")
        if isinstance(self.heads, list) and not self.heads:
            raise ValueError("heads must name at least one (layer, head) pair, or be 'all'")
        return self

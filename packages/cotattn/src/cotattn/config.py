"""Strict configs of the `cotattn` jobs (attncore's `Config`: unknown keys are errors, one-line
messages naming key and file); each job saves its resolved config beside its output."""

from __future__ import annotations

from pydantic import Field

from attncore.config import Config, OutputPath
from attncore.critical import CriticalConfig
from attncore.store.config import ExtractModelConfig, InputConfig
from cotattn.teacher_mix import TAU1
from cotattn.text import TaskFormat


class TeacherTargetsConfig(Config):
    """The teacher side, offline (molsaki-spec §5): per-layer stepwise matrices of the teacher reading
    each (question, rationale) teacher-forced, then G, p^t and A^t per example.

    `input` is a rationales file (`cotattn rationales` output: `id`, `problem`, `rationale`)."""

    teacher: ExtractModelConfig = ExtractModelConfig()
    input: InputConfig
    task_format: TaskFormat = TaskFormat()
    critical: CriticalConfig = CriticalConfig()
    tau1: float = Field(TAU1, gt=0, allow_inf_nan=False)
    batch_size: int = Field(8, ge=1, description="texts per teacher forward, grouped by length")
    max_batch_tokens: int | None = Field(None, ge=1, description="cap on padded tokens per forward")
    capture_mb: int = Field(1024, ge=1, description="working memory for attention probabilities")
    out: OutputPath = "runs/cotattn/teacher"
    overwrite: bool = False
    threads: int | None = Field(None, ge=1, description="torch CPU threads")

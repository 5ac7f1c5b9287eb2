"""The evaluation suite config: one model, several benchmarks, each with its own samples and sampling.

Benchmarks are keyed by a label, which names the run's sub-folder and the report row; the same dataset
may appear under two labels (e.g. greedy and sampled). Dotted overrides reach every field, e.g.
`benchmarks.gsm8k.limit=50` or `benchmarks.aime24.sampling.n=4`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from attncore.config import Config, EntryError, OutputPath, Threads
from attncore.data import BENCHMARKS, SYNTHETIC, DataConfig
from attncore.models import ModelConfig
from attncore.prompts import PromptConfig
from attncore.rollout.grade import GradingConfig
from attncore.rollout.job import RolloutJobConfig
from attncore.rollout.types import INT32_MAX, MAX_SAMPLES, SamplingConfig
from attncore.rollout.vllm import VLLMOptions
from attncore.synthetic.config import SyntheticConfig
from attncore.tracking import TrackingConfig

LABEL_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"


class SamplingOverrides(Config):
    """Sampling fields a benchmark sets differently from the suite; unset fields inherit the suite's."""

    n: int | None = Field(None, ge=1, le=MAX_SAMPLES)
    temperature: float | None = Field(None, ge=0.0, allow_inf_nan=False)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    top_k: int | None = Field(None, ge=0, le=INT32_MAX)
    max_tokens: int | None = Field(None, ge=1, le=INT32_MAX)
    seed: int | None = None


class BenchmarkConfig(Config):
    """One benchmark of a suite: which problems, how they are sampled and graded.

    `dataset` is a name of `attncore.data.BENCHMARKS` (default: the benchmark's label); `hub_id`
    loads it from the hub instead of the local data folder; dataset `synthetic` generates the testbed
    set `synthetic` describes. `grading` and `prompt`, when set, replace
    the suite's for this benchmark (multiple choice grades letters; code runs tests and needs time).
    """

    dataset: str | None = None
    split: str = "test"
    hub_id: str | None = None
    hub_config: str | None = None
    limit: int | None = Field(None, ge=1)
    offset: int = Field(0, ge=0)
    sampling: SamplingOverrides = SamplingOverrides()
    grading: GradingConfig | None = None
    prompt: PromptConfig | None = None
    synthetic: SyntheticConfig | None = None


def _cpu_benchmarks() -> dict[str, BenchmarkConfig]:
    return {"gsm8k": BenchmarkConfig(limit=24)}


class SuiteConfig(Config):
    """A whole evaluation run; saved resolved as `config.resolved.yaml` in `out`.

    The defaults are the CPU suite: the embedded SmolLM2 model, greedy, plain template, on a slice of
    GSM8K. `baseline` is the folder of an earlier run against which AES is computed.
    """

    name: str | None = Field(None, description="run label in reports (default: the out folder's name)")
    out: OutputPath = "runs/eval/cpu"
    model: ModelConfig = ModelConfig()
    prompt: PromptConfig = PromptConfig(template="plain")
    sampling: SamplingConfig = SamplingConfig(max_tokens=256)
    grading: GradingConfig = GradingConfig()
    benchmarks: dict[str, BenchmarkConfig] = Field(default_factory=_cpu_benchmarks, min_length=1)
    data_dir: str | None = None
    baseline: str | None = None
    engine: Literal["auto", "hf", "vllm"] = "auto"
    batch_size: int = Field(8, ge=1, description="sequences per HF generate call")
    refill: bool = Field(
        False,
        description="HF engine: refill a finished sequence's slot with the next prompt at once instead of "
        "decoding static batches (faster when lengths vary; greedy output is the same)",
    )
    vllm: VLLMOptions = VLLMOptions()
    threads: Threads = None
    overwrite: bool = False
    tracking: TrackingConfig = TrackingConfig()

    @field_validator("benchmarks")
    @classmethod
    def _known_datasets_and_folder_names(
        cls, benchmarks: dict[str, BenchmarkConfig]
    ) -> dict[str, BenchmarkConfig]:
        for label, bench in benchmarks.items():
            if not re.match(LABEL_PATTERN, label):
                raise EntryError(label, f"benchmark label {label!r} must be letters, digits, '_', '-', '.'")
            dataset = bench.dataset or label
            if bench.hub_id is None and dataset not in (*BENCHMARKS, SYNTHETIC):
                raise EntryError(
                    label,
                    f"benchmark {label!r}: unknown dataset {dataset!r} (known: {', '.join(BENCHMARKS)}, "
                    f"{SYNTHETIC}; or set its hub_id)",
                )
            if (dataset == SYNTHETIC) != (bench.synthetic is not None):
                raise EntryError(
                    label, f"benchmark {label!r}: dataset {SYNTHETIC!r} and its synthetic set come together"
                )
        return benchmarks

    @property
    def run_name(self) -> str:
        return self.name or Path(self.out).name

    def sampling_for(self, label: str) -> SamplingConfig:
        overrides = self.benchmarks[label].sampling.model_dump(exclude_none=True)
        return SamplingConfig(**{**self.sampling.model_dump(), **overrides})

    def job(self, label: str) -> RolloutJobConfig:
        """The rollout job of one benchmark: its own folder `out/<label>`, tracking left to the suite."""
        bench = self.benchmarks[label]
        data = DataConfig(
            name=bench.dataset or label,
            split=bench.split,
            data_dir=self.data_dir,
            hub_id=bench.hub_id,
            hub_config=bench.hub_config,
            limit=bench.limit,
            offset=bench.offset,
            synthetic=bench.synthetic,
        )
        return RolloutJobConfig(
            model=self.model,
            data=data,
            prompt=bench.prompt or self.prompt,
            sampling=self.sampling_for(label),
            engine=self.engine,
            batch_size=self.batch_size,
            refill=self.refill,
            vllm=self.vllm,
            grading=bench.grading or self.grading,
            grade=True,
            out=str(Path(self.out) / label),
            overwrite=self.overwrite,
            threads=self.threads,
            tracking=TrackingConfig(mode="disabled"),
        )

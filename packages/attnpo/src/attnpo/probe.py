"""The probe set of head discovery: the model's own sampled rollouts, segmented by the AttnPO segmenter.

Rollouts come from the core rollout job (sampled into `<out>/rollouts`, resumable) or from a rollout
folder made earlier. A response joins the probe set when it is graded correct (unless `correct_only`
is off) and segments into at least two steps with a non-empty final answer (attnpo-spec §3.4). The
probe-set hash identifies exactly which token sequences were probed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from attncore.alignment import decode
from attncore.config import Config
from attncore.data import DataConfig, Problem
from attncore.errors import UserError
from attncore.models import LoadedModel, ModelConfig
from attncore.prompts import PromptConfig
from attncore.rollout.grade import GradingConfig
from attncore.rollout.store import RolloutStore
from attncore.rollout.types import Rollout, SamplingConfig
from attncore.rollout.vllm import VLLMOptions
from attncore.steps import SegmentedResponse, StepSegmenterConfig, segment_response, unscored_reason
from attncore.synthetic.config import SyntheticConfig
from attncore.think import split_thinking
from attncore.tracking import TrackingConfig
from attnpo.labels import ProbeResponse


class ProbeConfig(Config):
    """Where the probe responses come from: an existing rollout folder, or sampling here from `data`
    (a problem set) or `synthetic` (testbed problems); exactly one of the three."""

    rollouts: str | None = Field(None, description="a rollout folder written by `attncore rollout`")
    data: DataConfig | None = None
    synthetic: SyntheticConfig | None = None
    prompt: PromptConfig = PromptConfig(template="r1")
    sampling: SamplingConfig = SamplingConfig(temperature=0.6, top_p=0.95, max_tokens=1024)
    engine: Literal["auto", "hf", "vllm"] = "auto"
    batch_size: int = Field(8, ge=1)
    refill: bool = False
    vllm: VLLMOptions = VLLMOptions()
    grading: GradingConfig = GradingConfig()
    correct_only: bool = True
    max_responses: int | None = Field(None, ge=1, description="keep at most this many usable responses")

    @model_validator(mode="after")
    def _one_source(self) -> ProbeConfig:
        given = [name for name in ("rollouts", "data", "synthetic") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(
                f"set exactly one of probe.rollouts, probe.data, probe.synthetic (got {given or 'none'})"
            )
        return self


@dataclass(frozen=True)
class ProbeItem:
    """A usable probe response: the rollout as generated and its steps on its own tokens."""

    rollout: Rollout
    segmented: SegmentedResponse
    response: ProbeResponse


def probe_problems(cfg: ProbeConfig) -> tuple[list[Problem], str]:
    """The problems to sample on, and a name for where they came from."""
    if cfg.synthetic is not None:
        from attncore.synthetic.dataset import generate_examples

        return [e.to_problem() for e in generate_examples(cfg.synthetic)], "synthetic"
    from attncore.data import load_problems_or_bundled

    return load_problems_or_bundled(cfg.data)


def sample_probe_rollouts(
    cfg: ProbeConfig,
    model: ModelConfig,
    out: Path,
    hf_model: Callable[[], LoadedModel],
    progress: bool,
    overwrite: bool,
) -> Path:
    """Sample (or resume sampling) the probe rollouts into `out`; returns the folder to read."""
    if cfg.rollouts is not None:
        return Path(cfg.rollouts)
    from attncore.rollout.job import RolloutJobConfig, resolve_engine, run_rollouts

    problems, _ = probe_problems(cfg)
    job = RolloutJobConfig(
        model=model,
        data=cfg.data if cfg.data is not None else DataConfig(name=f"synthetic:{cfg.synthetic.id_prefix}"),
        prompt=cfg.prompt,
        sampling=cfg.sampling,
        engine=cfg.engine,
        batch_size=cfg.batch_size,
        refill=cfg.refill,
        vllm=cfg.vllm,
        grading=cfg.grading,
        out=str(out),
        overwrite=overwrite,
        tracking=TrackingConfig(mode="disabled"),
    )
    engine = None
    if resolve_engine(job) == "hf":  # vLLM loads its own copy; the HF model is loaded after sampling
        from attncore.rollout.hf import HFEngine

        engine = HFEngine(hf_model(), cfg.prompt, cfg.batch_size, cfg.refill)
    run_rollouts(job, progress=progress, engine=engine, problems=problems)
    return out


def read_rollouts(folder: Path) -> tuple[list[Rollout], str]:
    """The rollouts of a folder and the prompt template they were sampled with (it decides grading)."""
    if not folder.exists():
        raise UserError(f"rollout folder not found: {folder}")
    store = RolloutStore.open_existing(folder)
    return store.read(), store.meta.get("prompt", {}).get("template", "r1")


def probe_items(
    rollouts: list[Rollout], tokenizer, segmenter: StepSegmenterConfig, cfg: ProbeConfig
) -> tuple[list[ProbeItem], dict[str, int]]:
    """Usable responses in rollout-id order, and how many were left out for each reason."""
    items: list[ProbeItem] = []
    dropped: dict[str, int] = {}
    for rollout in sorted(rollouts, key=lambda r: r.rollout_id):
        correct = rollout.extra.get("correct")
        if cfg.correct_only and correct is None:
            raise UserError(
                f"rollout {rollout.rollout_id} is not graded; grade the folder or set probe.correct_only=false"
            )
        if cfg.correct_only and not correct:
            dropped["incorrect"] = dropped.get("incorrect", 0) + 1
            continue
        segmented = segment_response(
            tokenizer, rollout.completion_ids, segmenter, truncated=rollout.finish_reason == "length"
        )
        reason = unscored_reason(segmented)
        if reason is not None:
            dropped[reason] = dropped.get(reason, 0) + 1
            continue
        text = decode(tokenizer, rollout.completion_ids)
        steps = tuple(text[s.chars[0] : s.chars[1]] for s in segmented.steps)
        answer = split_thinking(text).answer  # a scored response holds exactly one `</think>`
        items.append(
            ProbeItem(
                rollout,
                segmented,
                ProbeResponse(rollout.rollout_id, rollout.problem, rollout.gold, steps, answer),
            )
        )
        if cfg.max_responses is not None and len(items) == cfg.max_responses:
            break
    return items, dropped


def probe_hash(items: list[ProbeItem]) -> str:
    """SHA-256 over the probed token sequences (id, prompt ids, completion ids), in order."""
    digest = hashlib.sha256()
    for item in items:
        r = item.rollout
        digest.update(f"{r.rollout_id}|{r.prompt_ids}|{r.completion_ids}\n".encode())
    return digest.hexdigest()

"""The rollout job: load problems and a model, sample completions into a resumable store, grade them,
and summarise (accuracy, tokens, time). `attncore rollout` runs it; its defaults are the README's
main job (the embedded model on a slice of GSM8K)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pyarrow.compute as pc
from pydantic import Field
from tqdm.auto import tqdm

from attncore.config import Config, OutputPath, Threads, save_resolved
from attncore.data import DataConfig, Problem, load_problems_or_bundled
from attncore.grading import Grader
from attncore.models import ModelConfig, load_model, resolve_device
from attncore.prompts import PromptConfig
from attncore.rollout.engine import Engine
from attncore.rollout.grade import GradingConfig, grade_store
from attncore.rollout.store import RolloutStore
from attncore.rollout.types import Rollout, SamplingConfig, rollout_id
from attncore.rollout.vllm import VLLMOptions, vllm_available
from attncore.tracking import Tracker, TrackingConfig

SUMMARY_NAME = "summary.json"


class RolloutJobConfig(Config):
    """Everything a rollout run depends on; saved resolved beside the rollouts."""

    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig(name="gsm8k", split="test", limit=16)
    prompt: PromptConfig = PromptConfig(template="plain")
    sampling: SamplingConfig = SamplingConfig(max_tokens=256)
    engine: Literal["auto", "hf", "vllm"] = "auto"
    batch_size: int = Field(8, ge=1, description="sequences the HF engine decodes together")
    refill: bool = Field(
        False,
        description="HF engine: give a finished sequence's slot to the next prompt at once (seeds per "
        "rollout) instead of decoding static batches",
    )
    vllm: VLLMOptions = VLLMOptions()
    grading: GradingConfig = GradingConfig()
    grade: bool = True
    out: OutputPath = "runs/rollouts"
    overwrite: bool = False
    threads: Threads = None
    tracking: TrackingConfig = TrackingConfig()


def resolve_engine(cfg: RolloutJobConfig) -> Literal["hf", "vllm"]:
    if cfg.engine != "auto":
        return cfg.engine
    import torch

    return "vllm" if vllm_available() and torch.cuda.is_available() else "hf"


def store_meta(cfg: RolloutJobConfig, engine: str) -> dict:
    """What identifies the rollouts in a folder: resuming with anything else is refused."""
    meta = {
        "kind": "rollouts",
        "model": cfg.model.model_dump(exclude={"device", "attn_implementation"}),
        "data": cfg.data.model_dump(exclude={"data_dir"}),
        "prompt": cfg.prompt.model_dump(),
        "sampling": cfg.sampling.model_dump(),
        "engine": engine,
    }
    if engine == "hf" and cfg.refill:  # seeds per rollout: the slot count does not change them
        meta["refill"] = True
    elif engine == "hf":  # batch composition fixes the random stream of static batches
        meta["batch_size"] = cfg.batch_size
    return meta


@dataclass
class RolloutSummary:
    """Headline numbers of a rollout folder."""

    problems: int
    rollouts: int
    accuracy: float | None
    mean_tokens: float
    truncated: float
    generated_now: int
    seconds: float

    def table(self) -> str:
        acc = "-" if self.accuracy is None else f"{100 * self.accuracy:.1f}%"
        rows = [
            ("problems", str(self.problems)),
            ("rollouts", str(self.rollouts)),
            ("accuracy", acc),
            ("mean completion tokens", f"{self.mean_tokens:.1f}"),
            ("truncated (hit max_tokens)", f"{100 * self.truncated:.1f}%"),
            ("generated in this run", str(self.generated_now)),
            ("time", f"{self.seconds:.1f} s"),
        ]
        width = max(len(k) for k, _ in rows)
        lines = [f"| {'metric'.ljust(width)} | value |", f"|{'-' * (width + 2)}|-------|"]
        lines += [f"| {k.ljust(width)} | {v} |" for k, v in rows]
        return "\n".join(lines)


def summarise(store: RolloutStore, generated_now: int, seconds: float) -> RolloutSummary:
    table = store.read_table()
    if table is None or table.num_rows == 0:
        return RolloutSummary(0, 0, None, 0.0, 0.0, generated_now, seconds)
    lengths = pc.list_value_length(table.column("completion_ids"))
    accuracy = None
    if "correct" in table.column_names and table.column("correct").null_count == 0:
        accuracy = pc.mean(table.column("correct").cast("float64")).as_py()
    truncated = pc.mean(pc.equal(table.column("finish_reason"), "length").cast("float64")).as_py()
    return RolloutSummary(
        problems=len(set(table.column("problem_id").to_pylist())),
        rollouts=table.num_rows,
        accuracy=accuracy,
        mean_tokens=pc.mean(lengths).as_py(),
        truncated=truncated,
        generated_now=generated_now,
        seconds=seconds,
    )


def build_engine(cfg: RolloutJobConfig) -> Engine:
    """Load the model of `cfg` into the engine it asks for (the expensive step of a job)."""
    if resolve_engine(cfg) == "vllm":
        from attncore.rollout.vllm import VLLMEngine

        return VLLMEngine(cfg.model, cfg.prompt, cfg.vllm)
    from attncore.rollout.hf import HFEngine

    model_cfg = cfg.model.model_copy(update={"device": resolve_device(cfg.model.device)})
    return HFEngine(load_model(model_cfg), cfg.prompt, cfg.batch_size, cfg.refill)


def run_rollouts(
    cfg: RolloutJobConfig,
    progress: bool = True,
    engine: Engine | None = None,
    problems: list[Problem] | None = None,
    grader: Grader | None = None,
) -> RolloutSummary:
    """Generate (resuming what is already stored), grade, summarise; everything lands in `cfg.out`.

    `engine` is a model loaded earlier by `build_engine` for `cfg.model` (a suite of jobs loads it once
    and each job renders prompts and batches as its config says);
    without one the model is loaded only when something is left to generate. `problems` are the
    problems of `cfg.data` when the caller has loaded them already; `grader` a started grading pool.
    """
    start = time.perf_counter()
    if cfg.threads is not None:
        import torch

        torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    origin = cfg.data.name
    if problems is None:
        problems, origin = load_problems_or_bundled(cfg.data)
    engine_name = engine.name if engine is not None else resolve_engine(cfg)
    store = RolloutStore(out, store_meta(cfg, engine_name), overwrite=cfg.overwrite, repair=True)
    save_resolved(cfg, out)
    done = store.done_ids()
    wanted = {rollout_id(p.id, i) for p in problems for i in range(cfg.sampling.n)}
    todo = len(wanted - done)
    if engine is not None:
        engine = engine.reconfigured(cfg.prompt, cfg.batch_size, cfg.refill)
    elif todo:  # load the model before anything is logged, so a bad model name fails fast
        engine = build_engine(cfg)
    tracker = Tracker(cfg.tracking, cfg.model_dump(mode="json"), out, job="rollout")
    generated = 0
    try:
        if engine is not None and todo:
            bar = tqdm(total=todo, desc=f"rollouts ({origin})", unit="rollout", disable=not progress)

            def on_batch(batch: list[Rollout]) -> None:
                nonlocal generated
                store.append(batch)
                generated += len(batch)
                bar.update(len(batch))
                tokens = sum(r.n_completion_tokens for r in batch)
                tracker.log(
                    {"rollout/done": len(done) + generated, "rollout/batch_mean_tokens": tokens / len(batch)}
                )

            engine.generate(problems, cfg.sampling, skip=done, on_batch=on_batch)
            bar.close()
        if cfg.grade:
            tokenizer = engine.tokenizer if engine is not None else None
            grade_store(
                store, cfg.grading, cfg.prompt.template, progress=progress, tokenizer=tokenizer, grader=grader
            )
        summary = summarise(store, generated, time.perf_counter() - start)
        (out / SUMMARY_NAME).write_text(json.dumps(summary.__dict__, indent=1))
        tracker.summary({f"rollout/{k}": v for k, v in summary.__dict__.items() if v is not None})
    finally:
        tracker.finish()
    return summary

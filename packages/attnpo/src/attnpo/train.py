"""`attnpo train`: an AttnPO (or baseline) RL run on TRL, resumable from its last checkpoint.

Writes into `out`: `config.resolved.yaml`, `checkpoints/checkpoint-N/` (model, optimizer, scheduler,
RNG states, trainer state; TRL/transformers' own format), `metrics.jsonl` (one line per logged step),
`final/` (the trained model and tokenizer) and `summary.json`; with `log_rescaled`, `rescaled/` (each
step's rescaled responses, `attnpo.rescaled_log`); with an `evaluation` section, `evaluation.json` and
`evaluation.rollouts.jsonl` (the final model on held-out testbed problems). A rerun with the same `out` continues from
the last checkpoint with the same data order and random state.

A resumed run first drops the rows of `metrics.jsonl` past its checkpoint (steps a kill lost), so the
file ends as the uninterrupted run's would; `attnpo.trainer` lists the metrics.

Rollouts: `refill` samples with the core's slot-refilling decoder (CPU), each completion seeded from
(run seed, step, global row), so a resumed run samples what the uninterrupted one would, on any number
of processes; `trl` uses TRL's stock `generate` (kept as the baseline of the rollout benchmark); `vllm`
uses TRL's vLLM integration on GPUs, colocated or as a server (`attnpo.vllm_rollout`, section
`rollout.vllm`).

Problem rows (`data.file`) may carry `target_length` (the L1 rewards' target; drawn per problem when
absent) and `source: synthetic` (a synthetic-testbed problem, as `attncore synthetic` writes them, or
`data.benchmark.name=synthetic`: the trainer then logs what the testbed oracle says of the steps it
attenuates).
"""

from __future__ import annotations

import json
import os
import random
import shutil
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from attncore.config import Config, OutputPath, Threads, save_resolved
from attncore.data import DataConfig, Problem, load_problems_or_bundled, read_rows
from attncore.errors import UserError
from attncore.models import LoadedModel, ModelConfig
from attncore.prompts import PromptConfig, encode_prompt
from attncore.steps import StepSegmenterConfig
from attncore.synthetic.dataset import SOURCE as SYNTHETIC
from attncore.synthetic.testbed_model import EvaluationConfig
from attncore.tracking import Tracker, TrackingConfig
from attnpo.config import LengthTargetReward, MethodConfig
from attnpo.rescaled_log import RescaledLog
from attnpo.vllm_rollout import VLLMRolloutConfig, grpo_vllm_args, require_vllm_gpu

CHECKPOINTS = "checkpoints"
METRICS = "metrics.jsonl"
TARGET_LENGTH = "target_length"
EVALUATION = "evaluation.json"
EVALUATION_ROLLOUTS = "evaluation.rollouts.jsonl"


class TrainDataConfig(Config):
    """Training problems: a row file (`file`: JSON lines or Parquet with id, problem or question, and
    answer columns) or a benchmark split (`benchmark`; name `synthetic` generates testbed problems)."""

    file: str | None = None
    benchmark: DataConfig = Field(default_factory=lambda: DataConfig(name="gsm8k", split="train"))


class RolloutConfig(Config):
    """How completions are sampled: temperature 1.0, top-p 1.0, no top-k (spec §8)."""

    engine: Literal["refill", "trl", "vllm"] = "refill"
    slots: int = Field(8, ge=1, description="sequences decoding together (refill engine)")
    temperature: float = Field(1.0, gt=0)
    top_p: float = Field(1.0, gt=0, le=1)
    top_k: int = Field(0, ge=0)
    max_tokens: int = Field(1024, ge=1)
    vllm: VLLMRolloutConfig = Field(default_factory=VLLMRolloutConfig)

    @model_validator(mode="after")
    def _vllm_section_for_vllm(self) -> RolloutConfig:
        if self.engine != "vllm" and self.vllm != VLLMRolloutConfig():  # defaults, as resolving writes them, pass
            raise ValueError(f"the vllm section applies to engine=vllm only (engine is {self.engine})")
        return self


class OptimConfig(Config):
    """AdamW at a constant rate, and the PPO loss of the release (spec §2)."""

    lr: float = Field(2e-6, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    max_grad_norm: float = Field(1.0, gt=0)
    clip: float = Field(0.2, gt=0, description="PPO clip epsilon, both sides")
    dual_clip: float | None = Field(3.0, gt=1, description="TRL's delta: the ratio's upper clamp")
    loss_type: Literal["dapo", "grpo", "bnpo", "dr_grpo"] = "dapo"


class GradingSection(Config):
    workers: int = Field(2, ge=1)
    timeout_s: float = Field(5.0, gt=0)


class HeldOutConfig(Config):
    """Held-out evaluation of the final model on testbed problems (`attncore.synthetic.evaluation`:
    accuracy, well-formed rate, thinking tokens, oracle redundant share), written into `out` as
    `evaluation.json` and `evaluation.rollouts.jsonl`. `baseline` names the starting model's evaluation on
    the same problems (an `evaluation.json`, or a built testbed model whose build evaluated it:
    `evaluation_figures`): AES against it (completion tokens as the length, attnpo-spec §9) is reported
    too."""

    testbed: EvaluationConfig = Field(default_factory=EvaluationConfig)
    baseline: str | None = None


class TrainConfig(Config):
    """One RL run: model, data, method (reward, advantage, rescaling, heads), rollouts, optimizer."""

    model: ModelConfig = Field(default_factory=ModelConfig)
    data: TrainDataConfig = Field(default_factory=TrainDataConfig)
    prompt: PromptConfig = Field(default_factory=lambda: PromptConfig(template="r1"))
    method: MethodConfig
    segmenter: StepSegmenterConfig = Field(default_factory=StepSegmenterConfig)
    rollout: RolloutConfig = Field(default_factory=RolloutConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    grading: GradingSection = Field(default_factory=GradingSection)
    prompts_per_step: int = Field(8, ge=1)
    group_size: int = Field(8, ge=2, description="G, rollouts per prompt")
    micro_batch_size: int | None = Field(
        None, ge=1, description="rollouts per process per forward (None: all of them at once)"
    )
    steps: int = Field(100, ge=1)
    save_every: int = Field(20, ge=1)
    save_total_limit: int | None = Field(
        2, ge=1, description="checkpoints kept, the oldest deleted first (None keeps every one)"
    )
    seed: int = 0
    threads: Threads = None
    log_rescaled: bool = Field(False, description="log each step's rescaled responses (attnpo.rescaled_log)")
    evaluation: HeldOutConfig | None = None
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    out: OutputPath = "runs/attnpo"
    overwrite: bool = False

    @model_validator(mode="after")
    def _vllm_on_a_gpu(self) -> TrainConfig:
        if self.rollout.engine == "vllm" and self.model.device in ("cpu", "mps"):
            raise ValueError(
                f"rollout.engine=vllm needs model.device=cuda (or auto); it is {self.model.device}"
            )
        return self


@dataclass(frozen=True)
class TrainResult:
    out: Path
    steps: int
    resumed_from: int
    metrics: dict[str, float]


def training_problems(cfg: TrainDataConfig) -> list[Problem]:
    """The problems of a row file or a benchmark split."""
    if cfg.file is None:
        problems, _ = load_problems_or_bundled(cfg.benchmark)
        return problems
    rows = read_rows(Path(cfg.file))
    out = []
    for i, row in enumerate(rows):
        text = row.get("problem", row.get("question"))
        if text is None or row.get("answer") is None:
            raise UserError(f"{cfg.file}: row {i} needs a problem (or question) and an answer")
        meta = {}
        if row.get("target_length") is not None:
            target = row["target_length"]
            if not isinstance(target, int) or isinstance(target, bool) or target < 1:
                raise UserError(
                    f"{cfg.file}: row {i}: target_length must be a positive integer, got {target!r}"
                )
            meta[TARGET_LENGTH] = str(target)
        source = str(row.get("source") or Path(cfg.file).name)
        out.append(Problem(str(row.get("id", i)), str(text), str(row["answer"]), source, meta=meta))
    if not out:
        raise UserError(f"{cfg.file}: no problems")
    return out


def length_target(problem: Problem, reward: LengthTargetReward, seed: int) -> int:
    """The problem's target length for the L1 rewards: its row's `target_length`, else a draw from the
    reward's range seeded by (run seed, problem id)."""
    if TARGET_LENGTH in problem.meta:
        return int(problem.meta[TARGET_LENGTH])
    return random.Random(f"{seed}:{problem.id}").randint(reward.target_min, reward.target_max)


def dataset_rows(
    problems: list[Problem], cfg: TrainConfig, tokenizer
) -> tuple[list[dict], dict[str, list[int]]]:
    """The trainer's dataset rows and the token ids of each prompt text.

    A row holds the rendered prompt, the gold answer, the problem id and text, whether the problem is a
    synthetic-testbed one (the trainer then logs what the oracle says of the steps it attenuates) and, for
    the L1 rewards, the target length, which the prompt also states."""
    reward = cfg.method.reward
    rows, prompt_ids = [], {}
    for p in problems:
        row = {"answer": p.answer, "problem_id": p.id, "problem": p.problem, "testbed": p.source == SYNTHETIC}
        shown = p
        if isinstance(reward, LengthTargetReward):
            row["target_length"] = length_target(p, reward, cfg.seed)
            shown = replace(p, problem=p.problem + reward.instruction.format(target=row["target_length"]))
        text, ids = encode_prompt(shown, tokenizer, cfg.prompt)
        rows.append({"prompt": text, **row})
        prompt_ids[text] = ids
    return rows, prompt_ids


def refill_rollout(
    prompt_ids: dict[str, list[int]], cfg: RolloutConfig, eos: set[int], pad_id: int, seed: int
) -> Callable[[list, Any], dict[str, Any]]:
    """A TRL `rollout_func` sampling through the slot-refilling decoder with per-row seeds."""
    import torch

    from attncore.rollout.refill import decode_refilling
    from attncore.rollout.types import SamplingConfig, derive_seed

    sampling = SamplingConfig(
        temperature=cfg.temperature, top_p=cfg.top_p, top_k=cfg.top_k, max_tokens=cfg.max_tokens
    )

    def rollout(prompts: list, trainer: Any) -> dict[str, Any]:
        model = trainer.accelerator.unwrap_model(trainer.model)
        ids = [prompt_ids[p] for p in prompts]
        step, first = trainer.state.global_step, trainer.accelerator.process_index * len(ids)
        seeds = [derive_seed(seed, "rollout", step, first + i) for i in range(len(ids))]
        training = model.training
        model.eval()
        try:
            with torch.no_grad():
                done = decode_refilling(model, ids, seeds, sampling, eos, pad_id, cfg.slots)
        finally:
            model.train(training)
        return {"prompt_ids": ids, "completion_ids": [c for c, _ in done], "logprobs": None}

    return rollout


def grpo_args(cfg: TrainConfig, world_size: int, progress: bool):
    """TRL's GRPOConfig for the recipe (see `attnpo.trainer` for what each setting reproduces)."""
    from trl import GRPOConfig

    return GRPOConfig(**grpo_settings(cfg, world_size, progress))


def grpo_settings(cfg: TrainConfig, world_size: int, progress: bool) -> dict[str, Any]:
    """The keyword arguments of `grpo_args`'s GRPOConfig (which itself refuses bf16 without a GPU)."""
    rows = cfg.prompts_per_step * cfg.group_size
    if rows % world_size:
        raise UserError(f"{rows} rollouts per step do not split over {world_size} processes")
    per_process = rows // world_size
    micro = cfg.micro_batch_size or per_process
    if per_process % micro:
        raise UserError(
            f"micro_batch_size={micro} does not divide the {per_process} rollouts of each of "
            f"{world_size} processes"
        )
    return dict(
        output_dir=str(Path(cfg.out) / CHECKPOINTS),
        per_device_train_batch_size=micro,
        gradient_accumulation_steps=per_process // micro,
        steps_per_generation=per_process // micro,
        num_iterations=1,
        num_generations=cfg.group_size,
        max_steps=cfg.steps,
        learning_rate=cfg.optim.lr,
        lr_scheduler_type="constant",
        warmup_steps=0,
        weight_decay=cfg.optim.weight_decay,
        max_grad_norm=cfg.optim.max_grad_norm,
        beta=0.0,
        epsilon=cfg.optim.clip,
        delta=cfg.optim.dual_clip,
        loss_type=cfg.optim.loss_type,
        scale_rewards="none",
        max_completion_length=cfg.rollout.max_tokens,
        temperature=cfg.rollout.temperature,
        top_p=cfg.rollout.top_p,
        top_k=cfg.rollout.top_k or None,
        save_strategy="steps",
        save_steps=cfg.save_every,
        save_total_limit=cfg.save_total_limit,
        logging_steps=1,
        report_to=[],
        seed=cfg.seed,
        data_seed=cfg.seed,
        disable_tqdm=not progress,
        remove_unused_columns=False,
        use_cpu=cfg.model.device == "cpu",
        bf16=cfg.model.dtype == "bfloat16",
        dataloader_num_workers=0,
        **grpo_vllm_args(cfg.rollout.vllm if cfg.rollout.engine == "vllm" else None),
    )


def process_device(device: str) -> str:
    """This process's device: under a distributed launcher (LOCAL_RANK set), `cuda` and `auto` on a GPU
    machine mean the process's own GPU, where accelerate places it, not every process's cuda:0."""
    import torch

    rank = os.environ.get("LOCAL_RANK")
    if rank is None or device not in ("cuda", "auto"):
        return device
    if device == "auto" and not torch.cuda.is_available():
        return "cpu"
    return f"cuda:{rank}"


def last_checkpoint(out: Path) -> Path | None:
    """The complete checkpoint with the highest step under `out/checkpoints`, if any. transformers writes
    `trainer_state.json` last, so a folder without it is a checkpoint a kill interrupted: skipped."""
    folders = [
        p
        for p in (out / CHECKPOINTS).glob("checkpoint-*")
        if p.name.split("-")[-1].isdigit() and (p / "trainer_state.json").is_file()
    ]
    return max(folders, key=lambda p: int(p.name.split("-")[-1]), default=None)


def run_train(cfg: TrainConfig, progress: bool = True, on_step_batch: Callable | None = None) -> TrainResult:
    """Train `cfg` into `cfg.out`, resuming from its last checkpoint when one exists."""
    import datasets
    import torch
    from transformers import TrainerCallback

    from attncore.grading import Grader
    from attncore.models import load_model
    from attncore.rollout.hf import eos_token_ids
    from attnpo.progress import use_headline_progress
    from attnpo.trainer import AttnPOTrainer

    if cfg.rollout.engine == "vllm":
        require_vllm_gpu()
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    main_process = int(os.environ.get("RANK", "0")) == 0
    if cfg.overwrite and out.exists() and main_process:
        shutil.rmtree(out)
    problems = training_problems(cfg.data)
    loaded = load_model(cfg.model.model_copy(update={"device": process_device(cfg.model.device)}))
    tok = loaded.tokenizer
    heads: list[tuple[int, int]] = []
    if cfg.method.rescaling.enabled:
        text = loaded.model.config.get_text_config()
        heads = cfg.method.heads.resolve(text.num_hidden_layers, text.num_attention_heads)
    out.mkdir(parents=True, exist_ok=True)
    save_resolved(cfg, out)
    rows, prompt_ids = dataset_rows(problems, cfg, tok)
    dataset = datasets.Dataset.from_list(rows)
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    args = grpo_args(cfg, world_size, progress)
    rollout = None
    if cfg.rollout.engine == "refill":
        rollout = refill_rollout(
            prompt_ids, cfg.rollout, set(eos_token_ids(loaded)), tok.pad_token_id, cfg.seed
        )
    tracking = cfg.tracking if main_process else TrackingConfig(mode="disabled")
    tracker = Tracker(tracking, cfg.model_dump(mode="json"), out, "attnpo-train")
    metrics_path = out / METRICS
    last: dict[str, float] = {}

    class Record(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if not logs or not state.is_world_process_zero:
                return
            row = {"step": state.global_step, **{k: v for k, v in logs.items() if isinstance(v, int | float)}}
            last.update(row)
            with metrics_path.open("a") as f:
                f.write(json.dumps(row) + "\n")
            if tracker.run is not None:
                tracker.log(with_histograms(row), step=state.global_step)

    hooks = [h for h in (on_step_batch,) if h is not None]
    if cfg.log_rescaled:
        by_id = {p.id: p for p in problems}
        by_prompt = {tuple(prompt_ids[r["prompt"]]): by_id[r["problem_id"]] for r in rows}
        hooks.append(RescaledLog(out, by_prompt, tok))

    def step_batch(trainer, batch) -> None:
        for hook in hooks:
            hook(trainer, batch)

    resume = last_checkpoint(out)
    if main_process:
        keep_metrics_until(metrics_path, _step_of(resume))
    with Grader(mode="attnpo", workers=cfg.grading.workers, timeout_s=cfg.grading.timeout_s) as grader:
        trainer = AttnPOTrainer(
            model=loaded.model,
            args=args,
            train_dataset=dataset,
            processing_class=tok,
            rollout_func=rollout,
            callbacks=[Record()],
            method=cfg.method,
            heads=heads,
            segmenter=cfg.segmenter,
            grader=grader,
            on_step_batch=step_batch if hooks else None,
            prompt_ids=prompt_ids,
        )
        use_headline_progress(trainer)
        trainer.train(resume_from_checkpoint=str(resume) if resume is not None else None)
        if trainer.accelerator.is_main_process:
            trainer.save_model(str(out / "final"))
    final = {k: v for k, v in last.items() if k != "step"}
    if cfg.evaluation is not None and trainer.accelerator.is_main_process:
        model = trainer.accelerator.unwrap_model(trainer.model)
        final.update(
            held_out_figures(cfg.evaluation, LoadedModel(model, tok, loaded.name, str(out)), out, progress)
        )
    tracker.summary(final)
    tracker.finish()
    summary = {"steps": trainer.state.global_step, "resumed_from": _step_of(resume), "last": last}
    if main_process:
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return TrainResult(out, trainer.state.global_step, _step_of(resume), last)


def keep_metrics_until(path: Path, step: int) -> None:
    """Drop the logged rows past `step` (the checkpoint a run resumes from): a killed run logged steps
    it then lost, and the resumed run logs them again. A last line the kill cut short goes too."""
    if not path.is_file():
        return
    text = path.read_text()
    kept = []
    for line in text.splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if row["step"] <= step:
            kept.append(line)
    new = "".join(line + "\n" for line in kept)
    if new != text:
        path.write_text(new)


def with_histograms(row: dict[str, float]) -> dict[str, Any]:
    """The logged row for wandb: each `<name>_hist/<lower edge>` family of bin counts (see
    `attnpo.step_metrics`) also as one wandb histogram `<name>_hist`."""
    families: dict[str, list[tuple[float, float]]] = {}
    for key, value in row.items():
        name, _, edge = key.rpartition("/")
        if name.endswith("_hist"):
            families.setdefault(name, []).append((float(edge), value))
    if not families:
        return row
    import numpy as np
    import wandb

    out: dict[str, Any] = dict(row)
    for name, bins in families.items():
        bins.sort()
        edges = [e for e, _ in bins]
        width = edges[1] - edges[0] if len(edges) > 1 else 1.0
        counts = np.array([c for _, c in bins])
        out[name] = wandb.Histogram(np_histogram=(counts, np.array([*edges, edges[-1] + width])))
    return out


def evaluation_figures(ref: str | Path) -> tuple[dict[str, Any], Path | None] | None:
    """The figures of a held-out testbed evaluation and its rollouts file (None when absent): `ref` is an
    `evaluation.json`, a folder holding one, or a built testbed model (name or folder: its build's
    evaluation, `testbed.results.json` and `testbed.rollouts.jsonl`). None when there is none."""
    from attncore.models import resolve_model_source

    path = Path(ref).expanduser()
    if path.is_file():
        return json.loads(path.read_text()), None
    if (path / EVALUATION).is_file():
        rollouts = path / EVALUATION_ROLLOUTS
        return json.loads((path / EVALUATION).read_text()), rollouts if rollouts.is_file() else None
    try:
        folder = Path(resolve_model_source(str(ref))[0])
    except UserError:
        return None
    results = folder / "testbed.results.json"
    if not results.is_file() or "evaluation" not in json.loads(results.read_text()):
        return None
    rollouts = folder / "testbed.rollouts.jsonl"
    return json.loads(results.read_text())["evaluation"], rollouts if rollouts.is_file() else None


def held_out_figures(cfg: HeldOutConfig, loaded: LoadedModel, out: Path, progress: bool) -> dict[str, float]:
    """Evaluate the trained model (once: a rerun reads `evaluation.json` back) and return its figures as
    summary keys `testbed/evaluation/<figure>` (the testbed recipe's keys), with `aes` when the baseline
    evaluation exists."""
    import torch

    from attncore.eval.metrics import aes
    from attncore.synthetic.evaluation import evaluate_testbed

    path = out / EVALUATION
    if not path.is_file():
        loaded.model.eval()
        with torch.no_grad():
            figures = evaluate_testbed(
                loaded, cfg.testbed, progress=progress, rollouts_out=out / EVALUATION_ROLLOUTS
            ).as_dict()
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(figures, indent=1))
        tmp.replace(path)
    figures = json.loads(path.read_text())
    base = None if cfg.baseline is None else evaluation_figures(cfg.baseline)
    if base is not None:
        figures["aes"] = aes(
            figures["accuracy"],
            figures["mean_completion_tokens"],
            base[0]["accuracy"],
            base[0]["mean_completion_tokens"],
        )
    return {
        f"testbed/evaluation/{k}": v
        for k, v in figures.items()
        if isinstance(v, int | float) and not isinstance(v, bool)
    }


def _step_of(checkpoint: Path | None) -> int:
    return 0 if checkpoint is None else int(checkpoint.name.split("-")[-1])

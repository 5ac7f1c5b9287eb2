"""`cotattn train`: one arm of the distillation (MoLSAKI, DSS, MMI, vanilla FT, SL) from teacher
rationales (and, for the attention arms, the teacher targets), resumable from its last checkpoint.

Outputs in `out`: `config.resolved.yaml`; `checkpoints/` (the Trainer's, router included); at the end
`student/`, the deployed student as a plain checkpoint with its tokenizer (no router: it only served
the loss), `mol_router.safetensors` (MoLSAKI), `train_summary.json`, and `router_weights.png`, the
router's mean weight per layer over training (the paper's Fig. 6).
"""

from __future__ import annotations

import json
import shutil
import time
from collections import Counter
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch
import yaml

from attncore.config import RESOLVED_NAME, save_resolved
from attncore.data import read_rows
from attncore.errors import UserError
from attncore.models import load_model, resolve_device
from attncore.shards import diff_keys
from attncore.store.extract import special_prefix
from attncore.store.inputs import RationaleExample, inputs_digest, row_keywords
from attncore.tracking import Tracker
from cotattn.batch import TrainItem, collate
from cotattn.config import TrainConfig
from cotattn.layer_mix import mix_layers, single_layer_weights
from cotattn.objective import has_attention_loss
from cotattn.router import MoLRouter
from cotattn.teacher_mix import teacher_target
from cotattn.teacher_targets import SUMMARY_NAME as TEACHER_SUMMARY
from cotattn.teacher_targets import TeacherTargets
from cotattn.text import rules_hash, student_example
from cotattn.trainer import ROUTER_FILE, DistillTrainer

STUDENT_DIR = "student"
CHECKPOINTS_DIR = "checkpoints"
SUMMARY_NAME = "train_summary.json"
PLOT_NAME = "router_weights.png"
FIELDS = ("id", "problem", "rationale", "answer")


def read_rationales(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a rationales file, each with an id, problem, rationale and answer; ids unique; `keywords`
    (CSQA) checked and set on every row (empty when the row lists none)."""
    rows = read_rows(Path(path))
    seen: set[str] = set()
    for number, row in enumerate(rows, 1):
        missing = [name for name in FIELDS if row.get(name) is None]
        if missing:
            raise UserError(f"{path}: row {number} has no {', '.join(missing)}")
        if str(row["id"]) in seen:
            raise UserError(f"{path}: example id {row['id']!r} occurs twice")
        seen.add(str(row["id"]))
        row["keywords"] = row_keywords(row, Path(path), number)
    if not rows:
        raise UserError(f"{path} holds no rationales")
    return rows


def value_width(model: torch.nn.Module) -> int:
    """Width of one layer's value projection, `n_kv_heads · head_dim` (the router's d_v)."""
    text = model.config.get_text_config()
    heads = text.num_attention_heads
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // heads
    return (getattr(text, "num_key_value_heads", None) or heads) * head_dim


@dataclass
class TrainData:
    """The training items and what was left out, by reason."""

    items: list[TrainItem]
    dropped: Counter = field(default_factory=Counter)

    @property
    def with_attention(self) -> int:
        return sum(i.teacher is not None for i in self.items)


def build_items(
    cfg: TrainConfig, tokenizer, rows: list[dict[str, Any]], teacher: TeacherTargets | None
) -> TrainData:
    """Both task sequences of every row and, for the attention arms, its teacher target (A^t for
    MoLSAKI, re-mixed with `arm.tau1` when set; the chosen teacher layer's matrix for SL)."""
    prefix = special_prefix(tokenizer)
    data = TrainData([])
    arm = cfg.arm
    for row in rows:
        try:
            ex = student_example(
                tokenizer, str(row["id"]), row["problem"], row["rationale"], str(row["answer"]),
                cfg.task_format, cfg.critical, prefix, row["keywords"],
            )  # fmt: skip
        except UserError:
            data.dropped["text_not_reproduced"] += 1
            continue
        if max(len(ex.answer.ids), len(ex.rationale.ids)) > cfg.optim.max_length:
            data.dropped["longer_than_max_length"] += 1
            continue
        target = None
        if teacher is not None and ex.layout is not None and has_attention_loss(torch.tensor(ex.unit_count)):
            per_layer = arm.method == "sl" or arm.tau1 is not None
            got = teacher.get(ex.id, ex.alignment_hash, layers=per_layer)
            if got is not None and arm.method == "sl":
                target = mix_layers(single_layer_weights(teacher.layers, arm.teacher_layer), got.matrices)
            elif got is not None and arm.tau1 is not None:
                target = teacher_target(got.matrices, arm.tau1).target
            elif got is not None:
                target = got.target
        data.items.append(TrainItem(ex, target))
    if not data.items:
        raise UserError(f"no usable example in {cfg.rationales} (left out: {dict(data.dropped)})")
    return data


def open_teacher(cfg: TrainConfig, rows: list[dict[str, Any]]) -> TeacherTargets:
    """The teacher targets, checked against the rules and the rationales this run reads."""
    if not Path(cfg.teacher_targets).is_dir():
        raise UserError(f"teacher targets not found: {cfg.teacher_targets}")
    teacher = TeacherTargets(cfg.teacher_targets, rules_hash(cfg.task_format, cfg.critical))
    examples = [RationaleExample(str(r["id"]), r["problem"], r["rationale"], r["keywords"]) for r in rows]
    if teacher.attention.meta["inputs"]["sha256"] != inputs_digest(examples):
        raise UserError(
            f"{cfg.teacher_targets} was computed from other rationales than {cfg.rationales}; "
            "run teacher-targets on this file"
        )
    if cfg.arm.method == "sl" and not -teacher.layers <= cfg.arm.teacher_layer < teacher.layers:
        raise UserError(
            f"arm.teacher_layer={cfg.arm.teacher_layer} is outside the teacher's {teacher.layers} layers"
        )
    return teacher


def _check_resume(cfg: TrainConfig, out: Path) -> None:
    """A folder with an earlier run continues only with the same configuration (where it lies,
    tracking and CPU threads aside)."""
    saved = out / RESOLVED_NAME
    if cfg.overwrite:
        for name in (CHECKPOINTS_DIR, STUDENT_DIR):
            shutil.rmtree(out / name, ignore_errors=True)
        return
    if not saved.is_file():
        return
    before = yaml.safe_load(saved.read_text()) or {}
    now = cfg.model_dump(mode="json")
    for config in (before, now):
        for key in ("out", "tracking", "overwrite", "threads"):
            config.pop(key, None)
    if diffs := diff_keys(before, now):  # a key added since, left null, is no difference
        diff = ", ".join(sorted(diffs))
        raise UserError(
            f"{out} holds a run of another configuration (differs in: {diff}); use another out or overwrite=true"
        )


def plot_router_weights(history: list[dict[str, Any]], path: Path) -> Path | None:
    """Mean router weight per layer against the training step (the paper's Fig. 6)."""
    rows = [h for h in history if any(k.startswith("router/layer_") for k in h)]
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    layers = sorted(k for k in rows[0] if k.startswith("router/layer_"))
    weights = [[h[k] for k in layers] for h in rows]
    fig, ax = plt.subplots(figsize=(8, 4))
    image = ax.imshow(list(zip(*weights, strict=True)), aspect="auto", origin="lower", cmap="viridis")
    ax.set_xticks(range(len(rows)), [str(h["step"]) for h in rows], rotation=90, fontsize=6)
    ax.set_xlabel("training step")
    ax.set_ylabel("student layer (0-based)")
    ax.set_title("MoL router: mean p^s per layer")
    fig.colorbar(image, ax=ax)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def run_training(cfg: TrainConfig, progress: bool = True) -> dict[str, Any]:
    """Train one arm (resuming from the last checkpoint in `out`), save the student, summarise."""
    from transformers import TrainingArguments
    from transformers.trainer_utils import get_last_checkpoint

    start = time.perf_counter()
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    rows = read_rationales(cfg.rationales)
    teacher = open_teacher(cfg, rows) if cfg.arm.attention else None
    _check_resume(cfg, out)
    device = resolve_device(cfg.student.device)
    loaded = load_model(cfg.student.model_copy(update={"device": device}))
    model, tokenizer = loaded.model, loaded.tokenizer
    num_layers = model.config.get_text_config().num_hidden_layers
    if cfg.arm.method == "sl" and not -num_layers <= cfg.arm.student_layer < num_layers:
        raise UserError(
            f"arm.student_layer={cfg.arm.student_layer} is outside the student's {num_layers} layers"
        )
    data = build_items(cfg, tokenizer, rows, teacher)
    save_resolved(cfg, out)
    router = None
    if cfg.arm.method == "molsaki":
        torch.manual_seed(cfg.optim.seed)
        router = MoLRouter(num_layers, value_width(model), cfg.arm.tau2)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    o = cfg.optim
    args = TrainingArguments(
        output_dir=str(out / CHECKPOINTS_DIR),
        per_device_train_batch_size=o.batch_size,
        gradient_accumulation_steps=o.gradient_accumulation_steps,
        learning_rate=o.learning_rate,
        max_steps=o.max_steps,
        warmup_steps=o.warmup_steps,
        weight_decay=o.weight_decay,
        max_grad_norm=o.max_grad_norm,
        lr_scheduler_type="linear",
        logging_steps=o.logging_steps,
        save_steps=o.save_steps,
        save_total_limit=o.save_total_limit,
        seed=o.seed,
        data_seed=o.seed,
        report_to="none",
        remove_unused_columns=False,
        disable_tqdm=not progress,
        use_cpu=device == "cpu",
        dataloader_num_workers=0,
    )
    if router is not None and args.world_size > 1:
        raise UserError(
            "the MoL router is trained in one process (its gradients are not averaged across processes); "
            "run cotattn train for method molsaki without a multi-process launcher"
        )
    tracker = Tracker(cfg.tracking, cfg.model_dump(mode="json"), out, job="cotattn-train")
    try:
        trainer = DistillTrainer(
            model=model,
            args=args,
            train_dataset=data.items,
            data_collator=partial(collate, pad_id=pad_id),
            arm=cfg.arm,
            router=router,
            router_learning_rate=o.router_learning_rate,
            tracker=tracker,
        )
        last = get_last_checkpoint(str(out / CHECKPOINTS_DIR)) if (out / CHECKPOINTS_DIR).is_dir() else None
        result = trainer.train(resume_from_checkpoint=last)
        trainer.save_model(str(out / STUDENT_DIR))
        tokenizer.save_pretrained(str(out / STUDENT_DIR))
        if router is not None:
            from safetensors.torch import save_file

            save_file({k: v.detach().cpu() for k, v in router.state_dict().items()}, str(out / ROUTER_FILE))
        history = trainer.state.log_history
        logged = [h for h in history if "loss" in h]
        plot = plot_router_weights(history, out / PLOT_NAME)
        summary = {
            "method": cfg.arm.method,
            "examples": len(data.items),
            "with_attention_target": data.with_attention,
            "dropped": dict(data.dropped),
            "steps": trainer.state.global_step,
            "resumed_from": last,
            "train_loss": result.training_loss,
            "last_log": logged[-1] if logged else None,
            "teacher_mean_layer_weights": None,
            "router_plot": None if plot is None else plot.name,
            "seconds": time.perf_counter() - start,
        }
        if teacher is not None:
            teacher_summary = Path(cfg.teacher_targets) / TEACHER_SUMMARY
            if teacher_summary.is_file():
                summary["teacher_mean_layer_weights"] = json.loads(teacher_summary.read_text())[
                    "mean_layer_weights"
                ]
        (out / SUMMARY_NAME).write_text(json.dumps(summary, indent=1))
        tracker.summary({f"train/{k}": v for k, v in summary.items() if isinstance(v, int | float)})
    finally:
        tracker.finish()
    return summary

"""The distillation trainer: a transformers `Trainer` whose loss is the MoLSAKI objective.

Per batch: the answer task's forward (L_pre), and the rationale task's forward (L_exp). For the
attention arms the rationale forward runs inside `attncore.attention_grad.StepwiseGradCapture`, which
returns every layer's stepwise matrices `A^s_l` and value projections `V_l` with gradient from that same
forward; the router (or the SL one-hot) mixes the layers and `stepwise_kl` compares the result with the
cached teacher target. The capture is switched on around that one forward only, so checkpoints keep the
model's own attention implementation.

The router is trained with the student (its own optimizer group: no weight decay, and
`optim.router_learning_rate` when set), saved in each checkpoint as `mol_router.safetensors` and
restored on resume; it is never part of the student's weights; its gradients are cleared after each
optimizer step like the model's. Logged every `logging_steps`: the three losses (and MMI), the share of
examples with L_att, the router's mean weight per layer and its entropy, and for the examples with L_att
the relative entropy of the teacher's and the student's mixed rows (`row_entropy`: 1 = uniform rows,
where the KL is small whatever the student does).
"""

from __future__ import annotations

import os
from collections import defaultdict
from typing import Any

import torch
from torch import Tensor
from transformers import Trainer, TrainerCallback

from attncore.tracking import Tracker
from cotattn.attention_loss import row_entropy, stepwise_kl
from cotattn.config import ArmConfig
from cotattn.layer_mix import mix_layers
from cotattn.mmi import mmi_loss
from cotattn.objective import Losses, combined_loss
from cotattn.router import MoLRouter
from cotattn.text import IGNORE_INDEX

ROUTER_FILE = "mol_router.safetensors"


def predicting_positions(labels: Tensor) -> Tensor:
    """(B, T) bool: positions whose logits predict a target token (the label one step later)."""
    return torch.nn.functional.pad(labels[:, 1:] != IGNORE_INDEX, (0, 1), value=False)


def entropy(weights: Tensor) -> Tensor:
    """Entropy (nats) of distributions over the last dimension."""
    return -(weights * weights.clamp_min(1e-30).log()).sum(-1)


class _ClearRouterGradients(TrainerCallback):
    """The Trainer clears only the model's gradients after an optimizer step (`model.zero_grad()`);
    without this the router's would add up across steps."""

    def __init__(self, router: MoLRouter):
        self.router = router

    def on_optimizer_step(self, args, state, control, **kwargs):
        self.router.zero_grad(set_to_none=True)


class DistillTrainer(Trainer):
    """`Trainer` with the MoLSAKI objective (module doc). `router` is given for method `molsaki`."""

    def __init__(
        self,
        *args: Any,
        arm: ArmConfig,
        router: MoLRouter | None = None,
        router_learning_rate: float | None = None,
        tracker: Tracker | None = None,
        **kwargs: Any,
    ):
        super().__init__(*args, **kwargs)
        self.arm = arm
        self.router = router
        self.router_learning_rate = router_learning_rate
        self.tracker = tracker
        self.capture = None
        self.student_layers: list[int] | None = None
        if arm.attention:
            from attncore.attention_grad import StepwiseGradCapture

            self.capture = StepwiseGradCapture(self.model)
            if arm.method == "sl":
                layer = arm.student_layer
                self.student_layers = [layer % self.capture.num_layers]
        if router is not None:
            router.to(self.args.device)
            self.add_callback(_ClearRouterGradients(router))
        self._sums: dict[str, float] = defaultdict(float)
        self._counts: dict[str, int] = defaultdict(int)

    # --- the objective ---------------------------------------------------------------------------

    def batch_losses(
        self, model: torch.nn.Module, inputs: dict[str, Tensor]
    ) -> tuple[Losses, Tensor | None, dict[str, Tensor]]:
        """The objective's parts on one batch, the student layer weights (B, L) of the attention arms
        (the router's, or SL's one-hot on the chosen layer), and the rows' relative entropies
        (`att_entropy/teacher`, `att_entropy/student`, means over the examples with L_att; empty
        without such an example)."""
        alpha, beta, mmi_weight = self.arm.weights()
        answer = model(
            input_ids=inputs["answer_ids"],
            attention_mask=inputs["answer_mask"],
            labels=inputs["answer_labels"],
        )
        rationale = attention = weights = mmi = None
        entropies: dict[str, Tensor] = {}
        if alpha < 1:
            task = dict(input_ids=inputs["rationale_ids"], attention_mask=inputs["rationale_mask"])
            if self.capture is None:
                out = model(**task, labels=inputs["rationale_labels"])
            else:
                with self.capture:
                    self.capture.arm(inputs["steps"], inputs["units"], layers=self.student_layers)
                    out = model(**task, labels=inputs["rationale_labels"])
                    got = self.capture.collect()
                if self.router is not None:
                    weights = self.router(got.values, inputs["rationale_mask"])
                else:
                    weights = got.matrices.new_ones(got.matrices.shape[:2])  # SL: the one captured layer
                student = mix_layers(weights, got.matrices)
                attention = stepwise_kl(inputs["teacher"], student, inputs["step_mask"], inputs["unit_mask"])
                eligible = inputs["eligible"].bool()
                if eligible.any():
                    for side, matrix in (("teacher", inputs["teacher"]), ("student", student.detach())):
                        rows = row_entropy(matrix, inputs["step_mask"], inputs["unit_mask"])
                        entropies[f"att_entropy/{side}"] = rows[eligible].mean()
            rationale = out.loss
            if mmi_weight:
                mmi = mmi_loss(
                    answer.logits,
                    predicting_positions(inputs["answer_labels"]),
                    out.logits,
                    predicting_positions(inputs["rationale_labels"]),
                )
        losses = combined_loss(
            answer.loss,
            rationale,
            attention,
            inputs["eligible"],
            mmi,
            alpha=alpha,
            beta=beta,
            mmi_weight=mmi_weight,
        )
        return losses, weights, entropies

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        losses, weights, entropies = self.batch_losses(model, inputs)
        self._record(losses, weights, entropies)
        return (losses.total, None) if return_outputs else losses.total

    # --- logging ----------------------------------------------------------------------------------

    def _record(self, losses: Losses, weights: Tensor | None, entropies: dict[str, Tensor]) -> None:
        """Add one batch's figures to the sums `log` averages (each over the batches that have it)."""
        parts = {
            "loss_pre": losses.answer,
            "loss_exp": losses.rationale,
            "loss_att": losses.attention,
            "loss_mmi": losses.mmi,
            "att_share": losses.attention_share,
        }
        if self.router is not None and weights is not None:
            mean = weights.detach().float().mean(0)
            parts |= {f"router/layer_{i:02d}": w for i, w in enumerate(mean)}
            parts["router/entropy"] = entropy(weights.detach().float()).mean()
        for name, value in (parts | entropies).items():
            self._sums[name] += float(value.detach()) if isinstance(value, Tensor) else float(value)
            self._counts[name] += 1

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs and self._counts:
            logs = {**logs, **{name: total / self._counts[name] for name, total in self._sums.items()}}
            self._sums.clear()
            self._counts.clear()
        super().log(logs, start_time)
        if self.tracker is not None:
            self.tracker.log({f"train/{k}": v for k, v in logs.items()}, step=self.state.global_step)

    # --- the router in optimizer and checkpoints ----------------------------------------------------

    def create_optimizer(self, model=None):
        fresh = self.optimizer is None
        optimizer = super().create_optimizer(model)
        if fresh and self.router is not None:
            group = {"params": list(self.router.parameters()), "weight_decay": 0.0}
            if self.router_learning_rate is not None:  # the schedule scales it as it scales the student's
                group["lr"] = self.router_learning_rate
            optimizer.add_param_group(group)
        return optimizer

    def _save_checkpoint(self, model, trial) -> None:
        super()._save_checkpoint(model, trial)
        if self.router is not None and self.args.should_save:
            from safetensors.torch import save_file

            folder = os.path.join(self._get_output_dir(trial=trial), f"checkpoint-{self.state.global_step}")
            save_file(
                {k: v.detach().cpu() for k, v in self.router.state_dict().items()},
                os.path.join(folder, ROUTER_FILE),
            )

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        super()._load_from_checkpoint(resume_from_checkpoint, model)
        if self.router is not None:
            from safetensors.torch import load_file

            state = load_file(os.path.join(resume_from_checkpoint, ROUTER_FILE), device=str(self.args.device))
            self.router.load_state_dict(state)

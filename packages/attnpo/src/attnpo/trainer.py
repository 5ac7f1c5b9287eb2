"""AttnPO on TRL: a `GRPOTrainer` whose advantages are group rewards, RLOO, then step rescaling per token.

The release recipe (attnpo-spec §2) in TRL settings (`train.grpo_args` sets them):

| release | TRL |
|---|---|
| RLOO, no std normalisation | advantages computed here (`attnpo.advantages`); TRL's own, from `scale_rewards="none"`, are replaced |
| no KL, no reference model | `beta=0.0` |
| PPO clip ε = 0.2 both sides | `epsilon=0.2` (`epsilon_high` defaults to it) |
| dual clip c = 3 for A < 0 | `delta=3.0` (TRL clamps the ratio from above at δ) |
| token-mean loss | `loss_type="dapo"` (global token mean) |
| one update per rollout batch | `num_iterations=1`, `steps_per_generation=gradient_accumulation_steps` |

Hooks overridden (the fewest that carry AttnPO):
- `_generate_and_score_completions`: after TRL's own, replaces the advantages with `attnpo.rewards` →
  `attnpo.advantages` over whole groups gathered across processes, and segments the correct responses.
- `_compute_loss` / `_get_per_token_logps_and_entropies`: the policy forward of the loss, which TRL runs
  anyway with the current weights, is armed with the key-focus heads' step scores (`attncore.scores`);
  once it has run, the (B, T) token advantages (`attnpo.rescaling`) replace `inputs["advantages"]` before
  TRL's loss reads them. No extra forward ever runs.

The reward function TRL calls grades each completion by AttnPO's rule (`GradingMode.ATTNPO`, spec §2);
`method.reward` (any reward of spec §12) turns the gathered grades and lengths into group rewards.

Logged per optimizer step (TRL's `_metrics`, so into `metrics.jsonl` and wandb beside TRL's own), over
the whole batch of every process:
- `attnpo/reward`, `attnpo/accuracy`: mean reward and share correct;
- `attnpo/thinking_tokens`, `attnpo/answer_tokens`, `attnpo/total_tokens`: mean per response;
- the rescaling's metrics (`attnpo.step_metrics.rescaling_metrics` names and defines them): share of
  responses rescaled, Pos / Neg responses and steps, share of steps attenuated, γ histogram, quantiles
  and histogram of S_k/S_base (and of S_k, S_base), the attenuated steps' relative positions (mean and
  histogram) and, on synthetic-testbed problems (rows with `testbed` true), the share of attenuated
  steps the oracle labels redundant (`attnpo/oracle/...`).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from accelerate.utils import gather_object
from torch import Tensor
from trl import GRPOTrainer
from trl.trainer.utils import RepeatSampler

from attncore.alignment import decode
from attncore.attention import AttentionCapture
from attncore.grading import Grader, GradingMode
from attncore.scores import Pending, StepScores, arm_step_scores
from attncore.steps import SegmentedResponse, StepSegmenterConfig, segment_response, unscored_reason
from attncore.think import prompt_opens_thinking, split_thinking, thinking_token_count
from attnpo.advantages import outcome_advantages
from attnpo.config import TARGET_KINDS, MethodConfig
from attnpo.labels import OracleLabels, OracleLabelsConfig, ProbeResponse, StepLabel
from attnpo.rescaling import RescaledAdvantages, rescale_advantages
from attnpo.rewards import group_rewards, repetitive
from attnpo.step_metrics import RescalingRecord, rescaling_metrics, rescaling_record


@dataclass(frozen=True)
class StepBatch:
    """What the loss forward of one micro-batch used: TRL's inputs (with the token advantages its loss
    read), the steps, the KFH step scores and the rescaling behind the token advantages."""

    global_step: int
    inputs: dict[str, Any]
    segments: list[SegmentedResponse | None]
    scores: list[StepScores | None]
    rescaled: RescaledAdvantages


def padded_steps(
    segments: Sequence[SegmentedResponse | None], scores: Sequence[StepScores | None]
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Rows of scored responses as tensors: step scores (B, K) float64, spans (B, K, 2) long
    (response-relative), step counts (B,) long (0 for rows without scores), |F| (B,) long."""
    rows = len(segments)
    width = max([len(s.mean) for s in scores if s is not None], default=0)
    values = torch.zeros(rows, width, dtype=torch.float64)
    spans = torch.zeros(rows, width, 2, dtype=torch.long)
    counts = torch.zeros(rows, dtype=torch.long)
    answer = torch.ones(rows, dtype=torch.long)
    for b, (segment, score) in enumerate(zip(segments, scores, strict=True)):
        if segment is None or score is None:
            continue
        k = len(score.mean)
        values[b, :k] = score.mean.double().cpu()
        spans[b, :k] = torch.tensor(segment.step_spans())
        counts[b] = k
        start, end = segment.answer_span()
        answer[b] = end - start
    return values, spans, counts, answer


class EpochSeededSampler(RepeatSampler):
    """TRL's `RepeatSampler` whose shuffle is a function of (seed, epoch) alone.

    The stock sampler draws each epoch's permutation from one generator seeded once, so a run resumed
    from a checkpoint (a fresh sampler) replays epoch 0's order in its later epochs; transformers calls
    `set_epoch` before every epoch, which here reseeds the generator with `seed + epoch`."""

    def set_epoch(self, epoch: int) -> None:
        if self.shuffle:
            self.generator.manual_seed((self.seed or 0) + epoch)


class AttnPOTrainer(GRPOTrainer):
    """GRPOTrainer with AttnPO's rewards, RLOO advantages and KFH step rescaling (module doc).

    `heads` are the key-focus heads (layer, query head); `grader` a started `Grader`; `on_step_batch`
    (optional) is called with the trainer and each micro-batch's `StepBatch` right after its loss forward.
    `prompt_ids` (optional) maps each dataset prompt text to its token ids, which TRL's engines then read
    as they are (`_tokenize_prompts`).
    """

    def __init__(
        self,
        *args: Any,
        method: MethodConfig,
        heads: Sequence[tuple[int, int]],
        segmenter: StepSegmenterConfig,
        grader: Grader,
        on_step_batch: Callable[[AttnPOTrainer, StepBatch], None] | None = None,
        prompt_ids: Mapping[str, Sequence[int]] | None = None,
        **kwargs: Any,
    ):
        self.prompt_ids = prompt_ids
        self.method = method
        self.heads = [tuple(h) for h in heads]
        self.segmenter = segmenter
        self.grader = grader
        self.on_step_batch = on_step_batch
        self._graded: list[bool] = []
        with warnings.catch_warnings():
            # `rollout_func` is how the refill engine plugs in (TRL pinned in uv.lock); TRL's notice that
            # the hook is experimental would print on every run and tells the user nothing to do
            warnings.filterwarnings("ignore", message="You are using 'rollout_func'", category=UserWarning)
            super().__init__(*args, reward_funcs=[self.attnpo_correct], **kwargs)
        self.capture = AttentionCapture(self.accelerator.unwrap_model(self.model))
        self._armed: tuple[Pending, dict[str, Any]] | None = None
        self._oracle = OracleLabels(OracleLabelsConfig())
        self._pending = RescalingRecord()  # this micro-batch's, on this process
        self._window = RescalingRecord()  # every process's, since the last log

    def _tokenize_prompts(self, prompts: list):
        """The encoded prompts, not TRL's re-tokenization of their text, which adds a second BOS where the
        tokenizer adds one (DeepSeek-R1-Distill) after the chat template already wrote it."""
        if self.prompt_ids is None:
            return super()._tokenize_prompts(prompts)
        return [list(self.prompt_ids[p]) for p in prompts], None, {}

    def _get_train_sampler(self, dataset: Any = None) -> EpochSeededSampler:
        """TRL's sampler (prompts repeated G times, batches repeated per generation), reseeded per epoch."""
        return EpochSeededSampler(
            data_source=self.train_dataset if dataset is None else dataset,
            mini_repeat_count=self.num_generations,
            batch_size=self.args.generation_batch_size // self.num_generations,
            repeat_count=self.num_iterations * self.args.steps_per_generation,
            shuffle=self.shuffle_dataset,
            seed=self.args.seed,
        )

    # --- rewards and outcome advantages -------------------------------------------------------------

    def attnpo_correct(self, prompts: list, completions: list, answer: list[str], **_: Any) -> list[float]:
        """TRL reward function: 1.0 when a completion is correct under AttnPO's rule, else 0.0."""
        results = self.grader.grade(list(completions), list(answer), GradingMode.ATTNPO)
        self._graded = [r.correct for r in results]
        return [float(c) for c in self._graded]

    def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        output = super()._generate_and_score_completions(inputs)
        mode = "train" if self.model.training else "eval"
        device = self.accelerator.device
        ids, mask = output["completion_ids"], output["completion_mask"]
        lengths = mask.sum(1)
        correct = torch.tensor(self._graded, dtype=torch.bool, device=device)
        size = self.num_generations if mode == "train" else self.num_generations_eval
        all_correct = self.accelerator.gather(correct).view(-1, size)
        all_lengths = self.accelerator.gather(lengths).view(-1, size)
        rewards = self.group_rewards(inputs, ids, mask, all_correct.cpu(), all_lengths.cpu())
        advantages = outcome_advantages(self.method.advantage, rewards).flatten()
        accuracy = all_correct.double().mean(1).repeat_interleave(size)
        local = slice(
            self.accelerator.process_index * len(inputs), (self.accelerator.process_index + 1) * len(inputs)
        )
        output["advantages"] = advantages[local].float().to(device)
        output["attnpo_outcome"] = output["advantages"]
        output["attnpo_reward"] = rewards.flatten()[local].float().to(device)
        output["attnpo_correct"] = correct
        output["attnpo_accuracy"] = accuracy[local].to(device)
        output["attnpo_row"] = torch.arange(local.start, local.stop, device=device)
        output["attnpo_group"] = output["attnpo_row"] // size
        output["attnpo_segments"] = self._segments(ids, mask, correct)
        output["attnpo_oracle"] = self._oracle_labels(inputs, ids, mask, output["attnpo_segments"])

        tok = self.processing_class
        prompts = [x["prompt"] for x in inputs]
        thinking = [
            thinking_token_count(row[: int(n)].tolist(), text, prompt_opens_thinking(p), lambda: tok)
            for row, n, text, p in zip(
                ids.cpu(),
                lengths.cpu(),
                tok.batch_decode(ids, skip_special_tokens=True),
                prompts,
                strict=True,
            )
        ]
        think = self.accelerator.gather(torch.tensor(thinking, device=device)).double()
        total = all_lengths.flatten().double()
        metrics = self._metrics[mode]
        metrics["attnpo/reward"].append(rewards.mean().item())
        metrics["attnpo/accuracy"].append(all_correct.double().mean().item())
        metrics["attnpo/thinking_tokens"].append(think.mean().item())
        metrics["attnpo/answer_tokens"].append((total - think.to(total.device)).mean().item())
        metrics["attnpo/total_tokens"].append(total.mean().item())
        return output

    def group_rewards(
        self, inputs: list[dict[str, Any]], ids: Tensor, mask: Tensor, correct: Tensor, lengths: Tensor
    ) -> Tensor:
        """(P, G) float64 rewards of every group of the step by `method.reward`. correct (P, G) bool and
        lengths (P, G) are gathered over all processes, so a group split across processes gets its
        whole-group statistics; inputs, ids, mask (B, T) are this process's rows and completions. The L1
        rewards read the rows' `target_length`; Laser-DE flags repetitive completions
        (`attnpo.rewards.repetitive`)."""
        device, size = self.accelerator.device, correct.shape[1]
        reward = self.method.reward
        targets = repeated = None
        if reward.kind in TARGET_KINDS:
            local = torch.tensor([int(x["target_length"]) for x in inputs], device=device)
            targets = self.accelerator.gather(local).view(-1, size)[:, 0].cpu()
        if reward.kind == "laser_de":
            rows = [row[m.bool()].tolist() for row, m in zip(ids.cpu(), mask.cpu(), strict=True)]
            local = repetitive(rows, ngram=reward.repetition_ngram, count=reward.repetition_count)
            repeated = self.accelerator.gather(local.to(device)).view(-1, size).cpu()
        return group_rewards(
            reward,
            correct,
            lengths,
            global_step=self.state.global_step + 1,
            targets=targets,
            repeated=repeated,
        )

    def _segments(self, ids: Tensor, mask: Tensor, correct: Tensor) -> list[SegmentedResponse | None]:
        """Steps of each correct, finished response (None elsewhere: such rows keep A on every token)."""
        if not self.method.rescaling.enabled:
            return [None] * len(ids)
        eos = set(self.eos_token_ids)
        out: list[SegmentedResponse | None] = []
        for row, m, ok in zip(ids.cpu(), mask.cpu(), correct.cpu(), strict=True):
            response = row[m.bool()].tolist()
            finished = bool(response) and response[-1] in eos
            out.append(
                segment_response(self.processing_class, response, self.segmenter, truncated=not finished)
                if ok
                else None
            )
        return out

    def _oracle_labels(
        self,
        inputs: list[dict[str, Any]],
        ids: Tensor,
        mask: Tensor,
        segments: list[SegmentedResponse | None],
    ) -> list[tuple[StepLabel, ...] | None]:
        """The testbed oracle's label of each step of the segmented responses to synthetic-testbed
        problems (rows with `testbed` true); None for every other row."""
        out: list[tuple[StepLabel, ...] | None] = [None] * len(inputs)
        asked, where = [], []
        for b, (row, segment) in enumerate(zip(inputs, segments, strict=True)):
            if not row.get("testbed") or segment is None or not segment.ok:
                continue
            text = decode(self.processing_class, ids[b][mask[b].bool()].tolist())
            steps = tuple(text[s.chars[0] : s.chars[1]] for s in segment.steps)
            asked.append(
                ProbeResponse(str(b), row["problem"], row["answer"], steps, split_thinking(text).answer)
            )
            where.append(b)
        if asked:
            for b, labels in zip(where, self._oracle.label(asked, progress=False), strict=True):
                out[b] = labels
        return out

    # --- step scores inside the loss forward -------------------------------------------------------

    def _compute_loss(self, model, inputs):
        segments = inputs["attnpo_segments"]
        scored = [s if s is not None and unscored_reason(s) is None else None for s in segments]
        inputs["advantages"] = inputs["attnpo_outcome"]
        if not any(s is not None for s in scored):
            self._record(inputs, [None] * len(segments))
            loss = super()._compute_loss(model, inputs)
        else:
            attention_mask = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], dim=1)
            prompt_lengths = inputs["prompt_mask"].sum(1).tolist()
            with self.capture:
                self._armed = (
                    arm_step_scores(self.capture, attention_mask, scored, prompt_lengths, self.heads),
                    inputs,
                )
                try:
                    loss = super()._compute_loss(model, inputs)
                finally:
                    self._armed = None
        # every process reaches this point once per micro-batch: the whole batch's record
        records = gather_object([self._pending])
        if self.model.training:
            for record in records:
                self._window = self._window.merge(record)
        return loss

    def _get_per_token_logps_and_entropies(self, *args: Any, **kwargs: Any):
        result = super()._get_per_token_logps_and_entropies(*args, **kwargs)
        if self._armed is not None:  # the loss forward just ran: its scores set the token advantages
            pending, inputs = self._armed
            self._armed = None
            self._record(inputs, pending.collect())
        return result

    def _record(self, inputs: dict[str, Any], scores: list[StepScores | None]) -> None:
        """Token advantages from this micro-batch's step scores into `inputs`, and their metrics."""
        segments = inputs["attnpo_segments"]
        values, spans, counts, answer = padded_steps(segments, scores)
        outcome = inputs["attnpo_outcome"]
        prompt = inputs["prompt_mask"].sum(1).cpu()
        total = prompt + inputs["completion_mask"].sum(1).cpu()
        rescaled = rescale_advantages(
            outcome.cpu(),
            values,
            spans,
            counts,
            inputs["attnpo_correct"].cpu(),
            inputs["attnpo_accuracy"].cpu(),
            answer,
            total,
            width=inputs["completion_ids"].shape[1],
            global_step=self.state.global_step + 1,
            config=self.method.rescaling,
        )
        inputs["advantages"] = rescaled.tokens.to(device=outcome.device, dtype=outcome.dtype)
        self._pending = rescaling_record(rescaled, values, counts, outcome.cpu(), inputs["attnpo_oracle"])
        if self.on_step_batch is not None:
            self.on_step_batch(
                self, StepBatch(self.state.global_step + 1, inputs, list(segments), list(scores), rescaled)
            )

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """TRL's log, with the rescaling metrics of the steps since the last log (`attnpo.step_metrics`)."""
        if self.model.training:
            for key, value in rescaling_metrics(self._window).items():
                self._metrics["train"][key] = [value]
            self._window = RescalingRecord()
        super().log(logs, start_time)

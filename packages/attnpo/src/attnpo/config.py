"""What an AttnPO run optimises: the reward, the outcome advantage, the stepwise rescaling and the heads.

Strict sections (`attncore.config.Config`: unknown keys are errors). The defaults are the released
recipe (attnpo-spec §2, §6-7); where paper and release differ the release wins (spec §6.1). The
ablations of spec §11 are switches of these sections:

| arm | switches |
|---|---|
| A1 TLMRE alone | `rescaling.enabled=false` (γ ≡ 1) |
| A2 AttnPO | defaults |
| A3 Pos-Adv only | `rescaling.neg_adv=false` |
| A4 Neg-Adv only | `rescaling.pos_adv=false` |
| A5 no difficulty awareness | `rescaling.difficulty_aware=false` |
| A6 γ variant | `rescaling.gamma_variant=paper_notes` |
| A7 random heads | `heads.kind=random` (same `n` as the key-focus heads) |

Any reward of the zoo (spec §12) combines with or without rescaling.
"""

from __future__ import annotations

import random
from typing import Annotated, Literal

from pydantic import Field, model_validator

from attncore.config import Config
from attncore.errors import UserError

Head = tuple[int, int]


# --- rewards (spec §2, §12) ---------------------------------------------------------------------------


class CorrectnessReward(Config):
    """`r = c`: correctness alone (no length term)."""

    kind: Literal["correctness"] = "correctness"


class TraineffReward(Config):
    """TLMRE "traineff": `r = c·(1 − α·σ((L − μ)/(sd + eps)))`, μ and population sd over the group's
    correct responses. `double_sigmoid` is the paper-notes `σ(σ(z))` (spec §6.1), off by default."""

    kind: Literal["traineff"] = "traineff"
    alpha: float = Field(0.2, ge=0, le=1)
    eps: float = Field(1e-8, gt=0)
    double_sigmoid: bool = False


class LengthTargetReward(Config):
    """What the L1 rewards share: a target length per prompt, written into the prompt (L1's "Think for N
    tokens.").

    A problem row's `target_length` column gives its target; a row without one gets a target drawn
    uniformly from [`target_min`, `target_max`] once per problem, seeded by the run seed and the problem
    id [default: L1 draws a new target at each visit]. `instruction` is appended to the problem text,
    `{target}` replaced by the target.
    """

    alpha: float = Field(3e-4, ge=0)
    target_min: int = Field(100, ge=1)
    target_max: int = Field(4000, ge=1)
    instruction: str

    @model_validator(mode="after")
    def _range_ordered(self) -> LengthTargetReward:
        if self.target_min > self.target_max:
            raise ValueError(f"target_min={self.target_min} exceeds target_max={self.target_max}")
        if "{target}" not in self.instruction:
            raise ValueError("instruction must contain {target} (where the target length goes)")
        return self


class L1ExactReward(LengthTargetReward):
    """L1-Exact: `r = c − α·|L_target − L|`."""

    kind: Literal["l1_exact"] = "l1_exact"
    instruction: str = "\n\nThink for {target} tokens."


class L1MaxReward(LengthTargetReward):
    """L1-Max: `r = c·clip(α·(L_target − L) + δ, 0, 1)`."""

    kind: Literal["l1_max"] = "l1_max"
    instruction: str = "\n\nThink for maximum {target} tokens."
    delta: float = 0.5


class ThinkPruneReward(Config):
    """ThinkPrune: `r = c` when `L ≤ limit`, else 0; the limit steps down through `limits`, one round of
    `steps_per_round` optimizer steps each (the last limit holds afterwards). Round length [default]."""

    kind: Literal["thinkprune"] = "thinkprune"
    limits: list[int] = Field(default_factory=lambda: [4000, 3000, 2000], min_length=1)
    steps_per_round: int = Field(200, ge=1)

    def limit_at(self, global_step: int) -> int:
        """The length limit in force at `global_step` (1-based)."""
        return self.limits[min((max(global_step, 1) - 1) // self.steps_per_round, len(self.limits) - 1)]


class ShorterBetterReward(Config):
    """ShorterBetter: `r = α·c − β·|L − SOL|`, SOL the group's shortest correct length (its mean length
    when none is correct)."""

    kind: Literal["shorter_better"] = "shorter_better"
    alpha: float = 2.0
    beta: float = Field(0.001, ge=0)


class KimiReward(Config):
    """Kimi k1.5: `λ = 0.5 − (L − L_min)/(L_max − L_min)` over the group; `r = c + w·λ` when correct,
    `w·min(0, λ)` when wrong; `w` = 0.4 as in Laser's comparison."""

    kind: Literal["kimi"] = "kimi"
    weight: float = Field(0.4, ge=0)


class LaserReward(Config):
    """Laser: `r = c + λ·1[c ∧ L ≤ L_T]` with a fixed target `L_T`."""

    kind: Literal["laser"] = "laser"
    target: int = Field(4096, ge=1)
    bonus: float = Field(0.5, ge=0)


class LaserDReward(Config):
    """Laser-D (`laser_d`) and Laser-DE (`laser_de`): Laser with a target per difficulty level.

    A group's level comes from its accuracy (≥ 2/3 easy, ≥ 1/3 medium, else hard). Each level's target
    is the smallest of `thresholds` at which the level's expected count of correct responses within the
    target reaches `expected_correct` (Laser's rule), measured on the current rollout batch
    [default: Laser's release measures a monitoring set every few steps]. Laser-DE also gives the bonus
    to a wrong response longer than its target that is not repetitive (exploration): a response is
    repetitive when some run of `repetition_ngram` tokens occurs `repetition_count` times or more in it
    [default: the rule and its numbers are ours].
    """

    kind: Literal["laser_d", "laser_de"] = "laser_d"
    thresholds: list[int] = Field(
        default_factory=lambda: [1024, 2048, 3072, 4096, 5120, 6144, 7168, 8192], min_length=1
    )
    bonus: float = Field(0.5, ge=0)
    expected_correct: int = Field(1, ge=1)
    repetition_ngram: int = Field(20, ge=1)
    repetition_count: int = Field(3, ge=2)


class TruncationReward(Config):
    """DLER's truncation: `r = c` when `L ≤ limit`, else 0. DLER pairs it with batch-normalised
    advantages (`advantage.kind=grpo`, `advantage.scale=batch`)."""

    kind: Literal["truncation"] = "truncation"
    limit: int = Field(4000, ge=1)


RewardConfig = Annotated[
    CorrectnessReward
    | TraineffReward
    | L1ExactReward
    | L1MaxReward
    | ThinkPruneReward
    | ShorterBetterReward
    | KimiReward
    | LaserReward
    | LaserDReward
    | TruncationReward,
    Field(discriminator="kind"),
]
"""One reward of the zoo, chosen by `kind`."""

TARGET_KINDS = ("l1_exact", "l1_max")
"""Rewards that read a per-prompt target length (`LengthTargetReward`)."""


# --- advantages ---------------------------------------------------------------------------------------


class AdvantageConfig(Config):
    """Outcome advantage per response.

    `rloo` (the release): `A_i = r_i − mean_{j≠i} r_j`, no std. `grpo`: `r_i − mean_group r`, divided by
    the group's (`scale=group`) or the batch's (`scale=batch`) unbiased std + 1e-4, or not at all
    (`scale=none`), as TRL's `scale_rewards`.
    """

    kind: Literal["rloo", "grpo"] = "rloo"
    scale: Literal["group", "batch", "none"] = "group"

    @model_validator(mode="after")
    def _scale_is_grpo_only(self) -> AdvantageConfig:
        if self.kind == "rloo" and self.scale != "group":  # the default may stand: resolved configs hold it
            raise ValueError("scale applies to kind=grpo only (RLOO has no std normalisation)")
        return self


# --- stepwise rescaling (spec §6) -------------------------------------------------------------------


ScoreBaseline = Literal["uniform", "thinking"]
"""What S_base scales by p^β: the release's |F|/|o|, or the response's length-weighted mean step score."""


class RescalingConfig(Config):
    """Per-step factors γ_k on the outcome advantage of correct responses (spec §6).

    `beta` is the exponent of p in `S_base = p^β·|F|/|o|`, `lam` the exponent of p in γ, `delta` the
    floor of γ, `curriculum_steps` the T of the Pos-Adv gate, `neg_factor` the γ of Neg-Adv steps.
    `baseline`: the score S_base scales by p^β, `uniform` (the release, `|F|/|o|`) or `thinking` (ours, not
    the release's: the response's step-length-weighted mean step score, scale-free; why in
    `attnpo.rescaling.score_baselines`).
    """

    enabled: bool = True
    pos_adv: bool = True
    neg_adv: bool = True
    difficulty_aware: bool = True
    gamma_variant: Literal["code", "paper_notes"] = "code"
    baseline: ScoreBaseline = "uniform"
    beta: float = Field(2.0, ge=0)
    lam: float = Field(2.0, ge=0)
    delta: float = Field(0.0, ge=0, lt=1)
    curriculum_steps: int = Field(1000, ge=0)
    neg_factor: float = Field(0.0, ge=0, le=1)


# --- heads --------------------------------------------------------------------------------------------


class HeadsConfig(Config):
    """The key-focus heads whose attention scores the steps.

    `file`: a heads artifact or preset (`attnpo find-heads` output, read with `attnpo.artifact`);
    `list`: (layer, query head) pairs given here; `random`: `n` distinct heads drawn with `seed` from
    the model's layers × query heads (ablation A7).
    """

    kind: Literal["file", "list", "random"] = "file"
    path: str | None = None
    heads: list[Head] = Field(default_factory=list)
    n: int = Field(3, ge=1)
    seed: int = 0

    @model_validator(mode="after")
    def _source_given(self) -> HeadsConfig:
        if self.kind == "file" and not self.path:
            raise ValueError("kind=file needs path (a heads file written by `attnpo find-heads`)")
        if self.kind == "list" and not self.heads:
            raise ValueError("kind=list needs heads: [[layer, head], ...]")
        if self.kind == "list" and len(set(self.heads)) != len(self.heads):
            raise ValueError(f"heads {self.heads} name a (layer, head) pair twice")
        return self

    def resolve(self, num_layers: int, num_heads: int) -> list[Head]:
        """The heads as (layer, query head) pairs, checked against the model's shape."""
        if self.kind == "random":
            if self.n > num_layers * num_heads:
                raise UserError(f"heads.n={self.n} exceeds the model's {num_layers * num_heads} heads")
            flat = random.Random(self.seed).sample(range(num_layers * num_heads), self.n)
            return [divmod(i, num_heads) for i in sorted(flat)]
        if self.kind == "file":
            from attnpo.artifact import read_heads

            heads = read_heads(self.path)
        else:
            heads = [tuple(h) for h in self.heads]
        outside = [h for h in heads if not (0 <= h[0] < num_layers and 0 <= h[1] < num_heads)]
        if outside:
            raise UserError(
                f"heads {outside} lie outside the model's {num_layers} layers × {num_heads} heads"
            )
        return heads


# --- the method ---------------------------------------------------------------------------------------


class MethodConfig(Config):
    """Reward, outcome advantage, stepwise rescaling and heads of one arm."""

    reward: RewardConfig = Field(default_factory=TraineffReward)
    advantage: AdvantageConfig = Field(default_factory=AdvantageConfig)
    rescaling: RescalingConfig = Field(default_factory=RescalingConfig)
    heads: HeadsConfig | None = None

    @model_validator(mode="after")
    def _heads_when_rescaling(self) -> MethodConfig:
        if self.rescaling.enabled and self.heads is None:
            raise ValueError("rescaling needs heads (set heads, or rescaling.enabled=false for TLMRE alone)")
        return self

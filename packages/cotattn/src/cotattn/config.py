"""Strict configs of the `cotattn` jobs (attncore's `Config`: unknown keys are errors, one-line
messages naming key and file); each job saves its resolved config beside its output."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from attncore.config import Config, OutputPath, Threads
from attncore.critical import CriticalConfig
from attncore.data import DataConfig
from attncore.models import ModelConfig
from attncore.prompts import PromptConfig
from attncore.rollout.grade import GradingConfig
from attncore.rollout.types import SamplingConfig
from attncore.rollout.vllm import VLLMOptions
from attncore.store.config import ExtractModelConfig, InputConfig
from attncore.tracking import TrackingConfig
from cotattn.objective import ALPHA, BETA, MMI_WEIGHT
from cotattn.router import TAU2
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
    threads: Threads = None


Method = Literal["molsaki", "dss", "mmi", "vanilla", "sl"]


class ArmConfig(Config):
    """Which objective (molsaki-spec §7, §10); the weights apply where the method has the term.

    - `vanilla`: L_pre only (question -> gold answer);
    - `dss`: α L_pre + (1-α) L_exp;
    - `mmi`: DSS + `mmi_weight` · L_MMI;
    - `molsaki`: DSS + β L_att, the student's layers mixed by the router (τ2); `tau1`, when set,
      re-mixes the cached per-layer teacher matrices with p^t = softmax(G / τ1) (exact: the teacher
      reads a fixed text), so τ1 varies without rerunning the teacher; unset, A^t is the cached one;
    - `sl`: DSS + β L_att between one fixed teacher layer and one fixed student layer (0-based;
      negative counts from the last).
    """

    method: Method = "molsaki"
    alpha: float = Field(ALPHA, ge=0, le=1)
    beta: float = Field(BETA, gt=0, allow_inf_nan=False)
    mmi_weight: float = Field(MMI_WEIGHT, gt=0, allow_inf_nan=False)
    tau2: float = Field(TAU2, gt=0, allow_inf_nan=False)
    tau1: float | None = Field(None, gt=0, allow_inf_nan=False)
    teacher_layer: int | None = None
    student_layer: int | None = None

    @model_validator(mode="after")
    def _fits_the_method(self) -> ArmConfig:
        # Checked on values, not on which keys were written, so a resolved config reads back.
        changed = {n for n, f in type(self).model_fields.items() if getattr(self, n) != f.default}
        if self.method == "sl" and (self.teacher_layer is None or self.student_layer is None):
            raise ValueError("method 'sl' needs teacher_layer and student_layer")
        unused = {
            "vanilla": {"alpha", "beta", "mmi_weight", "tau2", "tau1"},
            "dss": {"beta", "mmi_weight", "tau2", "tau1"},
            "mmi": {"beta", "tau2", "tau1"},
            "molsaki": {"mmi_weight"},
            "sl": {"mmi_weight", "tau2", "tau1"},
        }[self.method]
        if self.method != "sl":
            unused |= {"teacher_layer", "student_layer"}
        if unused & changed:
            raise ValueError(f"{', '.join(sorted(unused & changed))} do not apply to method {self.method!r}")
        return self

    @property
    def attention(self) -> bool:
        """Whether the arm has the attention loss (and needs teacher targets)."""
        return self.method in ("molsaki", "sl")

    def weights(self) -> tuple[float, float, float]:
        """(α, β, MMI weight) of `objective.combined_loss` for this method."""
        if self.method == "vanilla":
            return 1.0, 0.0, 0.0
        return (
            self.alpha,
            self.beta if self.attention else 0.0,
            self.mmi_weight if self.method == "mmi" else 0.0,
        )


class OptimConfig(Config):
    """Optimisation (spec §8, §12 defaults): full fine-tuning with AdamW, linear decay, no warmup."""

    learning_rate: float = Field(5e-5, gt=0, allow_inf_nan=False)
    router_learning_rate: float | None = Field(
        None,
        gt=0,
        allow_inf_nan=False,
        description="the MoL router's own rate (None: learning_rate). Its inputs are sums over the sequence "
        "(spec §6), so one AdamW step of about the rate on every weight moves its logits by rate·Σ|h|/τ2",
    )
    batch_size: int = Field(16, ge=1)
    gradient_accumulation_steps: int = Field(1, ge=1)
    max_steps: int = Field(4000, ge=1)
    warmup_steps: int = Field(0, ge=0)
    weight_decay: float = Field(0.0, ge=0, allow_inf_nan=False)
    max_grad_norm: float = Field(1.0, gt=0, allow_inf_nan=False)
    max_length: int = Field(512, ge=8, description="longer examples are left out (counted)")
    seed: int = 0
    logging_steps: int = Field(10, ge=1)
    save_steps: int = Field(500, ge=1)
    save_total_limit: int | None = Field(2, ge=1)


class TrainConfig(Config):
    """`cotattn train`: a student distilled from teacher rationales (and attention), one arm."""

    student: ModelConfig = ModelConfig()
    rationales: str = Field(description="rationales file: id, problem, rationale, answer")
    teacher_targets: str | None = Field(None, description="`cotattn teacher-targets` folder (attention arms)")
    task_format: TaskFormat = TaskFormat()
    critical: CriticalConfig = CriticalConfig()
    arm: ArmConfig = ArmConfig()
    optim: OptimConfig = OptimConfig()
    out: OutputPath = "runs/cotattn/student"
    overwrite: bool = False
    threads: Threads = None
    tracking: TrackingConfig = TrackingConfig()

    @model_validator(mode="after")
    def _targets_for_attention(self) -> TrainConfig:
        if self.arm.attention and self.teacher_targets is None:
            raise ValueError(f"method {self.arm.method!r} needs teacher_targets (a teacher-targets folder)")
        if not self.arm.attention and self.teacher_targets is not None:
            raise ValueError(f"teacher_targets do not apply to method {self.arm.method!r}")
        return self


GUIDED_HINT = "The correct answer is {answer}. Explain step by step how to reach it."
KEYWORDS_REQUEST = (
    "Before the answer, list 3 to 8 keywords of the question on one line in the form "
    "'Keywords: word, word, ...'."
)


class RationalesConfig(Config):
    """`cotattn rationales`: the teacher's rationales in two phases (molsaki-spec §9).

    Phase 1 prompts every problem with `prompt` (few-shot CoT: the plain template's worked example and
    `#### N` answer line by default). Phase 2 prompts the phase-1 failures again with the gold answer
    appended to the question (`guided_hint`, `{answer}` is replaced). A rationale is kept only when its
    graded answer equals the gold. The default data is SVAMP's fixed training split (800 of 1000).

    `keywords` (CSQA, spec §3): both phases also ask for the question's keywords (`keywords_request`,
    after the question) in the same call; the `Keywords:` line is parsed out of the rationale and
    stored beside it (`cotattn.rationales.parse_keywords`).
    """

    teacher: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig(name="svamp", split="train800")
    prompt: PromptConfig = PromptConfig(template="plain")
    guided_hint: str = GUIDED_HINT
    keywords: bool = False
    keywords_request: str = KEYWORDS_REQUEST
    sampling: SamplingConfig = SamplingConfig(max_tokens=256)
    engine: Literal["auto", "hf", "vllm"] = "auto"
    batch_size: int = Field(8, ge=1, description="sequences the HF engine decodes together")
    refill: bool = Field(
        False,
        description="HF engine: refilled slots instead of static batches (`attncore.rollout.refill`; "
        "faster when lengths vary, greedy rationales are the same)",
    )
    vllm: VLLMOptions = VLLMOptions()
    grading: GradingConfig = GradingConfig()
    out: OutputPath = "runs/cotattn/rationales"
    overwrite: bool = False
    threads: Threads = None
    tracking: TrackingConfig = TrackingConfig()

    @field_validator("guided_hint")
    @classmethod
    def _names_the_answer(cls, hint: str) -> str:
        if "{answer}" not in hint:
            raise ValueError("must contain {answer}, where the gold answer goes")
        return hint

    @model_validator(mode="after")
    def _one_sample(self) -> RationalesConfig:
        if self.sampling.n != 1:
            raise ValueError("sampling.n must be 1: one rationale per problem and phase")
        return self

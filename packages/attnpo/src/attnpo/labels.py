"""Step labels (essential / redundant) for probe responses, from three sources behind one interface.

- `oracle`: the testbed oracle (`attncore.synthetic.oracle`), exact for problems of the synthetic testbed;
  a step it cannot read stays unlabelled.
- `judges`: an ensemble of k LLM judges run through the rollout engines (HF here, vLLM on GPU), one
  prompt per step; each judge's answer is read as its first word `essential` or `redundant`, anything
  else abstains. The consensus rule (`unanimous` or `majority` of the k judges) decides; a step without
  consensus stays unlabelled (disagreements are dropped). Judge outputs are stored as rollout folders,
  so a killed run resumes.
- `jsonl`: labels a user produced elsewhere, one line per response: `{"id": ..., "labels": [...]}` with
  `"essential"`, `"redundant"` or null per step of the AttnPO segmentation.

Every source states its provenance (what labelled, with which settings, file checksums), which is stored
with the labels and in the heads artifact.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal, Protocol

from pydantic import Field, field_validator

from attncore.config import Config
from attncore.data import DataConfig, Problem
from attncore.errors import UserError
from attncore.models import ModelConfig
from attncore.prompts import PromptConfig
from attncore.rollout.store import RolloutStore
from attncore.rollout.types import SamplingConfig, rollout_id
from attncore.rollout.vllm import VLLMOptions
from attncore.shards import file_sha256
from attncore.synthetic.oracle import Label, label_answered_steps
from attncore.tracking import TrackingConfig

ESSENTIAL, REDUNDANT = Label.ESSENTIAL.value, Label.REDUNDANT.value  # the oracle's names, for every source
StepLabel = Literal["essential", "redundant"] | None


@dataclass(frozen=True)
class ProbeResponse:
    """What a label source sees of a probe response: the problem, the thinking steps, the answer text."""

    id: str
    problem: str
    gold: str
    steps: tuple[str, ...]
    answer: str


class LabelSource(Protocol):
    """Labels every step of every response (None: unlabelled) and says how it did so."""

    def provenance(self) -> dict: ...

    def label(self, responses: list[ProbeResponse], progress: bool = True) -> list[tuple[StepLabel, ...]]: ...


# --- oracle ---------------------------------------------------------------------------------------------


class OracleLabelsConfig(Config):
    """The testbed oracle; only meaningful for problems of the synthetic testbed."""

    kind: Literal["oracle"] = "oracle"


_ORACLE = {Label.ESSENTIAL: ESSENTIAL, Label.REDUNDANT: REDUNDANT, Label.UNPARSEABLE: None}


class OracleLabels:
    """Oracle rule on the segmenter's steps; the final answer is the response's boxed answer, else the gold."""

    def __init__(self, cfg: OracleLabelsConfig):
        self.cfg = cfg

    def provenance(self) -> dict:
        return {"kind": "oracle", "rule": "attncore.synthetic.oracle.label_answered_steps"}

    def label(self, responses: list[ProbeResponse], progress: bool = True) -> list[tuple[StepLabel, ...]]:
        return [
            tuple(
                _ORACLE[label] for label in label_answered_steps(r.steps, r.problem, r.answer, r.gold).labels
            )
            for r in responses
        ]


# --- JSONL file -----------------------------------------------------------------------------------------


class JsonlLabelsConfig(Config):
    """Labels from a JSON-lines file: `{"id": <rollout id>, "labels": ["essential" | "redundant" | null, ...]}`."""

    kind: Literal["jsonl"] = "jsonl"
    path: str


class JsonlLabels:
    """Reads the file once; a response the file does not name stays unlabelled."""

    def __init__(self, cfg: JsonlLabelsConfig):
        self.path = Path(cfg.path)
        if not self.path.is_file():
            raise UserError(f"labels file not found: {self.path}")
        self.by_id: dict[str, tuple[StepLabel, ...]] = {}
        for number, line in enumerate(self.path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                rid, labels = row["id"], row["labels"]
            except (json.JSONDecodeError, KeyError, TypeError):
                raise UserError(
                    f"{self.path}: line {number} is not an object with 'id' and 'labels'"
                ) from None
            if not isinstance(labels, list) or any(x not in (ESSENTIAL, REDUNDANT, None) for x in labels):
                raise UserError(
                    f"{self.path}: line {number}: labels must be a list of 'essential', 'redundant' or null"
                )
            if rid in self.by_id:
                raise UserError(f"{self.path}: line {number}: id {rid!r} occurs twice")
            self.by_id[str(rid)] = tuple(labels)

    def provenance(self) -> dict:
        return {"kind": "jsonl", "path": str(self.path), "sha256": file_sha256(self.path)}

    def label(self, responses: list[ProbeResponse], progress: bool = True) -> list[tuple[StepLabel, ...]]:
        out = []
        for r in responses:
            labels = self.by_id.get(r.id)
            if labels is None:
                labels = (None,) * len(r.steps)
            elif len(labels) != len(r.steps):
                raise UserError(
                    f"{self.path}: response {r.id!r} has {len(labels)} labels but the segmenter finds "
                    f"{len(r.steps)} steps (were the labels made with another segmenter config?)"
                )
            out.append(labels)
        return out


# --- LLM judges -----------------------------------------------------------------------------------------

DEFAULT_JUDGE_PROMPT = """\
A student solved a math problem step by step. Decide whether one of the steps was needed to reach the \
answer.

Problem: {problem}

Steps of the solution:
{steps}

Step {number}: {step}

A step is essential if the final answer could not be derived without it. A step is redundant if it \
only restates, re-checks something already known, or explores a path that is not used.
Answer with one word, essential or redundant.
Step {number} is"""

PLACEHOLDERS = ("{problem}", "{steps}", "{number}", "{step}")


class JudgeModel(Config):
    """One judge: a model and the seed of its sampling stream."""

    model: ModelConfig = ModelConfig()
    seed: int = 0


class JudgesConfig(Config):
    """k LLM judges and the consensus rule. The prompt may use {problem}, {steps} (numbered list),
    {number} and {step} (the judged step); it goes through the judge's chat template as the user turn."""

    kind: Literal["judges"] = "judges"
    judges: list[JudgeModel] = Field(
        default_factory=lambda: [JudgeModel(seed=0), JudgeModel(seed=1), JudgeModel(seed=2)], min_length=1
    )
    prompt: str = DEFAULT_JUDGE_PROMPT
    consensus: Literal["unanimous", "majority"] = "unanimous"
    sampling: SamplingConfig = SamplingConfig(temperature=0.7, top_p=0.95, max_tokens=8)
    engine: Literal["auto", "hf", "vllm"] = "auto"
    batch_size: int = Field(8, ge=1)
    vllm: VLLMOptions = VLLMOptions()
    max_step_chars: int = Field(1500, ge=50, description="longer steps are cut in the prompt")

    @field_validator("prompt")
    @classmethod
    def _names_the_step(cls, prompt: str) -> str:
        if "{step}" not in prompt and "{number}" not in prompt:
            raise ValueError("the judge prompt must show the judged step ({step}) or its number ({number})")
        return prompt


_VERDICT = re.compile(r"\b(essential|redundant)\b", re.IGNORECASE)


def read_verdict(text: str) -> StepLabel:
    """The first `essential` / `redundant` in a judge's answer (any case); None when it gives neither."""
    found = _VERDICT.search(text)
    return None if found is None else found.group(1).lower()  # type: ignore[return-value]


def consensus(votes: list[StepLabel], rule: Literal["unanimous", "majority"]) -> StepLabel:
    """`unanimous`: every judge gives the same label; `majority`: more than half of the judges do."""
    for label in (ESSENTIAL, REDUNDANT):
        agree = sum(v == label for v in votes)
        if (rule == "unanimous" and agree == len(votes)) or (rule == "majority" and 2 * agree > len(votes)):
            return label
    return None


def judge_prompt(template: str, response: ProbeResponse, index: int, max_chars: int) -> str:
    """The prompt asking about step `index` (0-based; shown 1-based) of `response`."""

    def cut(text: str) -> str:
        text = text.strip()
        return text if len(text) <= max_chars else text[:max_chars] + " [...]"

    steps = "\n".join(f"{i + 1}. {cut(s)}" for i, s in enumerate(response.steps))
    values = {
        "{problem}": response.problem.strip(),
        "{steps}": steps,
        "{number}": str(index + 1),
        "{step}": cut(response.steps[index]),
    }
    return re.sub("|".join(map(re.escape, PLACEHOLDERS)), lambda m: values[m.group(0)], template)


JUDGE_PROMPT_CONFIG = PromptConfig(template="plain", instruction="", examples=[])
"""Judges read the prompt as the whole user turn: no instruction, no worked example."""


def step_problem_id(response_id: str, index: int) -> str:
    return f"{response_id}|step-{index}"


class JudgeLabels:
    """Runs each judge as a rollout job over one prompt per step (stored under `work_dir/judge-<i>`)."""

    def __init__(self, cfg: JudgesConfig, work_dir: Path):
        self.cfg = cfg
        self.work_dir = Path(work_dir)

    def provenance(self) -> dict:
        return {"kind": "judges", **self.cfg.model_dump(mode="json", exclude={"kind"})}

    def _verdicts(
        self, index: int, judge: JudgeModel, problems: list[Problem], progress: bool
    ) -> dict[str, str]:
        from attncore.rollout.job import RolloutJobConfig, run_rollouts

        job = RolloutJobConfig(
            model=judge.model,
            data=DataConfig(name="judge-prompts"),
            prompt=JUDGE_PROMPT_CONFIG,
            sampling=self.cfg.sampling.model_copy(update={"n": 1, "seed": judge.seed}),
            engine=self.cfg.engine,
            batch_size=self.cfg.batch_size,
            vllm=self.cfg.vllm,
            grade=False,
            out=str(self.work_dir / f"judge-{index}"),
            tracking=TrackingConfig(mode="disabled"),
        )
        run_rollouts(job, progress=progress, problems=problems)
        wanted = {rollout_id(p.id, 0) for p in problems}
        return {
            r.problem_id: r.text for r in RolloutStore.open_existing(job.out).read() if r.rollout_id in wanted
        }

    def label(self, responses: list[ProbeResponse], progress: bool = True) -> list[tuple[StepLabel, ...]]:
        problems = [
            Problem(
                step_problem_id(r.id, i),
                judge_prompt(self.cfg.prompt, r, i, self.cfg.max_step_chars),
                "",
                "judge",
            )
            for r in responses
            for i in range(len(r.steps))
        ]
        if not problems:
            return [() for _ in responses]
        answers = [self._verdicts(i, judge, problems, progress) for i, judge in enumerate(self.cfg.judges)]
        return [
            tuple(
                consensus([read_verdict(a[step_problem_id(r.id, i)]) for a in answers], self.cfg.consensus)
                for i in range(len(r.steps))
            )
            for r in responses
        ]


LabelsConfig = Annotated[OracleLabelsConfig | JsonlLabelsConfig | JudgesConfig, Field(discriminator="kind")]


def label_source(cfg: OracleLabelsConfig | JsonlLabelsConfig | JudgesConfig, work_dir: Path) -> LabelSource:
    """The label source a config describes; `work_dir` holds what a source stores while it works."""
    if isinstance(cfg, OracleLabelsConfig):
        return OracleLabels(cfg)
    if isinstance(cfg, JsonlLabelsConfig):
        return JsonlLabels(cfg)
    return JudgeLabels(cfg, Path(work_dir))

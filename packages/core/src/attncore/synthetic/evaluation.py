"""Evaluate a model on held-out synthetic problems: accuracy, form, thinking length, redundancy.

Rollouts are graded with AttnPO's rule (exactly one `</think>`, the last `\\boxed{}` after it),
thinking tokens are counted by `attncore.think.thinking_token_count`, and the oracle labels the steps of each generated trace, so the redundancy ratio (share of thinking
tokens in redundant steps) is measured on what the model actually wrote.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path

from tqdm.auto import tqdm

from attncore.data import write_jsonl
from attncore.grading import Grader, GradingMode, extract_boxed
from attncore.models import LoadedModel
from attncore.rollout.hf import HFEngine
from attncore.synthetic.dataset import generate_examples
from attncore.synthetic.oracle import Label, label_trace
from attncore.synthetic.testbed_model import TESTBED_PROMPT, EvaluationConfig
from attncore.think import prompt_opens_thinking, split_thinking, thinking_token_count


@dataclass(frozen=True)
class TestbedEvaluation:
    """Headline figures of one evaluation (fractions in [0, 1], token means per output)."""

    problems: int
    accuracy: float
    well_formed: float
    redundancy_ratio: float
    mean_thinking_tokens: float
    mean_completion_tokens: float
    truncated: float
    accuracy_by_difficulty: dict[int, float]

    def as_dict(self) -> dict:
        return asdict(self)

    def table(self) -> str:
        rows = [
            ("problems", str(self.problems)),
            ("accuracy", f"{100 * self.accuracy:.1f}%"),
            ("well-formed (one </think>, boxed answer)", f"{100 * self.well_formed:.1f}%"),
            ("thinking tokens in redundant steps (oracle)", f"{100 * self.redundancy_ratio:.1f}%"),
            ("mean thinking tokens", f"{self.mean_thinking_tokens:.1f}"),
            ("mean completion tokens", f"{self.mean_completion_tokens:.1f}"),
            ("truncated", f"{100 * self.truncated:.1f}%"),
        ]
        rows += [
            (f"accuracy, difficulty {d}", f"{100 * a:.1f}%")
            for d, a in sorted(self.accuracy_by_difficulty.items())
        ]
        width = max(len(k) for k, _ in rows)
        lines = [f"| {'metric'.ljust(width)} | value |", f"|{'-' * (width + 2)}|-------|"]
        return "\n".join(lines + [f"| {k.ljust(width)} | {v} |" for k, v in rows])


def is_well_formed(text: str) -> bool:
    """Exactly one `</think>`, no second `<think>`, and a boxed answer after the thinking."""
    split = split_thinking(text)
    return split.attnpo_form and extract_boxed(split.answer) is not None


def evaluate_testbed(
    loaded: LoadedModel, cfg: EvaluationConfig, progress: bool = True, rollouts_out: Path | None = None
) -> TestbedEvaluation:
    """Sample on `cfg.data`, grade, label the traces with the oracle, and aggregate.

    `rollouts_out`, when given, receives one JSON line per rollout (text, grade, step labels), so a
    failure analysis does not need the rollouts sampled again.
    """
    examples = generate_examples(cfg.data)
    problems = [example.to_problem() for example in examples]
    engine = HFEngine(loaded, TESTBED_PROMPT, batch_size=cfg.batch_size, refill=cfg.refill)
    bar = tqdm(total=len(problems) * cfg.sampling.n, desc="evaluating", unit="rollout", disable=not progress)
    rollouts = engine.generate(problems, cfg.sampling, on_batch=lambda batch: bar.update(len(batch)))
    bar.close()
    with Grader(GradingMode.ATTNPO, workers=1) as grader:
        grades = grader.grade([r.text for r in rollouts], [r.gold for r in rollouts])

    tok = loaded.tokenizer
    redundant_tokens = thinking_tokens = 0
    difficulty = {example.id: example.problem.difficulty for example in examples}
    records = []
    for rollout, grade in zip(rollouts, grades, strict=True):
        labelling = label_trace(rollout.text, rollout.problem, rollout.gold)
        sizes = [len(tok.encode(step.text, add_special_tokens=False)) for step in labelling.steps]
        redundant = sum(
            n for n, step in zip(sizes, labelling.steps, strict=True) if step.label is Label.REDUNDANT
        )
        thinking_tokens += sum(sizes)
        redundant_tokens += redundant
        records.append(
            {
                "problem_id": rollout.problem_id,
                "difficulty": difficulty[rollout.problem_id],
                "problem": rollout.problem,
                "gold": rollout.gold,
                "text": rollout.text,
                "pred": grade.pred,
                "correct": grade.correct,
                "well_formed": is_well_formed(rollout.text),
                "finish_reason": rollout.finish_reason,
                "completion_tokens": rollout.n_completion_tokens,
                "thinking_tokens": thinking_token_count(
                    rollout.completion_ids, rollout.text, prompt_opens_thinking(rollout.prompt), lambda: tok
                ),
                "redundant_step_tokens": redundant,
                "step_labels": [str(step.label) for step in labelling.steps],
                "wrong_arithmetic_steps": sum(step.wrong_arithmetic for step in labelling.steps),
                "issues": list(labelling.issues),
            }
        )
    if rollouts_out is not None:
        rollouts_out.parent.mkdir(parents=True, exist_ok=True)
        write_jsonl(records, rollouts_out)
    n = len(records)
    by_difficulty: dict[int, list[bool]] = defaultdict(list)
    for record in records:
        by_difficulty[record["difficulty"]].append(record["correct"])
    return TestbedEvaluation(
        problems=len(problems),
        accuracy=sum(r["correct"] for r in records) / n,
        well_formed=sum(r["well_formed"] for r in records) / n,
        redundancy_ratio=redundant_tokens / thinking_tokens if thinking_tokens else 0.0,
        mean_thinking_tokens=sum(r["thinking_tokens"] for r in records) / n,
        mean_completion_tokens=sum(r["completion_tokens"] for r in records) / n,
        truncated=sum(r["finish_reason"] == "length" for r in records) / n,
        accuracy_by_difficulty={d: sum(v) / len(v) for d, v in by_difficulty.items()},
    )

"""Do the selected heads point at steps the answer needs? The step-removal check.

Causal check (paper Fig. 2e/f): for each correct probe response, score its thinking steps with the
selected heads (head-averaged `S_k`), remove the k lowest-scored or the k highest-scored steps, close
the shortened thinking with `</think>` and let the model write its answer again; the check compares the
accuracy of three conditions, `original` (nothing removed, the answer rewritten the same way),
`without_low` and `without_high`. If the heads find essential steps, removing high-scored steps hurts
more than removing low-scored ones. With step labels (the oracle on the testbed) it also reports which
share of the removed steps the labels call redundant. Answers are appended to a JSONL file as they are
written, so a killed check resumes.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from pydantic import Field
from torch import Tensor
from tqdm.auto import tqdm

from attncore.config import Config
from attncore.errors import UserError
from attncore.eval.report import percent_cell
from attncore.grading import Grader
from attncore.models import LoadedModel
from attncore.prompts import PromptConfig
from attncore.rollout.hf import HFEngine
from attncore.rollout.types import SamplingConfig, derive_seed
from attnpo.labels import REDUNDANT, StepLabel
from attnpo.probe import ProbeItem

CONDITIONS = ("original", "without_low", "without_high")


class CausalConfig(Config):
    """The step-removal check, run after selection with the selected heads."""

    enabled: bool = False
    k: int = Field(1, ge=1, description="steps removed per response")
    max_responses: int | None = Field(200, ge=1)
    sampling: SamplingConfig = SamplingConfig(temperature=0.0, max_tokens=128)
    batch_size: int = Field(8, ge=1)


def steps_to_remove(scores: Tensor, k: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Indices of the k lowest and the k highest of (S,) step scores, each sorted by position.

    Ties go to the earlier step for the lowest and to the later step for the highest, so the two sets
    are disjoint whenever S >= 2k.
    """
    order = sorted(range(len(scores)), key=lambda i: (float(scores[i]), i))
    return tuple(sorted(order[:k])), tuple(sorted(order[len(order) - k :]))


def shortened_prefix(item: ProbeItem, removed: Sequence[int]) -> list[int]:
    """Prompt ids, the thinking without the removed steps, and the `</think>` token(s): the answer
    is generated after this."""
    seg, r = item.segmented, item.rollout
    drop = set(removed)
    first = seg.steps[0].tokens[0]
    kept = list(r.completion_ids[:first])  # anything before the first step (normally nothing)
    for index, step in enumerate(seg.steps):
        if index not in drop:
            kept += r.completion_ids[step.tokens[0] : step.tokens[1]]
    start, end = seg.think_end
    return [*r.prompt_ids, *kept, *r.completion_ids[start:end]]


@dataclass(frozen=True)
class CausalResult:
    """Accuracy per condition over the same responses, and the share of removed steps labelled redundant
    (over removed steps that carry a label; None without any)."""

    responses: int
    k: int
    accuracy: dict[str, float]
    redundant_share: dict[str, float | None]
    labelled_removed: dict[str, int]
    label_source: str

    def as_dict(self) -> dict:
        return asdict(self)

    def markdown(self) -> str:
        return "\n".join(
            [
                f"## Causal check: {self.k} step(s) removed, {self.responses} correct responses",
                "",
                "| condition | accuracy | removed steps labelled redundant |",
                "|---|---:|---:|",
                f"| original thinking | {percent_cell(self.accuracy['original'])} | — |",
                f"| without the {self.k} lowest-scored | {percent_cell(self.accuracy['without_low'])} | "
                f"{percent_cell(self.redundant_share['without_low'])} of {self.labelled_removed['without_low']} |",
                f"| without the {self.k} highest-scored | {percent_cell(self.accuracy['without_high'])} | "
                f"{percent_cell(self.redundant_share['without_high'])} of {self.labelled_removed['without_high']} |",
                "",
                f"Redundancy by the `{self.label_source}` labels.",
            ]
        )


def _done_answers(path: Path) -> dict[tuple[str, str], bool]:
    """(rollout id, condition) -> correct, from the answers file (a torn last line is ignored)."""
    done: dict[tuple[str, str], bool] = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            done[(row["id"], row["condition"])] = row["correct"]
    return done


def causal_check(
    loaded: LoadedModel,
    items: Sequence[ProbeItem],
    step_scores: dict[str, Tensor],
    labels: dict[str, tuple[StepLabel, ...]],
    cfg: CausalConfig,
    grading_mode: str,
    out: Path,
    label_source: str,
    progress: bool = True,
) -> CausalResult:
    """Run the check on the items with more than 2k steps (at most `cfg.max_responses`), resuming from
    `out/answers.jsonl`. `step_scores[id]` is the (steps,) head-averaged score of the selected heads."""
    eligible = [i for i in items if len(i.segmented.steps) > 2 * cfg.k][: cfg.max_responses]
    if not eligible:
        raise UserError(f"no probe response has more than {2 * cfg.k} steps for the causal check")
    out.mkdir(parents=True, exist_ok=True)
    answers = out / "answers.jsonl"
    done = _done_answers(answers)
    removals = {
        i.rollout.rollout_id: steps_to_remove(step_scores[i.rollout.rollout_id], cfg.k) for i in eligible
    }
    jobs = []
    for item in eligible:
        low, high = removals[item.rollout.rollout_id]
        for condition, removed in zip(CONDITIONS, ((), low, high), strict=True):
            if (item.rollout.rollout_id, condition) not in done:
                jobs.append((item, condition, shortened_prefix(item, removed)))
    engine = HFEngine(loaded, PromptConfig(), cfg.batch_size)  # prefixes come tokenized: no prompt rendering
    tok = loaded.tokenizer
    bar = tqdm(total=len(jobs), desc="causal check", unit="answer", disable=not progress)
    with Grader(grading_mode, workers=1) as grader, answers.open("a") as fh:
        for start in range(0, len(jobs), cfg.batch_size):
            batch = jobs[start : start + cfg.batch_size]
            seed = derive_seed(cfg.sampling.seed, *(f"{i.rollout.rollout_id}|{c}" for i, c, _ in batch))
            outputs = engine.generate_ids([p for _, _, p in batch], cfg.sampling, seed)
            texts = [
                tok.decode(prefix[len(item.rollout.prompt_ids) :] + ids, skip_special_tokens=True)
                for (item, _, prefix), (ids, _) in zip(batch, outputs, strict=True)
            ]
            grades = grader.grade(texts, [item.rollout.gold for item, _, _ in batch])
            for (item, condition, _), text, grade in zip(batch, texts, grades, strict=True):
                row = {"id": item.rollout.rollout_id, "condition": condition, "correct": bool(grade.correct)}
                fh.write(json.dumps({**row, "text": text}) + "\n")
                done[(row["id"], condition)] = row["correct"]
            fh.flush()
            bar.update(len(batch))
    bar.close()
    ids = [i.rollout.rollout_id for i in eligible]
    accuracy = {c: sum(done[(rid, c)] for rid in ids) / len(ids) for c in CONDITIONS}
    share: dict[str, float | None] = {}
    counted: dict[str, int] = {}
    for condition, position in (("without_low", 0), ("without_high", 1)):
        removed = [labels[rid][s] for rid in ids for s in removals[rid][position]]
        known = [x for x in removed if x is not None]
        counted[condition] = len(known)
        share[condition] = sum(x == REDUNDANT for x in known) / len(known) if known else None
    return CausalResult(len(ids), cfg.k, accuracy, share, counted, label_source)

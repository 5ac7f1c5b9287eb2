"""The responses AttnPO rescaled at each training step, as JSON lines: what was attenuated, and why.

One line per response that went through step treatment (correct, >= 2 steps, nonzero advantage): the
problem and its gold answer, the group accuracy p, the outcome advantage A, the baseline S_base, |F| and
|o| (`answer_tokens`, `total_tokens`) and, per step, its text, token count, KFH score S_k, factor γ_k and
whether Pos-Adv or Neg-Adv set it (logs written before the token counts lack them). Written by `attnpo
train` (`log_rescaled=true`) into `rescaled/rank-<process>.jsonl`; read by `attnpo view` (one response as HTML)
and `attnpo report` (the oracle's labels of the attenuated steps, on testbed problems). A step a resumed
run trains again is logged again: readers keep the last line of each (step, process, row).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from attncore.data import Problem
from attncore.synthetic.oracle import Label, label_answered_steps

FOLDER = "rescaled"


class RescaledLog:
    """An `on_step_batch` hook of `AttnPOTrainer` that appends each micro-batch's rescaled responses to
    `<out>/rescaled/rank-<process>.jsonl`. `problems` maps a prompt's token ids to its problem. A row is
    numbered within its training step across the step's micro-batches (the same numbers when a resumed
    run trains the step again)."""

    def __init__(self, out: Path, problems: dict[tuple[int, ...], Problem], tokenizer: Any):
        self.out, self.problems, self.tokenizer = out, problems, tokenizer
        self._offset: tuple[int, int] = (0, 0)  # (training step, rows of its micro-batches seen so far)

    def __call__(self, trainer: Any, batch: Any) -> None:
        inputs, factors = batch.inputs, batch.rescaled.factors
        rank = trainer.accelerator.process_index
        step, seen = self._offset
        offset = seen if step == batch.global_step else 0
        self._offset = (batch.global_step, offset + len(factors.touched))
        rows = []
        for b in factors.touched.nonzero().flatten().tolist():
            segment, score = batch.segments[b], batch.scores[b]
            prompt = inputs["prompt_ids"][b][inputs["prompt_mask"][b].bool()].tolist()
            response = inputs["completion_ids"][b][inputs["completion_mask"][b].bool()].tolist()
            problem = self.problems.get(tuple(prompt))
            start, end = segment.answer_span()
            rows.append(
                {
                    "step": batch.global_step,
                    "rank": rank,
                    "row": offset + b,
                    "problem_id": None if problem is None else problem.id,
                    "problem": None if problem is None else problem.problem,
                    "gold": None if problem is None else problem.answer,
                    "accuracy": float(inputs["attnpo_accuracy"][b]),
                    "advantage": float(inputs["attnpo_outcome"][b]),
                    "baseline": float(factors.baseline[b]),
                    "answer_tokens": end - start,
                    "total_tokens": len(prompt) + len(response),
                    "steps": [
                        {
                            "text": self.tokenizer.decode(response[s:e]),
                            "tokens": e - s,
                            "score": float(score.mean[k]),
                            "gamma": float(factors.gamma[b, k]),
                            "pos": bool(factors.pos[b, k]),
                            "neg": bool(factors.neg[b, k]),
                        }
                        for k, (s, e) in enumerate(segment.step_spans())
                    ],
                    "answer": self.tokenizer.decode(response[start:end], skip_special_tokens=True),
                }
            )
        if rows:
            path = self.out / FOLDER / f"rank-{rank}.jsonl"
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("a") as f:
                f.writelines(json.dumps(row) + "\n" for row in rows)


def read_rescaled(run: Path) -> list[dict[str, Any]]:
    """Every logged response of a run, by step; the last line of each (step, process, row) wins, and a
    last line a kill cut short is skipped."""
    kept: dict[tuple[int, int, int], dict[str, Any]] = {}
    for path in sorted((run / FOLDER).glob("rank-*.jsonl")):
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            kept[(row["step"], row["rank"], row["row"])] = row
    return [kept[key] for key in sorted(kept)]


def oracle_labels(row: dict[str, Any]) -> list[str | None] | None:
    """The testbed oracle's label of each logged step ("essential", "redundant", None when unparseable),
    or None for a response to a problem the log does not know."""
    if row.get("problem") is None:
        return None
    labelling = label_answered_steps(
        [s["text"] for s in row["steps"]], row["problem"], row["answer"], row["gold"]
    )
    return [None if label is Label.UNPARSEABLE else label.value for label in labelling.labels]

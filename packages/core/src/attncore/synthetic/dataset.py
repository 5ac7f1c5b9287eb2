"""Generated examples as records: the shared `Problem` fields plus the testbed's ground truth.

A row carries `attncore.data.Problem`'s fields (`source="synthetic"`, `rationale` = the full trace), so
every loader that reads problems reads these, and beside them the operations, quantities, distractors,
per-step roles and labels, difficulty and seed. Rows are written as JSON lines or Parquet (by suffix,
`attncore.data.write_rows`) and read back into `SyntheticExample`s.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from attncore.data import Problem, read_rows, write_rows
from attncore.errors import UserError
from attncore.synthetic.config import SyntheticConfig
from attncore.synthetic.problems import Operation, SyntheticProblem, generate_problem
from attncore.synthetic.templates import StepRole
from attncore.synthetic.traces import Trace, TraceStep, generate_trace

SOURCE = "synthetic"


@dataclass(frozen=True)
class SyntheticExample:
    """One generated problem with its trace; `seed` and `index` regenerate it exactly."""

    id: str
    problem: SyntheticProblem
    trace: Trace
    seed: int
    index: int

    @property
    def labels(self) -> list[str]:
        return ["essential" if step.essential else "redundant" for step in self.trace.steps]

    def to_problem(self) -> Problem:
        redundant = sum(not step.essential for step in self.trace.steps)
        meta = {
            "difficulty": str(self.problem.difficulty),
            "steps": str(len(self.trace.steps)),
            "redundant_steps": str(redundant),
            "seed": str(self.seed),
        }
        return Problem(self.id, self.problem.text, str(self.problem.answer), SOURCE, self.trace.text, meta)

    def to_row(self) -> dict[str, Any]:
        return {
            **asdict(self.to_problem()),
            "difficulty": self.problem.difficulty,
            "seed": self.seed,
            "index": self.index,
            "quantities": list(self.problem.quantities),
            "distractors": list(self.problem.distractors),
            "operations": [asdict(op) for op in self.problem.operations],
            "steps": [
                {"text": s.text, "role": str(s.role), "opening": s.opening, "label": label}
                for s, label in zip(self.trace.steps, self.labels, strict=True)
            ],
            "answer_text": self.trace.answer,
        }

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> SyntheticExample:
        operations = tuple(Operation(**op) for op in row["operations"])
        problem = SyntheticProblem(
            row["problem"], operations, tuple(row["quantities"]), tuple(row["distractors"] or ())
        )
        steps = tuple(TraceStep(s["text"], StepRole(s["role"]), s["opening"]) for s in row["steps"])
        return cls(row["id"], problem, Trace(steps, row["answer_text"]), row["seed"], row["index"])


def generate_example(cfg: SyntheticConfig, index: int) -> SyntheticExample:
    """Example `index` of the set `cfg` describes; independent of how many others are generated."""
    rng = random.Random(f"{cfg.seed}:{index}")
    problem = generate_problem(rng, cfg.problem, cfg.problem.draw_difficulty(rng))
    trace = generate_trace(problem, rng, cfg.trace)
    return SyntheticExample(f"{cfg.id_prefix}/{index}", problem, trace, cfg.seed, index)


def generate_examples(cfg: SyntheticConfig) -> list[SyntheticExample]:
    return [generate_example(cfg, i) for i in range(cfg.count)]


def write_examples(examples: list[SyntheticExample], path: Path) -> None:
    """Write rows as JSON lines or Parquet, chosen by the file suffix (`attncore.data.write_rows`)."""
    write_rows([example.to_row() for example in examples], path)


def read_examples(path: Path) -> list[SyntheticExample]:
    """Examples written by `write_examples`; a row without the synthetic fields is a one-line error."""
    examples = []
    for number, row in enumerate(read_rows(path), 1):
        try:
            examples.append(SyntheticExample.from_row(row))
        except (KeyError, TypeError, ValueError) as exc:
            raise UserError(
                f"{path}: row {number} is not a synthetic example ({type(exc).__name__}: {exc})"
            ) from None
    return examples

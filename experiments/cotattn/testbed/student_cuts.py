"""How broken each candidate student is before training: its loss on the teacher's rationales.

A cut model (`keep_layers`) starts from whatever the kept layers still compute together. This script
reads the first N kept rationales and prints, per candidate, the mean cross-entropy per target token of
the student's rationale task (`cotattn.text.student_example`, the sequences `cotattn train` trains on),
teacher-forced, no gradient. The uncut teacher is the reference. Used in RESULTS.md, "Choosing the
student"; from the repository root:

    uv run python experiments/cotattn/testbed/student_cuts.py [--examples 16] [--threads 1]
"""

from __future__ import annotations

import argparse

import torch

from attncore.critical import CriticalConfig
from attncore.models import ModelConfig, load_model
from cotattn.text import IGNORE_INDEX, TaskFormat, student_example
from cotattn.train import read_rationales

RATIONALES = "runs/cotattn/testbed/rationales/rationales.jsonl"
CANDIDATES: list[tuple[str, list[int] | None]] = [
    ("testbed-mini", None),
    ("smollm2-135m-instruct", None),
    ("smollm2-135m-instruct", [*range(10), *range(20, 30)]),
    ("smollm2-135m-instruct", [i for i in range(30) if i % 3 != 2]),
    ("smollm2-135m-instruct", list(range(0, 30, 2))),
    ("smollm2-135m-instruct", [*range(5), *range(25, 30)]),
    ("testbed-mini", [*range(0, 25, 3), 29]),
    ("testbed-mini", [*range(10), *range(20, 30)]),
]


def rationale_loss(name: str, keep: list[int] | None, rows: list[dict]) -> float:
    """Mean cross-entropy per target token of the rationale task over `rows`."""
    loaded = load_model(ModelConfig(name=name, device="cpu", keep_layers=keep))
    total, count = 0.0, 0
    for row in rows:
        example = student_example(
            loaded.tokenizer, str(row["id"]), row["problem"], row["rationale"], str(row["answer"]),
            TaskFormat(), CriticalConfig(),
        )  # fmt: skip
        ids = torch.tensor([example.rationale.ids])
        labels = torch.tensor([example.rationale.labels])
        with torch.no_grad():
            logits = loaded.model(ids).logits[0, :-1]
        nll = torch.nn.functional.cross_entropy(logits, labels[0, 1:], ignore_index=IGNORE_INDEX, reduction="sum")
        total += nll.item()
        count += int((labels[0, 1:] != IGNORE_INDEX).sum())
    return total / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = read_rationales(RATIONALES)[: args.examples]
    print(f"| model | layers kept | loss per rationale token ({len(rows)} rationales) |")
    print("|---|---|---:|")
    for name, keep in CANDIDATES:
        kept = "all 30" if keep is None else f"{len(keep)}: {keep}"
        print(f"| {name} | {kept} | {rationale_loss(name, keep, rows):.3f} |", flush=True)


if __name__ == "__main__":
    main()

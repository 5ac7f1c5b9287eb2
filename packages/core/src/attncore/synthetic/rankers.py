"""Trivial step rankers: how far a step's position, length or mention of the answer alone ranks essential
steps above redundant ones (Step Ranking Accuracy, `attncore.ranking`), overall and by pair direction.

A testbed on which one of these rankers scores far from 0.5 lets a key-focus head (or AttnPO) look good
by reading that cue instead of the reasoning; the direction split shows which cue (issue 16: on the
v1 testbed "later step = essential" reached 0.92 because every opening plan was redundant).

Responses come from generated sets (records with per-step texts and labels) or from a model's
evaluation rollouts (`testbed.rollouts.jsonl`: the text and the oracle's labels of its AttnPO steps).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from attncore.errors import UserError
from attncore.ranking import Direction, mean_sra, pair_mask, step_ranking_accuracy
from attncore.synthetic.arithmetic import numbers_in, parse_number
from attncore.synthetic.oracle import attnpo_steps, split_trace

ESSENTIAL = "essential"
REDUNDANT = "redundant"


@dataclass(frozen=True)
class RankingFigures:
    """One ranker's SRA over a set, and restricted to pairs whose redundant step comes after (before)
    the essential one (None where no response has such a pair); pair counts pooled over the set."""

    sra: float | None
    sra_after: float | None
    sra_before: float | None
    responses: int  # responses with at least one pair
    responses_after: int  # ... with a pair whose redundant step comes after the essential one
    responses_before: int
    pairs: int
    pairs_after: int

    @property
    def share_after(self) -> float | None:
        """Share of all pairs whose redundant step comes after the essential one."""
        return self.pairs_after / self.pairs if self.pairs else None


@dataclass(frozen=True)
class LabelledResponse:
    """One response's step texts, their labels and the final answer it gives (None if unreadable)."""

    steps: tuple[str, ...]
    labels: tuple[str, ...]
    final_answer: str | None


def _contains_answer(response: LabelledResponse) -> list[float]:
    if response.final_answer is None:
        return [0.0] * len(response.steps)
    try:
        answer = parse_number(response.final_answer)
    except (ValueError, ZeroDivisionError):
        return [0.0] * len(response.steps)
    return [float(answer in set(numbers_in(text))) for text in response.steps]


Ranker = Callable[[LabelledResponse, random.Random], list[float]]

# Higher score = ranked as more essential. Lengths are in characters.
TRIVIAL_RANKERS: dict[str, Ranker] = {
    "later step": lambda r, rng: [float(i) for i in range(len(r.steps))],
    "earlier step": lambda r, rng: [float(-i) for i in range(len(r.steps))],
    "longer step": lambda r, rng: [float(len(t)) for t in r.steps],
    "shorter step": lambda r, rng: [float(-len(t)) for t in r.steps],
    "contains the final answer": lambda r, rng: _contains_answer(r),
    "random": lambda r, rng: [rng.random() for _ in r.steps],
}


def _masks(response: LabelledResponse) -> tuple[torch.Tensor, torch.Tensor]:
    essential = torch.tensor([label == ESSENTIAL for label in response.labels], dtype=torch.bool)
    redundant = torch.tensor([label == REDUNDANT for label in response.labels], dtype=torch.bool)
    return essential, redundant


def ranking_figures(
    responses: Sequence[LabelledResponse], scores: Sequence[Sequence[float]]
) -> RankingFigures:
    """SRA of per-step `scores` (one list per response, higher = more essential), overall and by direction."""
    masks = [_masks(r) for r in responses]

    def sra(direction: Direction) -> float | None:
        if not responses:
            return None
        per_response = torch.stack(
            [
                step_ranking_accuracy(torch.tensor(s, dtype=torch.float64), e, d, direction)
                for s, (e, d) in zip(scores, masks, strict=True)
            ]
        )
        value = float(mean_sra(per_response))
        return None if value != value else value  # NaN: no response has such a pair

    counts = [(int(pair_mask(e, d).sum()), int(pair_mask(e, d, "after").sum())) for e, d in masks]
    befores = [n - a for n, a in counts]
    return RankingFigures(
        sra=sra("all"),
        sra_after=sra("after"),
        sra_before=sra("before"),
        responses=sum(n > 0 for n, _ in counts),
        responses_after=sum(a > 0 for _, a in counts),
        responses_before=sum(b > 0 for b in befores),
        pairs=sum(n for n, _ in counts),
        pairs_after=sum(a for _, a in counts),
    )


def trivial_ranker_report(responses: Sequence[LabelledResponse], seed: int = 0) -> dict[str, RankingFigures]:
    """SRA of every trivial ranker on `responses` (the random ranker draws from `seed`)."""
    rng = random.Random(seed)
    return {
        name: ranking_figures(responses, [ranker(r, rng) for r in responses])
        for name, ranker in TRIVIAL_RANKERS.items()
    }


def position_counts(responses: Iterable[LabelledResponse], bins: int = 10) -> dict[str, list[int]]:
    """Essential and redundant steps per bin of relative position ((index + ½) / steps in the response)."""
    counts = {ESSENTIAL: [0] * bins, REDUNDANT: [0] * bins}
    for response in responses:
        n = len(response.labels)
        for i, label in enumerate(response.labels):
            if label in counts:
                counts[label][min(int((i + 0.5) / n * bins), bins - 1)] += 1
    return counts


def plot_positions(panels: Mapping[str, dict[str, list[int]]], path: str | Path) -> Path:
    """A PNG with one panel per set: essential and redundant steps per relative-position bin, each as a
    share of that label's steps (so the two shapes compare at any label balance)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.6 * len(panels), 3.4))
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (title, counts) in zip(axes, panels.items(), strict=True):
        bins = len(counts[ESSENTIAL])
        width = 0.4 / bins
        centres = [(b + 0.5) / bins for b in range(bins)]
        for offset, label, colour in (
            (-width / 2, ESSENTIAL, "tab:blue"),
            (width / 2, REDUNDANT, "tab:orange"),
        ):
            total = sum(counts[label]) or 1
            shares = [100 * c / total for c in counts[label]]
            ax.bar(
                [c + offset for c in centres], shares, width=width, color=colour, label=f"{label} ({total})"
            )
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("relative position in the thinking (step index + ½) / steps")
        ax.set_ylabel("% of that label's steps")
        ax.set_xlim(0, 1)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    return out


def response_from_row(row: dict[str, Any], number: int) -> LabelledResponse:
    """A generated record (`steps` with `text` and `label`, `answer`) or an evaluation rollout (`text`,
    `step_labels`, `pred`, `gold`), whose steps are cut again with the segmenter the evaluation used
    (texts stripped of the separators the segmenter keeps, so lengths compare as in generated sets)."""
    steps = row.get("steps")
    if isinstance(steps, list) and all(isinstance(s, dict) and {"text", "label"} <= s.keys() for s in steps):
        answer = row.get("answer")
        return LabelledResponse(
            tuple(s["text"] for s in steps),
            tuple(s["label"] for s in steps),
            None if answer is None else str(answer),
        )
    if "step_labels" in row and "text" in row:
        thinking, _ = split_trace(str(row["text"]))
        texts = tuple(step.strip() for step in attnpo_steps(thinking)) if thinking.strip() else ()
        labels = tuple(row["step_labels"])
        if len(texts) != len(labels):
            raise UserError(
                f"row {number}: {len(labels)} step labels but the segmenter finds {len(texts)} steps "
                "(labels made with another segmenter?)"
            )
        final = row.get("pred") if row.get("pred") is not None else row.get("gold")
        return LabelledResponse(texts, labels, None if final is None else str(final))
    raise UserError(
        f"row {number} has neither per-step texts and labels (a generated set) nor `text` and "
        "`step_labels` (evaluation rollouts)"
    )


def report_table(report: dict[str, RankingFigures]) -> str:
    """A markdown table of the report, with the pair counts in a line under it."""

    def cell(value: float | None) -> str:
        return "—" if value is None else f"{value:.3f}"

    lines = [
        "| ranker | SRA | SRA, redundant after | SRA, redundant before |",
        "|---|---:|---:|---:|",
    ]
    lines += [
        f"| {name} | {cell(acc.sra)} | {cell(acc.sra_after)} | {cell(acc.sra_before)} |"
        for name, acc in report.items()
    ]
    any_acc = next(iter(report.values()))
    if any_acc.pairs:
        after = any_acc.share_after or 0.0
        lines.append(
            f"\n{any_acc.responses} responses with pairs ({any_acc.responses_after} with a redundant step "
            f"after an essential one, {any_acc.responses_before} before), {any_acc.pairs} (essential, "
            f"redundant) pairs: {100 * after:.1f}% with the redundant step after the essential one, "
            f"{100 * (1 - after):.1f}% before"
        )
    return "\n".join(lines)

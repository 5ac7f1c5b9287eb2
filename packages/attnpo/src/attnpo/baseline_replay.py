"""A logged run's rescaled responses replayed under each score baseline (`RescalingConfig.baseline`):
which steps each would attenuate and, on testbed problems, what the oracle calls them. No model runs.

Each logged response (`attnpo.rescaled_log`) goes through `step_factors` with the run's rescaling config,
only `baseline` switched, at its own training step. Inputs come from the log: A, p, the step scores, and

- |F|/|o|: the logged `answer_tokens` / `total_tokens`; a log written before they were logged gives it
  as its `S_base / p^β`, which needs the run's own baseline to have been `uniform`;
- the step token counts: the logged `tokens`; in an older log, the step text re-encoded with the run's
  tokenizer (the same count unless the sampled tokens were not the tokenizer's own encoding of the text).

Replaying under the run's own baseline must give the logged Pos-Adv / Neg-Adv flags (`reproduced`).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args

import torch
import yaml

from attncore.errors import UserError
from attncore.eval.report import percent_cell
from attncore.ranking import mean_sra, pair_mask, pair_wins, responses_with_pairs, step_ranking_accuracy
from attnpo.config import RescalingConfig, ScoreBaseline
from attnpo.rescaled_log import oracle_labels
from attnpo.rescaling import StepFactors, step_factors

BASELINES: tuple[ScoreBaseline, ...] = get_args(ScoreBaseline)


@dataclass(frozen=True)
class ReplayedResponse:
    """One logged response: its step scores (K,), token counts (K,), oracle labels (K,) or None off the
    testbed, its `|F|/|o|`, and its step factors under each baseline (B = 1 rows)."""

    scores: list[float]
    lengths: list[int]
    labels: list[str | None] | None
    uniform_share: float
    factors: dict[ScoreBaseline, StepFactors]


def uniform_share(row: dict[str, Any], config: RescalingConfig) -> float:
    """|F|/|o| of a logged response (module doc)."""
    if "answer_tokens" in row:
        return row["answer_tokens"] / row["total_tokens"]
    if config.baseline != "uniform":
        raise UserError(
            f"the log has no answer_tokens / total_tokens and the run's baseline is {config.baseline}: "
            "its |F|/|o| cannot be recovered"
        )
    return row["baseline"] / (row["accuracy"] ** config.beta if config.difficulty_aware else 1.0)


def replay_response(
    row: dict[str, Any], config: RescalingConfig, count_tokens: Callable[[str], int] | None
) -> ReplayedResponse:
    """One logged response under every baseline; `count_tokens` (the run's tokenizer) serves logs without
    step token counts."""
    steps = row["steps"]
    if all("tokens" in s for s in steps):
        lengths = [s["tokens"] for s in steps]
    elif count_tokens is None:
        raise UserError("the log has no step token counts: give the run's tokenizer to re-encode the steps")
    else:
        lengths = [count_tokens(s["text"]) for s in steps]
    share = uniform_share(row, config)
    scores = [s["score"] for s in steps]
    inputs = dict(
        advantages=torch.tensor([row["advantage"]], dtype=torch.float64),
        scores=torch.tensor([scores], dtype=torch.float64),
        step_lengths=torch.tensor([lengths]),
        n_steps=torch.tensor([len(steps)]),
        correct=torch.tensor([True]),  # only rows that went through step treatment are logged
        accuracy=torch.tensor([row["accuracy"]], dtype=torch.float64),
        # |F|/|o| as the ratio itself over 1: the baseline reads only the ratio
        answer_tokens=torch.tensor([share], dtype=torch.float64),
        total_tokens=torch.tensor([1.0], dtype=torch.float64),
    )
    factors = {
        kind: step_factors(
            **inputs, global_step=row["step"], config=config.model_copy(update={"baseline": kind})
        )
        for kind in BASELINES
    }
    return ReplayedResponse(scores, lengths, oracle_labels(row), share, factors)


def _share(hits: int, total: int) -> float | None:
    return hits / total if total else None


def baseline_figures(
    replayed: Sequence[ReplayedResponse], logged: Sequence[dict[str, Any]], own: ScoreBaseline
) -> dict[str, Any]:
    """Figures of the replay. Per baseline: the steps below S_base and the oracle-redundant share of them,
    the responses with every step below it, the Pos-Adv-attenuated steps (how many, the oracle-redundant
    share of the labelled ones, their mean relative position `(k + 0.5)/K`) and the Neg-Adv-zeroed steps
    (the oracle-essential share). `reproduced`: the steps whose flags under the run's own baseline `own`
    differ from the logged ones (0 when the replay is faithful). `scale`: medians of |F|/|o| and of S_k,
    the heads' SRA on the oracle's essential-redundant pairs (mean over responses with a pair, and pooled
    over pairs), and how often a response's lowest-scored step is oracle-redundant."""
    out: dict[str, Any] = {"responses": len(replayed), "steps": sum(len(r.scores) for r in replayed)}
    for kind in BASELINES:
        tally = dict.fromkeys(("every", "below", "below_lab", "below_red", "pos", "pos_lab", "pos_red"), 0)
        tally |= dict.fromkeys(("neg", "neg_lab", "neg_ess"), 0)
        where: list[float] = []
        for r in replayed:
            f = r.factors[kind]
            under = (torch.tensor(r.scores, dtype=torch.float64) < f.baseline[0]).tolist()
            tally["every"] += all(under)
            for k, label in enumerate(r.labels or [None] * len(r.scores)):
                for key, hit, wanted in (
                    ("below", under[k], "redundant"),
                    ("pos", bool(f.pos[0, k]), "redundant"),
                    ("neg", bool(f.neg[0, k]), "essential"),
                ):
                    if hit:
                        tally[key] += 1
                        tally[f"{key}_lab"] += label is not None
                        tally[f"{key}_{wanted[:3]}"] += label == wanted
                if f.pos[0, k]:
                    where.append((k + 0.5) / len(r.scores))
        out[kind] = {
            "below": tally["below"],
            "below_redundant": _share(tally["below_red"], tally["below_lab"]),
            "every_step_below": tally["every"],
            "pos": tally["pos"],
            "pos_redundant": _share(tally["pos_red"], tally["pos_lab"]),
            "pos_position": math.fsum(where) / len(where) if where else None,
            "neg": tally["neg"],
            "neg_essential": _share(tally["neg_ess"], tally["neg_lab"]),
        }
    mismatched = sum(
        bool(r.factors[own].pos[0, k]) != s["pos"] or bool(r.factors[own].neg[0, k]) != s["neg"]
        for r, row in zip(replayed, logged, strict=True)
        for k, s in enumerate(row["steps"])
    )
    out["reproduced"] = {"baseline": own, "mismatched_steps": mismatched}
    out["scale"] = _scale_figures(replayed)
    return out


def _scale_figures(replayed: Sequence[ReplayedResponse]) -> dict[str, Any]:
    labelled = [r for r in replayed if r.labels is not None and None not in r.labels]
    per_response, wins, pairs = [], 0.0, 0
    for r in labelled:
        scores = torch.tensor(r.scores, dtype=torch.float64)
        essential = torch.tensor([x == "essential" for x in r.labels])
        redundant = torch.tensor([x == "redundant" for x in r.labels])
        mask = pair_mask(essential, redundant)
        per_response.append(step_ranking_accuracy(scores, essential, redundant))
        wins += float(pair_wins(scores, mask))
        pairs += int(mask.sum())
    lowest = [r.labels[min(range(len(r.scores)), key=r.scores.__getitem__)] for r in labelled]
    return {
        "median_uniform_share": statistics.median(r.uniform_share for r in replayed),
        "median_step_score": statistics.median(s for r in replayed for s in r.scores),
        "sra": float(mean_sra(torch.stack(per_response))) if per_response else None,
        "sra_responses": int(responses_with_pairs(torch.stack(per_response)).sum()) if per_response else 0,
        "sra_pooled": wins / pairs if pairs else None,
        "sra_pairs": pairs,
        "fully_labelled": len(labelled),
        "lowest_redundant": sum(label == "redundant" for label in lowest),
    }


def figures_table(figures: dict[str, Any]) -> str:
    """The figures of `baseline_figures` as a markdown table and two lines."""
    lines = [
        "| baseline | steps below S_base (redundant) | responses with every step below | Pos-Adv steps "
        "| oracle-redundant | mean position | Neg-Adv steps | oracle-essential |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for kind in BASELINES:
        f = figures[kind]
        position = "—" if f["pos_position"] is None else f"{f['pos_position']:.3f}"
        lines.append(
            f"| {kind} | {f['below']} ({percent_cell(f['below_redundant'])}) | {f['every_step_below']} | {f['pos']} "
            f"| {percent_cell(f['pos_redundant'])} | {position} | {f['neg']} | {percent_cell(f['neg_essential'])} |"
        )
    s, r = figures["scale"], figures["reproduced"]
    sra = "—" if s["sra"] is None else f"{s['sra']:.3f} over {s['sra_responses']} responses"
    pooled = "—" if s["sra_pooled"] is None else f"{s['sra_pooled']:.3f} over {s['sra_pairs']} pairs"
    lines += [
        "",
        f"{figures['responses']} responses, {figures['steps']} steps; median |F|/|o| "
        f"{s['median_uniform_share']:.4f}, median S_k {s['median_step_score']:.4f} "
        f"(ratio {s['median_uniform_share'] / s['median_step_score']:.2f}); SRA {sra} (pooled {pooled}); "
        f"lowest-scored step oracle-redundant in {s['lowest_redundant']} of {s['fully_labelled']} "
        "fully labelled responses.",
        f"Replay under the run's own baseline ({r['baseline']}): {r['mismatched_steps']} steps differ from "
        "the logged Pos-Adv / Neg-Adv flags.",
    ]
    return "\n".join(lines)


def replay_run(run: Path) -> dict[str, Any]:
    """`baseline_figures` of a `attnpo train` output folder (its `config.resolved.yaml` and `rescaled/`);
    the run's tokenizer is loaded only for a log without step token counts."""
    from attnpo.rescaled_log import read_rescaled
    from attnpo.train import TrainConfig

    resolved = run / "config.resolved.yaml"
    if not resolved.is_file():
        raise UserError(f"{run} has no config.resolved.yaml (not an `attnpo train` output folder)")
    cfg = TrainConfig.model_validate(yaml.safe_load(resolved.read_text()))
    rows = read_rescaled(run)
    if not rows:
        raise UserError(f"{run} has no rescaled responses (trained with log_rescaled=true?)")
    count_tokens = None
    if not all("tokens" in s for row in rows for s in row["steps"]):
        from attncore.models import load_tokenizer, resolve_model_source

        tokenizer = load_tokenizer(resolve_model_source(cfg.model.name)[0], cfg.model.revision)

        def count_tokens(text: str) -> int:
            return len(tokenizer.encode(text, add_special_tokens=False))

    replayed = [replay_response(row, cfg.method.rescaling, count_tokens) for row in rows]
    return baseline_figures(replayed, rows, cfg.method.rescaling.baseline)

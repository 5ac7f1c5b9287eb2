"""What the stepwise rescaling did during a logging window, as the scalar metrics `AttnPOTrainer` logs.

A `RescalingRecord` holds flat per-step lists, so records of micro-batches and processes merge by
concatenation and the metrics of a step are those of its whole batch, however it was split. Steps are
the *treated* ones: the steps of responses that went through step treatment (correct, >= 2 scored
steps, nonzero advantage; `attnpo.rescaling`). A step's relative position is `(k + 0.5)/K` for step k
(from 0) of a response with K steps: the centre of its slot, in (0, 1).

Histograms are logged as one scalar per bin, `<name>_hist/<lower edge>` (a count), so `metrics.jsonl`
carries them; `attnpo.train` also sends each family to wandb as one histogram.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from attnpo.rescaling import RescaledAdvantages

GAMMA_BINS = 10
"""Bins of the γ histogram of attenuated steps over [0, 1]."""
POSITION_BINS = 10
"""Bins of the relative-position histogram of attenuated steps over [0, 1]."""
RATIO_BINS, RATIO_TOP = 10, 2.5
"""Bins of the S_k/S_base histogram of treated steps: width 0.25 from 0; the last takes all above 2.25."""
QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)

REDUNDANT = "redundant"


@dataclass
class RescalingRecord:
    """Responses seen and, per treated step: its score, its response's S_base, γ, whether Pos-Adv or
    Neg-Adv attenuated it, its relative position and the oracle's label (None: no oracle label)."""

    responses: int = 0
    treated: int = 0
    pos_responses: int = 0
    neg_responses: int = 0
    score: list[float] = field(default_factory=list)
    baseline: list[float] = field(default_factory=list)
    gamma: list[float] = field(default_factory=list)
    pos: list[bool] = field(default_factory=list)
    neg: list[bool] = field(default_factory=list)
    position: list[float] = field(default_factory=list)
    oracle: list[str | None] = field(default_factory=list)

    def merge(self, other: RescalingRecord) -> RescalingRecord:
        """Both records as one (the responses and steps of both)."""
        return RescalingRecord(
            self.responses + other.responses,
            self.treated + other.treated,
            self.pos_responses + other.pos_responses,
            self.neg_responses + other.neg_responses,
            *(getattr(self, name) + getattr(other, name) for name in _STEP_FIELDS),
        )


_STEP_FIELDS = ("score", "baseline", "gamma", "pos", "neg", "position", "oracle")


def rescaling_record(
    rescaled: RescaledAdvantages,
    scores: Tensor,
    n_steps: Tensor,
    advantages: Tensor,
    oracle: Sequence[Sequence[str | None] | None],
) -> RescalingRecord:
    """The record of one batch. scores (B, K) the step scores the rescaling read; n_steps (B,) long;
    advantages (B,) the outcome advantages; oracle: per response its steps' oracle labels, or None."""
    f = rescaled.factors
    record = RescalingRecord(responses=len(n_steps))
    for b in torch.nonzero(f.touched).flatten().tolist():
        k = int(n_steps[b])
        record.treated += 1
        record.pos_responses += int(advantages[b] > 0)
        record.neg_responses += int(advantages[b] < 0)
        record.score += scores[b, :k].tolist()
        record.baseline += [float(f.baseline[b])] * k
        record.gamma += f.gamma[b, :k].tolist()
        record.pos += f.pos[b, :k].tolist()
        record.neg += f.neg[b, :k].tolist()
        record.position += [(i + 0.5) / k for i in range(k)]
        labels = oracle[b]
        record.oracle += list(labels) if labels is not None else [None] * k
    return record


def _histogram(values: list[float], bins: int, top: float, name: str) -> dict[str, float]:
    """Counts in `bins` equal bins over [0, `top`); values past either end go to the end bins."""
    counts = [0.0] * bins
    for v in values:
        counts[min(max(int(v * bins / top), 0), bins - 1)] += 1
    return {f"attnpo/{name}_hist/{round(i * top / bins, 2)}": c for i, c in enumerate(counts)}


def _quantiles(values: list[float], name: str) -> dict[str, float]:
    if not values:
        return {}
    q = torch.quantile(
        torch.tensor(values, dtype=torch.float64), torch.tensor(QUANTILES, dtype=torch.float64)
    )
    return {f"attnpo/{name}/q{round(p * 100)}": float(v) for p, v in zip(QUANTILES, q, strict=True)}


def _redundant_share(labels: list[str | None]) -> float | None:
    known = [label for label in labels if label is not None]
    return sum(label == REDUNDANT for label in known) / len(known) if known else None


def rescaling_metrics(record: RescalingRecord) -> dict[str, float]:
    """The logged metrics of a record (none when it saw no response).

    - `attnpo/share_rescaled`: treated responses / responses; `attnpo/pos_responses`,
      `attnpo/neg_responses`: treated responses with A > 0 / A < 0.
    - `attnpo/treated_steps`, `attnpo/pos_steps`, `attnpo/neg_steps`: steps treated, attenuated by
      Pos-Adv, by Neg-Adv; `attnpo/share_steps_attenuated`: (pos + neg) / treated steps.
    - `attnpo/gamma_hist/<edge>`: γ of the attenuated steps, 10 bins on [0, 1].
    - `attnpo/step_score/q<p>`, `attnpo/baseline/q<p>`, `attnpo/score_ratio/q<p>` (p = 10, 25, 50, 75,
      90): quantiles over treated steps of S_k, of S_base and of S_k/S_base; `attnpo/score_ratio_hist/
      <edge>`: S_k/S_base in bins of 0.25 (the last from 2.25 up).
    - `attnpo/position/attenuated_mean`, `attnpo/position/treated_mean`: mean relative position of the
      attenuated and of all treated steps; `attnpo/position_hist/<edge>`: attenuated steps, 10 bins.
    - With oracle labels (synthetic-testbed problems): `attnpo/oracle/attenuated_redundant_share`
      (and `pos_redundant_share`, `neg_redundant_share`): share of the attenuated (Pos-Adv, Neg-Adv)
      steps the oracle labels redundant, among those it labels; `attnpo/oracle/treated_redundant_share`:
      the same over all treated steps (the rate a step picked at random would reach);
      `attnpo/oracle/attenuated_labelled`: how many attenuated steps carry a label.
    """
    if record.responses == 0:
        return {}
    attenuated = [p or n for p, n in zip(record.pos, record.neg, strict=True)]
    out = {
        "attnpo/share_rescaled": record.treated / record.responses,
        "attnpo/pos_responses": float(record.pos_responses),
        "attnpo/neg_responses": float(record.neg_responses),
        "attnpo/treated_steps": float(len(attenuated)),
        "attnpo/pos_steps": float(sum(record.pos)),
        "attnpo/neg_steps": float(sum(record.neg)),
        "attnpo/share_steps_attenuated": sum(attenuated) / len(attenuated) if attenuated else 0.0,
    }
    picked = [i for i, a in enumerate(attenuated) if a]
    out |= _histogram([record.gamma[i] for i in picked], GAMMA_BINS, 1.0, "gamma")
    ratio = [s / b for s, b in zip(record.score, record.baseline, strict=True)]
    out |= _quantiles(record.score, "step_score")
    out |= _quantiles(record.baseline, "baseline")
    out |= _quantiles(ratio, "score_ratio")
    out |= _histogram(ratio, RATIO_BINS, RATIO_TOP, "score_ratio")
    positions = [record.position[i] for i in picked]
    out |= _histogram(positions, POSITION_BINS, 1.0, "position")
    if positions:
        out["attnpo/position/attenuated_mean"] = sum(positions) / len(positions)
    if record.position:
        out["attnpo/position/treated_mean"] = sum(record.position) / len(record.position)
    if any(label is not None for label in record.oracle):
        shares = {
            "attenuated": [record.oracle[i] for i in picked],
            "pos": [label for label, p in zip(record.oracle, record.pos, strict=True) if p],
            "neg": [label for label, n in zip(record.oracle, record.neg, strict=True) if n],
            "treated": record.oracle,
        }
        for name, labels in shares.items():
            share = _redundant_share(labels)
            if share is not None:
                out[f"attnpo/oracle/{name}_redundant_share"] = share
        out["attnpo/oracle/attenuated_labelled"] = float(
            sum(label is not None for label in shares["attenuated"])
        )
    return out

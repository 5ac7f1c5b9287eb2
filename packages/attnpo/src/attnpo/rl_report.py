"""Report of an RL experiment on the testbed: one row per arm (and the starting model) from its held-out
evaluation, and the training curves of every arm from its logged metrics.

An experiment folder holds one subfolder per arm: `evaluation.json` (`attncore synth evaluate --out`,
or `attnpo train` with an evaluation section), `evaluation.rollouts.jsonl` (per-problem verdicts, for the
accuracy's interval and the paired test against the reference arm on the same problems) and, for a
trained arm, `metrics.jsonl` and `rescaled/` (`attnpo train log_rescaled=true`). From `rescaled/` the
oracle labels the steps AttnPO attenuated: the share of Pos-Adv-attenuated steps that are redundant, the
mean γ Pos-Adv gave the redundant and the essential ones (does the score still tell them apart when the
baseline lies above most steps), the share of Neg-Adv-zeroed steps that are essential, and where in the
thinking the attenuated steps are (relative position, `positions.png`), pooled over the whole run (the
trainer logs the same figures per step: `attnpo/oracle/*`, `attnpo/position/*`). A subfolder without an
evaluation is listed with its training figures only, so the report can be made while arms run.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from attncore.data import read_rows
from attncore.errors import UserError
from attncore.eval.metrics import Interval, mean_interval, paired_outcomes
from attncore.eval.report import paired_text, percent_cell
from attnpo.rescaled_log import oracle_labels, read_rescaled
from attnpo.train import EVALUATION, evaluation_figures

METRICS = "metrics.jsonl"
CURVES = {
    "attnpo/thinking_tokens": "mean thinking tokens",
    "attnpo/accuracy": "accuracy",
    "attnpo/oracle/attenuated_redundant_share": "attenuated steps oracle-redundant",
}
"""Logged per-step metrics (`attnpo.trainer`, `attnpo.step_metrics`) drawn against the training step,
with their axis labels."""
ATTENUATED = {
    "pos_redundant": "Pos-Adv-attenuated steps oracle-redundant",
    "pos_position": "their mean relative position",
    "pos_gamma": "their mean γ: redundant / essential",
    "neg_essential": "Neg-Adv-zeroed steps oracle-essential",
}
"""Figures of the attenuated steps, from the rescaled-response log and the testbed oracle."""
POSITION_BINS = 10


@dataclass(frozen=True)
class ArmFigures:
    """One arm: its held-out figures (None before it is evaluated) and its training curves."""

    name: str
    steps: int | None
    accuracy: Interval | None
    problems: int | None
    thinking_tokens: float | None
    redundancy_ratio: float | None
    well_formed: float | None
    verdicts: dict[str, bool] = field(default_factory=dict)
    curves: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    attenuated: dict[str, float] = field(default_factory=dict)
    positions: dict[str, list[float]] = field(default_factory=dict)


def attenuation_figures(run: Path) -> tuple[dict[str, float], dict[str, list[float]]]:
    """Oracle figures of the steps a run attenuated (module doc; shares over the steps the oracle could
    label) and the relative positions `(k + 0.5) / K` of its Pos-Adv-attenuated steps, of the redundant
    steps and of all steps of the same responses."""
    figures: dict[str, float] = {}
    positions: dict[str, list[float]] = {"attenuated (Pos-Adv)": [], "oracle-redundant": [], "all steps": []}
    counts = {"pos": [0, 0], "neg": [0, 0]}  # [hits, labelled]
    gammas: dict[str, list[float]] = {"redundant": [], "essential": []}  # Pos-Adv steps' γ by label
    for row in read_rescaled(run):
        labels = oracle_labels(row)
        if labels is None:
            continue
        n = len(row["steps"])
        for k, (step, label) in enumerate(zip(row["steps"], labels, strict=True)):
            where = (k + 0.5) / n
            positions["all steps"].append(where)
            if label == "redundant":
                positions["oracle-redundant"].append(where)
            if step["pos"]:
                positions["attenuated (Pos-Adv)"].append(where)
                if label in gammas:
                    gammas[label].append(float(step["gamma"]))
            for kind, wanted in (("pos", "redundant"), ("neg", "essential")):
                if step[kind] and label is not None:
                    counts[kind][0] += label == wanted
                    counts[kind][1] += 1
    if counts["pos"][1]:
        figures["pos_redundant"] = counts["pos"][0] / counts["pos"][1]
        figures["pos_position"] = math.fsum(positions["attenuated (Pos-Adv)"]) / len(
            positions["attenuated (Pos-Adv)"]
        )
    for label, values in gammas.items():
        if values:
            figures[f"pos_gamma_{label}"] = math.fsum(values) / len(values)
    if counts["neg"][1]:
        figures["neg_essential"] = counts["neg"][0] / counts["neg"][1]
    figures["pos_labelled"], figures["neg_labelled"] = counts["pos"][1], counts["neg"][1]
    return figures, positions


def read_metrics(path: Path) -> list[dict[str, float]]:
    """The rows of a `metrics.jsonl`; a last line a kill cut short is dropped."""
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return rows


def read_arm(folder: Path, name: str | None = None) -> ArmFigures:
    """The figures of one arm folder (or of a built testbed model: its build's evaluation)."""
    rows = read_metrics(folder / METRICS) if (folder / METRICS).is_file() else []
    curves = {
        key: [(int(r["step"]), float(r[key])) for r in rows if key in r and "step" in r] for key in CURVES
    }
    attenuated, positions = attenuation_figures(folder)
    steps = max((int(r["step"]) for r in rows if "step" in r), default=None)
    figures, rollouts = evaluation_figures(folder) or ({}, None)
    accuracy = None
    verdicts: dict[str, bool] = {}
    if rollouts is not None:
        evaluated = read_rows(rollouts)
        verdicts = {r["problem_id"]: bool(r["correct"]) for r in evaluated}  # one sample per problem
        accuracy = mean_interval([float(r["correct"]) for r in evaluated])
    elif "accuracy" in figures:
        accuracy = Interval(figures["accuracy"], None, None)
    return ArmFigures(
        name or folder.name,
        steps,
        accuracy,
        figures.get("problems"),
        figures.get("mean_thinking_tokens"),
        figures.get("redundancy_ratio"),
        figures.get("well_formed"),
        verdicts,
        curves,
        attenuated,
        positions,
    )


def read_experiment(root: Path, start: str | None = None) -> list[ArmFigures]:
    """Every arm folder of `root` (a folder with an evaluation or logged metrics), by name, and first the
    starting model `start` when given (a built testbed model's name or folder, or an evaluation)."""
    if not root.is_dir():
        raise UserError(f"experiment folder not found: {root}")
    arms = [
        read_arm(p)
        for p in sorted(root.iterdir())
        if p.is_dir() and ((p / EVALUATION).is_file() or (p / METRICS).is_file())
    ]
    if start is not None:
        if evaluation_figures(start) is None:
            raise UserError(f"no testbed evaluation found for the starting model {start!r}")
        arms.insert(0, read_arm(Path(start), "start"))
    if not arms:
        raise UserError(f"{root}: no arm folder with {EVALUATION} or {METRICS}")
    return arms


def _accuracy(a: Interval | None) -> str:
    if a is None:
        return "—"
    if a.low is None or a.high is None:
        return percent_cell(a.mean)
    return f"{100 * a.mean:.1f}% [{100 * a.low:.1f}, {100 * a.high:.1f}]"


def _paired(arm: ArmFigures, ref: ArmFigures) -> str:
    """`only ref / only arm (p)` on the held-out problems both answered (exact McNemar)."""
    if arm is ref:
        return "—"
    paired = paired_outcomes(ref.verdicts, arm.verdicts)
    return "—" if paired is None else paired_text(paired)


def _attenuated_cell(figures: dict[str, float], key: str) -> str:
    """One `ATTENUATED` cell: a share in percent, a position or γ in three decimals, `—` when missing."""
    if key == "pos_gamma":
        pair = [figures.get(f"pos_gamma_{label}") for label in ("redundant", "essential")]
        return "—" if pair == [None, None] else " / ".join("—" if g is None else f"{g:.3f}" for g in pair)
    if key not in figures:
        return "—"
    return f"{figures[key]:.3f}" if key.endswith("position") else f"{100 * figures[key]:.1f}%"


def report_table(arms: list[ArmFigures], reference: str | None) -> str:
    """Markdown table of the arms; thinking tokens relative to the `reference` arm, and the paired test of
    each arm's held-out verdicts against the reference's, when the reference is evaluated."""
    ref = next((a for a in arms if a.name == reference and a.thinking_tokens), None)
    head = [
        "arm",
        "steps",
        "accuracy [95% CI]",
        f"only {reference} / only arm (McNemar p)" if ref else None,
        "mean thinking tokens",
        f"thinking vs {reference}" if ref else None,
        "redundant share (oracle)",
        "well-formed",
        *ATTENUATED.values(),
    ]
    head = [h for h in head if h is not None]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for a in arms:
        cells = [
            a.name,
            "—" if a.steps is None else str(a.steps),
            _accuracy(a.accuracy),
            *([_paired(a, ref)] if ref else []),
            "—" if a.thinking_tokens is None else f"{a.thinking_tokens:.1f}",
        ]
        if ref:
            cells.append(
                "—"
                if a.thinking_tokens is None
                else f"{100 * (a.thinking_tokens / ref.thinking_tokens - 1):+.1f}%"
            )
        cells += [percent_cell(a.redundancy_ratio), percent_cell(a.well_formed)]
        cells += [_attenuated_cell(a.attenuated, key) for key in ATTENUATED]
        lines.append("| " + " | ".join(cells) + " |")
    problems = sorted({a.problems for a in arms if a.problems is not None})
    note = f"\n\nHeld-out problems per evaluation: {', '.join(map(str, problems))}." if problems else ""
    if ref:
        note += (
            f" only {reference} / only arm: held-out problems only the reference / only this arm solved, with"
            " the two-sided exact McNemar p-value of that split."
        )
    labelled = [
        f"{a.name} {int(a.attenuated['pos_labelled'])} / {int(a.attenuated['neg_labelled'])}"
        for a in arms
        if a.attenuated.get("pos_labelled") or a.attenuated.get("neg_labelled")
    ]
    if labelled:
        note += (
            " Attenuated steps the oracle labelled (Pos-Adv / Neg-Adv), over all training steps: "
            + ", ".join(labelled)
            + ". Relative position of step k of K: (k + 0.5) / K (0.5 = spread evenly)."
        )
    return "\n".join(lines) + note


def plot_curves(arms: list[ArmFigures], path: Path) -> Path | None:
    """Thinking tokens and accuracy of the training rollouts, and the share of the step's attenuated steps
    the oracle calls redundant, against the training step, one line per arm (PNG); None when no arm
    logged any."""
    from matplotlib.figure import Figure

    trained = [a for a in arms if any(a.curves.get(k) for k in CURVES)]
    if not trained:
        return None
    fig = Figure(figsize=(5 * len(CURVES), 4), dpi=100)
    colour = {arm.name: f"C{i % 10}" for i, arm in enumerate(trained)}  # an arm keeps its colour on every panel
    for i, (key, label) in enumerate(CURVES.items()):
        ax = fig.add_subplot(1, len(CURVES), i + 1)
        for arm in trained:
            points = arm.curves.get(key, [])
            if points:
                ax.plot(*zip(*points, strict=True), marker="o", markersize=3, label=arm.name, linewidth=1.2,
                        color=colour[arm.name])
        ax.set_xlabel("training step")
        ax.set_ylabel(label)
        ax.set_title(f"training rollouts: {label}")
        ax.grid(alpha=0.3)
    fig.axes[0].legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def plot_positions(arms: list[ArmFigures], path: Path) -> Path | None:
    """Per arm with attenuated steps: the Pos-Adv-attenuated, oracle-redundant and all steps of its
    rescaled responses over relative position (share of each set per bin; PNG). None when no arm has any."""
    import numpy as np
    from matplotlib.figure import Figure

    shown = [a for a in arms if a.positions.get("attenuated (Pos-Adv)")]
    if not shown:
        return None
    fig = Figure(figsize=(4.5 * len(shown), 3.6), dpi=100)
    edges = np.linspace(0, 1, POSITION_BINS + 1)
    for i, arm in enumerate(shown):
        ax = fig.add_subplot(1, len(shown), i + 1)
        for name, values in arm.positions.items():
            if values:
                share = np.histogram(values, bins=edges)[0] / len(values)
                ax.step(edges, np.append(share, share[-1]), where="post", label=f"{name} ({len(values)})")
        ax.set_xlabel("relative position in the thinking")
        ax.set_ylabel("share of the steps")
        ax.set_title(arm.name)
        ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def write_report(
    root: Path, out: Path, reference: str | None = "a1_traineff", start: str | None = None
) -> tuple[str, Path | None]:
    """`report.md`, `report.json`, `curves.png` and `positions.png` of the experiment in `root` (and the
    starting model `start`, see `read_experiment`), written into `out`."""
    arms = read_experiment(root, start)
    table = report_table(arms, reference)
    out.mkdir(parents=True, exist_ok=True)
    curves = plot_curves(arms, out / "curves.png")
    positions = plot_positions(arms, out / "positions.png")
    picture = "".join(f"\n\n![{p.stem}]({p.name})" for p in (curves, positions) if p) + "\n"
    (out / "report.md").write_text(f"# {root.name}\n\n{table}{picture}")
    (out / "report.json").write_text(
        json.dumps(
            [
                {
                    "arm": a.name,
                    "steps": a.steps,
                    "accuracy": None if a.accuracy is None else a.accuracy.__dict__,
                    "problems": a.problems,
                    "mean_thinking_tokens": a.thinking_tokens,
                    "redundancy_ratio": a.redundancy_ratio,
                    "well_formed": a.well_formed,
                    "attenuated": a.attenuated,
                }
                for a in arms
            ],
            indent=1,
        )
    )
    return table, curves

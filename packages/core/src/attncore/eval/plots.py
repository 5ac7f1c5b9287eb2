"""PNG figures of evaluation runs: accuracy against length (one point per run), length histograms.

Figures are built with matplotlib's object API (no pyplot state), so plotting works on servers without a
display and from several threads.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from attncore.eval.report import RunReport


def _grid(count: int) -> tuple[Figure, list[Axes]]:
    cols = min(3, count)
    rows = math.ceil(count / cols)
    fig = Figure(figsize=(4.2 * cols, 3.4 * rows))
    axes = fig.subplots(rows, cols, squeeze=False)
    flat = list(axes.flat)
    for ax in flat[count:]:
        ax.set_visible(False)
    return fig, flat[:count]


def plot_accuracy_vs_tokens(reports: Sequence[RunReport], path: str | Path) -> Path:
    """One panel per benchmark: pass@1 (with its 95% interval) against mean completion tokens, one
    point per run; benchmarks come in the order they first appear."""
    labels = list(dict.fromkeys(label for r in reports for label in r.benchmarks))
    if not labels:
        raise ValueError("no benchmark to plot")
    fig, axes = _grid(len(labels))
    colours = matplotlib.colormaps["tab10"]
    for ax, label in zip(axes, labels, strict=True):
        for i, report in enumerate(reports):
            m = report.benchmarks.get(label)
            if m is None:
                continue
            low = m.pass1 if m.pass1_low is None else m.pass1_low
            high = m.pass1 if m.pass1_high is None else m.pass1_high
            ax.errorbar(
                m.tokens_mean,
                100 * m.pass1,
                yerr=[[100 * (m.pass1 - low)], [100 * (high - m.pass1)]],
                fmt="o",
                color=colours(i % 10),
                capsize=3,
                label=report.name,
            )
        ax.set_title(label)
        ax.set_xlabel("mean completion tokens")
        ax.set_ylabel("pass@1 (%)")
        ax.grid(alpha=0.3)
    handles, names = axes[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="lower center", ncol=min(4, len(reports)), frameon=False)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    return _save(fig, path)


def plot_length_histograms(
    lengths: Mapping[str, tuple[Sequence[int], Sequence[bool]]], path: str | Path
) -> Path:
    """One panel per benchmark: histograms of completion tokens of correct and of incorrect answers,
    on shared bins. `lengths[label] = (tokens per rollout, correct per rollout)`."""
    if not lengths:
        raise ValueError("no benchmark to plot")
    fig, axes = _grid(len(lengths))
    for ax, (label, (tokens, correct)) in zip(axes, lengths.items(), strict=True):
        tokens_arr = np.asarray(tokens, dtype=float)
        mask = np.asarray(correct, dtype=bool)
        bins = np.histogram_bin_edges(tokens_arr, bins=min(30, max(1, len(tokens_arr))))
        ax.hist(tokens_arr[mask], bins=bins, alpha=0.6, color="tab:green", label=f"correct ({mask.sum()})")
        ax.hist(
            tokens_arr[~mask], bins=bins, alpha=0.6, color="tab:red", label=f"incorrect ({(~mask).sum()})"
        )
        ax.set_title(label)
        ax.set_xlabel("completion tokens")
        ax.set_ylabel("rollouts")
        ax.legend(frameon=False, fontsize="small")
    fig.tight_layout()
    return _save(fig, path)


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=120)
    tmp.replace(path)
    return path

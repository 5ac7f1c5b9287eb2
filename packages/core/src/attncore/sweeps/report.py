"""A sweep's results: one table (Markdown and CSV), best trial first, and the metric against each parameter."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from attncore.sweeps.spec import SweepSpec

if TYPE_CHECKING:
    from attncore.sweeps.runner import TrialRecord

RESULTS_MD = "results.md"
RESULTS_CSV = "results.csv"
PLOT_NAME = "metric_vs_parameters.png"
_LOG_KINDS = {"log_uniform", "log_uniform_values", "q_log_uniform", "q_log_uniform_values", "log_normal"}
_ORDER = {"finished": 0, "failed": 1, "running": 2, "pending": 3}


def ranked(trials: list[TrialRecord], spec: SweepSpec) -> list[TrialRecord]:
    """Finished trials best first, then failed and unfinished ones in trial order."""
    assert spec.metric is not None
    sign = -1.0 if spec.metric.goal == "maximize" else 1.0

    def key(record: TrialRecord) -> tuple[int, float, int]:
        value = sign * record.metric if record.metric is not None else math.inf
        return _ORDER.get(record.status, 4), value, record.index

    return sorted(trials, key=key)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def table_rows(trials: list[TrialRecord], spec: SweepSpec) -> tuple[list[str], list[list[str]]]:
    assert spec.metric is not None
    names = list(spec.parameters)
    header = ["trial", "status", spec.metric.name, *names, "seconds", "error"]
    rows = [
        [
            r.id,
            r.status,
            _cell(r.metric),
            *(_cell(r.params.get(n)) for n in names),
            _cell(r.seconds),
            r.error or "",
        ]
        for r in ranked(trials, spec)
    ]
    return header, rows


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    return "\n".join([line(header), "|" + "---|" * len(header), *(line(row) for row in rows)])


def plot_metric_vs_parameters(trials: list[TrialRecord], spec: SweepSpec, target: Path) -> bool:
    """One panel per swept parameter (constants left out), the best trial marked; False when nothing finished."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    assert spec.metric is not None
    done = [r for r in trials if r.metric is not None]
    swept = [n for n, p in spec.parameters.items() if p.distribution != "constant"]
    if not done or not swept:
        return False
    best = ranked(done, spec)[0]
    fig, axes = plt.subplots(1, len(swept), figsize=(4 * len(swept), 3.4), squeeze=False)
    for ax, name in zip(axes[0], swept, strict=True):
        values = [r.params.get(name) for r in done]
        numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
        if numeric:
            xs: list[Any] = values
        else:
            labels = list(dict.fromkeys(str(v) for v in values))
            xs = [labels.index(str(v)) for v in values]
            ax.set_xticks(range(len(labels)), labels, rotation=30 if len(labels) > 4 else 0)
            ax.set_xlim(-0.5, len(labels) - 0.5)
        ys = [r.metric for r in done]
        ax.scatter(xs, ys, s=22, color="tab:blue", alpha=0.8, label="trial")
        ax.scatter([xs[done.index(best)]], [best.metric], s=60, color="tab:red", marker="*", label="best")
        if numeric and spec.parameters[name].distribution in _LOG_KINDS and min(values) > 0:
            ax.set_xscale("log")
        ax.set_xlabel(name)
        ax.set_ylabel(spec.metric.name)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle(f"{spec.metric.name} ({spec.metric.goal}) over {len(done)} finished trials", fontsize=10)
    fig.tight_layout()
    target.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(target, dpi=110)
    plt.close(fig)
    return True


def write_report(trials: list[TrialRecord], spec: SweepSpec, folder: Path) -> str:
    """Write results.md, results.csv and the plot into the sweep folder; returns the Markdown table."""
    header, rows = table_rows(trials, spec)
    with open(folder / RESULTS_CSV, "w", newline="") as handle:
        csv.writer(handle).writerows([header, *rows])
    table = markdown_table(header, rows)
    counts = {s: sum(r.status == s for r in trials) for s in ("finished", "failed", "pending")}
    line = f"{len(trials)} trials: " + ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    if counts["finished"]:
        best = ranked(trials, spec)[0]
        line += f"; best {best.id} with {spec.metric.name} = {best.metric:.6g}"  # type: ignore[union-attr]
    (folder / RESULTS_MD).write_text(f"{line}\n\n{table}\n")
    if not plot_metric_vs_parameters(trials, spec, folder / PLOT_NAME):
        (folder / PLOT_NAME).unlink(missing_ok=True)
    return f"{line}\n\n{table}"

"""What head discovery shows a person: the SRA heatmap, the top-k vs greedy curve, a Markdown report."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import MaxNLocator
from torch import Tensor

from attnpo.selection import Ensemble, HeadTable, RankerSummary


def plot_heatmap(table: HeadTable, eligible: Tensor, chosen: Sequence[tuple[int, int]], path: Path) -> Path:
    """Layer x head SRA (chance 0.5 in the middle of the colour scale); chosen heads boxed, ineligible
    heads dotted."""
    sra = table.sra.float().numpy()
    layers, heads = sra.shape
    fig = Figure(figsize=(max(4.0, 0.45 * heads + 2), max(3.0, 0.3 * layers + 1.5)))
    ax = fig.subplots()
    image = ax.imshow(sra, cmap="RdBu_r", vmin=0.0, vmax=1.0, aspect="auto", origin="lower")
    fig.colorbar(image, ax=ax, label="SRA")
    for layer in range(layers):
        for head in range(heads):
            if not eligible[layer, head]:
                ax.plot(head, layer, marker=".", color="0.3", markersize=3)
    for layer, head in chosen:
        ax.add_patch(Rectangle((head - 0.5, layer - 0.5), 1, 1, fill=False, lw=2, ec="k"))
    ax.set_xlabel("query head\n(dot: fails a pair direction; box: selected)", fontsize=8)
    ax.set_ylabel("layer")
    ax.set_title("Step Ranking Accuracy per head", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path


def plot_curves(top: Sequence[Ensemble], greedy: Sequence[Ensemble], path: Path) -> Path:
    fig = Figure(figsize=(5, 3.5))
    ax = fig.subplots()
    ax.plot([e.k for e in top], [e.sra for e in top], "o-", label="top-k")
    ax.plot([e.k for e in greedy], [e.sra for e in greedy], "s--", label="greedy")
    ax.axhline(0.5, color="0.6", lw=0.8, ls=":")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("heads in the ensemble (k)")
    ax.set_ylabel("ensemble SRA")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path


def _f(value: float | None) -> str:
    return "-" if value is None or value != value else f"{value:.3f}"


def markdown_report(
    *,
    model: str,
    table: HeadTable,
    eligible: Tensor,
    top: Sequence[Ensemble],
    greedy: Sequence[Ensemble],
    chosen: Ensemble | None,
    headline: dict[str, RankerSummary],
    probe: dict,
    labels: dict,
    min_direction_sra: float,
) -> str:
    """The report: probe set, headline rankers (heads, ensembles, trivial rules), best heads, ensembles."""
    flat = table.sra.reshape(-1)
    layers, heads = table.sra.shape
    order = sorted(range(len(flat)), key=lambda c: (-float(flat[c]), c))
    lines = [
        f"# Key-focus heads of {model}",
        "",
        f"Probe set: {probe['responses']} responses (hash {probe['hash'][:12]}), label source "
        f"`{labels['kind']}`; {table.responses['all']} responses with at least one (essential, redundant) "
        f"pair, {table.pairs['all']} pairs: {table.pairs['after']} with the redundant step after the "
        f"essential one, {table.pairs['before']} before. Left out of the probe set: {probe['left_out'] or 'none'}.",
        "",
        f"Eligible heads (SRA >= {min_direction_sra} in each pair direction with pairs): "
        f"{int(eligible.sum())} of {layers * heads}.",
        "",
        "## Step rankers on the same responses",
        "",
        "| ranker | SRA | 95% interval | SRA, redundant after | SRA, redundant before |",
        "|---|---:|---|---:|---:|",
    ]
    for name, r in headline.items():
        interval = "-" if r.low != r.low else f"{_f(r.low)}-{_f(r.high)}"
        lines.append(f"| {name} | {_f(r.sra)} | {interval} | {_f(r.after)} | {_f(r.before)} |")
    trivial = {name: r for name, r in headline.items() if name.startswith("trivial: ")}
    if trivial:
        best_trivial = max(trivial, key=lambda name: trivial[name].sra)
        margins = [
            f"{name} {headline[name].sra - trivial[best_trivial].sra:+.3f}"
            for name in headline
            if name.startswith(("best single head", "selected"))
        ]
        lines += ["", f"Margin over the best trivial ranker ({best_trivial[9:]}, {_f(trivial[best_trivial].sra)}): "
                  + "; ".join(margins) + "."]  # fmt: skip
    lines += [
        "",
        "## Best heads (all heads, by overall SRA)",
        "",
        "| layer | head | SRA | 95% interval | SRA, redundant after | SRA, redundant before | eligible |",
        "|---:|---:|---:|---|---:|---:|---|",
    ]
    for c in order[:10]:
        layer, head = divmod(c, heads)
        lines.append(
            f"| {layer} | {head} | {_f(float(flat[c]))} | {_f(float(table.low[layer, head]))}-"
            f"{_f(float(table.high[layer, head]))} | {_f(float(table.by_direction['after'][layer, head]))} | "
            f"{_f(float(table.by_direction['before'][layer, head]))} | {'yes' if eligible[layer, head] else 'no'} |"
        )
    lines += [
        "",
        "## Ensembles of eligible heads (head-averaged score)",
        "",
        "| k | top-k SRA | greedy SRA | greedy heads |",
        "|---:|---:|---:|---|",
    ]
    for k in range(1, max(len(top), len(greedy)) + 1):
        t = top[k - 1].sra if k <= len(top) else None
        g = greedy[k - 1] if k <= len(greedy) else None
        heads_text = ", ".join(map(str, g.heads)) if g else "-"
        lines.append(f"| {k} | {_f(t)} | {_f(g.sra if g else None)} | {heads_text} |")
    lines += ["", "## Selected", ""]
    if chosen is None:
        lines.append("No head passes the eligibility rule; no heads file was written.")
    else:
        lines.append(f"Heads {', '.join(map(str, chosen.heads))}: ensemble SRA {_f(chosen.sra)}.")
    return "\n".join(lines) + "\n"

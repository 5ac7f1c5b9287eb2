"""Seeing a store: one rollout (or MoLSAKI example) as a self-contained HTML page and PNG heatmaps.

- AttnPO: the response with each step shaded by its score relative to the uniform reference
  |F|/|o| (red above, blue below, on a log2 scale), a selector for the head mean and every head, and
  a step × head heatmap of log2(score / uniform).
- MoLSAKI: the canonical text with each step shaded by the attention its tokens give the critical
  units (per token, for the layer mean or any layer) and the units marked, and a step × critical-unit
  heatmap of `A` for the layer mean and each requested layer.

The page carries its CSS, script and data inline and loads nothing. Figures use matplotlib's object
API and are written at exactly the requested pixel size.
"""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from attncore.errors import UserError
from attncore.store.store import AttentionStore, ExampleMatrices, RolloutScores

DPI = 100
MIN_FIGURE = (200, 150)
MAX_FIGURE_SIDE = 8000  # 8000 x 8000 RGBA pixels are 256 MB while drawing
LOG2_RANGE = 3.0  # the colour scale saturates at 8x above or below the uniform reference
MAX_TICK_LABELS = 48

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; max-width: 70em; }
h1 { font-size: 1.3em; } .meta { color: #555; } .meta b { color: #222; }
#text { white-space: pre-wrap; font-family: ui-monospace, monospace; font-size: 0.9em; line-height: 1.5;
        border: 1px solid #ccc; padding: 0.8em; }
.step { border-left: 2px solid #888; padding-left: 2px; }
.answer { background: #eee; color: #444; }
.unit { outline: 1px solid #333; border-radius: 2px; background: transparent; }
.legend { display: flex; align-items: center; gap: 0.6em; margin: 0.6em 0; font-size: 0.85em; }
.bar { width: 16em; height: 0.9em; border: 1px solid #999; }
table { border-collapse: collapse; font-size: 0.85em; margin-top: 1em; }
td, th { border: 1px solid #ccc; padding: 0.2em 0.5em; text-align: right; }
td.left, th.left { text-align: left; }
"""

_ATTNPO_SCRIPT = """
const DATA = JSON.parse(document.getElementById("data").textContent);
function colour(ratio) {
  const t = Math.max(-1, Math.min(1, Math.log2(Math.max(ratio, 1e-12)) / DATA.log2_range));
  const [r, g, b] = t >= 0 ? [215, 48, 31] : [33, 102, 172];
  const a = Math.abs(t);
  return `rgb(${Math.round(255 + (r - 255) * a)}, ${Math.round(255 + (g - 255) * a)}, ${Math.round(255 + (b - 255) * a)})`;
}
function paint() {
  const choice = document.getElementById("head").value;
  const scores = choice === "mean" ? DATA.mean : DATA.scores[Number(choice)];
  scores.forEach((score, k) => {
    const ratio = score / DATA.uniform;
    const span = document.getElementById(`step-${k}`);
    span.style.backgroundColor = colour(ratio);
    span.title = `step ${k}: score ${score.toExponential(3)} = ${ratio.toFixed(2)} x uniform`;
    document.getElementById(`score-${k}`).textContent = score.toExponential(3);
    document.getElementById(`ratio-${k}`).textContent = ratio.toFixed(2);
  });
  document.body.dataset.painted = choice;
}
document.getElementById("head").addEventListener("change", paint);
paint();
"""

_MOLSAKI_SCRIPT = """
const DATA = JSON.parse(document.getElementById("data").textContent);
function shade(t, rgb) {
  const a = Math.max(0, Math.min(1, t));
  return `rgb(${rgb.map(c => Math.round(255 + (c - 255) * a)).join(", ")})`;
}
function paint() {
  const choice = document.getElementById("layer").value;
  const A = choice === "mean" ? DATA.mean : DATA.layers[Number(choice)];
  const perToken = A.map((row, s) => row.reduce((x, y) => x + y, 0) / Math.max(1, DATA.step_sizes[s]));
  const rowMax = Math.max(...perToken, 1e-12);
  perToken.forEach((v, s) => {
    const span = document.getElementById(`step-${s}`);
    span.style.backgroundColor = shade(v / rowMax, [253, 141, 60]);
    span.title = `step ${s}: ${v.toFixed(4)} attention per token on critical units`;
    document.getElementById(`mass-${s}`).textContent = v.toFixed(4);
  });
  const received = A[0].map((_, c) => A.reduce((x, row) => x + row[c], 0));
  const colMax = Math.max(...received, 1e-12);
  document.querySelectorAll(".unit").forEach(mark => {
    const c = Number(mark.dataset.unit);
    mark.style.backgroundColor = shade(received[c] / colMax, [116, 196, 118]);
    mark.title = `unit ${c} (${DATA.units[c]}): receives ${received[c].toFixed(4)}`;
  });
  document.body.dataset.painted = choice;
}
document.getElementById("layer").addEventListener("change", paint);
paint();
"""


def safe_name(item_id: str) -> str:
    """A file name for an id such as `gsm8k/test/12#0`."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", item_id).strip("_") or "item"


def _page(title: str, body: str, data: dict, script: str) -> str:
    payload = json.dumps(data).replace("</", "<\\/")  # the JSON cannot close its <script> element
    return (
        f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{_STYLE}</style></head>\n<body>\n{body}\n"
        f'<script type="application/json" id="data">{payload}</script>\n<script>{script}</script>\n'
        "</body></html>\n"
    )


def _head_label(layer: int, head: int) -> str:
    return f"L{layer}H{head}"


def _step_label(k: int, trigger: str | None, kind: str) -> str:
    label = f"{k}: {trigger or kind}"
    return label if len(label) <= 22 else label[:21] + "…"


def _meta_line(store: AttentionStore) -> str:
    model = store.meta["model"]
    revision = model.get("revision") or model.get("commit") or (model.get("weights_sha256") or "")[:12]
    return f"model <b>{html.escape(str(model['name']))}</b> ({html.escape(str(revision))}, {model['dtype']})"


def rollout_html(store: AttentionStore, r: RolloutScores) -> str:
    """The AttnPO page of one scored rollout."""
    parts, cursor = [], 0
    for k, step in enumerate(r.steps):
        a, b = step.chars
        if a > cursor:
            parts.append(html.escape(r.text[cursor:a]))
        parts.append(f'<span class="step" id="step-{k}" data-step="{k}">{html.escape(r.text[a:b])}</span>')
        cursor = b
    parts.append(
        f'<span class="answer" title="the final answer F follows">{html.escape(r.text[cursor:])}</span>'
    )
    options = [f'<option value="mean">mean of {len(r.heads)} heads</option>']
    options += [
        f'<option value="{i}">layer {layer}, head {head}</option>' for i, (layer, head) in enumerate(r.heads)
    ]
    rows = "".join(
        f"<tr><td>{k}</td><td class='left'>{step.kind.name.lower()}</td>"
        f"<td class='left'>{html.escape(step.trigger or '')}</td><td>{step.tokens[0]}-{step.tokens[1]}</td>"
        f"<td id='score-{k}'></td><td id='ratio-{k}'></td></tr>"
        for k, step in enumerate(r.steps)
    )
    correct = "unknown" if r.correct is None else ("correct" if r.correct else "wrong")
    body = f"""<h1>{html.escape(r.rollout_id)}</h1>
<p class="meta">{_meta_line(store)} · {len(r.steps)} steps · answer |F| = {r.answer_tokens} tokens of
|o| = {r.total_tokens} · {correct}</p>
<label>Step score of <select id="head">{"".join(options)}</select></label>
<div class="legend"><span>≤ 1/8 × uniform</span>
<span class="bar" style="background: linear-gradient(to right, rgb(33,102,172), white, rgb(215,48,31))"></span>
<span>≥ 8 × uniform</span><span>· uniform reference |F|/|o| = <b id="uniform">{r.uniform_score:.3e}</b>
(white)</span></div>
<div id="text">{"".join(parts)}</div>
<table><tr><th>step</th><th class="left">kind</th><th class="left">trigger</th><th>tokens</th><th>score</th>
<th>× uniform</th></tr>{rows}</table>"""
    data = {
        "heads": [_head_label(*h) for h in r.heads],
        "scores": r.scores.tolist(),
        "mean": r.mean_scores().tolist(),
        "uniform": r.uniform_score,
        "log2_range": LOG2_RANGE,
    }
    return _page(f"{r.rollout_id} - step scores", body, data, _ATTNPO_SCRIPT)


def example_html(store: AttentionStore, e: ExampleMatrices) -> str:
    """The MoLSAKI page of one example with matrices."""
    unit_at: dict[int, int] = {}
    for c, unit in enumerate(e.units):
        for a, b in unit.spans:
            unit_at.update({i: c for i in range(a, b)})
    parts, cursor = [], 0
    for s, (a, b) in enumerate(e.step_spans):
        if a > cursor:
            parts.append(html.escape(e.text[cursor:a]))
        inner, i = [], a
        while i < b:  # runs of characters with the same unit (or none)
            j = i
            while j < b and unit_at.get(j) == unit_at.get(i):
                j += 1
            piece = html.escape(e.text[i:j])
            c = unit_at.get(i)
            inner.append(piece if c is None else f'<mark class="unit" data-unit="{c}">{piece}</mark>')
            i = j
        parts.append(f'<span class="step" id="step-{s}" data-step="{s}">{"".join(inner)}</span>')
        cursor = b
    parts.append(html.escape(e.text[cursor:]))
    layers = e.matrices.shape[0]
    options = ['<option value="mean">mean over layers</option>']
    options += [f'<option value="{layer}">layer {layer}</option>' for layer in range(layers)]
    rows = "".join(
        f"<tr><td>{s}</td><td>{t1 - t0}</td><td id='mass-{s}'></td></tr>"
        for s, (t0, t1) in enumerate(e.step_tokens)
    )
    body = f"""<h1>{html.escape(e.example_id)}</h1>
<p class="meta">{_meta_line(store)} · {len(e.step_spans)} steps × {len(e.units)} critical units · {layers} layers ·
alignment {html.escape(str(e.alignment_hash)[:12])}</p>
<label>Attention of <select id="layer">{"".join(options)}</select></label>
<div class="legend"><span>steps: attention per token on critical units (darker = more, relative to the
top step)</span><span>· units: attention received from all steps</span></div>
<div id="text">{"".join(parts)}</div>
<table><tr><th>step</th><th>tokens</th><th>per token</th></tr>{rows}</table>"""
    data = {
        "layers": e.matrices.tolist(),
        "mean": e.matrices.mean(0).tolist(),
        "step_sizes": [t1 - t0 for t0, t1 in e.step_tokens],
        "units": [u.label for u in e.units],
    }
    return _page(f"{e.example_id} - stepwise attention", body, data, _MOLSAKI_SCRIPT)


def check_figure_size(size: tuple[int, int]) -> None:
    """Refuse a PNG size too small to draw in, or so large that drawing it would exhaust memory."""
    width, height = size
    if width < MIN_FIGURE[0] or height < MIN_FIGURE[1]:
        raise UserError(
            f"figure size {width}x{height} is too small (at least {MIN_FIGURE[0]}x{MIN_FIGURE[1]} pixels)"
        )
    if max(width, height) > MAX_FIGURE_SIDE:
        raise UserError(
            f"figure size {width}x{height} is too large (at most {MAX_FIGURE_SIDE} pixels a side)"
        )


def _figure(size: tuple[int, int]) -> Figure:
    width, height = size
    return Figure(figsize=(width / DPI, height / DPI), dpi=DPI, layout="constrained")


def _ticks(axis, labels: list[str], **style) -> None:
    """Every label when there are few, else about MAX_TICK_LABELS evenly spaced ones."""
    every = max(1, -(-len(labels) // MAX_TICK_LABELS))
    positions = list(range(0, len(labels), every))
    axis.set_ticks(positions, [labels[i] for i in positions], **style)


def heads_heatmap(r: RolloutScores, path: Path, size: tuple[int, int]) -> Path:
    """Step × head heatmap of log2(score / uniform), the head mean as the first column."""
    ratios = np.column_stack([r.mean_scores().numpy(), r.scores.numpy().T]) / r.uniform_score
    fig = _figure(size)
    ax = fig.add_subplot()
    image = ax.imshow(
        np.log2(np.maximum(ratios, 1e-12)), cmap="RdBu_r", vmin=-LOG2_RANGE, vmax=LOG2_RANGE, aspect="auto"
    )
    heads = ["mean", *(_head_label(*h) for h in r.heads)]
    _ticks(ax.xaxis, heads, rotation=90, fontsize=7)
    _ticks(
        ax.yaxis, [_step_label(k, s.trigger, s.kind.name.lower()) for k, s in enumerate(r.steps)], fontsize=7
    )
    ax.axvline(0.5, color="black", linewidth=1)
    ax.set_xlabel("head (layer, query head)")
    ax.set_ylabel("step")
    ax.set_title(f"{r.rollout_id}: step scores relative to |F|/|o| = {r.uniform_score:.2e}", fontsize=9)
    fig.colorbar(image, ax=ax, label="log2(score / uniform)")
    fig.savefig(path, dpi=DPI)
    return path


def units_heatmap(e: ExampleMatrices, layer: int | None, path: Path, size: tuple[int, int]) -> Path:
    """Step × critical-unit heatmap of `A_l` (`layer`), or of the mean over layers (None)."""
    matrix = e.matrices.mean(0) if layer is None else e.matrices[layer]
    fig = _figure(size)
    ax = fig.add_subplot()
    image = ax.imshow(matrix.numpy(), cmap="viridis", aspect="auto")
    _ticks(ax.xaxis, [f"{c}: {u.label}" for c, u in enumerate(e.units)], rotation=90, fontsize=7)
    _ticks(ax.yaxis, [f"step {s}" for s in range(len(e.step_spans))], fontsize=7)
    ax.set_xlabel("critical unit")
    ax.set_ylabel("step")
    which = "mean over layers" if layer is None else f"layer {layer}"
    ax.set_title(f"{e.example_id}: stepwise attention A ({which})", fontsize=9)
    fig.colorbar(image, ax=ax, label="attention mass (sum over step and unit tokens)")
    fig.savefig(path, dpi=DPI)
    return path


def write_view(
    store: AttentionStore,
    item_id: str,
    out_dir: str | Path,
    *,
    layers: list[int] | None = None,
    size: tuple[int, int] = (1200, 800),
) -> list[Path]:
    """Write the page and heatmaps of one rollout (AttnPO) or example (MoLSAKI); returns their paths.

    `layers` (MoLSAKI) adds one heatmap per layer beside the layer mean.
    """
    check_figure_size(size)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / safe_name(item_id)
    if store.kind == "attnpo":
        if layers:
            raise UserError("--layer applies to MoLSAKI stores; AttnPO heatmaps show every scored head")
        r = store.rollout(item_id)
        if r.scores is None:
            raise UserError(f"rollout {item_id!r} has no scores (skipped: {r.reason})")
        page = stem.with_name(stem.name + ".html")
        page.write_text(rollout_html(store, r))
        return [page, heads_heatmap(r, stem.with_name(stem.name + ".heads.png"), size)]
    e = store.example(item_id)
    if e.matrices is None:
        raise UserError(f"example {item_id!r} has no matrices (skipped: {e.reason})")
    n_layers = e.matrices.shape[0]
    bad = [layer for layer in layers or [] if not 0 <= layer < n_layers]
    if bad:
        raise UserError(f"layers {bad} are outside the store's {n_layers} layers (0-based)")
    page = stem.with_name(stem.name + ".html")
    page.write_text(example_html(store, e))
    paths = [page, units_heatmap(e, None, stem.with_name(stem.name + ".units-mean.png"), size)]
    for layer in layers or []:
        paths.append(units_heatmap(e, layer, stem.with_name(f"{stem.name}.units-L{layer}.png"), size))
    return paths

"""One rescaled response as a self-contained HTML page: each thinking step shaded by its factor γ (white at
1, red towards 0 for Pos-Adv; Neg-Adv steps outlined in blue), with its KFH score against the baseline and,
on testbed problems, the oracle's label, so a reader sees whether AttnPO cut the steps the oracle calls
redundant, and where in the thinking they are."""

from __future__ import annotations

import html
from typing import Any

from attncore.errors import UserError
from attnpo.rescaled_log import oracle_labels

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; max-width: 70em; }
h1 { font-size: 1.3em; } .meta { color: #555; } .meta b { color: #222; }
.step { white-space: pre-wrap; font-family: ui-monospace, monospace; font-size: 0.9em; line-height: 1.45;
        padding: 0.35em 0.6em; margin: 0.25em 0; border: 1px solid #ddd; border-radius: 3px; }
.step.neg { border: 2px solid #2b6cb0; }
.tag { font-family: system-ui, sans-serif; font-size: 0.8em; color: #444; display: block; margin-bottom: 0.2em; }
.redundant { color: #b7410e; font-weight: 600; } .essential { color: #276749; font-weight: 600; }
.answer { white-space: pre-wrap; font-family: ui-monospace, monospace; background: #eee; padding: 0.5em; }
"""


def pick_response(rows: list[dict[str, Any]], step: int | None = None) -> dict[str, Any]:
    """The response with the most attenuated steps (Pos-Adv first, then Neg-Adv) at `step` (default:
    the last step that attenuated any)."""
    if step is not None:
        rows = [r for r in rows if r["step"] == step]
        if not rows:
            raise UserError(f"no rescaled response was logged at step {step}")
    if not rows:
        raise UserError(
            "no rescaled response was logged (log_rescaled=true, and a step with a rescaled response)"
        )

    def weight(row: dict[str, Any]) -> tuple[int, int, int]:
        pos = sum(s["pos"] for s in row["steps"])
        neg = sum(s["neg"] for s in row["steps"])
        return (pos + neg > 0, row["step"], pos * 1000 + neg)

    return max(rows, key=weight)


def _shade(gamma: float) -> str:
    """White at γ = 1, saturated red at γ = 0."""
    g = min(max(gamma, 0.0), 1.0)
    return f"rgb(255, {int(170 + 85 * g)}, {int(170 + 85 * g)})"


def render_response(row: dict[str, Any]) -> str:
    """The HTML page of one logged response."""
    labels = oracle_labels(row)
    steps = row["steps"]
    blocks = []
    for k, step in enumerate(steps):
        why = "Pos-Adv" if step["pos"] else "Neg-Adv" if step["neg"] else "kept"
        label = "" if labels is None or labels[k] is None else labels[k]
        ratio = step["score"] / row["baseline"] if row["baseline"] else float("nan")
        tag = f"step {k + 1}/{len(steps)} · γ = {step['gamma']:.3f} ({why}) · S/S_base = {ratio:.2f}" + (
            f' · oracle: <span class="{label}">{label}</span>' if label else ""
        )
        classes = "step neg" if step["neg"] else "step"
        blocks.append(
            f'<div class="{classes}" style="background: {_shade(step["gamma"])}">'
            f'<span class="tag">{tag}</span>{html.escape(step["text"])}</div>'
        )
    pos = sum(s["pos"] for s in steps)
    neg = sum(s["neg"] for s in steps)
    meta = (
        f"training step <b>{row['step']}</b> · group accuracy p = <b>{row['accuracy']:.3f}</b> · "
        f"advantage A = <b>{row['advantage']:+.4f}</b> · S_base = <b>{row['baseline']:.5f}</b> · "
        f"<b>{pos}</b> steps attenuated by Pos-Adv, <b>{neg}</b> zeroed by Neg-Adv of {len(steps)}"
    )
    problem = (
        ""
        if row.get("problem") is None
        else f"<p><b>Problem</b> ({row['problem_id']}, gold {html.escape(str(row['gold']))}): {html.escape(row['problem'])}</p>"
    )
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>AttnPO rescaled response</title>"
        f"<style>{_STYLE}</style></head><body><h1>What AttnPO did to one response</h1>"
        f"{problem}<p class='meta'>{meta}</p>{''.join(blocks)}"
        f"<p><b>Answer</b> (advantage A on every token)</p><div class='answer'>{html.escape(row['answer'])}</div>"
        "</body></html>"
    )

"""Runs side by side: per benchmark, each run's accuracy and length with deltas and AES against a
baseline run, the paired test of its verdicts against the baseline's on the same samples, a macro
average over the benchmarks every run has, and the mean over seeds of each arm run at several seeds."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from attncore.errors import UserError
from attncore.eval.metrics import aes, mean_or_none, paired_outcomes
from attncore.eval.plots import plot_accuracy_vs_tokens
from attncore.eval.report import (
    RunReport,
    interval_text,
    load_report,
    markdown_table,
    number,
    paired_text,
    percent,
    signed,
)
from attncore.shards import ShardedTable

COMPARE_MD = "compare.md"
COMPARE_PLOT = "accuracy_vs_tokens.png"

HEAD = [
    "benchmark",
    "run",
    "pass@1 % (95% CI)",
    "Δ pass@1",
    "only base / only run (McNemar p)",
    "tokens",
    "Δ tokens",
    "truncated %",
    "AES",
]

SEED_HEAD = ["benchmark", "arm", "seeds", "mean pass@1 %", "per seed %", "Δ mean pass@1", "mean tokens"]

SEED_SUFFIX = re.compile(r"-seed\d+(?=/|$)")
"""Where a run's name says its seed (`runs/dss-seed1/eval`): names equal without it are one arm."""

Verdicts = Mapping[str, Mapping[str, bool]]
"""A run's verdicts per benchmark: `verdicts[label][rollout_id]` (ids `problem#sample`)."""


def run_verdicts(run: Path, labels: Sequence[str]) -> Verdicts:
    """The stored verdict of every rollout of a run folder, for each benchmark whose rollout store is
    there (a run reduced to its `metrics.json` has none)."""
    verdicts = {}
    for label in labels:
        if not any((run / label).glob("manifest-*.json")):
            continue
        table = ShardedTable.read_only(run / label).read_all()
        if table is not None:
            ids, correct = table.column("rollout_id").to_pylist(), table.column("correct").to_pylist()
            verdicts[label] = dict(zip(ids, map(bool, correct), strict=True))
    return verdicts


def _paired_cell(base: Verdicts, run: Verdicts, label: str, is_base: bool) -> str:
    """`only base / only run (p)` over the samples both runs have, or `-` without both stores."""
    if is_base:
        return "base"
    paired = paired_outcomes(base[label], run[label]) if label in base and label in run else None
    return "-" if paired is None else paired_text(paired)


def _delta_cells(
    acc: float, tokens: float, base_acc: float | None, base_tokens: float | None, is_base: bool
) -> list[str]:
    """The Δ pass@1 (points), Δ tokens (relative) and AES cells of a row."""
    if base_acc is None or base_tokens is None:
        return ["-", "-", "-"]
    if is_base:
        return ["base", "base", ""]
    d_tokens = "-" if base_tokens == 0 else f"{100 * (tokens - base_tokens) / base_tokens:+.1f}%"
    return [signed(100 * (acc - base_acc), 1), d_tokens, signed(aes(acc, tokens, base_acc, base_tokens))]


def comparison_table(
    reports: Sequence[RunReport], baseline: RunReport, verdicts: Mapping[str, Verdicts] | None = None
) -> str:
    """Markdown table: one row per (benchmark, run), then the macro average of each run over the
    benchmarks every run has (its AES is the mean of the per-benchmark AES, as in the paper).
    `verdicts[run name]` (see `run_verdicts`) gives the paired test against the baseline."""
    verdicts = verdicts or {}
    base_verdicts = verdicts.get(baseline.name, {})
    labels = list(dict.fromkeys(label for r in reports for label in r.benchmarks))
    rows: list[list[str]] = []
    for label in labels:
        base = baseline.benchmarks.get(label)
        for report in reports:
            m = report.benchmarks.get(label)
            if m is None:
                continue
            d_acc, d_tokens, score = _delta_cells(
                m.pass1,
                m.tokens_mean,
                None if base is None else base.pass1,
                None if base is None else base.tokens_mean,
                report is baseline,
            )
            rows.append(
                [
                    label,
                    report.name,
                    f"{percent(m.pass1)} ({interval_text(m.pass1_low, m.pass1_high)})",
                    d_acc,
                    _paired_cell(base_verdicts, verdicts.get(report.name, {}), label, report is baseline),
                    number(m.tokens_mean),
                    d_tokens,
                    percent(m.truncation_rate),
                    score,
                ]
            )
    shared = [label for label in labels if all(label in r.benchmarks for r in reports)]
    if len(shared) > 1:
        base_acc = mean_or_none(baseline.benchmarks[label].pass1 for label in shared)
        base_tokens = mean_or_none(baseline.benchmarks[label].tokens_mean for label in shared)
        for report in reports:
            acc = mean_or_none(report.benchmarks[label].pass1 for label in shared)
            tokens = mean_or_none(report.benchmarks[label].tokens_mean for label in shared)
            d_acc, d_tokens, _ = _delta_cells(acc, tokens, base_acc, base_tokens, report is baseline)
            scores = [
                aes(
                    report.benchmarks[label].pass1,
                    report.benchmarks[label].tokens_mean,
                    baseline.benchmarks[label].pass1,
                    baseline.benchmarks[label].tokens_mean,
                )
                for label in shared
            ]
            score = "" if report is baseline else signed(mean_or_none(s for s in scores if s is not None))
            rows.append(["average", report.name, percent(acc), d_acc, "", number(tokens), d_tokens, "", score])
    note = (
        f"Baseline: {baseline.name}. Δ pass@1 in points; only base / only run: samples (same problem and"
        " sample index) only the baseline / only this run got right, with the two-sided exact McNemar"
        " p-value of that split; AES definition assumed (attnpo-spec §9)."
    )
    if len(shared) > 1:
        note += f" Average over the {len(shared)} benchmarks every run has."
    return markdown_table(HEAD, rows) + "\n\n" + note


def seed_arms(names: Sequence[str]) -> dict[str, list[str]]:
    """The arms run at two or more seeds: `{arm: [run names]}`, the arm being a run's name without its
    `-seed<N>` part, in the order the runs came."""
    arms: dict[str, list[str]] = {}
    for name in names:
        if SEED_SUFFIX.search(name):
            arms.setdefault(SEED_SUFFIX.sub("", name), []).append(name)
    return {arm: runs for arm, runs in arms.items() if len(runs) > 1}


def seed_means_table(reports: Sequence[RunReport], baseline: RunReport) -> str | None:
    """Markdown table of each arm run at several seeds (see `seed_arms`): per benchmark, the mean pass@1
    over the seeds that have it, each seed's pass@1, and the difference of means against the baseline's
    arm (or the baseline run alone when it is not one of them). None when no arm has two seeds."""
    arms = seed_arms([r.name for r in reports])
    if not arms:
        return None
    by_name = {r.name: r for r in reports}
    base_arm = next((arm for arm, names in arms.items() if baseline.name in names), None)
    base_runs = [by_name[n] for n in arms[base_arm]] if base_arm is not None else [baseline]
    labels = list(dict.fromkeys(label for r in reports for label in r.benchmarks))
    rows: list[list[str]] = []
    for label in labels:
        base_mean = mean_or_none(r.benchmarks[label].pass1 for r in base_runs if label in r.benchmarks)
        for arm, names in arms.items():
            metrics = [by_name[n].benchmarks[label] for n in names if label in by_name[n].benchmarks]
            if not metrics:
                continue
            mean = mean_or_none(m.pass1 for m in metrics)
            if arm == base_arm:
                delta = "base"
            else:
                delta = "-" if base_mean is None or mean is None else signed(100 * (mean - base_mean), 1)
            rows.append(
                [
                    label,
                    arm,
                    str(len(metrics)),
                    percent(mean),
                    ", ".join(percent(m.pass1) for m in metrics),
                    delta,
                    number(mean_or_none(m.tokens_mean for m in metrics)),
                ]
            )
    base_name = base_arm if base_arm is not None else baseline.name
    note = (
        f"Arms run at several seeds (run names equal but for `-seed<N>`): mean over the seeds, each seed in"
        f" the order given; Δ mean pass@1 in points against {base_name}."
    )
    return markdown_table(SEED_HEAD, rows) + "\n\n" + note


def _named(reports: list[RunReport], paths: list[Path]) -> list[RunReport]:
    """Runs that share a name are told apart by their folder."""
    names = [r.name for r in reports]
    return [
        RunReport(str(path), r.model, r.benchmarks, r.skipped, r.baseline) if names.count(r.name) > 1 else r
        for r, path in zip(reports, paths, strict=True)
    ]


def write_comparison(runs: Sequence[Path], baseline: Path | None = None, out: Path | None = None) -> str:
    """Compare run folders (the baseline is `baseline` or the first run); with `out`, also write
    `compare.md` and the accuracy-vs-tokens plot there. Returns the table."""
    if not runs:
        raise UserError("compare needs at least one run folder")
    paths = list(runs)
    if baseline is not None and baseline not in paths:
        paths.insert(0, baseline)
    reports = _named([load_report(path) for path in paths], paths)
    base = reports[paths.index(baseline)] if baseline is not None else reports[0]
    verdicts = {r.name: run_verdicts(path, list(r.benchmarks)) for r, path in zip(reports, paths, strict=True)}
    text = comparison_table(reports, base, verdicts)
    seeds = seed_means_table(reports, base)
    if seeds is not None:
        text += "\n\n" + seeds
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / COMPARE_MD).write_text(text + "\n")
        plot_accuracy_vs_tokens(reports, out / COMPARE_PLOT)
    return text

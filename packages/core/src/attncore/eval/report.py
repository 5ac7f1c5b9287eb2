"""What an evaluation run reports: metrics per benchmark from its graded rollouts, as JSON and Markdown.

A run folder holds `metrics.json` (read back by `attncore eval compare`) and `metrics.md`. Accuracies
are fractions in JSON and percentages in Markdown; token counts are completion tokens (EOS included).
"""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from attncore.errors import UserError
from attncore.eval.metrics import (
    PairedOutcomes,
    aes,
    mean_or_none,
    mean_pass_at_k,
    median_or_none,
    pass_at_1_interval,
    pass_k_values,
)
from attncore.shards import write_json_atomic

METRICS_JSON = "metrics.json"
METRICS_MD = "metrics.md"


@dataclass
class BenchmarkMetrics:
    """Headline numbers of one benchmark of a run."""

    dataset: str
    problems: int
    samples: int
    rollouts: int
    pass1: float
    pass1_low: float | None
    pass1_high: float | None
    pass_k: dict[int, float]
    tokens_mean: float
    tokens_median: float
    tokens_mean_correct: float | None
    tokens_median_correct: float | None
    tokens_mean_incorrect: float | None
    tokens_median_incorrect: float | None
    thinking_tokens_mean: float
    answer_tokens_mean: float
    truncation_rate: float
    grade_mode: str
    grade_reasons: dict[str, int]
    aes: float | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BenchmarkMetrics:
        data = dict(data)
        data["pass_k"] = {int(k): v for k, v in data["pass_k"].items()}
        return cls(**data)


def benchmark_metrics(dataset: str, table: pa.Table) -> BenchmarkMetrics:
    """Metrics of one benchmark from its graded rollout table (one row per sample)."""
    rows = table.select(
        [
            "problem_id",
            "correct",
            "n_completion_tokens",
            "n_thinking_tokens",
            "n_answer_tokens",
            "finish_reason",
            "grade_mode",
            "grade_reason",
        ]
    ).to_pylist()
    if not rows:
        raise ValueError(f"no rollouts for {dataset}")
    by_problem: dict[str, list[bool]] = defaultdict(list)
    for row in rows:
        by_problem[row["problem_id"]].append(bool(row["correct"]))
    outcomes = list(by_problem.values())
    samples = min(len(o) for o in outcomes)
    interval = pass_at_1_interval(outcomes)
    lengths = [row["n_completion_tokens"] for row in rows]
    right = [row["n_completion_tokens"] for row in rows if row["correct"]]
    wrong = [row["n_completion_tokens"] for row in rows if not row["correct"]]
    return BenchmarkMetrics(
        dataset=dataset,
        problems=len(outcomes),
        samples=samples,
        rollouts=len(rows),
        pass1=interval.mean,
        pass1_low=interval.low,
        pass1_high=interval.high,
        pass_k={k: mean_pass_at_k(outcomes, k) for k in pass_k_values(samples)},
        tokens_mean=mean_or_none(lengths),
        tokens_median=median_or_none(lengths),
        tokens_mean_correct=mean_or_none(right),
        tokens_median_correct=median_or_none(right),
        tokens_mean_incorrect=mean_or_none(wrong),
        tokens_median_incorrect=median_or_none(wrong),
        thinking_tokens_mean=mean_or_none(row["n_thinking_tokens"] for row in rows),
        answer_tokens_mean=mean_or_none(row["n_answer_tokens"] for row in rows),
        truncation_rate=sum(row["finish_reason"] == "length" for row in rows) / len(rows),
        grade_mode=",".join(sorted({row["grade_mode"] for row in rows})),
        grade_reasons=dict(sorted(Counter(row["grade_reason"] for row in rows).items())),
    )


@dataclass
class RunReport:
    """A run's metrics per benchmark, the benchmarks it had to skip (with why), and AES when a
    baseline run was named."""

    name: str
    model: str
    benchmarks: dict[str, BenchmarkMetrics]
    skipped: dict[str, str] = field(default_factory=dict)
    baseline: str | None = None

    @property
    def mean_pass1(self) -> float | None:
        return mean_or_none(m.pass1 for m in self.benchmarks.values())

    @property
    def mean_tokens(self) -> float | None:
        return mean_or_none(m.tokens_mean for m in self.benchmarks.values())

    @property
    def mean_aes(self) -> float | None:
        return mean_or_none(m.aes for m in self.benchmarks.values() if m.aes is not None)

    def with_aes(self, baseline: RunReport, baseline_name: str) -> RunReport:
        """This report with AES per benchmark against `baseline` (benchmarks it lacks get None)."""
        scored = {}
        for label, m in self.benchmarks.items():
            base = baseline.benchmarks.get(label)
            score = None if base is None else aes(m.pass1, m.tokens_mean, base.pass1, base.tokens_mean)
            scored[label] = BenchmarkMetrics(**{**asdict(m), "aes": score})
        return RunReport(self.name, self.model, scored, dict(self.skipped), baseline_name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "model": self.model,
            "baseline": self.baseline,
            "average": {"pass1": self.mean_pass1, "tokens_mean": self.mean_tokens, "aes": self.mean_aes},
            "benchmarks": {label: asdict(m) for label, m in self.benchmarks.items()},
            "skipped": self.skipped,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunReport:
        benchmarks = {label: BenchmarkMetrics.from_dict(m) for label, m in data["benchmarks"].items()}
        return cls(data["name"], data["model"], benchmarks, data.get("skipped", {}), data.get("baseline"))

    def save(self, folder: str | Path) -> None:
        """Write `metrics.json` and `metrics.md` into the run folder."""
        folder = Path(folder)
        write_json_atomic(folder / METRICS_JSON, self.to_dict())
        (folder / METRICS_MD).write_text(self.markdown() + "\n")

    def markdown(self) -> str:
        """The run's table: one row per benchmark and a macro average."""
        head = [
            "benchmark",
            "problems x n",
            "pass@1 % (95% CI)",
            "pass@k",
            "tokens mean / median",
            "correct mean / median",
            "incorrect mean / median",
            "thinking / answer",
            "truncated %",
        ]
        if self.baseline is not None:
            head.append("AES")
        rows = []
        for label, m in self.benchmarks.items():
            row = [
                label,
                f"{m.problems} x {m.samples}",
                f"{percent(m.pass1)} ({interval_text(m.pass1_low, m.pass1_high)})",
                ", ".join(f"@{k} {percent(v)}" for k, v in m.pass_k.items() if k > 1) or "-",
                f"{number(m.tokens_mean)} / {number(m.tokens_median)}",
                f"{number(m.tokens_mean_correct)} / {number(m.tokens_median_correct)}",
                f"{number(m.tokens_mean_incorrect)} / {number(m.tokens_median_incorrect)}",
                f"{number(m.thinking_tokens_mean)} / {number(m.answer_tokens_mean)}",
                percent(m.truncation_rate),
            ]
            if self.baseline is not None:
                row.append(signed(m.aes))
            rows.append(row)
        if len(self.benchmarks) > 1:
            average = ["average", "", percent(self.mean_pass1), "", number(self.mean_tokens), "", "", "", ""]
            if self.baseline is not None:
                average.append(signed(self.mean_aes))
            rows.append(average)
        lines = [f"## {self.name} ({self.model})", "", markdown_table(head, rows)]
        if self.baseline is not None:
            lines += ["", f"AES against `{self.baseline}` (definition assumed, attnpo-spec §9)."]
        for label, reason in self.skipped.items():
            lines += ["", f"skipped {label}: {reason}"]
        return "\n".join(lines)


def load_report(run: str | Path) -> RunReport:
    """The report of a run folder (or of a `metrics.json` file) written by `attncore eval`."""
    path = Path(run)
    target = path / METRICS_JSON if path.is_dir() else path
    if not target.is_file():
        raise UserError(f"no evaluation results at {path} (expected {METRICS_JSON} from `attncore eval`)")
    try:
        return RunReport.from_dict(json.loads(target.read_text()))
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise UserError(f"{target} is not an evaluation report ({type(exc).__name__}: {exc})") from None


def percent(value: float | None) -> str:
    """A share in a column headed "(%)": one decimal, no sign."""
    return "-" if value is None else f"{100 * value:.1f}"


def percent_cell(value: float | None) -> str:
    """A share as a table cell that carries its own sign: one decimal percent, a dash when there is none."""
    return "—" if value is None else f"{100 * value:.1f}%"


def paired_text(paired: PairedOutcomes) -> str:
    """A paired comparison as a table cell: `only base / only run (p = exact McNemar p)`."""
    return f"{paired.only_base} / {paired.only_run} (p = {paired.p_value:.3f})"


def interval_text(low: float | None, high: float | None) -> str:
    return "-" if low is None or high is None else f"{100 * low:.1f}-{100 * high:.1f}"


def number(value: float | None) -> str:
    return (
        "-" if value is None or math.isnan(value) else f"{value:.0f}" if abs(value) >= 100 else f"{value:.1f}"
    )


def signed(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:+.{digits}f}"


def markdown_table(head: list[str], rows: list[list[str]]) -> str:
    """A Markdown table with columns padded to equal width (readable as plain text too)."""
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(head), rule, *(line(r) for r in rows)])

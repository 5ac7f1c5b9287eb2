"""Evaluation harness: benchmark suites on the rollout store and graders, metrics, reports, comparisons.

- `config.SuiteConfig`: one model, benchmarks each with their own samples, sampling and grading;
- `suite.run_suite`: rollouts, grades and metrics per benchmark, resumable, then the run's report;
- `metrics`: pass@k, pass@1 intervals, length statistics, AES (pure functions);
- `report`: per-benchmark metrics from graded rollouts, `metrics.json` / `metrics.md`;
- `compare`: runs side by side with deltas and AES; `plots`: accuracy vs length, length histograms.
"""

from attncore.eval.compare import comparison_table, write_comparison
from attncore.eval.config import BenchmarkConfig, SamplingOverrides, SuiteConfig
from attncore.eval.report import BenchmarkMetrics, RunReport, benchmark_metrics, load_report
from attncore.eval.suite import run_suite

__all__ = [
    "BenchmarkConfig",
    "BenchmarkMetrics",
    "RunReport",
    "SamplingOverrides",
    "SuiteConfig",
    "benchmark_metrics",
    "comparison_table",
    "load_report",
    "run_suite",
    "write_comparison",
]

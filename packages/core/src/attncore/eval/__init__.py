"""Evaluation harness: benchmark suites on the rollout store and graders, metrics, reports, comparisons.

- `config.SuiteConfig`: one model, benchmarks each with their own samples, sampling and grading;
- `suite.run_suite`: rollouts, grades and metrics per benchmark, resumable, then the run's report;
- `metrics`: pass@k, pass@1 intervals, length statistics, AES, paired McNemar tests (pure functions);
- `report`: per-benchmark metrics from graded rollouts, `metrics.json` / `metrics.md`;
- `compare`: runs side by side with deltas, AES and paired tests against the baseline, and seed means;
- `plots`: accuracy vs length, length histograms.
"""

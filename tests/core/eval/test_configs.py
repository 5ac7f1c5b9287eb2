"""The shipped suite configs validate and encode the protocols of the two specs."""

from __future__ import annotations

from pathlib import Path

import pytest

from attncore.config import load_config
from attncore.errors import ConfigError
from attncore.eval.config import SuiteConfig

SUITES = Path(__file__).resolve().parents[3] / "experiments" / "eval"


def test_attnpo_suite_follows_the_spec_protocol():
    cfg = load_config(SuiteConfig, SUITES / "attnpo_suite.yaml")
    samples = {label: cfg.sampling_for(label).n for label in cfg.benchmarks}
    assert samples == {
        "gsm8k": 4,
        "math500": 4,
        "olympiadbench_581": 4,
        "aime24": 16,
        "aime25": 16,
        "amc23": 16,
        "gpqa_diamond": 4,
        "mmlu": 1,
        "livecodebench": 4,
    }
    sampling = cfg.sampling_for("aime24")
    assert (sampling.temperature, sampling.top_p, sampling.max_tokens) == (0.6, 0.95, 16384)
    assert cfg.job("math500").grading.mode == "attnpo" and cfg.job("gpqa_diamond").grading.mode == "choice"
    lcb = cfg.job("livecodebench")
    assert (lcb.data.split, lcb.grading.mode, lcb.prompt.instruction) == ("v6", "code", "")
    assert (
        load_config(SuiteConfig, SUITES / "attnpo_suite.yaml", ["sampling.max_tokens=8192"])
        .sampling_for("amc23")
        .max_tokens
        == 8192
    ), "max tokens configurable"


def test_distill_and_cpu_suites():
    distill = load_config(SuiteConfig, SUITES / "distill_suite.yaml")
    assert list(distill.benchmarks) == ["svamp", "asdiv", "gsm8k"]
    assert distill.job("svamp").data.split == "test200"
    assert all(distill.sampling_for(label).temperature == 0.0 for label in distill.benchmarks)
    cpu = load_config(SuiteConfig, SUITES / "cpu_suite.yaml")
    job = cpu.job("gsm8k")
    assert (job.model.name, job.prompt.template, job.grading.mode) == (
        "smollm2-135m-instruct",
        "plain",
        "gsm8k",
    )
    assert job.out == str(Path("runs/eval/cpu") / "gsm8k")


def test_unknown_datasets_and_bad_labels_are_config_errors():
    with pytest.raises(ConfigError, match=r"benchmark 'gsm9k': unknown dataset 'gsm9k' \(known: gsm8k, "):
        load_config(SuiteConfig, None, ["benchmarks.gsm9k.limit=2"])
    with pytest.raises(ConfigError, match="must be letters, digits"):
        load_config(SuiteConfig, None, ["benchmarks={'a/b': {dataset: gsm8k}}"])
    hub = load_config(SuiteConfig, None, ["benchmarks.mine.hub_id=me/my-set"])
    assert hub.job("mine").data.hub_id == "me/my-set"


def test_synthetic_benchmarks_generate_their_set():
    suite = load_config(
        SuiteConfig, None, ["benchmarks={held: {dataset: synthetic, synthetic: {count: 4, seed: 5}}}"]
    )
    data = suite.job("held").data
    assert data.name == "synthetic" and data.synthetic.count == 4 and data.synthetic.seed == 5
    with pytest.raises(ConfigError, match="dataset 'synthetic' and its synthetic set come together"):
        load_config(SuiteConfig, None, ["benchmarks={held: {dataset: synthetic}}"])
    with pytest.raises(ConfigError, match="come together"):
        load_config(SuiteConfig, None, ["benchmarks={gsm8k: {synthetic: {count: 4}}}"])

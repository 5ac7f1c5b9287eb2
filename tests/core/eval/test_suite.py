"""The whole harness with real generation: the embedded model, resume after a kill, reuse, refusal of a
changed config, skipped hub-only sets, and one-line CLI errors."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch

from attncore.config import load_config
from attncore.data import BUNDLED_PROBLEMS
from attncore.errors import UserError
from attncore.eval.config import SuiteConfig
from attncore.eval.report import load_report
from attncore.eval.suite import run_suite
from attncore.rollout.store import RolloutStore


def write_gsm8k(data: Path, count: int) -> Path:
    """A GSM8K-format test file: the bundled problems first, then generated sums."""
    rows = [json.loads(line) for line in BUNDLED_PROBLEMS.read_text().splitlines() if line.strip()]
    rows += [
        {"question": f"What is {i} + {i}?", "answer": f"{i} + {i} = {2 * i}\n#### {2 * i}"}
        for i in range(count)
    ]
    folder = data / "benchmarks" / "gsm8k"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "test.jsonl").write_text(
        "".join(json.dumps({"idx": i, **r}) + "\n" for i, r in enumerate(rows[:count]))
    )
    return data


def suite_args(model: str, out: Path, data: Path, limit: int, max_tokens: int) -> list[str]:
    return [
        f"model.name={model}",
        f"out={out}",
        f"data_dir={data}",
        f"benchmarks.gsm8k.limit={limit}",
        f"sampling.max_tokens={max_tokens}",
        "batch_size=2",
        "threads=1",
        "grading.workers=1",
        "tracking.mode=disabled",
    ]


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "attncore", "eval", *args], capture_output=True, text=True)


@pytest.fixture
def one_torch_thread():
    """One thread: on a CPU shared with other jobs, two OpenMP threads can run ten times slower."""
    threads = torch.get_num_threads()
    yield 1
    torch.set_num_threads(threads)


@pytest.mark.slow
def test_embedded_model_through_the_harness(tmp_path, one_torch_thread):
    """SmolLM2 answers three GSM8K-style problems greedily; everything a run writes is there."""
    data = write_gsm8k(tmp_path / "data", 3)
    cfg = SuiteConfig.model_validate(
        {
            "out": str(tmp_path / "smol"),
            "data_dir": str(data),
            "sampling": {"max_tokens": 160},
            "batch_size": 3,
            "threads": one_torch_thread,
            "benchmarks": {"gsm8k": {"limit": 3}},
            "grading": {"workers": 1},
            "tracking": {"mode": "disabled"},
        }
    )
    report = run_suite(cfg, progress=False)
    m = report.benchmarks["gsm8k"]
    assert (m.problems, m.samples, m.rollouts, m.grade_mode) == (3, 1, 3, "gsm8k")
    rollouts = RolloutStore.open_existing(tmp_path / "smol" / "gsm8k").read()
    assert [r.gold for r in rollouts] == ["14", "3", "70"]
    lengths = [len(r.completion_ids) for r in rollouts]
    assert m.tokens_mean == pytest.approx(sum(lengths) / 3) and max(lengths) <= 160
    assert m.truncation_rate == sum(r.finish_reason == "length" for r in rollouts) / 3
    assert m.pass1 == sum(r.extra["correct"] for r in rollouts) / 3
    assert m.grade_reasons == dict(Counter(r.extra["grade_reason"] for r in rollouts))
    assert m.grade_reasons.get("ok", 0) >= 2, "SmolLM2 ends its answers with a `#### N` line"
    assert (m.thinking_tokens_mean, m.answer_tokens_mean) == (0.0, m.tokens_mean)
    assert load_report(tmp_path / "smol") == report
    for name in ("metrics.md", "length_histograms.png", "config.resolved.yaml", "gsm8k/summary.json"):
        assert (tmp_path / "smol" / name).is_file(), name


@pytest.mark.slow
def test_killed_eval_resumes_and_a_rerun_reuses_everything(tiny_model_dir, tmp_path, kill_after_shards, one_torch_thread):
    model = str(tiny_model_dir("llama"))
    data = write_gsm8k(tmp_path / "data", 24)
    out = tmp_path / "run"
    args = [*suite_args(model, out, data, limit=24, max_tokens=24), "--quiet"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "attncore", "eval", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    manifest = out / "gsm8k" / "manifest-main.json"
    kill_after_shards(proc, manifest, 180)
    before = {r.rollout_id: r.completion_ids for r in RolloutStore.open_existing(out / "gsm8k").read()}
    assert 4 <= len(before) < 24, "killed midway"
    assert not (out / "metrics.json").exists()

    cfg = load_config(SuiteConfig, None, suite_args(model, out, data, limit=24, max_tokens=24))
    report = run_suite(cfg, progress=False)
    after = RolloutStore.open_existing(out / "gsm8k").read()
    assert len(after) == 24 and len({r.rollout_id for r in after}) == 24
    assert {r.rollout_id: r.completion_ids for r in after if r.rollout_id in before} == before
    summary = json.loads((out / "gsm8k" / "summary.json").read_text())
    assert summary["generated_now"] == 24 - len(before)
    assert report.benchmarks["gsm8k"].rollouts == 24

    again = run_suite(cfg, progress=False)
    assert json.loads((out / "gsm8k" / "summary.json").read_text())["generated_now"] == 0
    assert again == report


@pytest.mark.slow
def test_skips_unloadable_sets_and_refuses_a_changed_config(tiny_model_dir, tmp_path):
    data = write_gsm8k(tmp_path / "data", 2)
    cfg = SuiteConfig.model_validate(
        {
            "model": {"name": str(tiny_model_dir("llama"))},
            "out": str(tmp_path / "run"),
            "data_dir": str(data),
            "sampling": {"max_tokens": 6},
            "benchmarks": {
                "gsm8k": {"limit": 2},
                "gpqa": {"dataset": "gpqa_diamond", "grading": {"mode": "choice"}},
            },
            "grading": {"workers": 1},
            "tracking": {"mode": "disabled"},
        }
    )
    report = run_suite(cfg, progress=False)
    assert list(report.benchmarks) == ["gsm8k"] and list(report.skipped) == ["gpqa"]
    assert report.skipped["gpqa"].startswith("could not load 'Idavidrein/gpqa'")
    assert "skipped gpqa: could not load" in (tmp_path / "run" / "metrics.md").read_text()

    longer = cfg.model_copy(update={"sampling": cfg.sampling.model_copy(update={"max_tokens": 7})})
    with pytest.raises(UserError, match=r"differs in: sampling\.max_tokens"):
        run_suite(longer, progress=False)
    replaced = run_suite(longer.model_copy(update={"overwrite": True}), progress=False)
    assert replaced.benchmarks["gsm8k"].rollouts == 2


@pytest.mark.slow
def test_refilled_slots_give_the_static_batches_greedy_answers(tiny_model_dir, tmp_path, one_torch_thread):
    """`refill: true` only changes how the sequences share the engine: greedy completions are the same."""
    data = write_gsm8k(tmp_path / "data", 7)
    model = str(tiny_model_dir("llama"))
    completions = {}
    for refill in (False, True):
        out = tmp_path / f"refill-{refill}"
        args = [*suite_args(model, out, data, limit=7, max_tokens=20), f"refill={refill}"]
        cfg = load_config(SuiteConfig, None, args)
        assert cfg.job("gsm8k").refill is refill
        report = run_suite(cfg, progress=False)
        store = RolloutStore.open_existing(out / "gsm8k")
        assert store.meta.get("refill", False) is refill and ("batch_size" in store.meta) is not refill
        completions[refill] = {r.rollout_id: r.completion_ids for r in store.read()}
        assert report.benchmarks["gsm8k"].rollouts == 7
    assert completions[True] == completions[False]  # the engines' own tests cover stops and varied lengths


def test_gold_answers_are_checked_before_the_model_loads(tmp_path):
    data = write_gsm8k(tmp_path / "data", 2)
    cfg = SuiteConfig.model_validate(
        {
            "model": {"name": "no-such-model"},
            "out": str(tmp_path / "run"),
            "data_dir": str(data),
            "benchmarks": {"gsm8k": {"grading": {"mode": "choice"}}},
            "tracking": {"mode": "disabled"},
        }
    )
    with pytest.raises(
        UserError, match=r"benchmark 'gsm8k' \(gsm8k/test/0\): choice grading needs option letters"
    ):
        run_suite(cfg, progress=False)
    absent = cfg.model_copy(update={"data_dir": str(tmp_path / "empty")})
    with pytest.raises(UserError, match="'gsm8k' split 'test' not found at"):
        run_suite(absent, progress=False)  # a local set that does not load is an error, not skipped
    nothing = cfg.model_copy(update={"benchmarks": {"gpqa_diamond": cfg.benchmarks["gsm8k"]}})
    with pytest.raises(UserError, match="no benchmark of the suite could be loaded: could not load"):
        run_suite(nothing, progress=False)


@pytest.mark.slow
def test_cli_errors_are_one_line(tmp_path):
    unknown = cli(f"out={tmp_path}", "benchmarks.gsm8k.sampling.temprature=0.6")
    assert unknown.returncode == 2
    assert unknown.stderr.strip().splitlines() == [
        "error: command-line override: unknown key 'benchmarks.gsm8k.sampling.temprature' (value 0.6)"
    ]
    missing = cli("--config", str(tmp_path / "absent.yaml"))
    assert missing.returncode == 2
    assert missing.stderr.strip().splitlines() == [
        f"error: config file not found: {tmp_path / 'absent.yaml'}"
    ]
    label = cli(f"out={tmp_path}", "benchmarks={'bad/label': {}}")
    assert (
        label.returncode == 2
        and "must be letters, digits" in label.stderr
        and "Traceback" not in label.stderr
    )
    absent = cli("compare", str(tmp_path / "absent"))
    assert absent.returncode == 2
    assert absent.stderr.strip().splitlines() == [
        f"error: no evaluation results at {tmp_path / 'absent'} (expected metrics.json from `attncore eval`)"
    ]

"""The CPU side of benchmarks/gpu_check.sh: each part of benchmarks/gpu_check.py run on CPU with a tiny
model (capture against eager, refill vs HF greedy rollouts, a short AttnPO run), the greedy comparison,
the report of crashed and timed-out parts, and the script itself, whose GPU parts skip here."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
gpu_check = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gpu_check)


def run_part(*argv: str, result: Path) -> dict:
    assert gpu_check.main([*argv, "--device", "cpu", "--result", str(result)]) == 0
    return json.loads(result.read_text())


def test_compare_greedy_counts_agreement():
    reference = [[1, 2, 3, 4], [5, 6, 7], [8, 9], [1, 1, 1]]
    candidate = [[1, 2, 3, 4], [5, 6, 0], [8, 9, 10], [2, 1, 1]]
    got = gpu_check.compare_greedy(reference, candidate, prefix=2)
    assert got["first_difference"] == [None, 2, 2, 0]
    assert (got["prompts"], got["identical"], got["prefix_agree"]) == (4, 1, 3)
    with pytest.raises(ValueError, match="2 reference completions but 1 candidate"):
        gpu_check.compare_greedy([[1], [2]], [[1]], prefix=1)


def test_strip_eos_drops_only_trailing_eos():
    assert gpu_check.strip_eos([4, 2, 5, 2, 2], {2}) == [4, 2, 5]
    assert gpu_check.strip_eos([2], {2}) == []


def test_report_turns_crashes_and_timeouts_into_fails(tmp_path, capsys):
    (tmp_path / "env.json").write_text(json.dumps(gpu_check.result("pass", "H200")))
    (tmp_path / "capture.json").write_text(json.dumps(gpu_check.result("skip", "no CUDA device visible")))
    (tmp_path / "rollouts.rc").write_text("124\n")
    (tmp_path / "rollouts.log").write_text("loading\nINFO generating\n")
    (tmp_path / "attnpo.rc").write_text("1\n")
    (tmp_path / "attnpo.log").write_text("Traceback ...\nRuntimeError: CUDA out of memory\n\n")
    assert gpu_check.main(["report", str(tmp_path)]) == 1
    printed = capsys.readouterr().out
    assert printed == (tmp_path / "gpu_check.md").read_text().strip("`\n") + "\n"
    lines = printed.splitlines()
    assert lines[0].endswith("1 pass, 2 fail, 1 skip")
    assert lines[3].split()[:2] == ["rollouts", "fail"] and "timed out" in lines[3]
    assert "exit 1, no result; last log line: RuntimeError: CUDA out of memory" in lines[4]


def test_capture_part_on_cpu(tiny_model_dir, tmp_path):
    model = tiny_model_dir("qwen2")
    got = run_part("capture", "--model", str(model), "--length", "30", result=tmp_path / "c.json")
    assert got["status"] == "pass", got["summary"]
    assert got["max_prob_diff"] <= gpu_check.PROB_TOL and got["max_logit_diff"] == 0.0
    assert [tuple(h) for h in got["heads"]] == gpu_check.spread_heads(4, 4)


def test_rollouts_part_on_cpu(tiny_model_dir, tmp_path):
    model = str(tiny_model_dir("qwen2"))
    common = ("--model", model, "--prompts", "6", "--slots", "4", "--max-tokens", "12", "--prefix", "12")
    got = run_part("rollouts", "--engine", "hf", *common, result=tmp_path / "r.json")
    assert got["status"] == "pass", got["summary"]
    assert (got["prompts"], got["prefix_agree"]) == (6, 6)
    assert got["reference_tokens"] > 0 and got["candidate_tokens"] > 0
    got = run_part("rollouts", "--engine", "vllm", *common, result=tmp_path / "v.json")
    if importlib.util.find_spec("vllm") is None:
        assert got["status"] == "skip" and got["summary"].startswith("vllm not installed")
        assert got["reference_tokens"] > 0  # the reference engine still ran and is reported


@pytest.mark.slow
def test_attnpo_part_on_cpu(tiny_model_dir, tmp_path):
    model = str(tiny_model_dir("qwen2"))
    got = run_part(
        "attnpo", "--engine", "refill", "--model", model, "--steps", "2", "--max-tokens", "16",
        "--work", str(tmp_path / "run"), result=tmp_path / "a.json",
    )  # fmt: skip
    assert got["status"] == "pass", got["summary"]
    assert got["steps"] == 2 and [m["step"] for m in got["metrics"]] == [1, 2]


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU the script runs its real parts")
def test_script_reports_every_part_on_its_own(tmp_path):
    env = {**os.environ, "OUT": str(tmp_path), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [str(ROOT / "benchmarks" / "gpu_check.sh")], env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr
    report = (tmp_path / "gpu_check.md").read_text().splitlines()
    assert report[1].endswith("0 pass, 0 fail, 4 skip")
    assert [line.split()[:2] for line in report[2:6]] == [
        ["env", "skip"],
        ["capture", "skip"],
        ["rollouts", "skip"],
        ["attnpo", "skip"],
    ]
    assert all((tmp_path / f"{part}.json").is_file() for part in gpu_check.PARTS)

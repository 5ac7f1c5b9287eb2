"""The README's quickstart (experiments/attnpo/quickstart/launch.sh) end to end at a tiny size: a scratch
model that memorised eight one-operation testbed traces stands in for the micro model, so every stage
(build, heads, train, report, view) runs on real outputs of the one before it."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from attncore.config import load_config
from attncore.synthetic.testbed_model import TestbedModelConfig
from attnpo.find_heads import FindHeadsConfig
from attnpo.train import TrainConfig

REPO = Path(__file__).resolve().parents[2]
FOLDER = REPO / "experiments" / "attnpo" / "quickstart"
STAGES = ["build", "heads", "train", "report", "view"]

PROBLEMS = {"difficulty": [1, 1], "number_range": [2, 9], "factor_range": [2, 3], "max_value": 50}
DATA = {"count": 8, "seed": 3, "id_prefix": "tiny", "problem": PROBLEMS, "trace": {"redundancy": [0.3, 0.5]}}
EVALUATION = {"data": DATA, "sampling": {"temperature": 0.0, "max_tokens": 400}, "batch_size": 8}
RECIPE = {
    "name": "testbed-tiny-quickstart",
    "base_model": "scratch",
    "scratch": {
        "vocab_size": 1024, "hidden": 64, "layers": 2, "heads": 2, "kv_heads": 1, "head_dim": 32,
        "intermediate": 128, "tokenizer_examples": 10,
    },
    "data": DATA,
    "training": {
        "epochs": 150, "batch_size": 8, "learning_rate": 5.0e-3, "warmup_ratio": 0.0, "bf16": False,
        "max_length": 2048, "max_minutes": None, "save_every": 1000, "logging_steps": 1000,
    },
    "evaluation": EVALUATION,
    "threads": 1,
}  # fmt: skip
HEADS = {
    "model": {"name": "testbed-tiny-quickstart"},
    "probe": {
        "synthetic": DATA,
        "prompt": {"template": "r1", "instruction": "", "examples": []},
        "sampling": {"temperature": 0.6, "top_p": 0.95, "max_tokens": 400, "seed": 0},
        "engine": "hf",
        "batch_size": 8,
    },
    "labels": {"kind": "oracle"},
    "selection": {"method": "greedy", "k": 2, "k_max": 4, "min_direction_sra": 0.0},
    "causal": {"enabled": False},
    "threads": 1,
    "tracking": {"mode": "disabled"},
}
TRAIN = {
    "model": {"name": "testbed-tiny-quickstart"},
    "data": {"benchmark": {"name": "synthetic", "synthetic": DATA}},
    "prompt": {"template": "r1", "instruction": "", "examples": []},
    "method": {
        "rescaling": {"curriculum_steps": 0, "difficulty_aware": False},
        "heads": {"kind": "file", "path": "set-by-launch"},
    },
    "rollout": {"slots": 8, "max_tokens": 400},
    "optim": {"lr": 1.0e-3},
    "prompts_per_step": 2,
    "group_size": 4,
    "steps": 2,
    "save_every": 1,
    "threads": 1,
    "grading": {"workers": 1},
    "log_rescaled": True,
    "evaluation": {"testbed": EVALUATION},
    "tracking": {"mode": "disabled"},
}


def test_shipped_quickstart_evaluates_as_the_micro_build_did():
    """The after row and the before row (the micro build's own evaluation) are the same problems."""
    micro = load_config(TestbedModelConfig, REPO / "experiments" / "testbed" / "micro.yaml")
    train = load_config(TrainConfig, FOLDER / "train.yaml")
    heads = load_config(FindHeadsConfig, FOLDER / "heads.yaml")
    assert train.evaluation.testbed.model_dump() == micro.evaluation.model_dump()
    assert train.model.name == heads.model.name == micro.name == "testbed-micro"
    assert train.method.rescaling.curriculum_steps == 0 and train.log_rescaled
    assert (
        heads.probe.synthetic.problem
        == train.data.benchmark.synthetic.problem
        == micro.evaluation.data.problem
    )


@pytest.mark.slow
def test_quickstart_runs_end_to_end(tmp_path):
    configs = tmp_path / "configs"
    configs.mkdir()
    for name, data in (("recipe", RECIPE), ("heads", HEADS), ("train", TRAIN)):
        (configs / f"{name}.yaml").write_text(yaml.safe_dump(data))
    out = tmp_path / "quickstart"
    env = {
        **os.environ,
        "ATTNCORE_CACHE_DIR": str(tmp_path / "cache"),
        "QUICKSTART_RECIPE": str(configs / "recipe.yaml"),
        "QUICKSTART_CONFIGS": str(configs),
        "QUICKSTART_MODEL": "testbed-tiny-quickstart",
        "QUICKSTART_OUT": str(out),
        "OMP_NUM_THREADS": "1",
        "WANDB_MODE": "disabled",
    }
    done = subprocess.run(
        ["bash", str(FOLDER / "launch.sh")], env=env, capture_output=True, text=True, cwd=tmp_path
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    timed = re.findall(r"^== (\w+): (\d+) s \(load average", done.stdout, flags=re.M)
    assert [name for name, _ in timed] == STAGES

    heads = yaml.safe_load((out / "heads" / "heads.yaml").read_text())
    assert 1 <= len(heads["heads"]) <= 2
    metrics = [json.loads(line) for line in (out / "attnpo" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics if "attnpo/accuracy" in m] == [1, 2]
    after = json.loads((out / "attnpo" / "evaluation.json").read_text())
    before = json.loads(
        (tmp_path / "cache" / "models" / "testbed-tiny-quickstart" / "testbed.results.json").read_text()
    )["evaluation"]
    assert after["problems"] == before["problems"] == 8

    report = (out / "report" / "report.md").read_text()
    rows = {
        line.split(" | ")[0].strip("| "): line.split(" | ")
        for line in report.splitlines()
        if line.startswith("| ")
    }
    assert list(rows)[1:] == ["start", "attnpo"]
    assert rows["start"][2].startswith(f"{100 * before['accuracy']:.1f}%")
    assert rows["attnpo"][2].startswith(f"{100 * after['accuracy']:.1f}%")
    assert rows["attnpo"][3] == f"{after['mean_thinking_tokens']:.1f}"

    page = (out / "attenuated.html").read_text()
    shown = re.search(
        r"^step (\d+): (\d+) steps, (\d+) attenuated by Pos-Adv, (\d+) by Neg-Adv", done.stdout, re.M
    )
    assert shown is not None and page.count('<div class="step') == int(shown[2]) >= 2
    assert f"training step <b>{shown[1]}</b>" in page

    again = subprocess.run(
        ["uv", "run", "attncore", "synth", "train-model", "--config", str(configs / "recipe.yaml"), "--if-missing"],
        env=env, capture_output=True, text=True, cwd=REPO,
    )  # fmt: skip
    assert again.returncode == 0 and "testbed-tiny-quickstart is built from this recipe" in again.stdout

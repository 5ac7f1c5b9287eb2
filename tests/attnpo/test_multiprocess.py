"""Group statistics across processes: one step of `attnpo train` under `accelerate launch --num_processes 2`
on CPU (gloo) gives every row the token advantages the same step gets in one process.

Three prompts × G = 4 over two processes put the second group's rows on both (rows 0-5 on rank 0, 6-11
on rank 1), so its rewards, RLOO baseline and group accuracy must come from the gathered group. Rollout
seeds follow the global row, so both runs sample the same batch; the test checks that first. The
rescaling is difficulty-aware, so its γ reads the group accuracy too."""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from attnpo.train import run_train

G, PROMPTS = 4, 3

DUMP = '''
import sys

import torch

from attncore.config import load_config
from attnpo.train import TrainConfig, run_train


def dump_to(folder):
    """A hook saving each row's completion, token advantages and outcome statistics by global row."""

    def dump(trainer, batch):
        inputs = batch.inputs
        mask = inputs["completion_mask"].bool()
        rows = {
            row: {
                "completion": inputs["completion_ids"][b][mask[b]].tolist(),
                "tokens": inputs["advantages"][b][mask[b]].tolist(),
                "outcome": float(inputs["attnpo_outcome"][b]),
                "reward": float(inputs["attnpo_reward"][b]),
                "accuracy": float(inputs["attnpo_accuracy"][b]),
            }
            for b, row in enumerate(inputs["attnpo_row"].tolist())
        }
        torch.save(rows, f"{folder}/rank{trainer.accelerator.process_index}.pt")

    return dump


if __name__ == "__main__":
    config, folder = sys.argv[1:]
    run_train(load_config(TrainConfig, config, []), progress=False, on_step_batch=dump_to(folder))
'''


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def step_metrics(out: Path) -> dict[str, float]:
    (row,) = [
        json.loads(line)
        for line in (out / "metrics.jsonl").read_text().splitlines()
        if "attnpo/reward" in line
    ]
    return {k: v for k, v in row.items() if k.startswith("attnpo/")}


@pytest.mark.slow
def test_two_processes_give_the_token_advantages_of_one(
    memorised_model, question_file, train_config, tmp_path
):
    problems = question_file(["5", "5", "6"])
    overrides = (
        "steps=1", "save_every=10", f"prompts_per_step={PROMPTS}", f"group_size={G}",
        # difficulty-aware γ = w·S/S_base + 1 − w, w = p^λ of the gathered group (β = 0 keeps S_base at
        # |F|/|o|, where this model's steps fall on both sides of it)
        "method.rescaling.difficulty_aware=true", "method.rescaling.beta=0",
    )  # fmt: skip
    script = tmp_path / "dump.py"
    script.write_text(DUMP)

    spec = importlib.util.spec_from_file_location("dump", script)
    hook = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hook)  # the launched script's own hook, for the one-process run here
    one = tmp_path / "one"
    one.mkdir()
    cfg = train_config(memorised_model[0], problems, tmp_path / "run1", *overrides)
    run_train(cfg, progress=False, on_step_batch=hook.dump_to(one))
    two = tmp_path / "two"
    two.mkdir()
    cfg = train_config(memorised_model[0], problems, tmp_path / "run2", *overrides)
    (tmp_path / "run2.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json", exclude_unset=True)))
    launch = [
        str(Path(sys.executable).parent / "accelerate"), "launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        "--main_process_port", str(free_port()), str(script), str(tmp_path / "run2.yaml"), str(two),
    ]  # fmt: skip
    done = subprocess.run(launch, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]

    single = torch.load(one / "rank0.pt")
    ranks = [torch.load(two / f"rank{r}.pt") for r in range(2)]
    assert sorted(ranks[0]) == list(range(6)) and sorted(ranks[1]) == list(range(6, 12))
    assert sorted(single) == list(range(PROMPTS * G))
    split = [ranks[r][row] for r, row in ((0, 4), (0, 5), (1, 6), (1, 7))]  # group 1 spans both processes
    assert len({s["accuracy"] for s in split}) == 1
    both = {**ranks[0], **ranks[1]}
    for row, want in single.items():
        got = both[row]
        assert got["completion"] == want["completion"], f"row {row}: the runs sampled different batches"
        assert got["reward"] == pytest.approx(want["reward"], abs=1e-6)
        assert got["outcome"] == pytest.approx(want["outcome"], abs=1e-6)
        assert got["accuracy"] == want["accuracy"]
        assert torch.allclose(torch.tensor(got["tokens"]), torch.tensor(want["tokens"]), atol=1e-6), row
    rescaled = [row for row, s in single.items() if any(abs(t - s["outcome"]) > 1e-9 for t in s["tokens"])]
    assert rescaled, "no response was rescaled: the token advantages went untested"
    # the logged step metrics cover the whole batch in both runs
    a, b = step_metrics(tmp_path / "run1"), step_metrics(tmp_path / "run2")
    assert a.keys() == b.keys()
    for key in a:
        assert b[key] == pytest.approx(a[key], abs=1e-6), key

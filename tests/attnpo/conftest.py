"""Fixtures of the attnpo tests: testbed traces written as rollouts of the tiny models' tokenizer, and a tiny
model that memorised three answers to one question for short training runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from attncore.config import load_config
from attncore.data import Problem
from attncore.models import ModelConfig, load_model
from attncore.prompts import PromptConfig, encode_prompt
from attncore.rollout.store import RolloutStore
from attncore.rollout.types import Rollout
from attncore.synthetic.config import SyntheticConfig
from attncore.synthetic.dataset import generate_examples
from attncore.think import THINK_OPEN_LINE
from attncore.tiny import train_tokenizer
from attnpo.train import TrainConfig


@pytest.fixture(autouse=True)
def _single_threaded(one_thread):
    """Every test here runs on one thread; tests elsewhere keep their setting."""


def make_rollout(tok, rid: str, question: str, gold: str, response: str, correct: bool) -> Rollout:
    prompt = f"<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n{THINK_OPEN_LINE}"
    completion = tok(response, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    return Rollout(
        rid, rid.split("#")[0], 0, "synthetic", question, gold, prompt,
        tok(prompt, add_special_tokens=False)["input_ids"], completion, response, "stop", "tiny", 0, 0.0,
        1.0, 0, 512, extra={"correct": correct},
    )  # fmt: skip


@pytest.fixture(scope="session")
def probe_folder(tmp_path_factory):
    """Testbed traces written as rollouts of the tiny tokenizer; every fourth one graded wrong."""
    tok = train_tokenizer()
    examples = generate_examples(
        SyntheticConfig(count=12, seed=5, problem={"difficulty": (2, 3)}, trace={"redundancy": (0.3, 0.6)})
    )
    rollouts = [
        make_rollout(
            tok,
            f"{e.id}#0",
            e.problem.text,
            str(e.problem.answer),
            e.trace.text[len(THINK_OPEN_LINE) :],
            i % 4 != 3,
        )
        for i, e in enumerate(examples)
    ]
    path = tmp_path_factory.mktemp("probe-rollouts")
    RolloutStore(path, {"kind": "rollouts"}).append(rollouts)
    return path, rollouts


@pytest.fixture
def attnpo_cli(capsys, monkeypatch):
    """Run `attnpo ARGS...` in this process (as the console script does): (exit code, stdout, stderr)."""
    from attnpo.cli import main

    def run(*args: str) -> tuple[int, str, str]:
        monkeypatch.setattr("sys.argv", ["attnpo", *args])
        try:
            main()
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        out = capsys.readouterr()
        return code, out.out, out.err

    return run


SHELF = "First, I add the two numbers of apples that the shop has on the shelf: 2 + 3 = 5 apples in all.\n"
TRACES = [
    SHELF + "Wait, let me double-check: 2 plus 3 is 5, and the shop sells every apple it has today.\n"
    "So the answer is 5.\n</think>\nThe answer is \\boxed{5}.",
    SHELF + "Hmm, the shop also had no other fruit, so only the apples on the shelf count for the total.\n"
    "Wait, let me double-check: 2 plus 3 is 5, and the shop sells every apple it has today.\n"
    "So the answer is 5.\n</think>\nThe answer is \\boxed{5}.",
    SHELF + "Now the shop sells one more apple from the back room, so the total grows by one more apple.\n"
    "So the answer is 6.\n</think>\nThe answer is \\boxed{6}.",
]
QUESTION = "A shop has 2 apples and 3 more apples. How many apples?"
MEMORISING_STEPS = 150
"""AdamW steps at lr 3e-3 that bring the traces' loss to about its floor (the branch points' entropy)."""


@pytest.fixture(scope="session")
def memorised_model(tiny_model_dir, tmp_path_factory):
    """A tiny qwen2 trained to continue the question's prompt with one of the three traces (two right
    answers of different lengths, one wrong), and a problems file asking the question twice."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    loaded = load_model(ModelConfig(name=str(tiny_model_dir("qwen2"))))
    model, tok = loaded.model, loaded.tokenizer
    _, prompt = encode_prompt(Problem("q", QUESTION, "5", "test"), tok, PromptConfig(template="r1"))
    rows = [prompt + tok(t, add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for t in TRACES]
    width = max(map(len, rows))
    ids = torch.full((len(rows), width), tok.pad_token_id)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    labels = torch.full((len(rows), width), -100)
    for i, row in enumerate(rows):
        ids[i, : len(row)], mask[i, : len(row)] = torch.tensor(row), 1
        labels[i, len(prompt) : len(row)] = torch.tensor(row[len(prompt) :])
    optim = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(MEMORISING_STEPS):
        model(input_ids=ids, attention_mask=mask, labels=labels).loss.backward()
        optim.step()
        optim.zero_grad()
    out = tmp_path_factory.mktemp("memorised")
    model.save_pretrained(out)
    tok.save_pretrained(out)
    problems = out / "problems.jsonl"
    problems.write_text(
        "".join(json.dumps({"id": f"p{i}", "problem": QUESTION, "answer": "5"}) + "\n" for i in range(2))
    )
    torch.set_num_threads(threads)
    return out, problems


@pytest.fixture(scope="session")
def train_config():
    """Factory: the `attnpo train` config of a short run of the memorised model on `problems` into `out`."""

    def make(model_dir: Path, problems: Path, out: Path, *overrides: str) -> TrainConfig:
        return load_config(TrainConfig, None, [*_base_overrides(model_dir, problems, out), *overrides])

    return make


def _base_overrides(model_dir: Path, problems: Path, out: Path) -> list[str]:
    return [
        f"model.name={model_dir}",
        f"data.file={problems}",
        "method.heads.kind=list",
        "method.heads.heads=[[1,0],[3,2]]",
        "method.rescaling.curriculum_steps=0",
        "method.rescaling.difficulty_aware=false",
        "prompts_per_step=2",
        "group_size=4",
        "rollout.max_tokens=200",
        "rollout.slots=4",
        "grading.workers=1",
        "tracking.mode=disabled",
        f"out={out}",
    ]


@pytest.fixture(scope="session")
def question_file(tmp_path_factory):
    """Factory: a problems file asking the memorised question once per gold answer given."""

    def make(golds: list[str]) -> Path:
        path = tmp_path_factory.mktemp("questions") / "problems.jsonl"
        rows = [{"id": f"p{i}", "problem": QUESTION, "answer": gold} for i, gold in enumerate(golds)]
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
        return path

    return make

"""Fixtures of the attnpo tests: testbed traces written as rollouts of the tiny models' tokenizer."""

from __future__ import annotations

import pytest
import torch

from attncore.rollout.store import RolloutStore
from attncore.rollout.types import Rollout
from attncore.synthetic.config import SyntheticConfig
from attncore.synthetic.dataset import generate_examples
from attncore.think import THINK_OPEN_LINE
from attncore.tiny import train_tokenizer


@pytest.fixture(autouse=True)
def one_thread():
    """Model tests here run on one thread (the machine is shared); others keep their setting."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


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

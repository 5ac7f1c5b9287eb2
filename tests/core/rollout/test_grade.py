"""Grade columns of a rollout store: correctness and thinking / answer token counts."""

from __future__ import annotations

import pytest

from attncore.alignment import single_token_id
from attncore.rollout.grade import GRADE_VERSION, GradingConfig, grade_store
from attncore.rollout.store import RolloutStore
from attncore.rollout.types import Rollout
from attncore.tiny import train_tokenizer


def encode(tok, text: str) -> list[int]:
    return tok(text, add_special_tokens=False)["input_ids"]


@pytest.fixture(scope="module")
def tiny_tok():
    """`</think>` is one added token here, as in R1 tokenizers."""
    return train_tokenizer()


def rollout(pid: str, prompt: str, ids: list[int], text: str, gold: str, finish: str = "stop") -> Rollout:
    return Rollout(
        f"{pid}#0", pid, 0, "s", "q", gold, prompt, [1], ids, text, finish, "m", 0, 0.0, 1.0, 0, 64
    )


def test_grade_store_adds_token_split_columns_and_upgrades_old_grades(tiny_tok, tmp_path):
    r1_prompt = "<|im_start|>user\nWhat is 12 + 7?<|im_end|>\n<|im_start|>assistant\n<think>\n"
    closed = [*encode(tiny_tok, "12 + 7 = 19</think>So \\boxed{19}"), tiny_tok.eos_token_id]
    open_ = encode(tiny_tok, "Let me think step by step")
    rows = [
        rollout("a", r1_prompt, closed, tiny_tok.decode(closed, skip_special_tokens=True), "19"),
        rollout("b", r1_prompt, open_, tiny_tok.decode(open_, skip_special_tokens=True), "19", "length"),
    ]
    store = RolloutStore(tmp_path, {"model": {"name": "unused"}})
    store.append(rows)
    assert (
        grade_store(store, GradingConfig(mode="math", workers=1), "r1", progress=False, tokenizer=tiny_tok)
        == 2
    )
    table = store.read_table()
    close_at = closed.index(single_token_id(tiny_tok, "</think>"))
    assert table.column("correct").to_pylist() == [True, False]
    assert table.column("n_thinking_tokens").to_pylist() == [close_at + 1, len(open_)]
    assert table.column("n_answer_tokens").to_pylist() == [len(closed) - close_at - 1, 0]
    assert table.column("n_completion_tokens").to_pylist() == [len(closed), len(open_)]
    assert [entry["grade_version"] for entry in store.table.shards] == [GRADE_VERSION]

    # a shard graded before the token split existed is graded again; a current one is not
    store.table.shards[0]["grade_version"] = GRADE_VERSION - 1
    assert (
        grade_store(store, GradingConfig(mode="math", workers=1), "r1", progress=False, tokenizer=tiny_tok)
        == 2
    )
    assert (
        grade_store(store, GradingConfig(mode="math", workers=1), "r1", progress=False, tokenizer=tiny_tok)
        == 0
    )

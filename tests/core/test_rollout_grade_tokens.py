"""Thinking vs answer tokens of graded rollouts, counted on the generated ids."""

from __future__ import annotations

import pytest

from attncore.alignment import decode, single_token_id
from attncore.models import load_tokenizer, resolve_model_source
from attncore.rollout.grade import GRADE_VERSION, GradingConfig, grade_store, thinking_token_count
from attncore.rollout.store import RolloutStore
from attncore.rollout.types import Rollout
from attncore.tiny import train_tokenizer


@pytest.fixture(scope="module")
def tiny_tok():
    """`</think>` is one added token here, as in R1 tokenizers."""
    return train_tokenizer()


@pytest.fixture(scope="module")
def smol_tok():
    """SmolLM2 has no `</think>` token: it spells it `</`, `think`, `>`."""
    return load_tokenizer(resolve_model_source("smollm2-135m-instruct")[0])


def never_called():
    raise AssertionError("a completion without `</think>` must not need the tokenizer")


def encode(tok, text: str) -> list[int]:
    return tok(text, add_special_tokens=False)["input_ids"]


def test_close_found_by_its_token_id(tiny_tok):
    ids = [*encode(tiny_tok, "Let me think</think>So 19"), tiny_tok.eos_token_id]
    close = single_token_id(tiny_tok, "</think>")
    assert ids.index(close) == 5
    text = tiny_tok.decode(ids, skip_special_tokens=True)
    assert thinking_token_count(ids, text, True, lambda: tiny_tok) == 6, "thinking includes `</think>`"
    # several closes: the last one ends the thinking (the graders cut there too)
    twice = encode(tiny_tok, "a</think>b</think>So 19")
    assert (
        thinking_token_count(twice, decode(tiny_tok, twice), True, lambda: tiny_tok)
        == twice.index(close, twice.index(close) + 1) + 1
    )


def test_close_spelled_in_pieces(smol_tok):
    assert single_token_id(smol_tok, "</think>") is None
    ids = encode(smol_tok, "Let me think</think>So 19")
    n = thinking_token_count(ids, decode(smol_tok, ids), True, lambda: smol_tok)
    assert n == 6
    assert decode(smol_tok, ids[:n]) == "Let me think</think>" and decode(smol_tok, ids[n:]) == "So 19"


def test_without_close_the_prompt_decides():
    ids = list(range(7))
    assert thinking_token_count(ids, "still thinking", True, never_called) == 7, "thinking never closed"
    assert thinking_token_count(ids, "<think>still thinking", False, never_called) == 7, "opened itself"
    assert thinking_token_count(ids, "#### 5", False, never_called) == 0, "a model that does not think"


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

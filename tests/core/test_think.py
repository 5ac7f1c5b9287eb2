"""The think rules: the `</think>` split, AttnPO's form rule, and thinking tokens on generated ids."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from attncore.alignment import decode, single_token_id
from attncore.models import load_tokenizer, resolve_model_source
from attncore.think import prompt_opens_thinking, split_thinking, thinking_token_count
from attncore.tiny import train_tokenizer


@pytest.fixture(scope="module")
def tiny_tok():
    """`</think>` is one added token here, as in R1 tokenizers."""
    return train_tokenizer()


@pytest.fixture(scope="module")
def smol_tok():
    """SmolLM2 has no `</think>` token: it spells it `</`, `think`, `>`."""
    return load_tokenizer(resolve_model_source("smollm2-135m-instruct")[0])


def encode(tok, text: str) -> list[int]:
    return tok(text, add_special_tokens=False)["input_ids"]


def test_split_thinking_without_close_tag_is_all_answer() -> None:
    split = split_thinking("just an answer \\boxed{1}")
    assert (split.thinking, split.answer, split.close_count, split.has_open) == (
        "",
        "just an answer \\boxed{1}",
        0,
        False,
    )


def test_split_thinking_cuts_at_the_last_close_tag() -> None:
    split = split_thinking("<think>a</think>b</think>c")
    assert (split.thinking, split.answer, split.close_count, split.has_open) == (
        "<think>a</think>b",
        "c",
        2,
        True,
    )


@given(st.lists(st.sampled_from(["a", " ", "<think>", "</think>", "\n", "<", ">"]), max_size=20).map("".join))
def test_split_thinking_reassembles(text: str) -> None:
    split = split_thinking(text)
    assert split.close_count == text.count("</think>")
    assert "</think>" not in split.answer
    rebuilt = split.answer if split.close_count == 0 else f"{split.thinking}</think>{split.answer}"
    assert rebuilt == text


@pytest.mark.parametrize(
    ("text", "form"),
    [
        ("a = 1\n</think>\n\nSo \\boxed{1}", True),
        ("a = 1\n</think>\n</think>\\boxed{1}", False),
        ("a = 1 \\boxed{1}", False),
        ("<think> again\n</think>\\boxed{2}", False),
    ],
)
def test_attnpo_form_needs_one_close_and_no_open(text: str, form: bool) -> None:
    assert split_thinking(text).attnpo_form is form


def test_prompt_opens_thinking() -> None:
    assert prompt_opens_thinking("<|im_start|>assistant\n<think>\n")
    assert not prompt_opens_thinking("Question: 2 + 2?\nAnswer:")


def never_called():
    raise AssertionError("a completion without `</think>` must not need the tokenizer")


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

"""Prompt templates on the tiny chat tokenizer, a DeepSeek-style template and a template-less base."""

from __future__ import annotations

import pytest

from attncore.data import Problem
from attncore.prompts import PLAIN_EXAMPLE, R1_INSTRUCTION, PromptConfig, encode_prompt, render_prompt
from attncore.tiny import train_tokenizer

PROBLEM = Problem("t/0", "What is 12 + 7?", "19", "t")


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer()


def test_r1_template_opens_thinking(tok):
    text = render_prompt(PROBLEM, tok, PromptConfig(template="r1"))
    assert text == (
        f"<|im_start|>user\nWhat is 12 + 7?\n{R1_INSTRUCTION}<|im_end|>\n<|im_start|>assistant\n<think>\n"
    )


def test_r1_does_not_open_thinking_twice():
    tok = train_tokenizer()
    tok.chat_template = tok.chat_template.replace("assistant\\n", "assistant\\n<think>\\n")
    text = render_prompt(PROBLEM, tok, PromptConfig(template="r1", instruction=""))
    assert text.endswith("<|im_start|>assistant\n<think>\n") and text.count("<think>") == 1
    assert "What is 12 + 7?<|im_end|>" in text, (
        "an empty instruction leaves the raw question (AttnPO training)"
    )


def test_plain_template_shows_a_worked_example_turn(tok):
    text = render_prompt(PROBLEM, tok, PromptConfig(template="plain"))
    turns = text.split("<|im_start|>")[1:]
    assert [t.split("\n", 1)[0] for t in turns] == ["user", "assistant", "user", "assistant"]
    assert PLAIN_EXAMPLE.answer in turns[1] and turns[1].rstrip().endswith("#### 3<|im_end|>")
    assert "Question: What is 12 + 7?" in turns[2] and "'#### <number>'" in turns[2]
    no_examples = render_prompt(PROBLEM, tok, PromptConfig(template="plain", examples=[]))
    assert no_examples.count("<|im_start|>user") == 1


def test_system_message(tok):
    text = render_prompt(PROBLEM, tok, PromptConfig(template="r1", system="Be brief."))
    assert text.startswith("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n")


def test_base_model_without_chat_template():
    tok = train_tokenizer()
    tok.chat_template = None
    text, ids = encode_prompt(PROBLEM, tok, PromptConfig(template="r1", instruction=""))
    assert text == "Question: What is 12 + 7?\nAnswer:\n<think>\n"
    assert tok.decode(ids, skip_special_tokens=True) == text


def test_encoding_keeps_template_specials_once(tok):
    text, ids = encode_prompt(PROBLEM, tok, PromptConfig(template="r1"))
    assert tok.decode(ids) == text
    assert ids.count(tok.convert_tokens_to_ids("<|im_start|>")) == 2


def test_molsaki_template_is_the_canonical_text_before_the_rationale(tok):
    """The distilled student's rationale task, never through the chat template; special tokens as the
    tokenizer adds them to plain text (a BOS-adding tokenizer gets its BOS)."""
    cfg = PromptConfig(template="molsaki")
    text, ids = encode_prompt(PROBLEM, tok, cfg)
    assert tok.chat_template and text == "Question: What is 12 + 7?\nRationale:"
    assert ids == tok(text)["input_ids"]
    from tokenizers.processors import TemplateProcessing

    tok_bos = train_tokenizer()
    tok_bos._tokenizer.post_processor = TemplateProcessing(
        single="<|bos|> $A", special_tokens=[("<|bos|>", tok.bos_token_id)]
    )
    assert encode_prompt(PROBLEM, tok_bos, cfg)[1][0] == tok_bos.bos_token_id

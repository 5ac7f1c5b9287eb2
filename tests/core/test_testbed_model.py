"""The testbed model recipe: training data layout, the named checkpoint, evaluation helpers."""

from __future__ import annotations

from pathlib import Path

import pytest

from attncore.config import load_config
from attncore.errors import UserError
from attncore.models import load_model
from attncore.rollout.types import Rollout
from attncore.synthetic.config import SyntheticConfig
from attncore.synthetic.dataset import generate_examples
from attncore.synthetic.evaluation import is_well_formed, thinking_token_count
from attncore.synthetic.testbed_model import (
    TESTBED_PROBLEMS,
    ScratchModelConfig,
    TestbedModelConfig,
    TrainingConfig,
    checkpoint_dir,
    completion_text,
    config_hash,
    prepare_tokenizer,
    tokenize_examples,
    train,
)
from attncore.tiny import train_tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    return prepare_tokenizer(train_tokenizer())


def test_training_rows_mask_the_prompt_and_end_with_eos(tokenizer):
    examples = generate_examples(SyntheticConfig(count=4, seed=3))
    rows = tokenize_examples(examples, tokenizer, max_length=4096)
    think_end = tokenizer.convert_tokens_to_ids("</think>")
    for example, row in zip(examples, rows, strict=True):
        ids, mask = row["input_ids"], row["completion_mask"]
        n_prompt = mask.index(1)
        prompt = tokenizer.decode(ids[:n_prompt])
        assert prompt.endswith("<|im_start|>assistant\n<think>\n") and "system" not in prompt
        assert example.problem.text in prompt
        assert all(mask[n_prompt:]) and not any(mask[:n_prompt])
        assert ids[-1] == tokenizer.eos_token_id, "the stop token is trained on"
        assert ids[n_prompt:].count(think_end) == 1, "</think> is one token"
        assert tokenizer.decode(ids[n_prompt:-1]) == completion_text(example)
        assert not completion_text(example).startswith("<think>")


def test_rows_longer_than_max_length_are_dropped(tokenizer):
    examples = generate_examples(SyntheticConfig(count=6, seed=3))
    lengths = sorted(len(r["input_ids"]) for r in tokenize_examples(examples, tokenizer, 10_000))
    kept = tokenize_examples(examples, tokenizer, max_length=lengths[2])
    assert len(kept) == 3
    with pytest.raises(UserError, match="no training example fits"):
        tokenize_examples(examples, tokenizer, max_length=8)


def test_recipe_hash_ignores_evaluation_only_settings():
    base = TestbedModelConfig()
    assert config_hash(base) == config_hash(base.model_copy(update={"threads": 1}))
    changed = base.model_copy(update={"seed": 1})
    assert config_hash(base) != config_hash(changed)


def test_missing_checkpoint_names_the_build_command(monkeypatch, tmp_path):
    monkeypatch.setenv("ATTNCORE_CACHE_DIR", str(tmp_path))
    with pytest.raises(
        UserError, match=r"model 'testbed-mini' is not built yet: run `uv run attncore synth train-model`"
    ):
        load_model("testbed-mini")


def rollout(ids: list[int], text: str) -> Rollout:
    return Rollout("p#0", "p", 0, "s", "q", "1", "", [], ids, text, "stop", "m", 0, 0.0, 1.0, 0, 8)


def test_form_and_thinking_length():
    assert is_well_formed("a = 1\n</think>\n\nSo \\boxed{1}")
    assert not is_well_formed("a = 1\n</think>\n</think>\\boxed{1}")
    assert not is_well_formed("a = 1 \\boxed{1}")
    assert not is_well_formed("x\n</think>\nno box")
    assert not is_well_formed("<think> again\n</think>\\boxed{2}")
    assert thinking_token_count(rollout([5, 6, 7, 99, 8], ""), think_end_id=99) == 3
    assert thinking_token_count(rollout([5, 6, 7], ""), think_end_id=99) == 3


def test_scratch_recipe_saves_a_loadable_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setenv("ATTNCORE_CACHE_DIR", str(tmp_path))
    cfg = TestbedModelConfig(
        name="testbed-scratch-test",
        base_model="scratch",
        scratch=ScratchModelConfig(
            vocab_size=320,
            hidden=64,
            layers=2,
            heads=2,
            kv_heads=1,
            head_dim=32,
            intermediate=128,
            tokenizer_examples=40,
        ),
        data=SyntheticConfig(count=16, seed=2, problem=TESTBED_PROBLEMS),
        training=TrainingConfig(
            batch_size=8, learning_rate=1e-3, bf16=False, max_minutes=None, save_every=1, max_length=2048
        ),  # the 320-token byte-level vocabulary makes long traces: every example fits in 2,048 tokens
        threads=1,
    )
    figures = train(cfg, progress=False)
    assert figures["examples"] == 16 and figures["optimizer_steps"] == 2
    assert Path(figures["checkpoint"]) == checkpoint_dir("testbed-scratch-test")

    loaded = load_model(figures["checkpoint"])
    tok = loaded.tokenizer
    assert [len(tok.encode(t, add_special_tokens=False)) for t in ("<think>", "</think>")] == [1, 1]
    assert tok.encode(" 123", add_special_tokens=False)[-3:] == [tok.convert_tokens_to_ids(d) for d in "123"]
    assert loaded.model.generation_config.eos_token_id == tok.eos_token_id
    assert loaded.model.get_input_embeddings().weight.shape[0] == len(tok)


def test_default_yaml_is_the_code_default():
    """`attncore synth train-model` without a config and with `default.yaml` build the same model."""
    default_yaml = Path(__file__).parents[2] / "experiments" / "testbed" / "default.yaml"
    assert load_config(TestbedModelConfig, default_yaml, []).model_dump() == TestbedModelConfig().model_dump()


def test_an_override_keeps_the_rest_of_the_recipe():
    """`data.count=…` or `evaluation.sampling.max_tokens=…` changes that key only, not the section around it."""
    default = TestbedModelConfig()
    cfg = load_config(TestbedModelConfig, None, ["data.count=10", "evaluation.sampling.max_tokens=64"])
    assert cfg.data == default.data.model_copy(update={"count": 10})
    assert cfg.data.trace.role_weights["slip"] == 0.0 and cfg.data.seed == 1
    assert cfg.evaluation.sampling == default.evaluation.sampling.model_copy(update={"max_tokens": 64})
    assert cfg.evaluation.sampling.temperature == 0.6 and cfg.evaluation.data.seed == 10_007

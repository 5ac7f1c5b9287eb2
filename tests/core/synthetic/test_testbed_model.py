"""The testbed model recipe: training data layout, the named checkpoint, evaluation helpers."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from attncore.config import load_config
from attncore.errors import UserError
from attncore.models import load_model
from attncore.paths import built_model_dir
from attncore.synthetic.config import SyntheticConfig
from attncore.synthetic.dataset import generate_examples
from attncore.synthetic.evaluation import is_well_formed
from attncore.synthetic.testbed_model import (
    TESTBED_PROBLEMS,
    ScratchModelConfig,
    TestbedModelConfig,
    TrainingConfig,
    completion_text,
    config_hash,
    dense_completion_loss,
    prepare_tokenizer,
    supervised_window,
    tokenize_examples,
    train,
)
from attncore.tiny import train_tokenizer

RECIPES = Path(__file__).parents[3] / "experiments" / "testbed"


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
    trimmed = base.training.model_copy(update={"trim_heap_every": 10})
    assert config_hash(base) == config_hash(base.model_copy(update={"training": trimmed}))
    # A run stopped by its time cap resumes under a longer cap (and another checkpoint interval).
    longer = base.training.model_copy(update={"max_minutes": 600.0, "save_every": 10})
    assert config_hash(base) == config_hash(base.model_copy(update={"training": longer}))
    changed = base.model_copy(update={"seed": 1})
    assert config_hash(base) != config_hash(changed)


def test_recipe_hash_of_a_built_recipe_survives_later_trace_options():
    """The hashes the two built testbed models recorded in their cache markers: v2 as `testbed-mini`
    before the v3 trace options existed, v3 as `testbed-mini-v3`. Protects that adding trace options
    (off) leaves an older recipe's identity, so its build still resumes and `--if-missing` still finds it;
    the name is part of the identity, so under its new name v2.yaml is another recipe."""
    v2 = load_config(TestbedModelConfig, RECIPES / "v2.yaml")
    v3 = load_config(TestbedModelConfig, RECIPES / "default.yaml")
    assert config_hash(v2.model_copy(update={"name": "testbed-mini"})) == "f019e7b6a2385725"
    assert config_hash(v3.model_copy(update={"name": "testbed-mini-v3"})) == "cf70b623787a69e8"
    assert config_hash(v2) != config_hash(v2.model_copy(update={"name": "testbed-mini"}))
    for option in ("answer_marker", "anchor_after_answer"):
        trace = v2.data.trace.model_copy(update={option: True})
        assert config_hash(v2.model_copy(update={"data": v2.data.model_copy(update={"trace": trace})})) != (
            config_hash(v2)
        )


def test_missing_checkpoint_names_the_build_command(monkeypatch, tmp_path):
    monkeypatch.setenv("ATTNCORE_CACHE_DIR", str(tmp_path))
    with pytest.raises(
        UserError,
        match=r"model 'testbed-mini' not found: .*`uv run attncore synth train-model name=testbed-mini`",
    ):
        load_model("testbed-mini")


def test_well_formed_needs_the_attnpo_form_and_a_box():
    assert is_well_formed("a = 1\n</think>\n\nSo \\boxed{1}")
    assert not is_well_formed("a = 1\n</think>\n</think>\\boxed{1}")
    assert not is_well_formed("a = 1 \\boxed{1}")
    assert not is_well_formed("x\n</think>\nno box")
    assert not is_well_formed("<think> again\n</think>\\boxed{2}")


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
            batch_size=8,
            learning_rate=1e-3,
            bf16=False,
            max_minutes=None,
            save_every=1,
            max_length=2048,  # the 320-token byte-level vocabulary makes long traces: every example fits
            trim_heap_every=1,
        ),
        threads=1,
    )
    figures = train(cfg, progress=False)
    assert figures["examples"] == 16 and figures["optimizer_steps"] == 2
    assert Path(figures["checkpoint"]) == built_model_dir("testbed-scratch-test")

    loaded = load_model("testbed-scratch-test")  # a built model loads by its name
    assert loaded.source == figures["checkpoint"]
    tok = loaded.tokenizer
    assert [len(tok.encode(t, add_special_tokens=False)) for t in ("<think>", "</think>")] == [1, 1]
    assert tok.encode(" 123", add_special_tokens=False)[-3:] == [tok.convert_tokens_to_ids(d) for d in "123"]
    assert loaded.model.generation_config.eos_token_id == tok.eos_token_id
    assert loaded.model.get_input_embeddings().weight.shape[0] == len(tok)


def test_default_yaml_is_the_code_default():
    """`attncore synth train-model` without a config and with `default.yaml` build the same model."""
    assert (
        load_config(TestbedModelConfig, RECIPES / "default.yaml", []).model_dump()
        == TestbedModelConfig().model_dump()
    )


def test_an_override_keeps_the_rest_of_the_recipe():
    """`data.count=…` or `evaluation.sampling.max_tokens=…` changes that key only, not the section around it."""
    default = TestbedModelConfig()
    cfg = load_config(TestbedModelConfig, None, ["data.count=10", "evaluation.sampling.max_tokens=64"])
    assert cfg.data == default.data.model_copy(update={"count": 10})
    assert cfg.data.trace.role_weights["slip"] == 0.0 and cfg.data.seed == 1
    assert cfg.evaluation.sampling == default.evaluation.sampling.model_copy(update={"max_tokens": 64})
    assert cfg.evaluation.sampling.temperature == 0.6 and cfg.evaluation.data.seed == 10_007


@pytest.mark.parametrize(
    ("labels", "window"),
    [
        ([[-100, -100, 5, 6, -100], [-100, -100, -100, 7, -100]], 4),  # first supervised label at 2
        ([[-100, 4, 5], [-100, -100, 6]], 3),  # at 1: every position but the last predicts one
        ([[-100, -100, -100]], 1),  # nothing supervised
        ([[9, -100, -100]], 1),  # position 0 is never predicted
    ],
)
def test_supervised_window(labels, window):
    assert supervised_window(torch.tensor(labels)) == window


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_dense_loss_on_supervised_positions_equals_the_full_logits_loss(tiny_model_dir, arch):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir(arch))
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(5, model.config.vocab_size, (3, 12), generator=gen)
    mask = torch.ones_like(ids)
    mask[2, 9:] = 0  # a right-padded row
    labels = ids.clone()
    for row, prompt in enumerate((4, 6, 5)):
        labels[row, :prompt] = -100
    labels[mask == 0] = -100
    inputs = {"input_ids": ids, "attention_mask": mask}

    loss, correct, count = dense_completion_loss(model, inputs, labels)
    logits = model(**inputs).logits[:, :-1]
    shifted = labels[:, 1:]
    expected = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), shifted.reshape(-1))
    assert count == int((shifted != -100).sum()) == 8 + 6 + 4
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert correct == int(((logits.argmax(-1) == shifted) & (shifted != -100)).sum())
    # Divided by the accumulated batch's count when the trainer gives one.
    assert dense_completion_loss(model, inputs, labels, 36)[0].item() == pytest.approx(
        expected.item() / 2, rel=1e-5
    )
    # And so are the gradients.
    loss.backward()
    trimmed = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    expected.backward()
    assert all(torch.allclose(a, p.grad, atol=1e-6) for a, p in zip(trimmed, model.parameters(), strict=True))

"""Slot-refilling decoding on tiny GQA models: the same tokens as HF `generate`, seeds per rollout,
HF's sampling distribution, buffers that move and grow, slots dropped at the end."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers.generation.logits_process import (
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)
from transformers.integrations.sdpa_attention import repeat_kv

from attncore.data import Problem
from attncore.models import load_model
from attncore.prompts import PromptConfig, encode_prompt
from attncore.rollout.hf import HFEngine, trim_completion
from attncore.rollout.refill import (
    SlotDecoder,
    decode_attention,
    decode_refilling,
    grouped_decode_attention,
    nucleus,
    sample_tokens,
)
from attncore.rollout.types import SamplingConfig, derive_seed

PROBLEMS = [
    Problem("p/0", "What is 12 + 7?", "19", "p"),
    Problem(
        "p/1", "A farm has 20 cows and twice as many sheep. How many animals are on the farm?", "60", "p"
    ),
    Problem("p/2", "Sam saves $5 every week. How many weeks until he has $45?", "9", "p"),
    Problem("p/3", "7 times 8?", "56", "p"),
    Problem("p/4", "Ann reads 12 pages a day for 3 days and then 5 more. How many pages?", "41", "p"),
]


def hf_distribution(logits: torch.Tensor, temperature: float, top_k: int, top_p: float) -> torch.Tensor:
    """What HF `generate` samples from: its warpers in its order, then softmax."""
    scores = TemperatureLogitsWarper(temperature)(None, logits.clone())
    if top_k:
        scores = TopKLogitsWarper(top_k)(None, scores)
    if top_p < 1.0:
        scores = TopPLogitsWarper(top_p)(None, scores)
    return scores.softmax(dim=-1)


def dense(ids: torch.Tensor, probs: torch.Tensor, vocab: int) -> torch.Tensor:
    return torch.zeros(ids.shape[0], vocab).scatter_add(1, ids, probs)


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    temperature=st.sampled_from([0.3, 0.6, 1.0, 1.5]),
    top_k=st.sampled_from([0, 1, 5, 40, 300]),
    top_p=st.sampled_from([1.0, 0.95, 0.5, 0.1]),
    spread=st.sampled_from([0.01, 1.0, 8.0]),
)
def test_nucleus_is_hf_sampling_distribution(seed, temperature, top_k, top_p, spread):
    """Flat logits (spread 0.01) put the nucleus beyond the first 256 candidates: the fallback path."""
    logits = torch.randn(3, 1000, generator=torch.Generator().manual_seed(seed)) * spread
    ids, probs = nucleus(logits, temperature, top_k, top_p)
    expected = hf_distribution(logits, temperature, top_k, top_p)
    torch.testing.assert_close(dense(ids, probs, 1000), expected, atol=1e-6, rtol=1e-5)
    kept = (probs > 0).sum(-1)
    assert (kept >= 1).all() and (kept == (expected > 0).sum(-1)).all()


def test_nucleus_keeps_tokens_until_top_p_is_reached():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    ids, probs = nucleus(logits, 1.0, 0, 0.75)
    assert ids[0].tolist() == [0, 1, 2, 3]
    torch.testing.assert_close(probs[0], torch.tensor([0.625, 0.375, 0.0, 0.0]))  # 0.5 + 0.3 pass 0.75
    ids, probs = nucleus(logits, 1.0, 0, 0.85)
    torch.testing.assert_close(probs[0], torch.tensor([0.5, 0.3, 0.15, 0.0]) / 0.95)


def test_sample_tokens_follows_each_rows_generator():
    logits = torch.randn(4, 50, generator=torch.Generator().manual_seed(0))
    sampling = SamplingConfig(temperature=1.0)

    def draw(seeds):
        return sample_tokens(logits, sampling, [torch.Generator().manual_seed(s) for s in seeds])

    assert draw([1, 2, 3, 4]) == draw([1, 2, 3, 4])
    assert draw([1, 2, 3, 4])[:2] == draw([1, 2, 9, 9])[:2]  # a row's draw depends on its seed only
    assert sample_tokens(logits, SamplingConfig(), []) == logits.argmax(-1).tolist()


def test_sampled_frequencies_match_the_distribution():
    logits = torch.log(torch.tensor([[0.6, 0.3, 0.1]]))
    sampling = SamplingConfig(temperature=1.0, top_p=0.85)
    draws = [sample_tokens(logits, sampling, [torch.Generator().manual_seed(s)])[0] for s in range(4000)]
    share = torch.bincount(torch.tensor(draws), minlength=3).float() / len(draws)
    assert share[2] == 0  # outside the nucleus
    assert abs(share[0].item() - 2 / 3) < 0.03 and abs(share[1].item() - 1 / 3) < 0.03


@pytest.mark.parametrize("groups", [1, 3])
def test_grouped_decode_attention_equals_repeated_keys(groups):
    gen = torch.Generator().manual_seed(0)
    rows, kv_heads, length, dim = 4, 2, 9, 8
    module = torch.nn.Module()
    module.num_key_value_groups = groups
    query = torch.randn(rows, kv_heads * groups, 1, dim, generator=gen)
    key, value = (torch.randn(rows, kv_heads, length, dim, generator=gen) for _ in range(2))
    mask = torch.ones(rows, 1, 1, length, dtype=torch.bool)
    mask[0, ..., :5] = False
    mask[2, ..., 3:6] = False
    out, _ = grouped_decode_attention(module, query, key, value, mask, scaling=0.3)
    expected = torch.nn.functional.scaled_dot_product_attention(
        query, repeat_kv(key, groups), repeat_kv(value, groups), attn_mask=mask, scale=0.3
    ).transpose(1, 2)
    torch.testing.assert_close(out, expected)


def test_decode_attention_restores_the_models_implementation(tiny_model_dir):
    model = load_model(str(tiny_model_dir("llama"))).model
    before = model.config._attn_implementation
    with pytest.raises(RuntimeError), decode_attention(model):
        assert model.config._attn_implementation != before
        raise RuntimeError
    assert model.config._attn_implementation == before


@pytest.fixture(scope="module", params=["llama", "qwen2"])
def loaded(request, tiny_model_dir):
    return load_model(str(tiny_model_dir(request.param)))


def prompt_ids(loaded) -> list[list[int]]:
    return [encode_prompt(p, loaded.tokenizer, PromptConfig(template="r1"))[1] for p in PROBLEMS]


def test_greedy_refill_equals_static_generate_through_moves_and_growth(loaded):
    """3 slots for 5 prompts of different lengths, buffers starting 2 columns past the longest prompt:
    the window moves back and the buffers double, and every token equals HF `generate`'s."""
    sampling = SamplingConfig(max_tokens=24)
    static = HFEngine(loaded, PromptConfig(template="r1"), batch_size=5).generate(PROBLEMS, sampling)
    prompts = prompt_ids(loaded)
    assert len({len(p) for p in prompts}) == len(prompts)
    decoder = SlotDecoder(
        loaded.model, sampling, {-1}, loaded.tokenizer.pad_token_id, 3, max(map(len, prompts)) + 2
    )
    with decode_attention(loaded.model):
        out = decoder.decode(prompts, [0] * len(prompts))
    assert decoder.cache.capacity > max(map(len, prompts)) + 2, "the buffers grew"
    assert [ids for ids, _ in out] == [r.completion_ids for r in static]
    assert {reason for _, reason in out} == {"length"}


def test_a_stop_token_frees_its_slot_for_the_next_prompt(loaded):
    """Stop on a token greedy decoding emits mid-way: each completion ends at its first occurrence,
    and the slot it frees decodes a later prompt to the same tokens as HF `generate`."""
    sampling = SamplingConfig(max_tokens=20)
    static = HFEngine(loaded, PromptConfig(template="r1"), batch_size=5).generate(PROBLEMS, sampling)
    stop = static[0].completion_ids[6]
    expected = [trim_completion(r.completion_ids, {stop}) for r in static]
    assert sum(reason == "stop" for _, reason in expected) >= 1
    finished: list[int] = []
    out = decode_refilling(
        loaded.model,
        prompt_ids(loaded),
        [0] * 5,
        sampling,
        {stop},
        loaded.tokenizer.pad_token_id,
        slots=2,
        on_finish=lambda i, ids, reason: finished.append(i),
    )
    assert out == expected
    assert sorted(finished) == list(range(5)), "every completion reported once"


def test_sampled_rollouts_do_not_depend_on_the_slot_count(loaded):
    sampling = SamplingConfig(n=2, temperature=1.0, top_p=0.9, max_tokens=12, seed=3)

    def run(slots: int, seed: int = 3):
        engine = HFEngine(loaded, PromptConfig(template="r1"), batch_size=slots, refill=True)
        return engine.generate(PROBLEMS, sampling.model_copy(update={"seed": seed}))

    one, four = run(1), run(4)
    assert [r.completion_ids for r in one] == [r.completion_ids for r in four]
    assert [r.rollout_id for r in four] == [f"{p.id}#{i}" for p in PROBLEMS for i in range(2)]
    assert [r.seed for r in four] == [derive_seed(3, r.rollout_id) for r in four]
    assert len({tuple(r.completion_ids) for r in four}) > 5, "samples differ from each other"
    assert [r.completion_ids for r in run(4, seed=4)] != [r.completion_ids for r in four]


def test_refilling_engine_reports_batches_and_skips_done_rollouts(loaded):
    engine = HFEngine(loaded, PromptConfig(template="r1"), batch_size=2, refill=True)
    batches: list[list[str]] = []
    sampling = SamplingConfig(max_tokens=8)
    rollouts = engine.generate(
        PROBLEMS, sampling, skip={"p/1#0"}, on_batch=lambda b: batches.append([r.rollout_id for r in b])
    )
    assert [r.rollout_id for r in rollouts] == ["p/0#0", "p/2#0", "p/3#0", "p/4#0"]
    assert [len(b) for b in batches] == [2, 2]
    assert sorted(rid for batch in batches for rid in batch) == sorted(r.rollout_id for r in rollouts)
    static = HFEngine(loaded, PromptConfig(template="r1"), batch_size=4).generate(PROBLEMS, sampling)
    assert [r.completion_ids for r in rollouts] == [
        r.completion_ids for r in static if r.rollout_id != "p/1#0"
    ]
    assert all(
        r.text == loaded.tokenizer.decode(r.completion_ids, skip_special_tokens=True) for r in rollouts
    )

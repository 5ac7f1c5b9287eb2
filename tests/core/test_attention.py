"""Selective attention capture against eager `output_attentions=True`, on tiny models and SmolLM2."""

from __future__ import annotations

import copy

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from attncore.attention import AttentionCapture, HeadGroups, HeadMeanBlocks, HeadMeanGroups, HeadRows
from attncore.errors import UserError
from attncore.models import load_model
from attncore.tiny import random_padded_batch

TOL = 1e-5
ARCHS = ["llama", "qwen2", "qwen3", "gemma3"]
LENGTHS = [20, 15, 8]  # left-padded to 20; row 2 has 12 padding positions (more than a Gemma3 window)


def batch(lengths: list[int], vocab: int = 300, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random ids, left-padded to the longest length, with their 2D attention mask."""
    return random_padded_batch(lengths, vocab, torch.Generator().manual_seed(seed))


def eager_copy(model: torch.nn.Module) -> torch.nn.Module:
    """A deep copy (own config object) switched to eager attention."""
    eager = copy.deepcopy(model)
    eager.set_attn_implementation("eager")
    return eager


def eager_attentions(model: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor | None):
    with torch.no_grad():
        out = eager_copy(model)(ids, attention_mask=mask, output_attentions=True)
    return out.attentions


@pytest.fixture(scope="module", params=ARCHS)
def tiny(request, tiny_model_dir):
    return load_model(str(tiny_model_dir(request.param))).model


def assert_head_rows_match(
    got: dict, reference, heads: list[tuple[int, int]], rows: list[list[int]], mask: torch.Tensor
) -> None:
    """Valid rows equal eager rows; rows at padding positions and padding slots are zeros."""
    assert set(got) == set(heads)
    for layer, head in heads:
        probs = got[(layer, head)]
        assert probs.shape == (len(rows), max(1, *map(len, rows)), reference[layer].shape[-1])
        for b, positions in enumerate(rows):
            for j, pos in enumerate(positions):
                expected = reference[layer][b, head, pos] if mask[b, pos] else torch.zeros(probs.shape[-1])
                assert (probs[b, j] - expected).abs().max() <= TOL, (layer, head, b, pos)
            assert not probs[b, len(positions) :].any()


HEADS = [(0, 1), (1, 3), (3, 0), (3, 2)]  # query heads 0-3 on 2 KV heads: both groups, both KV heads
ROWS = [[19, 3, 10], [0, 2, 5, 7, 19], [15]]  # row 1 starts with padding positions 0-4


@pytest.mark.parametrize("lengths", [LENGTHS, [20, 20, 20]], ids=["left-padded", "unpadded"])
def test_head_rows_equal_eager_and_logits_unchanged(tiny, lengths):
    ids, mask = batch(lengths)
    reference = eager_attentions(tiny, ids, mask)
    with torch.no_grad():
        plain = tiny(ids, attention_mask=mask).logits
    with AttentionCapture(tiny) as capture:
        capture.arm(HeadRows(HEADS, ROWS))
        with torch.no_grad():
            logits = tiny(ids, attention_mask=mask).logits
        got = capture.collect()
    assert torch.equal(logits, plain)
    assert_head_rows_match(got, reference, HEADS, ROWS, mask)
    assert tiny.config._attn_implementation == "sdpa"


@pytest.mark.parametrize("lengths", [LENGTHS, [20, 20, 20]], ids=["left-padded", "unpadded"])
def test_head_mean_blocks_equal_eager(tiny, lengths):
    ids, mask = batch(lengths)
    reference = eager_attentions(tiny, ids, mask)
    keys = [[0, 4, 8, 19], [6, 7], [12, 13, 14, 15, 16]]
    with AttentionCapture(tiny) as capture:
        got = capture.run(HeadMeanBlocks(ROWS, keys), ids, mask)
    assert sorted(got) == list(range(tiny.config.num_hidden_layers))
    for layer, probs in got.items():
        mean = reference[layer].mean(1)
        assert probs.shape == (3, 5, 5)
        for b in range(3):
            for j, pos in enumerate(ROWS[b]):
                expected = mean[b, pos, keys[b]] if mask[b, pos] else torch.zeros(len(keys[b]))
                assert (probs[b, j, : len(keys[b])] - expected).abs().max() <= TOL
            assert not probs[b, len(ROWS[b]) :].any()
            assert not probs[b, :, len(keys[b]) :].any()


def test_head_mean_groups_equal_membership_product(tiny):
    ids, mask = batch(LENGTHS)
    reference = eager_attentions(tiny, ids, mask)
    gen = torch.Generator().manual_seed(1)
    steps = (torch.rand(3, 4, 20, generator=gen) < 0.3).float()
    units = (torch.rand(3, 5, 20, generator=gen) < 0.2).float() * 2.0  # weights need not be 0/1
    with AttentionCapture(tiny) as capture:
        got = capture.run(HeadMeanGroups(steps, units, layers=[0, 2]), ids, mask)
    assert sorted(got) == [0, 2]
    for layer, blocks in got.items():
        mean = reference[layer].mean(1) * mask[:, :, None]  # padded query rows count as zeros
        expected = steps @ mean @ units.transpose(1, 2)
        assert blocks.shape == (3, 4, 5)
        assert (blocks - expected).abs().max() <= TOL
        assert expected.abs().max() > 0.1  # the comparison is not between zeros


@pytest.mark.parametrize("chunk_bytes", [2**25, 4 * 3 * 20 * 2, 1], ids=["whole", "two-heads", "one-row"])
def test_head_groups_equal_per_head_membership_product(tiny, chunk_bytes):
    ids, mask = batch(LENGTHS)
    reference = eager_attentions(tiny, ids, mask)
    gen = torch.Generator().manual_seed(2)
    rows = (torch.rand(3, 2, 20, generator=gen) < 0.3).float() * 1.5  # weights need not be 0/1
    keys = (torch.rand(3, 4, 20, generator=gen) < 0.4).float()
    heads = [(3, 2), (0, 0), (0, 1), (0, 2), (0, 3), (2, 1)]  # layer 0 complete, in order
    with AttentionCapture(tiny, chunk_bytes=chunk_bytes) as capture:
        got = capture.run(HeadGroups(rows, keys, heads), ids, mask)
        every = capture.run(HeadGroups(rows, keys), ids, mask)
    assert sorted(got) == sorted(heads) and len(every) == 16
    for layer, head in every:
        probs = reference[layer][:, head] * mask[:, :, None]  # padded query rows count as zeros
        expected = rows @ probs @ keys.transpose(1, 2)
        assert every[(layer, head)].shape == (3, 2, 4)
        assert (every[(layer, head)] - expected).abs().max() <= TOL, (layer, head)
        if (layer, head) in got:
            assert (got[(layer, head)] - expected).abs().max() <= TOL
        assert expected.abs().max() > 0.1


def test_gemma3_sliding_layers_use_the_window(tiny_model_dir):
    model = load_model(str(tiny_model_dir("gemma3"))).model
    ids, mask = batch([20])
    with AttentionCapture(model) as capture:
        got = capture.run(HeadRows([(0, 0), (1, 0)], [[19]]), ids, mask)
    sliding, full = got[(0, 0)][0, 0], got[(1, 0)][0, 0]  # layer 0 slides (window 8), layer 1 is full
    assert model.config.layer_types[:2] == ["sliding_attention", "full_attention"]
    assert not sliding[:12].any() and (sliding[12:].sum() - 1).abs() < TOL
    assert (full[:12] > 0).all()


def test_chunking_does_not_change_results(tiny):
    ids, mask = batch(LENGTHS)
    keys = [[0, 19], [5, 6, 7], [18]]
    selections = [HeadRows(HEADS, ROWS), HeadMeanBlocks(ROWS, keys)]
    with AttentionCapture(tiny) as capture:
        whole = [capture.run(selection, ids, mask) for selection in selections]
    with AttentionCapture(tiny, chunk_bytes=1) as capture:
        row_by_row = [capture.run(selection, ids, mask) for selection in selections]
    for a, b in zip(whole, row_by_row, strict=True):
        assert all(torch.allclose(a[k], b[k], atol=1e-7) for k in a)


@pytest.mark.parametrize("lengths", [LENGTHS, [20, 20, 20]], ids=["left-padded", "unpadded"])
def test_decode_step_with_kv_cache(tiny_model_dir, lengths):
    model = load_model(str(tiny_model_dir("qwen2"))).model
    ids, mask = batch(lengths)
    reference = eager_attentions(model, ids, mask)
    with AttentionCapture(model) as capture, torch.no_grad():
        cache = model(ids[:, :-1], attention_mask=mask[:, :-1], use_cache=True).past_key_values
        capture.arm(HeadRows(HEADS, [[0]] * 3))
        model(ids[:, -1:], attention_mask=mask, past_key_values=cache, use_cache=True)
        got = capture.collect()
    for layer, head in HEADS:
        assert (got[(layer, head)][:, 0] - reference[layer][:, head, -1]).abs().max() <= TOL


def test_softcapping_is_applied():
    from transformers import AutoModelForCausalLM, Gemma2Config

    config = Gemma2Config(
        vocab_size=300,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=1,  # SDPA ignores softcapping, so only the first layer sees eager's inputs
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        query_pre_attn_scalar=1,
        attn_logit_softcapping=0.5,
        attn_implementation="sdpa",
    )
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).eval()
    with torch.no_grad():
        model.model.layers[0].self_attn.q_proj.weight.mul_(100)  # logits of order 1, where the cap matters
    ids, mask = batch(LENGTHS)
    reference = eager_attentions(model, ids, mask)
    heads = [(0, 1), (0, 2)]
    with AttentionCapture(model) as capture:
        got = capture.run(HeadRows(heads, ROWS), ids, mask)
    assert_head_rows_match(got, reference, heads, ROWS, mask)
    model.model.layers[0].self_attn.attn_logit_softcapping = None
    uncapped = eager_attentions(model, ids, mask)
    assert (uncapped[0][0, 2, 19] - reference[0][0, 2, 19]).abs().max() > 0.05


def test_capture_inside_a_training_forward_with_checkpointing(tiny_model_dir):
    model = load_model(str(tiny_model_dir("llama"))).model
    ids, mask = batch(LENGTHS)
    reference = eager_attentions(model, ids, mask)
    model.gradient_checkpointing_enable()
    model.train()
    with AttentionCapture(model) as capture:
        capture.arm(HeadRows(HEADS, ROWS))
        model(ids, attention_mask=mask).logits.sum().backward()  # recomputation must not capture again
        got = capture.collect()
    assert model.model.layers[0].self_attn.q_proj.weight.grad.abs().sum() > 0
    assert all(not p.requires_grad for p in got.values())
    assert_head_rows_match(got, reference, HEADS, ROWS, mask)


def test_restores_implementation_and_keeps_captures_apart(tiny_model_dir):
    model = load_model(str(tiny_model_dir("llama"))).model
    ids, mask = batch(LENGTHS)
    first, second = AttentionCapture(model), AttentionCapture(model)
    assert first.name != second.name
    with first:
        assert model.config._attn_implementation == first.name
        one = first.run(HeadRows([(0, 0)], ROWS), ids, mask)
    with second:
        other = second.run(HeadRows([(0, 0)], ROWS), ids, mask)
    assert model.config._attn_implementation == "sdpa"
    assert torch.equal(one[(0, 0)], other[(0, 0)])
    model.set_attn_implementation("eager")
    with first:
        pass
    assert model.config._attn_implementation == "eager"


def test_user_errors(tiny_model_dir):
    model = load_model(str(tiny_model_dir("llama"))).model
    ids, mask = batch(LENGTHS)
    capture = AttentionCapture(model)
    with pytest.raises(UserError, match="active capture"):
        capture.arm(HeadRows([(0, 0)], ROWS))
    with capture:
        with pytest.raises(UserError, match=r"outside the model's 4 layers × 4 query heads"):
            capture.arm(HeadRows([(4, 0)], ROWS))
        with pytest.raises(UserError, match="non-negative"):
            capture.arm(HeadRows([(0, 0)], [[-1]]))
        with pytest.raises(UserError, match="collect"):
            capture.collect()
        with pytest.raises(UserError, match="2 batch rows but the forward has 3"):
            capture.run(HeadRows([(0, 0)], ROWS[:2]), ids, mask)
        with pytest.raises(UserError, match="exceed the forward's 20 query"):
            capture.run(HeadRows([(0, 0)], [[20], [1], [1]]), ids, mask)
        with pytest.raises(UserError, match="query selection covers 3 batch rows, the key selection 1"):
            capture.arm(HeadMeanBlocks(ROWS, [[0]]))
        capture.arm(HeadRows([(2, 0)], ROWS))
        with pytest.raises(UserError, match=r"no forward reached layers \[2\]"):
            capture.collect()
        with pytest.raises(UserError, match="already active"), capture:
            pass
        with AttentionCapture(model) as inner, pytest.raises(UserError, match="not this capture"):
            assert inner.name != capture.name
            capture.arm(HeadRows([(0, 0)], ROWS))


@pytest.fixture(scope="module")
def qwen3_pair(tiny_model_dir):
    """The same tiny Qwen3 as an SDPA model and as an eager copy."""
    model = load_model(str(tiny_model_dir("qwen3"))).model
    return model, eager_copy(model)


@settings(max_examples=15, deadline=None)
@given(data=st.data())
def test_random_selections_match_eager(qwen3_pair, data):
    model, eager = qwen3_pair
    lengths = data.draw(st.lists(st.integers(1, 12), min_size=1, max_size=3))
    ids, mask = batch(lengths, seed=data.draw(st.integers(0, 100)))
    rows = [data.draw(st.lists(st.integers(0, ids.shape[1] - 1), max_size=6)) for _ in lengths]
    heads = data.draw(
        st.lists(st.tuples(st.integers(0, 3), st.integers(0, 3)), min_size=1, max_size=4, unique=True)
    )
    with torch.no_grad():
        reference = eager(ids, attention_mask=mask, output_attentions=True).attentions
    with AttentionCapture(model) as capture:
        got = capture.run(HeadRows(heads, rows), ids, mask)
    assert_head_rows_match(got, reference, heads, rows, mask)


@pytest.mark.slow
def test_smollm2_both_modes_equal_eager(smollm2):
    model = smollm2.model
    ids, mask = batch([48, 31], vocab=model.config.vocab_size)
    reference = eager_attentions(model, ids, mask)
    with torch.no_grad():
        plain = model(ids, attention_mask=mask).logits
    heads = [(16, 2), (20, 8), (23, 2), (23, 5)]  # 9 query heads on 3 KV heads
    rows = [list(range(40, 48)), [10, 30, 47]]  # batch row 1: 17 padding positions, 10 is one of them
    keys = [[0, 5, 39, 47], list(range(17, 31))]
    with AttentionCapture(model) as capture:
        capture.arm(HeadRows(heads, rows))
        with torch.no_grad():
            logits = model(ids, attention_mask=mask).logits
        got = capture.collect()
        blocks = capture.run(HeadMeanBlocks(rows, keys), ids, mask)
    assert torch.equal(logits, plain)
    assert_head_rows_match(got, reference, heads, rows, mask)
    assert len(blocks) == 30
    for layer, probs in blocks.items():
        mean = reference[layer].mean(1)
        for b in range(2):
            for j, pos in enumerate(rows[b]):
                expected = mean[b, pos, keys[b]] if mask[b, pos] else torch.zeros(len(keys[b]))
                assert (probs[b, j, : len(keys[b])] - expected).abs().max() <= TOL

"""Batch scoring (attncore.scores) on tiny random Llama / Qwen2 (GQA) models: step scores and stepwise
matrices of padded batches against eager attention on each example alone, both padding sides, armed
inside a training forward, every head at once, and under a tiny memory budget."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import pytest
import torch

from attncore.attention import AttentionCapture
from attncore.errors import UserError
from attncore.models import load_model
from attncore.padding import pad_batch, position_ids, real_spans
from attncore.scores import (
    TextLayout,
    arm_step_scores,
    arm_stepwise_matrices,
    batch_step_scores,
    batch_stepwise_matrices,
)
from attncore.steps import SegmentedResponse, Step, StepKind, unscored_reason

TOL = 1e-5
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module", params=["llama", "qwen2"])
def model(request, tiny_model_dir):
    return load_model(str(tiny_model_dir(request.param))).model  # 4 layers, 4 query heads on 2 KV heads


def response(cuts: list[int], think_end: int, n_tokens: int) -> SegmentedResponse:
    """An ok response whose steps are the token ranges between `cuts`, `</think>` at `think_end`."""
    steps = tuple(Step((a, b), (a, b), StepKind.PROGRESSION, None) for a, b in itertools.pairwise(cuts))
    return SegmentedResponse(True, None, steps, (think_end, think_end + 1), n_tokens)


# (prompt length, response); total lengths 23, 14, 30: padding of 16, 7 and 0 columns
EXAMPLES = [
    (5, response([0, 4, 9, 13], 13, 18)),
    (3, response([0, 2, 6], 7, 11)),
    (8, response([0, 3, 5, 10, 16], 17, 22)),
]
UNSCORED = SegmentedResponse(False, "no_think_end", (), None, 6)


def sequences(lengths: list[int], seed: int = 0) -> list[list[int]]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randint(5, 300, (n,), generator=gen).tolist() for n in lengths]


def eager_attentions(model, ids: list[int]) -> tuple[torch.Tensor, ...]:
    """Per layer (heads, T, T) eager softmax attention of one unpadded sequence."""
    impl = model.config._attn_implementation
    model.set_attn_implementation("eager")
    try:
        with torch.no_grad():
            out = model(torch.tensor([ids]), output_attentions=True)
    finally:
        model.set_attn_implementation(impl)
    return tuple(a[0] for a in out.attentions)


def expected_scores(attn, prompt: int, r: SegmentedResponse) -> torch.Tensor:
    """(layers * heads, steps) `(1/|s_k|) Σ_{m∈F} Σ_{n∈s_k} a(m→n)` with plain loops, layer-major."""
    answer = range(*r.answer_span(prompt))
    rows = []
    for layer_attn in attn:
        for head in range(layer_attn.shape[0]):
            mass = sum(layer_attn[head, m] for m in answer)
            rows.append([mass[a:b].sum() / (b - a) for a, b in r.step_spans(prompt)])
    return torch.tensor(rows)


@pytest.mark.parametrize("side", ["left", "right"])
def test_batch_step_scores_equal_each_example_alone(model, side):
    seqs = sequences([p + r.n_tokens for p, r in EXAMPLES] + [9, 7])
    batch = pad_batch(seqs, pad_id=0, side=side)
    responses = [r for _, r in EXAMPLES] + [None, UNSCORED]
    prompts = [p for p, _ in EXAMPLES] + [0, 3]
    with AttentionCapture(model) as capture:
        every = batch_step_scores(capture, batch.input_ids, batch.attention_mask, responses, prompts)
        picked = [(3, 1), (0, 2), (2, 3), (1, 0)]
        some = batch_step_scores(capture, batch.input_ids, batch.attention_mask, responses, prompts, picked)
    assert every[3:] == [None, None] and some[3:] == [None, None]
    for b, (prompt, r) in enumerate(EXAMPLES):
        expected = expected_scores(eager_attentions(model, seqs[b]), prompt, r)
        got = every[b]
        assert got.heads == tuple((layer, head) for layer in range(4) for head in range(4))
        assert got.per_head.shape == (16, len(r.steps))
        assert (got.per_head - expected).abs().max() <= TOL, b
        assert (got.mean - expected.mean(0)).abs().max() <= TOL
        assert expected.std() > 1e-3 * expected.mean(), "scores differ between steps and heads"
        rows = [layer * 4 + head for layer, head in picked]
        assert some[b].heads == tuple(picked)
        assert (some[b].per_head - got.per_head[rows]).abs().max() <= 1e-6  # per-head = all-heads mode


def test_budget_chunking_gives_the_same_scores(model):
    seqs = sequences([p + r.n_tokens for p, r in EXAMPLES])
    batch = pad_batch(seqs, pad_id=0)
    responses, prompts = [r for _, r in EXAMPLES], [p for p, _ in EXAMPLES]
    width = batch.input_ids.shape[1]
    results = []
    # whole layers at once; 3 heads a row (4 bytes x 3 rows x width keys each); one head and one row
    for budget in (2**25, 4 * 3 * width * 3, 1):
        with AttentionCapture(model, chunk_bytes=budget) as capture:
            results.append(
                batch_step_scores(capture, batch.input_ids, batch.attention_mask, responses, prompts)
            )
    for other in results[1:]:
        for a, b in zip(results[0], other, strict=True):
            assert torch.allclose(a.per_head, b.per_head, rtol=0, atol=1e-6)


@pytest.mark.parametrize("side", ["left", "right"])
def test_armed_in_a_training_forward_equals_standalone(model, side):
    seqs = sequences([p + r.n_tokens for p, r in EXAMPLES], seed=1)
    batch = pad_batch(seqs, pad_id=0, side=side)
    responses, prompts = [r for _, r in EXAMPLES], [p for p, _ in EXAMPLES]
    layouts = [TextLayout([(0, 3), (3, 8)], [{1, 2}, {4}, {6, 7, 9}], offset=1) for _ in EXAMPLES]
    heads = [(2, 1), (3, 3)]
    model.train()
    try:
        with AttentionCapture(model) as capture:
            alone = batch_step_scores(
                capture, batch.input_ids, batch.attention_mask, responses, prompts, heads
            )
            matrices = batch_stepwise_matrices(capture, batch.input_ids, batch.attention_mask, layouts)
            pending = arm_step_scores(capture, batch.attention_mask, responses, prompts, heads)
            out = model(**batch._asdict(), labels=batch.input_ids)
            armed = pending.collect()
            pending = arm_stepwise_matrices(capture, batch.attention_mask, layouts)
            out.loss.backward()  # the loss forward is unchanged and differentiable
            model(**batch._asdict())
            armed_matrices = pending.collect()
    finally:
        model.eval()
        model.zero_grad()
    for a, b in zip(alone, armed, strict=True):
        assert a.heads == b.heads and not b.per_head.requires_grad
        assert (a.per_head - b.per_head).abs().max() <= TOL
    for a, b in zip(matrices, armed_matrices, strict=True):
        assert (a - b).abs().max() <= TOL


@pytest.mark.parametrize("side", ["left", "right"])
def test_batch_stepwise_matrices_equal_each_example_alone(model, side):
    seqs = sequences([14, 25, 9], seed=2)
    layouts = [  # offset 1: a BOS-like first token in no step and no unit
        TextLayout([(0, 5), (5, 13)], [{0, 1}, {6}, {9, 12}], offset=1),
        TextLayout([(0, 4), (4, 10), (10, 22)], [{3}, {11, 20, 21}], offset=1),
        TextLayout([(0, 8)], [{2, 7}], offset=1),
    ]
    batch = pad_batch(seqs, pad_id=0, side=side)
    with AttentionCapture(model) as capture:
        got = batch_stepwise_matrices(capture, batch.input_ids, batch.attention_mask, layouts)
        two = batch_stepwise_matrices(capture, batch.input_ids, batch.attention_mask, layouts, layers=[3, 1])
    for b, layout in enumerate(layouts):
        attn = eager_attentions(model, seqs[b])
        expected = torch.zeros(4, len(layout.steps), len(layout.units))
        for layer in range(4):
            mean = attn[layer].mean(0)
            for s, (start, end) in enumerate(layout.steps):
                for c, unit in enumerate(layout.units):
                    cols = [1 + j for j in unit]
                    expected[layer, s, c] = mean[1 + start : 1 + end][:, cols].sum()
        assert got[b].shape == expected.shape
        assert (got[b] - expected).abs().max() <= TOL
        assert (two[b] - expected[[3, 1]]).abs().max() <= TOL
        assert expected.abs().max() > 0.1


def test_padding_helpers():
    batch = pad_batch([[7, 8, 9], [5]], pad_id=0)
    assert batch.input_ids.tolist() == [[7, 8, 9], [0, 0, 5]]
    assert batch.attention_mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    assert batch.position_ids.tolist() == [[0, 1, 2], [0, 0, 0]]
    right = pad_batch([[7, 8, 9], [5, 6]], pad_id=1, side="right")
    assert right.input_ids.tolist() == [[7, 8, 9], [5, 6, 1]]
    assert right.position_ids.tolist() == [[0, 1, 2], [0, 1, 1]]
    assert real_spans(batch.attention_mask) == [(0, 3), (2, 3)]
    assert real_spans(right.attention_mask) == [(0, 3), (0, 2)]
    assert torch.equal(position_ids(torch.tensor([[0, 1, 1, 0]])), torch.tensor([[0, 0, 1, 1]]))
    with pytest.raises(UserError, match="row 0 of the attention mask has padding between"):
        real_spans(torch.tensor([[1, 0, 1]]))
    with pytest.raises(UserError, match="row 1 of the attention mask has no real token"):
        real_spans(torch.tensor([[1, 1], [0, 0]]))


def test_unscored_reasons_and_user_errors(model):
    assert unscored_reason(EXAMPLES[0][1]) is None
    assert unscored_reason(UNSCORED) == "no_think_end"
    assert unscored_reason(response([0, 3, 6], 6, 7)) == "empty_answer"  # nothing after `</think>`
    batch = pad_batch(sequences([23, 14]), pad_id=0)
    responses, prompts = [r for _, r in EXAMPLES[:2]], [5, 3]
    with AttentionCapture(model) as capture:
        with pytest.raises(UserError, match="responses: 1 given for a batch of 2 rows"):
            arm_step_scores(capture, batch.attention_mask, responses[:1], prompts)
        with pytest.raises(UserError, match="prompt_lengths: 1 given for 2 responses"):
            arm_step_scores(capture, batch.attention_mask, responses, prompts[:1])
        with pytest.raises(
            UserError, match="row 1: the prompt and response needs 15 real tokens, the row has 14"
        ):
            arm_step_scores(capture, batch.attention_mask, responses, [5, 4])
        with pytest.raises(UserError, match=r"name a \(layer, head\) pair twice"):
            arm_step_scores(capture, batch.attention_mask, responses, prompts, [(0, 1), (0, 1)])
        with pytest.raises(UserError, match="outside the model's 4 layers"):
            arm_step_scores(capture, batch.attention_mask, responses, prompts, [(4, 0)])
        with pytest.raises(UserError, match="row 0: the text needs 24 real tokens, the row has 23"):
            arm_stepwise_matrices(capture, batch.attention_mask, [TextLayout([(0, 23)], [{1}], 1)] * 2)
        assert batch_step_scores(
            capture, batch.input_ids, batch.attention_mask, [None, UNSCORED], [0, 0]
        ) == [
            None,
            None,
        ]


def readme_snippet() -> str:
    """The Python block under the README's "Use it as a library" heading."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Use it as a library", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.mark.slow
def test_readme_library_snippet_runs(capsys):
    exec(compile(readme_snippet(), "README.md", "exec"), {})
    printed = capsys.readouterr().out.splitlines()
    assert [line.split("[")[0].strip() for line in printed] == ["(14, 2)", "(20, 5)", "(27, 0)"]
    scores = [[float(v) for v in re.findall(r"\d+\.\d+", line.split("[")[1])] for line in printed]
    assert all(len(row) == 2 and all(0 < v < 1 for v in row) for row in scores)  # two steps, scored

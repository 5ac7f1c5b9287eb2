"""Head tables, top-k and greedy ensembles, and the rule that rejects position heads."""

from __future__ import annotations

import itertools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from attncore.ranking import step_ranking_accuracy
from attnpo.selection import (
    LabelledResponse,
    eligible_heads,
    ensemble_scores,
    ensemble_sra,
    greedy_curve,
    head_table,
    summarise_ranker,
    top_k_curve,
)


def response(scores, labels, rid="r") -> LabelledResponse:
    lab = torch.tensor(labels)
    return LabelledResponse(rid, torch.tensor(scores, dtype=torch.float64), lab == 1, lab == 0)


def test_hand_computed_table_and_ensembles():
    # 1 layer x 3 heads; labels: step 0 essential, steps 1-2 redundant, step 3 unlabelled.
    a = response([[[3, 1, 2, 0], [1, 2, 3, 9], [2, 2, 1, 9]]], [1, 0, 0, -1], "a")
    # second response: essential step 2 after redundant step 0 and before redundant step 3.
    b = response([[[0, 9, 1, 2], [0, 9, 1, 2], [3, 9, 2, 1]]], [0, -1, 1, 0], "b")
    table = head_table([a, b], samples=200)
    # head 0: a 1.0, b (1>0 win, 1<2 loss) 0.5 -> 0.75; head 1: a 0.0, b 0.5 -> 0.25; head 2: a 0.75, b 0.5
    assert table.sra.tolist() == [[0.75, 0.25, 0.625]]
    # after pairs: a (0,1),(0,2); b (2,3). head 0: a 1.0, b 0.0 -> 0.5; head 2: a 0.75, b 1.0 -> 0.875.
    assert table.by_direction["after"].tolist() == [[0.5, 0.0, 0.875]]
    # before pairs: only b (2,0). head 0 win, head 1 win, head 2 loss.
    assert table.by_direction["before"].tolist() == [[1.0, 1.0, 0.0]]
    assert table.pairs == {"all": 4, "after": 3, "before": 1}
    assert table.responses == {"all": 2, "after": 2, "before": 1}
    assert bool((table.low <= table.sra).all() and (table.sra <= table.high).all())
    # Ensemble of heads 0 and 2: averaged scores a [2.5, 1.5, 1.5, .], b [1.5, ., 1.5, 1.5] -> a 1.0, b 0.5
    assert ensemble_sra([a, b], [(0, 0), (0, 2)]) == 0.75
    everyone = torch.ones(1, 3, dtype=torch.bool)
    top = top_k_curve([a, b], table, everyone, k_max=10)
    assert [e.heads for e in top] == [((0, 0),), ((0, 0), (0, 2)), ((0, 0), (0, 2), (0, 1))]
    greedy = greedy_curve([a, b], table, everyone, k_max=2)
    # From head 0: adding head 1 gives a [2, 1.5, 2.5] (1 win, 1 loss) 0.5 and b 0.5 -> 0.5; head 2 gives 0.75.
    assert [(e.heads, e.sra) for e in greedy] == [(((0, 0),), 0.75), (((0, 0), (0, 2)), 0.75)]
    # Any per-response scores summarise the same way: head 0 alone, and the ensemble of heads 0 and 2.
    head0 = summarise_ranker([a, b], [a.scores[0, 0], b.scores[0, 0]], samples=200)
    assert (head0.sra, head0.after, head0.before) == (0.75, 0.5, 1.0)
    assert head0.low <= head0.sra <= head0.high
    pair = summarise_ranker([a, b], ensemble_scores([a, b], [(0, 0), (0, 2)]), samples=200)
    # averaged a [2.5, 1.5, 1.5]: after 1.0; b [1.5, ., 1.5, 1.5]: before (2,0) tie 0.5, after (2,3) tie 0.5
    assert (pair.sra, pair.after, pair.before) == (0.75, 0.75, 0.5)


def test_a_head_that_only_prefers_later_steps_is_never_selected():
    """Most redundant steps come before the essential ones (plans), some after (re-checks): a position head
    ranks well overall, but fails the after-direction; a content head with noise must win the selection."""
    generator = torch.Generator().manual_seed(0)
    responses = []
    for i in range(60):
        n = 8
        labels = [0, 0, 0, 1, 1, 1, 1, 0] if i % 2 else [0, 0, 0, 0, 1, 1, 1, 0]
        essential = torch.tensor(labels, dtype=torch.float64)
        position = torch.arange(n, dtype=torch.float64)  # head (0, 0): later is higher
        content = essential + 1.2 * torch.randn(n, generator=generator, dtype=torch.float64)  # head (1, 1)
        noise = torch.randn(2, 2, n, generator=generator, dtype=torch.float64)  # the others: chance
        noise[0, 0], noise[1, 1] = position, content
        responses.append(response(noise.tolist(), labels, str(i)))
    table = head_table(responses, samples=200)
    assert table.sra[0, 0] > table.sra[1, 1] > 0.6  # the position head has the best overall SRA
    assert table.by_direction["after"][0, 0] < 0.2 and table.by_direction["before"][0, 0] == 1.0
    eligible = eligible_heads(table, min_direction_sra=0.6)
    assert not eligible[0, 0] and eligible[1, 1] and int(eligible.sum()) == 1
    for curve in (top_k_curve(responses, table, eligible), greedy_curve(responses, table, eligible)):
        assert [e.heads for e in curve] == [((1, 1),)]


def test_direction_without_pairs_is_not_checked():
    a = response([[[0.0, 1.0]]], [1, 0])  # only an after pair, which the head gets wrong
    table = head_table([a], samples=10)
    assert table.pairs["before"] == 0 and table.by_direction["before"].isnan().all()
    assert eligible_heads(table, 0.6).tolist() == [[False]]
    assert eligible_heads(table, 0.0).tolist() == [[True]]


@st.composite
def probe_sets(draw):
    layers, heads = draw(st.integers(1, 2)), draw(st.integers(1, 3))
    out = []
    for r in range(draw(st.integers(1, 4))):
        n = draw(st.integers(2, 5))
        labels = draw(st.lists(st.sampled_from([1, 0, -1]), min_size=n, max_size=n))
        values = draw(st.lists(st.integers(0, 3), min_size=layers * heads * n, max_size=layers * heads * n))
        scores = torch.tensor(values, dtype=torch.float64).reshape(layers, heads, n)
        out.append(response(scores.tolist(), labels, str(r)))
    return out


@settings(max_examples=60, deadline=None)
@given(probe_sets())
def test_greedy_and_top_k_properties(responses):
    if not any(r.pairs() for r in responses):
        return
    table = head_table(responses, samples=20)
    layers, heads = table.sra.shape
    everyone = torch.ones(layers, heads, dtype=torch.bool)
    top, greedy = top_k_curve(responses, table, everyone), greedy_curve(responses, table, everyone)
    assert len(top) == len(greedy) == min(10, layers * heads)
    # Both start from the best single head; greedy never repeats a head and reports its true SRA.
    assert top[0].heads == greedy[0].heads and top[0].sra == pytest.approx(float(table.sra.max()))
    for e in greedy:
        assert len(set(e.heads)) == e.k
        assert e.sra == pytest.approx(ensemble_sra(responses, e.heads))
    # Greedy's second head is the best pair containing the first head.
    if len(greedy) > 1:
        first = greedy[0].heads[0]
        others = [h for h in itertools.product(range(layers), range(heads)) if h != first]
        assert greedy[1].sra == pytest.approx(max(ensemble_sra(responses, [first, h]) for h in others))
    # A single-head ensemble is that head's SRA.
    for layer, head in itertools.product(range(layers), range(heads)):
        per = [
            step_ranking_accuracy(r.scores[layer, head], r.essential, r.redundant)
            for r in responses
            if r.pairs()
        ]
        assert ensemble_sra(responses, [(layer, head)]) == pytest.approx(float(torch.stack(per).mean()))

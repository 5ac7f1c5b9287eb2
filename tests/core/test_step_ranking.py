"""Step Ranking Accuracy (attnpo-spec §5) and its split by pair direction, on hand-computed cases."""

from __future__ import annotations

import pytest

from attncore.step_ranking import ranking_accuracy, ranking_pairs, response_sra

E, R, U = "essential", "redundant", "unparseable"


def test_pairs_are_every_essential_redundant_combination_and_skip_other_labels():
    assert ranking_pairs([R, E, U, E, R]) == [(1, 0), (1, 4), (3, 0), (3, 4)]
    assert ranking_pairs([E, E, U]) == []


def test_one_response_counts_ties_half_and_splits_by_direction():
    labels, scores = [R, E, E, R], [0.0, 1.0, 2.0, 2.0]
    # (1,0) 1 > 0: 1; (1,3) 1 < 2: 0; (2,0) 2 > 0: 1; (2,3) tie: 1/2.
    assert response_sra(scores, labels) == pytest.approx(2.5 / 4)
    assert response_sra(scores, labels, "after") == pytest.approx(0.25)  # pairs (1,3), (2,3)
    assert response_sra(scores, labels, "before") == pytest.approx(1.0)  # pairs (1,0), (2,0)
    assert response_sra([1.0, 1.0], [E, E]) is None
    assert response_sra([0.0, 1.0], [R, E], "after") is None


def test_the_mean_runs_over_responses_with_pairs_and_counts_pairs_pooled():
    acc = ranking_accuracy(
        [[0.0, 1.0, 2.0, 2.0], [1.0, 1.0], [5.0, 0.0, 3.0]],
        [[R, E, E, R], [E, R], [E, U, E]],  # the third response has no pair
    )
    assert acc.sra == pytest.approx((0.625 + 0.5) / 2)
    assert acc.sra_after == pytest.approx((0.25 + 0.5) / 2)
    assert acc.sra_before == pytest.approx(1.0)  # only the first response has a pair pointing before
    assert (acc.responses, acc.pairs, acc.pairs_after) == (2, 5, 3)
    assert acc.share_after == pytest.approx(0.6)


def test_no_pairs_gives_no_figures_and_mismatched_lengths_are_errors():
    acc = ranking_accuracy([[1.0]], [[E]])
    assert (acc.sra, acc.sra_after, acc.sra_before, acc.share_after) == (None, None, None, None)
    with pytest.raises(ValueError, match="3 scores for 2"):
        response_sra([1.0, 2.0, 3.0], [E, R])
    with pytest.raises(ValueError, match="1 score lists for 2"):
        ranking_accuracy([[1.0]], [[E], [R]])

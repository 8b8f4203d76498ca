"""The metric functions against hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from streamrec.backtest import metrics


def test_hit_rate_is_recall_of_the_next_item() -> None:
    ranks = [0, 4, 5, 9, 10, -1]  # 0-based ranks, -1 = not in the list
    assert metrics.hit_rate(ranks, 1) == pytest.approx(1 / 6)
    assert metrics.hit_rate(ranks, 5) == pytest.approx(2 / 6)
    assert metrics.hit_rate(ranks, 10) == pytest.approx(4 / 6)
    assert metrics.hit_rate(ranks, 11) == pytest.approx(5 / 6)


def test_ndcg_gain_by_rank() -> None:
    # hits at ranks 0, 1 and 2 gain 1, 1/log2(3) = 0.63093, 1/log2(4) = 0.5
    gains = metrics.ndcg_gains([0, 1, 2, 3, -1], k=3)
    assert gains.tolist() == pytest.approx([1.0, 0.6309297535714575, 0.5, 0.0, 0.0])
    assert metrics.ndcg([0, 1, 2, 3, -1], 3) == pytest.approx((1 + 0.6309297535714575 + 0.5) / 5)
    assert metrics.ndcg([2], 4) == pytest.approx(0.5)


def test_mrr_uses_the_whole_list_and_zero_when_absent() -> None:
    assert metrics.reciprocal_ranks([0, 1, 4, -1]).tolist() == [1.0, 0.5, 0.2, 0.0]
    assert metrics.mrr([0, 1, 4, -1]) == pytest.approx(1.7 / 4)


def test_coverage_counts_distinct_items() -> None:
    assert metrics.coverage(np.array([[1, 2, 3], [3, 2, -1]]).ravel(), 6) == pytest.approx(0.5)
    assert metrics.coverage([], 6) == 0.0
    assert math.isnan(metrics.coverage([1], 0))


def test_rating_errors() -> None:
    pred, truth = [4.0, 2.0, 5.0, 3.0], [5.0, 2.0, 3.0, 3.0]
    assert metrics.rmse(pred, truth) == pytest.approx(math.sqrt((1 + 0 + 4 + 0) / 4))
    assert metrics.mae(pred, truth) == pytest.approx(3 / 4)
    assert math.isnan(metrics.rmse([], []))
    with pytest.raises(ValueError, match="shape"):
        metrics.mae([1.0], [1.0, 2.0])


def test_empty_inputs_give_nan() -> None:
    assert math.isnan(metrics.hit_rate([], 10))
    assert math.isnan(metrics.ndcg([], 10))
    assert math.isnan(metrics.mrr([]))


def test_rank_lookup_with_padded_lists() -> None:
    lists = np.array([[5, 6, 7], [8, -1, -1], [-1, -1, -1]])
    rows = np.array([0, 0, 0, 1, 1, 2])
    targets = np.array([5, 7, 9, 8, 6, 5])
    assert metrics.rank_lookup(lists, rows, targets).tolist() == [0, 2, -1, 0, -1, -1]
    assert metrics.rank_lookup(np.zeros((2, 0), dtype=np.int64), np.array([0]), np.array([1])).tolist() == [-1]


def test_window_means() -> None:
    values = np.array([1.0, 0.0, 0.0, 1.0, 1.0])
    ids = np.array([0, 0, 1, 1, 1])
    assert metrics.window_means(values, ids, 2).tolist() == pytest.approx([0.5, 2 / 3])
    assert np.isnan(metrics.window_means(values, ids, 3)[2])


def test_ranks_must_be_one_dimensional() -> None:
    with pytest.raises(ValueError, match="1-D"):
        metrics.hit_rate(np.zeros((2, 2)), 1)

"""Metrics of a prequential backtest, as pure functions of ranks and predictions.

The harness records, for every scored event, the 0-based ``rank`` of the
event's item in the list recommended to its user just before the event
(``-1`` when the item is not in the list). Every ranking metric is a function
of those ranks, so the figures for several ``K`` come from one longest list:

- :func:`hit_rate` (HR@K): share of events whose item is in the top-K, the
  recall of the next item;
- :func:`ndcg` (NDCG@K): ``1 / log2(rank + 2)`` for a hit at ``rank < K``,
  else 0 (one relevant item, so the ideal DCG is 1);
- :func:`mrr`: ``1 / (rank + 1)`` within the longest list, 0 when absent;
- :func:`coverage`: distinct items recommended / items known;
- :func:`rmse` and :func:`mae` of rating predictions made before learning.

:func:`rank_lookup` finds the ranks of a micro-batch in one vectorised pass,
and :func:`window_means` averages any per-event figure over windows of
consecutive scored events.

Examples
--------
>>> ranks = np.array([0, 3, -1, 1])
>>> hit_rate(ranks, 2), hit_rate(ranks, 5)
(0.5, 0.75)
>>> round(mrr(ranks), 4)   # (1 + 1/4 + 0 + 1/2) / 4
0.4375
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = [
    "coverage",
    "hit_gains",
    "hit_rate",
    "mae",
    "mrr",
    "ndcg",
    "ndcg_gains",
    "rank_lookup",
    "reciprocal_ranks",
    "rmse",
    "window_means",
]


def _ranks(ranks: Sequence[int] | np.ndarray) -> np.ndarray:
    array = np.asarray(ranks, dtype=np.int64)
    if array.ndim != 1:
        raise ValueError(f"ranks must be 1-D, got shape {array.shape}")
    return array


def _mean(values: np.ndarray) -> float:
    return float(values.mean()) if len(values) else float("nan")


def hit_gains(ranks: Sequence[int] | np.ndarray, k: int) -> np.ndarray:
    """Per event 1.0 when the item is in the top-``k`` (``0 <= rank < k``), else 0.0.

    Examples
    --------
    >>> hit_gains([0, 9, 10, -1], 10).tolist()
    [1.0, 1.0, 0.0, 0.0]
    """
    r = _ranks(ranks)
    return ((r >= 0) & (r < k)).astype(np.float64)


def hit_rate(ranks: Sequence[int] | np.ndarray, k: int) -> float:
    """HR@K: the share of events whose item is in the top-``k`` (NaN for no events).

    Examples
    --------
    >>> hit_rate([2, -1, 0, 7], 3)
    0.5
    >>> hit_rate([], 10)
    nan
    """
    return _mean(hit_gains(ranks, k))


def ndcg_gains(ranks: Sequence[int] | np.ndarray, k: int) -> np.ndarray:
    """Per event ``1 / log2(rank + 2)`` for a hit at 0-based ``rank < k``, else 0.

    Examples
    --------
    >>> ndcg_gains([0, 1, 3, 4, -1], 4).round(4).tolist()
    [1.0, 0.6309, 0.4307, 0.0, 0.0]
    """
    r = _ranks(ranks)
    hit = (r >= 0) & (r < k)
    out = np.zeros(len(r), dtype=np.float64)
    out[hit] = 1.0 / np.log2(r[hit] + 2.0)
    return out


def ndcg(ranks: Sequence[int] | np.ndarray, k: int) -> float:
    """NDCG@K with one relevant item per event (the ideal DCG is 1).

    Examples
    --------
    >>> round(ndcg([0, 1, -1, 5], 3), 4)   # (1 + 1/log2(3) + 0 + 0) / 4
    0.4077
    """
    return _mean(ndcg_gains(ranks, k))


def reciprocal_ranks(ranks: Sequence[int] | np.ndarray) -> np.ndarray:
    """Per event ``1 / (rank + 1)``, 0 when the item is absent (``rank == -1``).

    Examples
    --------
    >>> reciprocal_ranks([0, 1, 3, -1]).tolist()
    [1.0, 0.5, 0.25, 0.0]
    """
    r = _ranks(ranks)
    out = np.zeros(len(r), dtype=np.float64)
    found = r >= 0
    out[found] = 1.0 / (r[found] + 1.0)
    return out


def mrr(ranks: Sequence[int] | np.ndarray) -> float:
    """Mean reciprocal rank within the lists as recommended (0 for an absent item).

    Examples
    --------
    >>> mrr([0, 1, -1, -1])
    0.375
    """
    return _mean(reciprocal_ranks(ranks))


def coverage(recommended: Sequence[int] | np.ndarray, n_known: int) -> float:
    """Catalogue coverage: distinct ``recommended`` items over ``n_known`` items known.

    Items are given by any hashable code; ``-1`` marks padding and is ignored.

    Examples
    --------
    >>> coverage([3, 1, 3, 2, -1], 10)
    0.3
    >>> coverage([], 0)
    nan
    """
    if n_known <= 0:
        return float("nan")
    codes = np.asarray(recommended)
    if codes.size == 0:
        return 0.0
    return float(len(np.unique(codes[codes != -1]))) / n_known


def rmse(predictions: Sequence[float] | np.ndarray, truth: Sequence[float] | np.ndarray) -> float:
    """Root mean squared error (NaN for no pairs).

    Examples
    --------
    >>> rmse([3.0, 4.0], [4.0, 2.0])   # sqrt((1 + 4) / 2)
    1.5811388300841898
    """
    p, t = np.asarray(predictions, dtype=np.float64), np.asarray(truth, dtype=np.float64)
    if p.shape != t.shape:
        raise ValueError(f"predictions and truth differ in shape: {p.shape} != {t.shape}")
    return float(np.sqrt(np.mean((p - t) ** 2))) if p.size else float("nan")


def mae(predictions: Sequence[float] | np.ndarray, truth: Sequence[float] | np.ndarray) -> float:
    """Mean absolute error (NaN for no pairs).

    Examples
    --------
    >>> mae([3.0, 4.0], [4.0, 2.0])
    1.5
    """
    p, t = np.asarray(predictions, dtype=np.float64), np.asarray(truth, dtype=np.float64)
    if p.shape != t.shape:
        raise ValueError(f"predictions and truth differ in shape: {p.shape} != {t.shape}")
    return float(np.mean(np.abs(p - t))) if p.size else float("nan")


def rank_lookup(lists: np.ndarray, rows: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """0-based rank of ``targets[n]`` in row ``rows[n]`` of ``lists`` (``-1`` if absent).

    Parameters
    ----------
    lists
        ``(n_users, L)`` integer item codes, best first, padded with ``-1``.
    rows
        Row of ``lists`` recommended to each event's user.
    targets
        Item code of each event (non-negative).

    Examples
    --------
    >>> lists = np.array([[7, 3, 5], [2, -1, -1]])
    >>> rank_lookup(lists, np.array([0, 0, 1, 1]), np.array([5, 2, 2, 9])).tolist()
    [2, -1, 0, -1]
    """
    if len(rows) == 0 or lists.shape[1] == 0:
        return np.full(len(rows), -1, dtype=np.int64)
    hits = lists[rows] == np.asarray(targets)[:, None]
    return np.where(hits.any(axis=1), hits.argmax(axis=1), -1).astype(np.int64)


def window_means(values: np.ndarray, window_ids: np.ndarray, n_windows: int) -> np.ndarray:
    """Mean of ``values`` per window id in ``range(n_windows)`` (NaN for an empty window).

    Examples
    --------
    >>> window_means(np.array([1.0, 0.0, 1.0, 1.0]), np.array([0, 0, 1, 1]), 3).tolist()
    [0.5, 1.0, nan]
    """
    sums = np.bincount(window_ids, weights=values, minlength=n_windows)[:n_windows]
    counts = np.bincount(window_ids, minlength=n_windows)[:n_windows]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)

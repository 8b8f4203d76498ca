"""Top-k selection: the k largest by (value descending, index ascending), whatever the ties."""

from __future__ import annotations

import numpy as np
import pytest

from models.ranking import top_k, top_k_row, top_k_row_by


def _reference(row: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.lexsort((np.arange(len(row)), -row))[:k]
    return order, row[order]


@pytest.mark.parametrize("kind", ["distinct", "mostly zero", "few values", "mostly -inf"])
def test_long_rows_give_the_order_of_a_full_sort(kind: str) -> None:
    """Rows long enough to be sampled first (from 512 items), ties at every place included."""
    rng = np.random.default_rng(len(kind))
    for n, k in [
        (600, 10),
        (1_334, 50),
        (2_257, 2_000),
        (5_000, 1),
        (70_000, 1),
        (70_000, 20),
        (100_000, 3_000),
        (100_000, 60_000),
        (200_000, 100),
    ]:
        if kind == "distinct":
            row = rng.random(n).astype(np.float32)
        elif kind == "mostly zero":  # most items of a large catalogue score 0
            row = np.zeros(n, dtype=np.float32)
            row[rng.integers(0, n, int(rng.integers(1, 2_000)))] = rng.integers(1, 5)
        elif kind == "few values":
            row = rng.integers(-3, 3, n).astype(np.float64)
        else:  # excluded items
            row = np.full(n, -np.inf)
            row[rng.integers(0, n, 50)] = rng.random(50)
        got, want = top_k_row(row, k), _reference(row, k)
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])
        batch = top_k(np.stack([row, row[::-1].copy()]), k)
        np.testing.assert_array_equal(batch[0][0], want[0])


@pytest.mark.parametrize("n", [5, 600, 70_000])
def test_ranking_by_keys_gives_the_order_of_the_rows_they_stand_for(n: int) -> None:
    """Shuffled candidates standing for rows: the top k of the rows, ties to the lower row."""
    rng = np.random.default_rng(n)
    row = np.zeros(3 * n, dtype=np.float32)
    row[rng.integers(0, 3 * n, n)] = rng.integers(1, 4, n)  # many ties, at every place
    keys = rng.permutation(3 * n)[:n]
    vals = row[keys]
    for k in (1, min(3, n), n // 2 or 1, n):
        pos, top = top_k_row_by(vals, keys, k)
        order = np.lexsort((keys, -vals))[:k]  # every candidate sorted by (value, row)
        np.testing.assert_array_equal(keys[pos], keys[order])
        np.testing.assert_array_equal(top, vals[order])

"""The dense and sparse co-occurrence stores hold the same counts whatever the order of updates."""

from __future__ import annotations

import numpy as np
import pytest

from models.cooccurrence import DenseCooccurrence, SparseCooccurrence, cooccurrence_store


def _filled(store_cls: type, seed: int = 0) -> tuple[DenseCooccurrence | SparseCooccurrence, np.ndarray]:
    rng = np.random.default_rng(seed)
    n = 25
    truth = np.zeros((n, n), dtype=np.float32)
    store = store_cls(5)
    store.grow(n)
    for step in range(300):
        if step % 3 == 0:  # a batch of pairs, some repeated
            h, j = rng.integers(0, n, 40), rng.integers(0, n, 40)
            keep = h != j
            h, j = h[keep], j[keep]
            store.add_pairs(h, j)
            np.add.at(truth, (h, j), 1.0)
            np.add.at(truth, (j, h), 1.0)
        else:  # one event: distinct partners
            item = int(rng.integers(0, n))
            partners = [int(p) for p in rng.permutation(n)[: rng.integers(0, 6)] if p != item]
            store.add_event(item, np.asarray(partners, dtype=np.int64))
            truth[item, partners] += 1.0
            truth[partners, item] += 1.0
    return store, truth


@pytest.mark.parametrize("store_cls", [DenseCooccurrence, SparseCooccurrence])
def test_counts_rows_and_blocks_match_a_dense_reference(store_cls: type) -> None:
    store, truth = _filled(store_cls)
    np.testing.assert_array_equal(store.csr().toarray(), truth)
    assert store.nnz == np.count_nonzero(truth)
    rows = np.array([3, 0, 17])
    weights = np.array([1.0, 0.5, 0.25], dtype=np.float32)
    np.testing.assert_allclose(store.weighted_rows(rows, weights), weights @ truth[rows], rtol=1e-6)
    cols = np.array([1, 2, 24, 0])
    np.testing.assert_array_equal(store.block(rows, cols), truth[np.ix_(rows, cols)])


@pytest.mark.parametrize("store_cls", [DenseCooccurrence, SparseCooccurrence])
def test_forget_zeroes_rows_and_columns(store_cls: type) -> None:
    store, truth = _filled(store_cls, seed=1)
    dead = np.array([4, 9])
    store.forget(dead)
    truth[dead, :] = 0.0
    truth[:, dead] = 0.0
    np.testing.assert_array_equal(store.csr().toarray(), truth)


def test_store_choice_and_conversion_keep_the_counts() -> None:
    dense, truth = _filled(DenseCooccurrence, seed=2)
    assert isinstance(cooccurrence_store(10), DenseCooccurrence)
    assert isinstance(cooccurrence_store(10, dense_max_items=5), SparseCooccurrence)
    sparse = dense.to_sparse()
    np.testing.assert_array_equal(sparse.csr().toarray(), truth)
    again = cooccurrence_store(matrix=sparse.csr())
    assert isinstance(again, DenseCooccurrence)
    np.testing.assert_array_equal(again.csr().toarray(), truth)


@pytest.mark.parametrize("side_min_entries", [0, 10**9])  # the side store folded after every increment, or never
def test_other_workers_cells_read_the_same_before_and_after_folding(side_min_entries: int) -> None:
    rng = np.random.default_rng(3)
    store, truth = _filled(SparseCooccurrence, seed=3)
    store.side_min_entries = side_min_entries
    n = truth.shape[0]
    for _ in range(20):  # another worker's increments: distinct cells with counts, between local events
        cells = rng.choice(n * n, size=30, replace=False)
        rows, cols = cells // n, cells % n
        counts = rng.integers(1, 4, 30).astype(np.float32)
        store.add_cells(rows, cols, counts)
        truth[rows, cols] += counts
        item, partners = int(rows[0]), np.setdiff1d(cols[1:3], rows[0])  # and a local event
        store.add_event(item, partners)
        truth[item, partners] += 1.0
        truth[partners, item] += 1.0
        r = int(rows[3])
        got_cols, got_counts = store.row(r)
        np.testing.assert_array_equal(got_cols, np.flatnonzero(truth[r]))
        np.testing.assert_array_equal(got_counts, truth[r, got_cols])
        some = np.array([r, int(rows[4])])
        np.testing.assert_array_equal(store.block(some, np.arange(n)), truth[some])
        weights = np.array([1.0, 0.5], dtype=np.float32)
        np.testing.assert_allclose(store.weighted_rows(some, weights), weights @ truth[some], rtol=1e-6)
    assert store.nnz == np.count_nonzero(truth)
    np.testing.assert_array_equal(store.csr().toarray(), truth)


def test_candidates_summed_by_sorting_and_over_the_items_are_the_same() -> None:
    """Few entries are sorted, many are summed into a vector over the items: the same columns and values."""
    rng = np.random.default_rng(7)
    store = SparseCooccurrence(2_000)
    store.add_pairs(rng.integers(0, 40, 3_000), rng.integers(40, 2_000, 3_000))
    rows = np.arange(40)
    weights = rng.random(40).astype(np.float32)
    long_cols, long_vals = store.weighted_candidates(rows, weights)  # about 3,000 entries: past a tenth of 2,000
    store.n_items = 10**6  # the same entries, now under a tenth of the catalogue: the sorting path
    short_cols, short_vals = store.weighted_candidates(rows, weights)
    np.testing.assert_array_equal(long_cols, short_cols)
    np.testing.assert_array_equal(long_vals, short_vals)
    dense = store.weighted_rows(rows, weights)
    np.testing.assert_array_equal(dense[long_cols], long_vals)

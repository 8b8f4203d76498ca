"""IdIndex: removal, tombstones and reuse of freed rows."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.ids import IdIndex


def test_remove_frees_the_row_and_keeps_the_others() -> None:
    index = IdIndex(["a", "b", "c"])
    assert index.remove("b") == 1
    assert len(index) == 3  # rows, free ones included
    assert index.n_live == 2 and index.n_free == 1
    assert "b" not in index
    assert index.ids == ["a", None, "c"]
    assert index.lookup(["a", "b", "c"]).tolist() == [0, -1, 2]
    assert index.get("b") == -1
    assert index.ids_of([2, 0]) == ["c", "a"]
    assert index.free_rows().tolist() == [1]
    assert index.live_mask().tolist() == [True, False, True]


def test_remove_unknown_returns_minus_one_and_changes_nothing() -> None:
    index = IdIndex(["a"])
    assert index.remove("zzz") == -1
    assert index.remove("a") == 0
    assert index.remove("a") == -1  # twice: the row is freed once
    assert index.n_free == 1 and index.ids == [None]


def test_new_ids_take_the_smallest_free_row_before_growing() -> None:
    index = IdIndex(["a", "b", "c", "d"])
    index.remove("d")
    index.remove("b")
    assert index.add_many(["x", "a", "x", "y", "z"]).tolist() == [1, 0, 1, 3, 4]
    assert index.ids == ["a", "x", "c", "y", "z"]
    assert index.n_free == 0
    assert index.add("b") == 5  # a removed id coming back is a new id


def test_tombstones_round_trip_through_ids() -> None:
    index = IdIndex(["a", "b", "c", "d"])
    index.remove("c")
    index.remove("a")
    copy = IdIndex(index.ids)
    assert copy.ids == [None, "b", None, "d"]
    assert copy.n_live == 2 and copy.free_rows().tolist() == [0, 2]
    assert copy.add_many(["p", "q", "r"]).tolist() == index.add_many(["p", "q", "r"]).tolist() == [0, 2, 4]


def test_duplicate_ids_are_rejected() -> None:
    with pytest.raises(ValueError, match="appears twice"):
        IdIndex(["a", None, "a"])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 12)), max_size=80))
def test_matches_a_reference_and_stays_bounded(ops: list[tuple[bool, int]]) -> None:
    """Random adds and removes: a bijection over the live ids, never more rows than ids live at once."""
    index = IdIndex()
    live: set[str] = set()
    most_live = 0
    for is_add, key in ops:
        key = f"k{key}"
        if is_add:
            row = index.add(key)
            assert index.ids[row] == key
            live.add(key)
        else:
            assert (index.remove(key) >= 0) == (key in live)
            live.discard(key)
        most_live = max(most_live, len(live))
        assert index.n_live == len(live) and len(index) == most_live
        assert {k for k in index.ids if k is not None} == live
        assert np.array_equal(
            index.lookup(index.ids_of(np.flatnonzero(index.live_mask()))), np.flatnonzero(index.live_mask())
        )

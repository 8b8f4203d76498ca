"""The generated MovieLens-format files: readable as the real set, deterministic, shaped like it."""

from __future__ import annotations

from collections import Counter

import pytest

from producers.movielens_format import write_movielens
from streamrec.eventlog import ReadReport, movielens_events, read_movielens_ratings


def test_files_read_like_movielens_and_repeat_for_a_seed(tmp_path) -> None:
    a = write_movielens(tmp_path / "a", n_users=100, n_items=300, n_ratings=5_000, seed=4)
    b = write_movielens(tmp_path / "b", n_users=100, n_items=300, n_ratings=5_000, seed=4)
    for name in ("u.data", "u.item", "u.user"):
        assert (a / name).read_bytes() == (b / name).read_bytes()
    report = ReadReport()
    ratings = list(read_movielens_ratings(a / "u.data", report=report))
    assert report.invalid == 0 and len(ratings) == 5_000
    items, in_order = movielens_events(a)
    assert [i.item_id for i in items] == [str(n) for n in range(1, 301)]
    assert all(i.tags and "unknown" not in i.tags for i in items)
    assert [r.timestamp for r in in_order] == sorted(r.timestamp for r in ratings)
    assert len((a / "u.user").read_text().splitlines()) == 100


def test_shape_once_per_item_at_least_twenty_skewed_and_tasteful(tmp_path) -> None:
    folder = write_movielens(tmp_path, n_users=200, n_items=500, n_ratings=12_000, seed=1)
    items, ratings = movielens_events(folder)
    pairs = Counter((r.user_id, r.item_id) for r in ratings)
    assert max(pairs.values()) == 1  # a user rates an item once
    per_user = Counter(r.user_id for r in ratings)
    assert len(per_user) == 200 and min(per_user.values()) >= 20
    assert max(per_user.values()) > 5 * min(per_user.values())  # skewed activity
    per_item = Counter(r.item_id for r in ratings)
    top = sum(c for _, c in per_item.most_common(25)) / len(ratings)
    assert top > 0.15  # 5% of the items draw far more than 5% of the ratings
    # a user's favourite genres get better ratings: genres of 5-star films recur for that user
    tags = {i.item_id: set(i.tags) for i in items}
    heavy = per_user.most_common(1)[0][0]
    mine = [r for r in ratings if r.user_id == heavy]
    liked = Counter(g for r in mine if r.rating >= 4 for g in tags[r.item_id])
    disliked = Counter(g for r in mine if r.rating <= 2 for g in tags[r.item_id])
    favourite = liked.most_common(1)[0][0]
    assert liked[favourite] > 2 * max(disliked[favourite], 1)


def test_impossible_sizes_are_refused(tmp_path) -> None:
    with pytest.raises(ValueError, match="at least one rating"):
        write_movielens(tmp_path, n_users=10, n_items=5, n_ratings=5)
    with pytest.raises(ValueError, match="do not fit"):
        write_movielens(tmp_path, n_users=2, n_items=3, n_ratings=7)

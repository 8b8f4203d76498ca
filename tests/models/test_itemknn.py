"""Known-answer tests of the incremental item-to-item model."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pytest

from models import Interactions, OnlineRecommender
from models.itemknn import ItemKNN


def events(pairs: list[tuple[str, str]]) -> Interactions:
    users, items = zip(*pairs, strict=True)
    return Interactions.from_columns(users, items)


def dense_counts(model: ItemKNN) -> dict[tuple[str, str], int]:
    cooc = model.cooccurrence().toarray()
    ids = model.item_index.ids
    return {(ids[a], ids[b]): int(cooc[a, b]) for a, b in zip(*np.nonzero(cooc), strict=True)}


def reference(pairs: list[tuple[str, str]], window: int) -> tuple[dict, dict, dict]:
    """The algorithm written plainly, one event at a time."""
    cooc: dict[tuple[str, str], int] = defaultdict(int)
    counts: dict[str, int] = defaultdict(int)
    windows: dict[str, list[str]] = defaultdict(list)
    for user, item in pairs:
        win = windows[user]
        if item in win:
            win.remove(item)
            win.insert(0, item)
            continue
        for h in win:
            cooc[h, item] += 1
            cooc[item, h] += 1
        counts[item] += 1
        win.insert(0, item)
        del win[window:]
    return dict(cooc), dict(counts), dict(windows)


def test_cooccurrence_counts_on_a_tiny_stream() -> None:
    model = ItemKNN()
    model.learn(events([("a", "x"), ("a", "y"), ("a", "x"), ("a", "z"), ("b", "y"), ("b", "z")]))
    # the repeat of x is not counted again; y and z co-occur for both users
    assert dense_counts(model) == {
        ("x", "y"): 1, ("y", "x"): 1, ("x", "z"): 1, ("z", "x"): 1, ("y", "z"): 2, ("z", "y"): 2,
    }  # fmt: skip
    assert dict(zip(model.item_index.ids, model.item_counts().tolist(), strict=True)) == {"x": 1, "y": 2, "z": 2}
    assert model.history("a") == ["z", "x", "y"]


def test_window_eviction_and_recount() -> None:
    model = ItemKNN(window=2)
    model.learn(events([("a", "x"), ("a", "y"), ("a", "z"), ("a", "x")]))
    # z pairs with y and x; then x (evicted by z) comes back and is counted again with z and y
    counts = dense_counts(model)
    assert counts[("x", "y")] == 2
    assert counts[("x", "z")] == 2
    assert counts[("y", "z")] == 1
    assert model.item_counts().tolist() == [2, 1, 1]
    assert model.history("a") == ["x", "z"]


def test_repeat_moves_item_to_front() -> None:
    model = ItemKNN(window=2)
    model.learn(events([("a", "x"), ("a", "y"), ("a", "x"), ("a", "z")]))
    assert model.history("a") == ["z", "x"]  # y, not x, was the oldest when z arrived
    assert dense_counts(model)[("z", "y")] == 1


@pytest.mark.parametrize("batch", [1, 7, 1000])
def test_matches_plain_reference_with_repeats(batch: int) -> None:
    rng = np.random.default_rng(3)
    pairs = [(f"u{u}", f"i{i}") for u, i in zip(rng.integers(0, 6, 300), rng.zipf(1.5, 300) % 25, strict=True)]
    model = ItemKNN(window=4)
    stream = events(pairs)
    for start in range(0, len(pairs), batch):
        model.learn(stream.select(np.arange(start, min(start + batch, len(pairs)))))
    cooc, counts, windows = reference(pairs, window=4)
    assert dense_counts(model) == cooc
    assert dict(zip(model.item_index.ids, model.item_counts().tolist(), strict=True)) == counts
    for user, win in windows.items():
        assert model.history(user) == win


def test_scores_are_recency_weighted_cosine_sums() -> None:
    model = ItemKNN(decay=0.5, alpha=0.5)  # cosine
    model.learn(events([("ann", "tea"), ("ann", "cake"), ("bob", "tea"), ("bob", "cake"), ("bob", "jam")]))
    model.learn(events([("cat", "jam"), ("cat", "tea")]))  # cat's history: tea (newest), jam
    n = dict(zip(model.item_index.ids, model.item_counts().tolist(), strict=True))
    assert n == {"tea": 3, "cake": 2, "jam": 2}
    sim_tea_cake = 2 / np.sqrt(3 * 2)
    sim_jam_cake = 1 / np.sqrt(2 * 2)
    assert model.similarity("tea", "cake") == pytest.approx(sim_tea_cake)
    recs = model.recommend(["cat"], k=1)
    assert recs.items == [["cake"]]
    assert recs.scores[0][0] == pytest.approx(sim_tea_cake + 0.5 * sim_jam_cake, rel=1e-6)
    assert recs.reasons == [["tea"]]


def test_alpha_zero_ranks_by_raw_counts() -> None:
    model = ItemKNN(alpha=0.0)
    model.learn(events([("a", "x"), ("a", "p"), ("b", "x"), ("b", "p"), ("c", "x"), ("c", "q")]))
    model.learn(events([("d", "x")]))
    recs = model.recommend(["d"], k=2)
    assert recs.items == [["p", "q"]]
    assert recs.scores == [[2.0, 1.0]]


def test_cold_users_score_zero_and_have_no_reasons() -> None:
    model = ItemKNN()
    model.learn(events([("a", "x"), ("a", "y")]))
    model.add_items(["z"])
    recs = model.recommend(["stranger", "a"], k=5)
    assert recs.scores[0] == [0.0, 0.0, 0.0]
    assert recs.reasons is not None
    assert recs.reasons[0] == [None, None, None]
    assert recs.items[1] == ["z"]
    assert recs.reasons[1] == [None]  # z co-occurs with nothing


def test_reasons_name_the_strongest_history_item() -> None:
    model = ItemKNN(decay=1.0)
    stream = [("a", "film"), ("a", "sequel"), ("b", "film"), ("b", "sequel"), ("c", "book"), ("c", "sequel")]
    model.learn(events(stream))
    model.learn(events([("d", "book"), ("d", "film")]))
    recs = model.recommend(["d"], k=1)
    assert recs.items == [["sequel"]]
    assert recs.reasons == [["film"]]  # film co-occurs with sequel twice, book once


def test_save_load_keeps_windows_and_counts(tmp_path) -> None:
    model = ItemKNN(window=3)
    rng = np.random.default_rng(0)
    model.learn(
        events([(f"u{u}", f"i{i}") for u, i in zip(rng.integers(0, 5, 80), rng.integers(0, 12, 80), strict=True)])
    )
    loaded = OnlineRecommender.load(model.save(tmp_path / "knn"))
    assert isinstance(loaded, ItemKNN)
    assert (loaded.cooccurrence() != model.cooccurrence()).nnz == 0
    np.testing.assert_array_equal(loaded.item_counts(), model.item_counts())
    for user in model.user_index.ids:
        assert loaded.history(user) == model.history(user)


def test_dense_and_sparse_stores_give_the_same_lists() -> None:
    rng = np.random.default_rng(3)
    stream = events(
        [(f"u{u}", f"i{i}") for u, i in zip(rng.integers(0, 30, 600), rng.integers(0, 40, 600), strict=True)]
    )
    dense, sparse = ItemKNN(), ItemKNN(dense_max_items=0)
    for start in range(0, 600, 7):  # batches and single events alike
        part = stream.select(np.arange(start, min(start + (1 if start % 2 else 7), 600)))
        dense.learn(part)
        sparse.learn(part)
    assert (dense.cooccurrence() != sparse.cooccurrence()).nnz == 0
    users = [f"u{u}" for u in range(30)]
    a, b = dense.recommend(users, k=10), sparse.recommend(users, k=10)
    assert a.items == b.items
    assert a.reasons == b.reasons
    np.testing.assert_allclose(np.concatenate(a.scores), np.concatenate(b.scores), rtol=1e-6)


def _zipf_stream(seed: int, n: int = 4000, users: int = 200, items: int = 300) -> Interactions:
    rng = np.random.default_rng(seed)
    picked = np.minimum(rng.zipf(1.3, n), items) - 1
    return events([(f"u{u}", f"i{i}") for u, i in zip(rng.integers(0, users, n), picked, strict=True)])


def test_capped_rows_score_through_their_most_similar_items() -> None:
    """Rows that may hold more than the cap stand in by their most similar items (ties kept), the rest whole."""
    cap = 12
    model = ItemKNN(dense_max_items=0, max_neighbours=cap)
    model.learn(_zipf_stream(5))
    cooc = model.cooccurrence().toarray().astype(np.float64)
    counts = model.item_counts()
    inv = np.where(counts > 0, np.maximum(counts, 1) ** -model.alpha, 0.0)
    capped = 0
    for user in [f"u{u}" for u in range(0, 200, 7)]:
        row = model.user_index.get(user)
        hist = model._hist[row, : min(model._hist_len[row], model.history_for_scoring)]
        want = np.zeros(model.n_items)
        for rank, h in enumerate(hist.tolist()):
            line = cooc[h].copy()
            if counts[h] * 2 * model.window > cap and np.count_nonzero(line) > cap:
                similar = line * inv
                line[similar < np.sort(similar)[-cap]] = 0.0
                capped += 1
            want += model.decay**rank * inv[h] * line
        want *= inv
        got = model.recommend([user], k=5)
        ids = [model.item_index.get(i) for i in got.items[0]]
        np.testing.assert_allclose(got.scores[0], want[ids], rtol=1e-5)
        assert got.scores[0][0] == pytest.approx(np.delete(want, hist).max(), rel=1e-5)
    assert capped  # the stream does reach the cap


def test_a_cap_past_every_row_changes_nothing_and_capped_lists_follow_growth() -> None:
    stream = _zipf_stream(6)
    whole, capped = ItemKNN(dense_max_items=0, max_neighbours=None), ItemKNN(dense_max_items=0, max_neighbours=10_000)
    whole.learn(stream)
    capped.learn(stream)
    users = [f"u{u}" for u in range(0, 200, 5)]
    a, b = whole.recommend(users, k=10), capped.recommend(users, k=10)
    assert a.items == b.items and a.scores == b.scores
    # a head item's short list is drawn up once, then again after its count grew by a twentieth and 8 events
    model = ItemKNN(dense_max_items=0, max_neighbours=5)
    model.learn(stream)
    model.recommend(["u1"], k=5)
    head = model.item_index.get("i0")
    model.recommend([u for u in users if head in model._hist[model.user_index.get(u)].tolist()][:1], k=5)
    drawn_at = model._neighbours[head][2]
    new_items = [f"new{n}" for n in range(int(drawn_at * 0.06) + model.neighbours_refresh_events + 2)]
    model.learn(events([(f"fan{n}", item) for n, item in enumerate(new_items)]))
    model.learn(events([(f"fan{n}", "i0") for n in range(len(new_items))]))  # i0 now co-occurs with the new items
    model.learn(events([("fan0", "new1")]))
    model.recommend(["fan0"], k=5)
    assert model._neighbours[head][2] == model.item_counts()[head] > drawn_at


def test_invalid_hyperparameters_are_rejected() -> None:
    with pytest.raises(ValueError, match="window"):
        ItemKNN(window=0)
    with pytest.raises(ValueError, match="decay"):
        ItemKNN(decay=0.0)
    with pytest.raises(ValueError, match="alpha"):
        ItemKNN(alpha=-1.0)
    with pytest.raises(ValueError, match="max_neighbours"):
        ItemKNN(max_neighbours=0)

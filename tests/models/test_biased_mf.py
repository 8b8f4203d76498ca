"""Tests of online biased matrix factorisation of ratings."""

from __future__ import annotations

import numpy as np
import pytest

from models import Interactions
from models.biased_mf import BiasedMF


def low_rank_ratings(n_users: int = 150, n_items: int = 80, rank: int = 3, seed: int = 0) -> tuple:
    """Every (user, item) rating of a rank-3 model with biases, plus noise, clipped to 1..5."""
    rng = np.random.default_rng(seed)
    p = rng.normal(0.0, 0.7, size=(n_users, rank))
    q = rng.normal(0.0, 0.7, size=(n_items, rank))
    bu, bi = rng.normal(0.0, 0.4, n_users), rng.normal(0.0, 0.4, n_items)
    ratings = np.clip(3.5 + bu[:, None] + bi[None, :] + p @ q.T + rng.normal(0.0, 0.1, (n_users, n_items)), 1, 5)
    users, items = np.meshgrid(np.arange(n_users), np.arange(n_items), indexing="ij")
    return users.ravel(), items.ravel(), ratings.ravel()


def as_batch(users: np.ndarray, items: np.ndarray, ratings: np.ndarray) -> Interactions:
    return Interactions.from_columns([f"u{x}" for x in users], [f"i{x}" for x in items], ratings=ratings)


def test_rmse_falls_on_a_low_rank_rating_set() -> None:
    users, items, ratings = low_rank_ratings()
    rng = np.random.default_rng(1)
    order = rng.permutation(len(ratings))
    test, train = order[:1500], order[1500:]
    model = BiasedMF(rating_weight=1.0, seed=0)
    held_out = as_batch(users[test], items[test], ratings[test])

    def rmse() -> float:
        return float(np.sqrt(np.mean((model.predict(held_out.users, held_out.items) - ratings[test]) ** 2)))

    history = []
    for _ in range(4):
        for start in range(0, len(train), 1000):
            part = train[start : start + 1000]
            model.learn(as_batch(users[part], items[part], ratings[part]))
        history.append(rmse())
    baseline = float(np.sqrt(np.mean((ratings[train].mean() - ratings[test]) ** 2)))
    assert history[-1] < history[0] and history[-1] < 0.6 * baseline, (history, baseline)


def test_global_mean_is_the_running_mean_of_ratings() -> None:
    model = BiasedMF()
    model.learn(Interactions.from_columns(["a", "b"], ["x", "y"], ratings=[4.0, 2.0]))
    model.learn(Interactions.from_columns(["a"], ["y"], ratings=[5.0]))
    assert model.global_mean == pytest.approx(11.0 / 3.0)


def test_events_without_a_rating_teach_picks_not_ratings() -> None:
    model = BiasedMF(seed=3)
    untouched = BiasedMF(seed=3)
    untouched.add_items(["x", "y", "z"])
    model.learn(Interactions.from_columns(["a", "b", "c"], ["x", "y", "z"], ratings=[4.0, np.nan, np.nan]))
    assert model.global_mean == 4.0
    assert model.seen_items("b") == {"y"}
    # y and z were never rated: no rating bias; but they were picked: their pick biases and vectors moved
    assert model._bi[1] == model._bi[2] == 0.0 and model._bu[1] == 0.0
    assert model._c[1] != 0.0 and model._c[2] != 0.0
    assert not np.array_equal(model._q[1:3], untouched._q[1:3])


def test_predict_is_the_clipped_rating_head() -> None:
    model = BiasedMF(rating_weight=1.0, bias_lr=0.2)
    for _ in range(30):
        model.learn(Interactions.from_columns(["a", "a", "b"], ["x", "y", "x"], ratings=[5.0, 1.0, 5.0]))
    pred = model.predict(["a", "a", "b", "nobody", "a"], ["x", "y", "x", "x", "nothing"])
    assert pred.shape == (5,)
    assert np.all((pred >= 1.0) & (pred <= 5.0))
    assert pred[0] > 4.5
    assert pred[1] < 1.5
    u, i = model.user_index.lookup(["a"]), model.item_index.lookup(["x"])
    unclipped = model.global_mean + model._bu[u] + model._bi[i] + model._gain * model._p[u] @ model._q[i].T
    np.testing.assert_allclose(pred[0], np.clip(unclipped, 1, 5).ravel(), rtol=1e-5)
    with pytest.raises(ValueError, match="differ in length"):
        model.predict(["a"], ["x", "y"])


def test_recommend_ranks_by_the_pick_head() -> None:
    users, items, ratings = low_rank_ratings(n_users=30, n_items=20)
    model = BiasedMF(seed=1)
    for _ in range(3):
        model.learn(as_batch(users, items, ratings))
    all_items = model.item_index.ids
    recs = model.recommend(["u0"], k=len(all_items), exclude_seen=False)
    u = model.user_index.lookup(["u0"])
    picks = model._c[: len(all_items)] + model._q[: len(all_items)] @ model._p[u[0]]
    assert recs.items[0] == [all_items[j] for j in np.argsort(-picks, kind="stable")]
    np.testing.assert_allclose(recs.scores[0], np.sort(picks)[::-1], rtol=1e-5, atol=1e-6)


def test_unknown_users_get_what_everyone_picks() -> None:
    model = BiasedMF(seed=0)
    for _ in range(20):
        model.learn(Interactions.from_columns(["a", "b", "c", "a"], ["often", "often", "often", "rarely"]))
    assert model.recommend(["nobody"], k=2).items == [["often", "rarely"]]
    assert model.predict(["nobody"], ["often"])[0] == 0.0  # no rating learned: mu = 0, no bias


def test_invalid_hyperparameters_are_rejected() -> None:
    with pytest.raises(ValueError, match="n_factors"):
        BiasedMF(n_factors=0)
    with pytest.raises(ValueError, match="reg"):
        BiasedMF(bias_reg=-0.1)
    with pytest.raises(ValueError, match="n_negatives"):
        BiasedMF(n_negatives=0)
    with pytest.raises(ValueError, match="rating_weight"):
        BiasedMF(rating_weight=-1.0)

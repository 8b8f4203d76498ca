"""RiverFM: vectorised catalogue scores equal River's ``predict_one``; context, tags, targets, save/load."""

from __future__ import annotations

import copy
import itertools

import numpy as np
import pytest
from river import facto, optim

from models import Interactions, OnlineRecommender
from models.river_fm import RiverFM

GENRES = ["drama", "comedy", "scifi", "crime", "kids"]


def catalogue(n_items: int = 30, seed: int = 0) -> tuple[list[str], list[tuple[str, ...]]]:
    rng = np.random.default_rng(seed)
    ids = [f"i{j}" for j in range(n_items)]
    tags = [tuple(rng.choice(GENRES, size=1 + j % 3, replace=False)) for j in range(n_items)]
    return ids, tags


def context_stream(
    n: int = 500, n_users: int = 20, n_items: int = 30, seed: int = 0, rated: bool = False
) -> Interactions:
    rng = np.random.default_rng(seed)
    users = rng.integers(n_users, size=n)
    items = (users + rng.integers(5, size=n) * 6) % n_items
    devices = [None if j % 7 == 0 else {"device": ["tv", "phone", "web"][int(users[j]) % 3]} for j in range(n)]
    ratings = rng.integers(1, 6, size=n).astype(float) if rated else None
    return Interactions.from_columns(
        [f"u{x}" for x in users],
        [f"i{x}" for x in items],
        timestamps=1_700_000_000 + np.arange(n) * 977.0,
        ratings=ratings,
        contexts=devices,
    )


def fitted(n: int = 500, rated: bool = False, **params) -> RiverFM:
    model = RiverFM(**{"n_factors": 5, "lr": 0.05, "seed": 2, **params})
    ids, tags = catalogue()
    model.add_items(ids, tags=tags)
    events = context_stream(n, rated=rated)
    for start in range(0, n, 64):
        model.learn(events.select(np.arange(start, min(start + 64, n))))
    return model


def test_vectorised_scores_equal_river_predict_one() -> None:
    model = fitted()
    river = copy.deepcopy(model.river)
    contexts = [{"device": "tv"}, {"device": "phone"}, None, {"device": "never-seen"}, {}]
    timestamps = [0.0, 5 * 3600.0, 13 * 3600.0, 23 * 3600.0, 7 * 3600.0]
    users = ["u0", "u7", "u13", "u19", "nobody"]
    scores = model.score_items(users, contexts=contexts, timestamps=timestamps)
    assert scores.shape == (5, model.n_items)
    rng = np.random.default_rng(3)
    for row, (user, ctx, ts) in enumerate(zip(users, contexts, timestamps, strict=True)):
        for col in rng.choice(model.n_items, size=12, replace=False).tolist():
            x = model.river_features(user, model.item_index.id_of(col), context=ctx, timestamp=ts)
            assert scores[row, col] == pytest.approx(river.predict_one(x), abs=1e-6)
    # the default context (each user's latest device, hour of the newest event) through recommend()
    default = model._score(model.user_index.lookup(users))
    for row, user in enumerate(users):
        for col in range(0, model.n_items, 5):
            x = model.river_features(user, model.item_index.id_of(col))
            assert default[row, col] == pytest.approx(river.predict_one(x), abs=1e-6)


def test_pairwise_identity_known_answer() -> None:
    """A hand-computed FM: w0 + sum w_j x_j + sum_{j<l} <v_j, v_l> x_j x_l over the pair's features."""
    model = fitted(120)
    x = model.river_features("u3", "i4", context={"device": "web"}, timestamp=3600.0)
    assert len(x) == 4 + len(model._item_tags[model.item_index.get("i4")])  # user, item, device, hour + tags
    w0, w, v = model.river.intercept, model.river.weights, model.river.latents
    expected = w0 + sum(w[j] * xj for j, xj in x.items())
    expected += sum(float(v[a] @ v[b]) * x[a] * x[b] for a, b in itertools.combinations(x, 2))
    got = model.score_items(["u3"], contexts=[{"device": "web"}], timestamps=[3600.0])[0, model.item_index.get("i4")]
    assert got == pytest.approx(expected, abs=1e-9)


def test_learning_equals_plain_river_on_the_same_features() -> None:
    """Without negatives, the wrapper feeds River exactly the documented features and targets."""
    events = context_stream(200, rated=True, seed=4)
    model = RiverFM(n_factors=3, lr=0.03, l2_latent=0.001, init_std=0.1, n_negatives=0, seed=5)
    ids, tags = catalogue()
    model.add_items(ids, tags=tags)
    plain = facto.FMRegressor(
        n_factors=3,
        weight_optimizer=optim.SGD(0.03),
        latent_optimizer=optim.SGD(0.03),
        l2_latent=0.001,
        intercept_lr=0.03,
        latent_initializer=optim.initializers.Normal(mu=0.0, sigma=0.1, seed=5),
    )
    for j in range(len(events)):
        model.learn(events.select(np.array([j])))
        # an event without context learns no device feature ({}), unlike scoring's "latest context" (None)
        x = model.river_features(events.users[j], events.items[j], context=events.contexts[j] or {})
        y = 0.25 + 0.75 * (events.ratings[j] - 1.0) / 4.0
        plain.learn_one(x, float(y))
    assert model.river.intercept == pytest.approx(plain.intercept, abs=1e-12)
    for key, value in plain.weights.items():
        assert model.river.weights[key] == pytest.approx(value, abs=1e-12)
        np.testing.assert_allclose(model.river.latents[key], plain.latents[key], atol=1e-12)


def test_targets_scale_ratings_and_implicit_events_count_as_one() -> None:
    model = RiverFM(rating_range=(1, 5), low_rating_target=0.2)
    targets = model._targets(np.array([1.0, 3.0, 5.0, np.nan, 7.0], dtype=np.float32))
    np.testing.assert_allclose(targets, [0.2, 0.6, 1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="rating_range"):
        RiverFM(rating_range=(5, 1))
    with pytest.raises(ValueError, match="n_negatives"):
        RiverFM(n_negatives=-1)


def test_negatives_are_sampled_and_change_the_model() -> None:
    with_neg, without = fitted(200, n_negatives=2), fitted(200, n_negatives=0)
    assert with_neg.river.weight_optimizer.n_iterations > without.river.weight_optimizer.n_iterations == 200
    # with negatives, items of the user's own cluster beat others; without, the FM only predicts ~1 everywhere
    assert np.ptp(without.score_items(["u1"])[0]) < np.ptp(with_neg.score_items(["u1"])[0])


def test_context_and_tags_reach_the_scores() -> None:
    model = fitted(400)
    tv = model.score_items(["u1"], contexts=[{"device": "tv"}], timestamps=[0.0])
    phone = model.score_items(["u1"], contexts=[{"device": "phone"}], timestamps=[0.0])
    assert not np.allclose(tv, phone)
    # a new item is scored from its tags alone
    model.add_items(["new-drama", "new-untagged"], tags=[("drama",), ()])
    scores = model.score_items(["u1"])[0]
    drama = model._named.get("tag=drama")
    w_tag = model.river.weights[3 * drama + 2]
    assert scores[-1] != pytest.approx(scores[-2])
    assert np.isfinite(scores).all()
    assert w_tag != 0.0


def test_save_load_then_learning_matches_exactly(tmp_path) -> None:
    model = fitted(300)
    loaded = OnlineRecommender.load(model.save(tmp_path / "fm"))
    assert loaded._named.ids == model._named.ids
    more = context_stream(150, seed=9)
    extra = Interactions.from_columns(
        ["u1", "brand-new"], ["i3", "i4"], timestamps=[2e9, 2e9 + 10], contexts=[{"device": "watch"}, None]
    )
    for m in (model, loaded):
        m.learn(more)
        m.add_items(["fresh"], tags=[("kids", "brand-new-tag")])
        m.learn(extra)
    users = ["u0", "u1", "brand-new", "nobody"]
    np.testing.assert_array_equal(model.score_items(users), loaded.score_items(users))
    assert model.recommend(users, k=5).items == loaded.recommend(users, k=5).items


def test_recommend_uses_the_users_latest_context() -> None:
    model = fitted(200)
    user = "u2"
    model.learn(Interactions.from_columns([user], ["i0"], timestamps=[2e9], contexts=[{"device": "phone"}]))
    np.testing.assert_allclose(
        model._score(model.user_index.lookup([user]))[0],
        model.score_items([user], contexts=[{"device": "phone"}], timestamps=[2e9])[0],
    )
    with pytest.raises(ValueError, match="contexts"):
        model.score_items([user, "u3"], contexts=[None])


def test_catalogue_before_any_user_scores_cold_users() -> None:
    model = RiverFM(n_factors=4, seed=0)
    model.add_items(["a", "b"], tags=[("Drama",), ("Comedy",)])
    recs = model.recommend(["u1"], k=2)
    assert sorted(recs.items[0]) == ["a", "b"]

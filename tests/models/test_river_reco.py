"""River matrix factorisation wrappers: vectorised scores equal River's ``predict_one``."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from river import optim, reco

from models import Interactions, OnlineRecommender
from models.river_reco import RiverBiasedMF, RiverFunkMF

CLASSES = [RiverBiasedMF, RiverFunkMF]


def rating_stream(n: int = 600, n_users: int = 30, n_items: int = 40, seed: int = 0) -> Interactions:
    rng = np.random.default_rng(seed)
    users = rng.integers(n_users, size=n)
    items = rng.integers(n_items, size=n)
    ratings = np.clip(np.round(3 + (users % 3 - 1) * (items % 4 - 1.5) + rng.normal(0, 0.5, n)), 1, 5)
    return Interactions.from_columns(
        [f"u{x}" for x in users], [f"i{x}" for x in items], timestamps=np.arange(n, dtype=float), ratings=ratings
    )


def learn_in_batches(model: OnlineRecommender, events: Interactions, size: int = 50) -> None:
    for start in range(0, len(events), size):
        model.learn(events.select(np.arange(start, min(start + size, len(events)))))


@pytest.mark.parametrize("cls", CLASSES)
def test_vectorised_scores_equal_river_predict_one(cls: type) -> None:
    model = cls(n_factors=6, seed=4)
    learn_in_batches(model, rating_stream())
    river = copy.deepcopy(model.river)  # predict_one may insert entries; never touch the model's
    rng = np.random.default_rng(1)
    u = rng.integers(model.n_users, size=200)
    i = rng.integers(model.n_items, size=200)
    expected = np.array([river.predict_one(int(a), int(b)) for a, b in zip(u, i, strict=True)])
    got = model.predict(model.user_index.ids_of(u), model.item_index.ids_of(i))
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
    # full catalogue scores of a few users
    users = np.array([0, 5, 17])
    scores = model._score(users)
    for row, uu in zip(scores, users.tolist(), strict=True):
        ref = [river.predict_one(uu, ii) for ii in range(model.n_items)]
        np.testing.assert_allclose(row, ref, rtol=0, atol=1e-6)
    # scoring did not create River entries
    assert len(model.river.u_latents) == model.n_users
    assert len(model.river.i_latents) == model.n_items


@pytest.mark.parametrize("cls", CLASSES)
def test_mirror_follows_further_learning(cls: type) -> None:
    model = cls(n_factors=5, seed=2)
    events = rating_stream(300)
    learn_in_batches(model, events.select(np.arange(150)))
    model.recommend(["u1"], k=3)  # fills the mirror
    learn_in_batches(model, events.select(np.arange(150, 300)))
    river = copy.deepcopy(model.river)
    row = model._score(np.array([1]))[0]
    np.testing.assert_allclose(row, [river.predict_one(1, ii) for ii in range(model.n_items)], atol=1e-6)


def test_biased_mf_matches_plain_river() -> None:
    """Known answer: the wrapper learns exactly what River learns from the same events."""
    events = rating_stream(400, seed=3)
    model = RiverBiasedMF(
        n_factors=3,
        lr=0.04,
        bias_lr=0.02,
        l2=0.01,
        l2_bias=0.001,
        init_std=0.2,
        target="rating",
        optimizer="sgd",
        seed=9,
    )
    learn_in_batches(model, events, size=64)
    plain = reco.BiasedMF(
        n_factors=3,
        bias_optimizer=optim.SGD(0.02),
        latent_optimizer=optim.SGD(0.04),
        l2_bias=0.001,
        l2_latent=0.01,
        latent_initializer=optim.initializers.Normal(mu=0.0, sigma=0.2, seed=9),
    )
    for user, item, rating in zip(events.users, events.items, events.ratings.tolist(), strict=True):
        plain.learn_one(user, item, rating)
    pairs = [("u3", "i7"), ("u0", "i0"), ("u29", "i39"), ("u12", "i5")]
    expected = [plain.predict_one(a, b) for a, b in pairs]
    got = model.predict([a for a, _ in pairs], [b for _, b in pairs])
    np.testing.assert_allclose(got, expected, atol=1e-9)


def test_funk_mf_matches_plain_river() -> None:
    events = rating_stream(400, seed=5)
    model = RiverFunkMF(n_factors=3, lr=0.03, l2=0.02, init_std=0.3, target="rating", optimizer="sgd", seed=11)
    learn_in_batches(model, events, size=64)
    plain = reco.FunkMF(
        n_factors=3,
        optimizer=optim.SGD(0.03),
        l2=0.02,
        initializer=optim.initializers.Normal(mu=0.0, sigma=0.3, seed=11),
    )
    for user, item, rating in zip(events.users, events.items, events.ratings.tolist(), strict=True):
        plain.learn_one(user, item, rating)
    pairs = [("u3", "i7"), ("u0", "i0"), ("u29", "i39")]
    np.testing.assert_allclose(
        model.predict([a for a, _ in pairs], [b for _, b in pairs]),
        [plain.predict_one(a, b) for a, b in pairs],
        atol=1e-9,
    )


@pytest.mark.parametrize("cls", CLASSES)
def test_save_load_then_learning_matches_exactly(cls: type, tmp_path) -> None:
    events = rating_stream(500, seed=7)
    model = cls(n_factors=4, seed=1)
    learn_in_batches(model, events.select(np.arange(300)))
    loaded = OnlineRecommender.load(model.save(tmp_path / "m"))
    rest = events.select(np.arange(300, 500))
    extra = Interactions.from_columns(["brand-new-user", "u1"], ["i2", "brand-new-item"], ratings=[4.0, 2.0])
    for m in (model, loaded):
        learn_in_batches(m, rest)
        m.learn(extra)
    users = ["u0", "u7", "brand-new-user", "nobody"]
    items = ["i1", "brand-new-item", "i2", "i3"]
    np.testing.assert_array_equal(model.predict(users, items), loaded.predict(users, items))
    np.testing.assert_array_equal(model._score(np.arange(model.n_users)), loaded._score(np.arange(loaded.n_users)))


def test_picks_are_ones_and_sampled_negatives_zeros_fed_to_river() -> None:
    """Known answer: each event is learned as 1, then its negatives as 0, with River's AdaGrad on the latents."""
    events = rating_stream(300, seed=2)
    model = RiverFunkMF(n_factors=3, lr=0.05, l2=0.01, init_std=0.2, n_negatives=2, seed=4)
    sampler = copy.deepcopy(model._negatives)
    learn_in_batches(model, events, size=37)
    plain = reco.FunkMF(
        n_factors=3,
        optimizer=optim.AdaGrad(0.05),
        l2=0.01,
        initializer=optim.initializers.Normal(mu=0.0, sigma=0.2, seed=4),
    )
    items = list(dict.fromkeys(events.items.tolist()))  # item rows in order of first appearance
    pool = 0
    for user, item in zip(events.users.tolist(), events.items.tolist(), strict=True):
        plain.learn_one(user, item, 1.0)
        pool = max(pool, items.index(item) + 1)
        for j in sampler.draw((2,), pool).tolist():
            if items[j] != item:
                plain.learn_one(user, items[j], 0.0)
    pairs = [("u3", "i7"), ("u0", "i0"), ("u29", "i39"), ("u12", "i5")]
    np.testing.assert_allclose(
        model.predict([a for a, _ in pairs], [b for _, b in pairs]),
        [plain.predict_one(a, b) for a, b in pairs],
        atol=1e-9,
    )


def test_unrated_events_are_ignored_and_cold_users_get_the_average_user() -> None:
    model = RiverBiasedMF(n_factors=4, target="rating", optimizer="sgd", seed=0)
    model.learn(Interactions.from_columns(["a", "b", "c"], ["x", "y", "y"], ratings=[5.0, float("nan"), 1.0]))
    assert len(model.river.u_latents) == 2  # "b" rated nothing
    assert model.seen_items("b") == {"y"}
    scores = model._score(np.array([-1, 1]))  # also refreshes the mirror read below
    mean_user = (model._pu[0] + model._pu[2]) / 2
    expected = model._global_mean() + model._bi[:2] + model._qi[:2] @ mean_user
    np.testing.assert_allclose(scores, [expected, expected])
    # an item added to the catalogue but never rated: zero bias, zero latent vector
    model.add_items(["z"])
    pred = model.predict(["a", "nobody"], ["z", "z"])
    assert pred[0] == pytest.approx(model._global_mean() + model._bu[0])
    assert pred[1] == pytest.approx(model._global_mean())


def test_invalid_choices_are_rejected() -> None:
    with pytest.raises(ValueError, match="target"):
        RiverBiasedMF(target="ratings")
    with pytest.raises(ValueError, match="optimizer"):
        RiverFunkMF(optimizer="adam")


def test_predict_rejects_mismatched_lengths() -> None:
    model = RiverFunkMF(n_factors=2)
    with pytest.raises(ValueError, match="differ in length"):
        model.predict(["a", "b"], ["x"])

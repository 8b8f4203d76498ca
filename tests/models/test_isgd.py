"""Known-answer tests of incremental SGD matrix factorisation."""

from __future__ import annotations

import numpy as np
import pytest

from models import Interactions
from models.isgd import ISGD, scatter_add_capped


def stream(n: int = 120, seed: int = 5) -> Interactions:
    rng = np.random.default_rng(seed)
    users = [f"u{x}" for x in rng.integers(0, 8, n)]
    items = [f"i{x}" for x in rng.integers(0, 12, n)]
    return Interactions.from_columns(users, items)


def learn_in_batches(model: ISGD, events: Interactions, batch: int) -> None:
    for start in range(0, len(events), batch):
        model.learn(events.select(np.arange(start, min(start + batch, len(events)))))


def initial_rows(seed: int, stream: int, n: int, k: int) -> np.ndarray:
    """The documented initialisation: row j is row j of block 0 drawn from default_rng([seed, stream, 0])."""
    return np.random.default_rng([seed, stream, 0]).normal(0.0, 0.1, size=(1024, k)).astype(np.float32)[:n]


def hand_written_isgd(events: Interactions, k: int, lr: float, reg: float, seed: int) -> tuple:
    """The paper's Algorithm 1, one event at a time."""
    users = list(dict.fromkeys(events.users.tolist()))
    items = list(dict.fromkeys(events.items.tolist()))
    p = dict(zip(users, initial_rows(seed, 0, len(users), k), strict=True))
    q = dict(zip(items, initial_rows(seed, 1, len(items), k), strict=True))
    for user, item in zip(events.users.tolist(), events.items.tolist(), strict=True):
        err = np.float32(1.0) - p[user] @ q[item]
        p[user] = p[user] + np.float32(lr) * (err * q[item] - np.float32(reg) * p[user])
        q[item] = q[item] + np.float32(lr) * (err * p[user] - np.float32(reg) * q[item])
    return p, q


def test_sequential_mode_matches_the_paper_loop() -> None:
    events = stream()
    model = ISGD(n_factors=3, lr=0.05, reg=0.01, sequential=True, seed=11)
    learn_in_batches(model, events, batch=25)
    p, q = hand_written_isgd(events, k=3, lr=0.05, reg=0.01, seed=11)
    users = [u for u in p for _ in q]
    items = [i for _ in p for i in q]
    expected = np.array([p[u] @ q[i] for u, i in zip(users, items, strict=True)])
    np.testing.assert_allclose(model.predict(users, items), expected, rtol=1e-5, atol=1e-6)


def test_sequential_mode_does_not_depend_on_batching() -> None:
    events = stream()
    one = ISGD(n_factors=3, sequential=True, seed=2)
    learn_in_batches(one, events, batch=1)
    many = ISGD(n_factors=3, sequential=True, seed=2)
    learn_in_batches(many, events, batch=len(events))
    users = ["u0", "u3", "u7"]
    a, b = one.recommend(users, k=5), many.recommend(users, k=5)
    assert a.items == b.items
    np.testing.assert_allclose(np.concatenate(a.scores), np.concatenate(b.scores), rtol=1e-5)


def test_minibatch_step_on_distinct_rows() -> None:
    """With every user and item once in the batch, one step is the paper's update from pre-batch values."""
    model = ISGD(n_factors=4, lr=0.1, reg=0.02, seed=4)
    p0, q0 = initial_rows(4, 0, 3, 4), initial_rows(4, 1, 3, 4)
    model.learn(Interactions.from_columns(["a", "b", "c"], ["x", "y", "z"]))
    err = 1.0 - np.einsum("ij,ij->i", p0, q0)
    p1 = p0 + 0.1 * (err[:, None] * q0 - 0.02 * p0)
    q1 = q0 + 0.1 * (err[:, None] * p1 - 0.02 * q0)
    np.testing.assert_allclose(
        model.predict(["a", "b", "c"], ["x", "y", "z"]), np.einsum("ij,ij->i", p1, q1), rtol=1e-5
    )


def test_heavy_user_in_one_batch_does_not_diverge() -> None:
    items = [f"i{j % 300}" for j in range(3000)]
    model = ISGD(lr=0.2, seed=0)
    for _ in range(5):
        model.learn(Interactions.from_columns(["heavy"] * 3000, items))
    scores = model.predict(["heavy"] * 300, [f"i{j}" for j in range(300)])
    assert np.all(np.isfinite(scores))
    assert np.abs(scores - 1.0).max() < 0.5


def test_capped_scatter_add_leaves_light_rows_alone() -> None:
    target = np.zeros((3, 2), dtype=np.float32)
    steps = np.ones((4, 2), dtype=np.float32)
    scatter_add_capped(target, np.array([0, 1, 1, 1]), steps, np.array([0.1, 0.5, 0.5, 0.5]))
    np.testing.assert_allclose(target, [[1.0, 1.0], [2.0, 2.0], [0.0, 0.0]])


def test_learns_which_items_go_together() -> None:
    events = Interactions.from_columns(["a", "b", "b", "c", "c", "d"] * 60, ["x", "x", "y", "p", "q", "q"] * 60)
    model = ISGD(seed=0)
    learn_in_batches(model, events, batch=30)
    assert model.recommend(["a", "d"], k=1).items == [["y"], ["p"]]


def test_unknown_users_score_with_the_mean_user_vector() -> None:
    model = ISGD(seed=0)
    learn_in_batches(model, stream(), batch=40)
    mean = model._p[: model.n_users].mean(axis=0)
    expected = mean @ model._q[: model.n_items].T
    recs = model.recommend(["nobody"], k=model.n_items)
    by_id = dict(zip(recs.items[0], recs.scores[0], strict=True))
    for item, score in by_id.items():
        assert score == pytest.approx(float(expected[model.item_index.get(item)]), rel=1e-5, abs=1e-6)


def test_empty_model_with_catalogue_scores_unknown_users() -> None:
    model = ISGD()
    model.add_items(["x", "y"])
    assert model.recommend(["nobody"], k=5).scores == [[0.0, 0.0]]


def test_invalid_hyperparameters_are_rejected() -> None:
    with pytest.raises(ValueError, match="n_factors"):
        ISGD(n_factors=0)
    with pytest.raises(ValueError, match="lr"):
        ISGD(lr=0.0)


def test_sequential_mode_stays_finite_on_a_skewed_stream() -> None:
    from producers.synthetic import SyntheticStream

    # the paper's uncapped step reaches NaN after 28,000 events of this stream
    model = ISGD(sequential=True, seed=0)
    for batch in SyntheticStream(n_users=100_000, n_items=50_000, seed=0).batches(32_000, chunk=1000):
        model.learn(batch)
    users = [f"u{n}" for n in range(50)]
    recs = model.recommend(users, k=10)
    assert all(np.isfinite(s).all() for s in recs.scores)
    assert np.isfinite(model.factors()[0]).all() and np.isfinite(model.factors()[1]).all()

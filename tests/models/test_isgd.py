"""Known-answer tests of incremental SGD matrix factorisation."""

from __future__ import annotations

import copy

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


def hand_written_isgd(model: ISGD, events: Interactions) -> tuple[dict, dict, dict]:
    """The documented step, one event at a time, with the model's own negatives (drawn from a copy of its sampler).

    Every error and gradient comes from the values before the event; the latent rows take one Adagrad
    step per row (the mean of the squared gradient accumulated), the item biases one SGD step.
    """
    k, lr, reg, m = model.n_factors, np.float32(model.lr), np.float32(model.reg), model.n_negatives
    bias_lr = np.float32(model.lr if model.bias_lr is None else model.bias_lr)
    sampler = copy.deepcopy(model._negatives)
    users = list(dict.fromkeys(events.users.tolist()))
    items = list(dict.fromkeys(events.items.tolist()))
    p = dict(zip(users, initial_rows(model.seed, 0, len(users), k), strict=True))
    q = dict(zip(items, initial_rows(model.seed, 1, len(items), k), strict=True))
    b = dict.fromkeys(items, np.float32(0.0))
    acc: dict = {}

    def adagrad(key: tuple, row: np.ndarray, grad: np.ndarray) -> np.ndarray:
        acc[key] = acc.get(key, np.float32(0.0)) + np.float32((grad @ grad) / k)
        return row - lr * grad / (np.sqrt(acc[key]) + np.float32(1e-8))

    pool = 0  # negatives come from the items of the events so far (rows in order of first appearance)
    for user, item in zip(events.users.tolist(), events.items.tolist(), strict=True):
        pool = max(pool, items.index(item) + 1)
        negatives = [items[j] for j in sampler.draw((1, m), pool).ravel().tolist()] if m else []
        pu = p[user]
        err = np.float32(1.0) - b[item] - pu @ q[item]
        grad_p = reg * pu - err * q[item]
        grads_q = {item: reg * q[item] - err * pu}
        grads_b = {item: reg * b[item] - err}
        for j in negatives:
            e = -(b[j] + pu @ q[j]) / np.float32(m)
            grad_p = grad_p - e * q[j]
            grads_q[j] = grads_q.get(j, 0) + reg / m * q[j] - e * pu
            grads_b[j] = grads_b.get(j, 0) + reg / m * b[j] - e
        p[user] = adagrad(("u", user), pu, grad_p)
        for j, grad in grads_q.items():
            q[j] = adagrad(("i", j), q[j], grad)
            b[j] = b[j] - bias_lr * grads_b[j]
    return p, q, b


@pytest.mark.parametrize("n_negatives", [0, 3])
def test_sequential_mode_matches_the_documented_step(n_negatives: int) -> None:
    events = stream()
    model = ISGD(n_factors=3, lr=0.05, reg=0.01, bias_lr=0.02, n_negatives=n_negatives, sequential=True, seed=11)
    model.add_items(list(dict.fromkeys(events.items.tolist())))  # item rows in order of first appearance
    expected_model = copy.deepcopy(model)
    learn_in_batches(model, events, batch=25)
    p, q, b = hand_written_isgd(expected_model, events)
    users = [u for u in p for _ in q]
    items = [i for _ in p for i in q]
    expected = np.array([b[i] + p[u] @ q[i] for u, i in zip(users, items, strict=True)])
    np.testing.assert_allclose(model.predict(users, items), expected, rtol=1e-4, atol=1e-5)


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
    """With every user and item once in the batch (no negatives), one step per row from the pre-batch values."""
    model = ISGD(n_factors=4, lr=0.1, reg=0.02, bias_lr=0.05, n_negatives=0, seed=4)
    p0, q0 = initial_rows(4, 0, 3, 4), initial_rows(4, 1, 3, 4)
    model.learn(Interactions.from_columns(["a", "b", "c"], ["x", "y", "z"]))
    err = 1.0 - np.einsum("ij,ij->i", p0, q0)

    def adagrad_first_step(row: np.ndarray, grad: np.ndarray) -> np.ndarray:
        return row - 0.1 * grad / np.sqrt((grad * grad).mean(axis=1, keepdims=True))

    p1 = adagrad_first_step(p0, 0.02 * p0 - err[:, None] * q0)
    q1 = adagrad_first_step(q0, 0.02 * q0 - err[:, None] * p0)
    b1 = 0.05 * err
    np.testing.assert_allclose(
        model.predict(["a", "b", "c"], ["x", "y", "z"]), b1 + np.einsum("ij,ij->i", p1, q1), rtol=1e-4
    )


def test_heavy_user_in_one_batch_does_not_diverge() -> None:
    items = [f"i{j % 300}" for j in range(3000)]
    model = ISGD(lr=0.2, bias_lr=0.5, seed=0)
    for _ in range(5):
        model.learn(Interactions.from_columns(["heavy"] * 3000, items))
    scores = model.predict(["heavy"] * 300, [f"i{j}" for j in range(300)])
    assert np.all(np.isfinite(scores))
    assert np.abs(scores).max() < 2.0  # targets are 0 and 1: no overshoot


def test_capped_scatter_add_leaves_light_rows_alone() -> None:
    target = np.zeros((3, 2), dtype=np.float32)
    steps = np.ones((4, 2), dtype=np.float32)
    scatter_add_capped(target, np.array([0, 1, 1, 1]), steps, np.array([0.1, 0.5, 0.5, 0.5]))
    np.testing.assert_allclose(target, [[1.0, 1.0], [2.0, 2.0], [0.0, 0.0]])


def test_learns_which_items_go_together() -> None:
    # every item equally popular: only co-occurrence (b: x and y, c: p and q) tells a from d
    users, items = ["a", "b", "b", "c", "c", "d", "e", "f"], ["x", "x", "y", "p", "q", "q", "y", "p"]
    events = Interactions.from_columns(users * 60, items * 60)
    model = ISGD(seed=0)
    learn_in_batches(model, events, batch=30)
    assert model.recommend(["a", "d"], k=1).items == [["y"], ["p"]]


def test_unknown_users_score_with_the_mean_user_vector() -> None:
    model = ISGD(seed=0)
    learn_in_batches(model, stream(), batch=40)
    mean = model._p[: model.n_users].mean(axis=0)
    expected = mean @ model._q[: model.n_items].T + model._b[: model.n_items]
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

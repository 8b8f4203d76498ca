"""Models that run on several workers: split learning with exchanged deltas equals one model; users move."""

from __future__ import annotations

import json
import zlib

import numpy as np
import pytest

import models
from models import Interactions, OnlineRecommender, Recommendations
from models.sharing import ItemDelta, UserStates

SHARING = [
    pytest.param(name, params, id=f"{name}-{j}")
    for name in models.available()
    if models.model_class(name).shares_state
    for j, params in enumerate(models.model_class(name)._test_params())
]


def stream(n: int = 900, n_users: int = 40, n_items: int = 60, seed: int = 2) -> Interactions:
    rng = np.random.default_rng(seed)
    users = rng.integers(0, n_users, n)
    items = (users % 3) * 20 + rng.integers(0, 20, n)  # three taste groups
    noise = rng.random(n) < 0.2
    items[noise] = rng.integers(0, n_items, int(noise.sum()))
    ratings = rng.integers(1, 6, n).astype(float)
    return Interactions.from_columns(
        [f"u{u}" for u in users], [f"i{i}" for i in items], timestamps=np.arange(n) * 30.0, ratings=ratings
    )


def partition(user: str, n: int = 2) -> int:
    return zlib.crc32(user.encode()) % n


def relay(delta: ItemDelta) -> ItemDelta:
    return ItemDelta.from_bytes(delta.to_bytes())  # through bytes, as Kafka carries it


def assert_same_lists(got: Recommendations, want: Recommendations, name: str) -> None:
    """Equal scores rank by rank; items equal except where scores tie (workers number items differently)."""
    for a_items, a_scores, b_items, b_scores in zip(got.items, got.scores, want.items, want.scores, strict=True):
        np.testing.assert_allclose(a_scores, b_scores, rtol=1e-5, atol=1e-9, err_msg=name)
        cut = b_scores[-1] if b_scores else None
        sure = {i for i, s in zip(b_items, b_scores, strict=True) if cut is None or not np.isclose(s, cut, rtol=1e-5)}
        assert sure <= set(a_items), f"{name}: {a_items} vs {b_items}"
        for a_run, b_run in zip(_runs(a_items, a_scores), _runs(b_items, b_scores), strict=True):
            if b_run[1] != cut:
                assert set(a_run[0]) == set(b_run[0]), f"{name}: tied items differ: {a_run} vs {b_run}"


def _runs(items: list[str], scores: list[float]) -> list[tuple[list[str], float]]:
    """Items grouped by (nearly) equal score, in rank order."""
    out: list[tuple[list[str], float]] = []
    for item, score in zip(items, scores, strict=True):
        if out and np.isclose(out[-1][1], score, rtol=1e-5):
            out[-1][0].append(item)
        else:
            out.append(([item], score))
    return out


def test_every_sharing_model_is_tested() -> None:
    assert {"popularity", "itemknn"} <= {p.values[0] for p in SHARING}


@pytest.mark.parametrize(("name", "params"), SHARING)
def test_split_learning_with_exchanged_deltas_equals_one_model(name: str, params: dict) -> None:
    events = stream()
    whole = models.create(name, **params)
    workers = [models.create(name, **params), models.create(name, **params)]
    owner = np.array([partition(u) for u in events.users.tolist()])
    for start in range(0, len(events), 25):  # micro-batches; deltas exchanged after each
        part = np.arange(start, min(start + 25, len(events)))
        whole.learn(events.select(part))
        for w, worker in enumerate(workers):
            mine = part[owner[part] == w]
            if len(mine):
                worker.learn(events.select(mine))
        deltas = [relay(worker.take_item_delta()) for worker in workers]
        workers[0].apply_item_delta(deltas[1])
        workers[1].apply_item_delta(deltas[0])
    users = sorted(set(events.users.tolist()))
    for w, worker in enumerate(workers):
        mine = [u for u in users if partition(u) == w]
        got, want = worker.recommend(mine, k=10), whole.recommend(mine, k=10)
        if whole.sharing_is_exact:
            assert_same_lists(got, want, name)
        else:  # asynchronous SGD: most of each list agrees
            overlap = np.mean(
                [len(set(a) & set(b)) / max(len(b), 1) for a, b in zip(got.items, want.items, strict=True)]
            )
            assert overlap >= 0.5, f"{name}: lists overlap {overlap:.2f}"


@pytest.mark.parametrize(("name", "params"), SHARING)
def test_users_move_to_a_fresh_worker_with_their_state(name: str, params: dict) -> None:
    events = stream(seed=4)
    source = models.create(name, **params)
    source.learn(events)
    users = sorted({u for u in events.users.tolist() if partition(u) == 0})
    target: OnlineRecommender = models.create(name, **params)
    target.import_items(relay(source.export_items()))
    target.import_users(UserStates.from_bytes(source.export_users([*users, "never-seen"]).to_bytes()))
    assert_same_lists(target.recommend(users, k=10), source.recommend(users, k=10), name)
    assert all(target.seen_items(u) == source.seen_items(u) for u in users)
    # per-user JSON records (a compacted changelog keyed by user) carry the same state
    records = json.loads(json.dumps(source.export_users(users).records()))
    by_record: OnlineRecommender = models.create(name, **params)
    by_record.import_items(relay(source.export_items()))
    by_record.import_users(UserStates.from_records(name, records))
    assert_same_lists(by_record.recommend(users, k=10), source.recommend(users, k=10), name)
    more = events.select(np.flatnonzero([partition(u) == 0 for u in events.users.tolist()])[:60])
    source.learn(more)
    target.learn(more)
    assert_same_lists(target.recommend(users, k=10), source.recommend(users, k=10), name)
    # the source hands them off: no trace left, other users unchanged
    others = sorted(set(events.users.tolist()) - set(users))
    before = source.recommend(others, k=10).items
    assert source.drop_users(users) == len(users)
    assert not any(source.has_history(u) for u in users)
    assert source.recommend(others, k=10).items == before


def test_models_that_cannot_share_say_so() -> None:
    unsharing = [n for n in models.available() if not models.model_class(n).shares_state]
    for name in unsharing[:1]:
        with pytest.raises(NotImplementedError, match="one worker"):
            models.create(name).take_item_delta()


def test_popularity_deltas_from_far_apart_times_do_not_overflow() -> None:
    old, new = models.create("popularity"), models.create("popularity")
    old.learn(Interactions.from_columns(["a"], ["x"], timestamps=[8.8e8]))
    new.learn(Interactions.from_columns(["b"], ["y"], timestamps=[2.0e9]))  # 1,850 half-lives later
    old.apply_item_delta(relay(new.take_item_delta()))
    new.apply_item_delta(relay(old.take_item_delta()))
    for model in (old, new):  # x's score decayed to nothing: only y counts
        assert model.recommend(["c"], k=2).items[0][0] == "y"
        assert np.isfinite(model.item_scores()).all()

"""Popularity keeps its top list as scores grow: a list costs O(TOP_KEPT), and equals a full pass exactly."""

from __future__ import annotations

import numpy as np
import pytest

from models import Interactions
from models.popularity import TOP_KEPT, Popularity


def full_pass(model: Popularity, users: list[str], k: int, exclude_seen: bool = True) -> list[list[str]]:
    """The same lists from a pass over every item (the kept list switched off)."""
    saved = model.__dict__.get("_global_top")
    model._global_top = lambda m: None  # type: ignore[method-assign]
    try:
        return model.recommend(users, k=k, exclude_seen=exclude_seen).items
    finally:
        if saved is None:
            del model._global_top
        else:
            model._global_top = saved


def part(batch: Interactions, a: int, b: int) -> Interactions:
    return Interactions(
        batch.users[a:b], batch.items[a:b], batch.timestamps[a:b], batch.weights[a:b], batch.ratings[a:b]
    )


def stream(n: int, n_items: int, seed: int, start: float = 1_764_000_000.0) -> Interactions:
    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, n_items + 1) ** 0.9
    items = rng.choice(n_items, size=n, p=p / p.sum())
    users = rng.integers(0, 300, size=n)
    weights = rng.choice([1.0, 2.0, 3.0, 5.0], size=n)
    return Interactions.from_columns(
        [f"u{x}" for x in users], [f"i{x}" for x in items], timestamps=start + np.arange(n) * 60.0, weights=weights
    )


@pytest.mark.parametrize("per_user", ["max", "sum"])
@pytest.mark.parametrize("half_life", [3600.0, None])
def test_lists_from_the_kept_top_equal_a_full_pass(per_user: str, half_life: float | None) -> None:
    n_items = 3 * TOP_KEPT
    model = Popularity(half_life=half_life, per_user=per_user)  # type: ignore[arg-type]
    model.add_items([f"i{x}" for x in range(n_items)])
    users = [f"u{x}" for x in range(0, 300, 7)] + ["new"]
    events = stream(20_000, n_items, seed=1)
    answered = []
    kept = model._global_top
    model._global_top = lambda m: answered.append(kept(m)) or answered[-1]  # type: ignore[method-assign]
    for start in range(0, len(events), 997):
        model.learn(part(events, start, start + 997))
        for k in (1, 10, 50):
            assert model.recommend(users, k=k).items == full_pass(model, users, k)
            assert model.recommend(["new"], k=k, exclude_seen=False).items == full_pass(model, ["new"], k, False)
            for user in users[:3]:  # the one-user path
                assert model.recommend([user], k=k).items == full_pass(model, [user], k)
    assert model._top is not None and TOP_KEPT <= len(model._top) <= 2 * TOP_KEPT
    assert sum(a is not None for a in answered) > 0.9 * len(answered)  # the kept list served, not a full pass


def test_increments_of_other_workers_and_evictions_keep_it_exact() -> None:
    n_items = 2 * TOP_KEPT + 10
    ids = [f"i{x}" for x in range(n_items)]
    a, b = Popularity(half_life=3600.0), Popularity(half_life=3600.0)
    for model in (a, b):
        model.add_items(ids)
        model.begin_sharing()
    events = stream(12_000, n_items, seed=2)
    half = len(events) // 2
    a.learn(part(events, 0, half))
    b.learn(part(events, half, len(events)))
    a.apply_item_delta(b.take_item_delta())
    b.apply_item_delta(a.take_item_delta())
    users = ["u1", "u2", "someone"]
    for model in (a, b):
        assert model.recommend(users, k=20).items == full_pass(model, users, 20)
    a.set_capacity(max_items=TOP_KEPT + 100)  # evicts the least recently active items
    assert a.recommend(users, k=20).items == full_pass(a, users, 20)
    fresh = Popularity(half_life=3600.0)
    fresh.begin_sharing()
    fresh.import_items(b.export_items())
    assert fresh.recommend(users, k=20).items == full_pass(fresh, users, 20)

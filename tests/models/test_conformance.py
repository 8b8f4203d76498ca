"""One conformance suite, run against every model in ``models.MODEL_PATHS``.

A new model is one line in ``models.MODEL_PATHS``; the parameters it is
tested with come from its ``_test_params()`` classmethod (River's pattern).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

import models
from models import Interactions, OnlineRecommender

GROUP_A = [f"a{j}" for j in range(10)]
GROUP_B = [f"b{j}" for j in range(10)]
EPOCHS = 15
BATCH = 40


def _cases(**required: bool) -> list:
    """(name, params) of every model whose class attributes match ``required``."""
    cases = []
    for name in models.available():
        cls = models.model_class(name)
        if any(getattr(cls, attr) != value for attr, value in required.items()):
            continue
        for j, params in enumerate(cls._test_params()):
            cases.append(pytest.param(name, params, id=f"{name}-{j}"))
    return cases


CASES = _cases()
PERSONALIZED = _cases(personalized=True)
BATCH_EQUALS_SEQUENTIAL = _cases(batch_equals_sequential=True)


def preference_events(uses_ratings: bool, seed: int = 7) -> Interactions:
    """Users 0-19 like group A, users 20-39 like group B; each saw 6 of their 10.

    Rating models also get low ratings on three items of the other group.
    """
    rng = np.random.default_rng(seed)
    rows: list[tuple[str, str, float]] = []
    for u in range(40):
        own, other = (GROUP_A, GROUP_B) if u < 20 else (GROUP_B, GROUP_A)
        picks = list(rng.choice(own, size=6, replace=False)) if u else own[:6]
        rows += [(f"u{u}", str(i), 5.0) for i in picks]
        if uses_ratings:
            rows += [(f"u{u}", str(i), 1.0) for i in rng.choice(other, size=3, replace=False)]
    order = rng.permutation(len(rows))
    rows = [rows[j] for j in order]
    users, items, ratings = zip(*rows, strict=True)
    return Interactions.from_columns(users, items, timestamps=np.arange(len(rows)) * 10.0, ratings=ratings)


def train(
    model: OnlineRecommender, events: Interactions, epochs: int = EPOCHS, batch: int = BATCH
) -> OnlineRecommender:
    n = len(events)
    for epoch in range(epochs):
        shifted = Interactions(
            events.users,
            events.items,
            events.timestamps + epoch * 10.0 * n,
            events.weights,
            events.ratings,
            events.contexts,
        )
        for start in range(0, n, batch):
            model.learn(shifted.select(np.arange(start, min(start + batch, n))))
    return model


def fitted(name: str, params: dict) -> OnlineRecommender:
    model = models.create(name, **params)
    return train(model, preference_events(model.uses_ratings))


@pytest.fixture(scope="module")
def fitted_cache() -> dict:
    return {}


def get_fitted(cache: dict, name: str, params: dict) -> OnlineRecommender:
    key = (name, repr(sorted(params.items())))
    if key not in cache:
        cache[key] = fitted(name, params)
    return copy.deepcopy(cache[key])


@pytest.mark.parametrize(("name", "params"), PERSONALIZED)
def test_learns_group_preference(name: str, params: dict, fitted_cache: dict) -> None:
    model = get_fitted(fitted_cache, name, params)
    for user, own in (("u0", "a"), ("u20", "b")):
        recs = model.recommend([user], k=20).items[0]
        assert recs, f"{name} recommended nothing to {user}"
        assert all(r.startswith(own) for r in recs[:2]), f"{name} top-2 for {user}: {recs[:5]}"
        own_ranks = [p for p, r in enumerate(recs) if r.startswith(own)]
        other_ranks = [p for p, r in enumerate(recs) if not r.startswith(own)]
        assert np.mean(own_ranks) < np.mean(other_ranks), f"{name} for {user}: {recs}"


@pytest.mark.parametrize(("name", "params"), CASES)
def test_negative_feedback_pushes_an_item_down_or_changes_nothing(name: str, params: dict, fitted_cache: dict) -> None:
    """A model that learns negatives ranks a "not interested" item lower for that user; any other ignores it."""
    model = get_fitted(fitted_cache, name, params)
    before = model.recommend(["u0"], k=20)
    target = before.items[0][0]
    negatives = Interactions.from_columns(["u0"] * 5 + ["nobody"], [target] * 5 + ["a0"])  # an unknown user too
    for _ in range(3):
        model.learn_negatives(negatives)
    after = model.recommend(["u0"], k=20)
    assert model.seen_items("u0").isdisjoint({target})  # not recorded as seen: reads leave it out themselves
    if model.learns_negatives:
        rank_after = after.items[0].index(target) if target in after.items[0] else len(after.items[0])
        assert rank_after > 0, f"{name}: {target} still first after 15 negatives"
    else:
        assert after.items == before.items and after.scores == before.scores


@pytest.mark.parametrize(("name", "params"), CASES)
def test_seen_items_excluded_and_included_on_request(name: str, params: dict, fitted_cache: dict) -> None:
    model = get_fitted(fitted_cache, name, params)
    seen = model.seen_items("u0")
    assert seen >= set(GROUP_A[:6])
    recs = model.recommend(["u0", "u21"], k=100)
    assert not seen & set(recs.items[0])
    assert not model.seen_items("u21") & set(recs.items[1])
    everything = model.recommend(["u0"], k=100, exclude_seen=False).items[0]
    assert set(everything) == set(GROUP_A + GROUP_B)
    extra = model.recommend(["u0"], k=100, exclude={"u0": ["a9", "no-such-item"]}).items[0]
    assert "a9" not in extra


@pytest.mark.parametrize(("name", "params"), CASES)
def test_k_edge_cases_and_unknown_users(name: str, params: dict, fitted_cache: dict) -> None:
    model = get_fitted(fitted_cache, name, params)
    recs = model.recommend(["never-seen", "u0"], k=1000)
    assert len(recs.items[0]) == 20  # k larger than the catalogue: every item
    assert len(recs.items[1]) == 20 - len(model.seen_items("u0"))
    assert len(set(recs.items[0])) == 20
    for row in recs.scores:
        assert all(np.isfinite(row))
        assert row == sorted(row, reverse=True)
    assert model.recommend(["u0"], k=0).items == [[]]
    assert model.recommend([], k=5).items == []
    with pytest.raises(ValueError, match="k must be"):
        model.recommend(["u0"], k=-1)
    empty = models.create(name, **params)
    assert empty.recommend(["u0"], k=5).items == [[]]


@pytest.mark.parametrize(("name", "params"), CASES)
def test_a_list_does_not_depend_on_the_other_users_in_the_call(name: str, params: dict, fitted_cache: dict) -> None:
    """The live worker batches whoever a micro-batch touched, the backtest one user at a time: same lists."""
    model = get_fitted(fitted_cache, name, params)
    users = [f"u{j}" for j in range(0, 40, 3)] + ["nobody", "u0"]
    together = model.recommend(users, k=10, with_reasons=False)
    for n, user in enumerate(users):
        alone = model.recommend([user], k=10, with_reasons=False)
        assert alone.items[0] == together.items[n], f"{name}: {user} alone {alone.items[0]} vs {together.items[n]}"
        assert alone.scores[0] == together.scores[n], f"{name}: {user}"


@pytest.mark.parametrize(
    ("name", "params"), [c for c in CASES if models.model_class(c.values[0]).recommend is OnlineRecommender.recommend]
)
def test_a_list_read_as_item_rows_is_the_list_recommend_names(name: str, params: dict, fitted_cache: dict) -> None:
    """The hybrid reads its members' lists as item rows (``_top_rows_one``): the items and scores of ``recommend``.

    Models with a ``recommend`` of their own are read by id and are left out here.
    """
    model = get_fitted(fitted_cache, name, params)
    for user in [f"u{j}" for j in range(0, 40, 7)] + ["nobody"]:
        for exclude_seen in (True, False):
            _, rows, scores = model._top_rows_one(user, 10, exclude_seen)
            listed = model.recommend([user], k=10, exclude_seen=exclude_seen, with_reasons=False)
            assert [model.item_index.ids[r] for r in rows.tolist()] == listed.items[0], f"{name}: {user}"
            assert scores == listed.scores[0], f"{name}: {user}"


@pytest.mark.parametrize(("name", "params"), CASES)
def test_new_items_are_recommendable_after_catalogue_update(name: str, params: dict, fitted_cache: dict) -> None:
    model = get_fitted(fitted_cache, name, params)
    model.add_items(["brand-new"], tags=[("drama",)])
    recs = model.recommend(["u0", "someone-new"], k=1000)
    assert all("brand-new" in row for row in recs.items)


@pytest.mark.parametrize(("name", "params"), CASES)
def test_seeded_runs_are_identical(name: str, params: dict) -> None:
    a, b = fitted(name, params), fitted(name, params)
    users = ["u0", "u5", "u33", "nobody"]
    ra, rb = a.recommend(users, k=10), b.recommend(users, k=10)
    assert ra.items == rb.items
    assert np.allclose(np.concatenate(ra.scores), np.concatenate(rb.scores))


@pytest.mark.parametrize(("name", "params"), CASES)
def test_save_load_round_trip(name: str, params: dict, fitted_cache: dict, tmp_path) -> None:
    model = get_fitted(fitted_cache, name, params)
    users = ["u0", "u20", "u39", "nobody"]
    path = model.save(tmp_path / "m")
    loaded = OnlineRecommender.load(path)
    assert type(loaded) is type(model)
    assert loaded.get_params() == model.get_params()
    before, after = model.recommend(users, k=10), loaded.recommend(users, k=10)
    assert before.items == after.items
    assert np.allclose(np.concatenate(before.scores), np.concatenate(after.scores), rtol=1e-5, atol=1e-6)
    # the whole state was saved: learning more gives the same result on both
    more = Interactions.from_columns(
        ["u0", "new-user", "u20"], ["b1", "a3", "new-item"], timestamps=[1e7, 1e7 + 1, 1e7 + 2], ratings=[4.0, 5.0, 3.0]
    )
    model.learn(more)
    loaded.learn(more)
    before, after = model.recommend([*users, "new-user"], k=10), loaded.recommend([*users, "new-user"], k=10)
    assert before.items == after.items
    assert not list((tmp_path / "m").glob("*.pkl"))


@pytest.mark.parametrize(("name", "params"), CASES)
def test_inputs_not_mutated(name: str, params: dict) -> None:
    model = models.create(name, **params)
    events = preference_events(model.uses_ratings)
    original = copy.deepcopy(events)
    users = ["u0", "u1"]
    train(model, events, epochs=1)
    model.recommend(users, k=5)
    for column in ("users", "items", "timestamps", "weights", "ratings"):
        np.testing.assert_array_equal(getattr(events, column), getattr(original, column))
    assert users == ["u0", "u1"]


@pytest.mark.parametrize(("name", "params"), CASES)
def test_params_round_trip_and_defaults_not_shared(name: str, params: dict) -> None:
    a = models.create(name, **params)
    b = a.clone()
    assert a.get_params() == b.get_params()
    for key, value in a.get_params().items():
        if isinstance(value, list | dict | set | np.ndarray):
            assert value is not b.get_params()[key], f"{name}.{key} is shared between instances"


@pytest.mark.parametrize(("name", "params"), BATCH_EQUALS_SEQUENTIAL)
def test_batch_equals_sequential_when_promised(name: str, params: dict) -> None:
    cls = models.model_class(name)
    events = preference_events(cls.uses_ratings)
    batched = train(models.create(name, **params), events, epochs=2, batch=len(events))
    single = train(models.create(name, **params), events, epochs=2, batch=1)
    users = ["u0", "u20", "nobody"]
    rb, rs = batched.recommend(users, k=20), single.recommend(users, k=20)
    for a, b in zip(rb.scores, rs.scores, strict=True):
        assert np.allclose(a, b, rtol=1e-4)
    assert [set(x) for x in rb.items] == [set(x) for x in rs.items]


def _strings(node: Any) -> Iterator[str]:
    """Every string in a JSON document, keys included."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield key
            yield from _strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from _strings(value)


@pytest.mark.parametrize(("name", "params"), CASES)
def test_forget_user_removes_every_trace(name: str, params: dict, fitted_cache: dict, tmp_path) -> None:
    model = get_fitted(fitted_cache, name, params)
    others = ["u5", "u20", "u39"]
    before = model.recommend(others, k=10)
    assert model.forget_user("u0")
    assert not model.forget_user("u0")
    assert not model.forget_user("never-seen")
    assert not model.has_history("u0")
    assert model.seen_items("u0") == set()
    assert "u0" not in model.user_index
    # u0 is now a new, cold user: the cold-start list, seen items included
    cold = model.recommend(["u0", "never-seen"], k=20)
    assert len(cold.items[0]) == 20 and cold.items[0] == cold.items[1]
    assert np.allclose(cold.scores[0], cold.scores[1])
    after = model.recommend(others, k=10)
    if model.forget_changes_other_users:
        # u0 was itself the others' neighbour (user-kNN): their lists are those of a model that never saw u0
        events = preference_events(model.uses_ratings)
        never = train(models.create(name, **params), events.select(events.users != "u0"))
        got, want = model.recommend(others, k=100), never.recommend(others, k=100)
        for n, user in enumerate(others):  # by item: ties among zero scores may order differently
            scores = dict(zip(got.items[n], got.scores[n], strict=True))
            expected = dict(zip(want.items[n], want.scores[n], strict=True))
            assert scores.keys() == expected.keys(), f"{name}: {user}"
            assert np.allclose([scores[i] for i in expected], list(expected.values()), rtol=1e-5, atol=1e-6), user
    else:
        # what is kept (item popularity, co-occurrences, item factors) does not move the other users' lists
        assert after.items == before.items
        assert np.allclose(np.concatenate(after.scores), np.concatenate(before.scores), rtol=1e-5, atol=1e-6)
    # a saved model does not hold the id anywhere
    path = model.save(tmp_path / "m")
    strings = set(_strings(json.loads((path / "meta.json").read_text())))
    assert "u0" not in strings
    assert "u5" in strings  # (the check sees ids that are there)
    with np.load(path / "arrays.npz", allow_pickle=False) as arrays:
        for key in arrays.files:
            assert arrays[key].dtype.kind not in "OSU" or "u0" not in arrays[key], key
    loaded = OnlineRecommender.load(path)
    assert not loaded.has_history("u0")
    assert loaded.recommend(others, k=10).items == after.items
    # learning goes on: u0 comes back as a new user with only the new events
    more = Interactions.from_columns(
        ["u0", "u0", "u7"], ["b1", "b2", "a1"], timestamps=[1e7, 1e7 + 1, 1e7 + 2], ratings=[5.0, 4.0, 5.0]
    )
    for m in (model, loaded):
        m.learn(more)
        assert m.seen_items("u0") == {"b1", "b2"}
        recs = m.recommend(["u0"], k=100).items[0]
        assert len(recs) == 18 and not {"b1", "b2"} & set(recs)
    assert model.recommend(["u0", *others], k=10).items == loaded.recommend(["u0", *others], k=10).items


def open_catalogue_stream(n_events: int = 400, seed: int = 3) -> Interactions:
    """Events over 100 users and 200 items, with ratings (a stream with far more ids than the caps)."""
    rng = np.random.default_rng(seed)
    users = [f"v{j}" for j in rng.integers(100, size=n_events)]
    items = [f"x{j}" for j in rng.integers(200, size=n_events)]
    ratings = rng.integers(1, 6, size=n_events).astype(float)
    return Interactions.from_columns(users, items, timestamps=np.arange(n_events) * 10.0, ratings=ratings)


@pytest.mark.parametrize(("name", "params"), CASES)
def test_capacity_bounds_rows_and_evicted_items_are_never_recommended(name: str, params: dict, tmp_path) -> None:
    model = models.create(name, **params)
    model.set_capacity(max_users=10, max_items=12)
    events = open_catalogue_stream()
    ever: set[str] = set()
    for start in range(0, len(events), 25):
        batch = events.select(np.arange(start, min(start + 25, len(events))))
        model.learn(batch)
        ever.update(batch.items.tolist())
        assert model.n_users <= 10 and model.n_items <= 12  # row capacity, not ids ever seen
        live = {i for i in model.item_index.ids if i is not None}
        assert set(batch.items[-5:].tolist()) <= live  # the newest are kept
        users = [*batch.users[-3:].tolist(), "nobody"]
        for row in model.recommend(users, k=20, exclude_seen=False).items:
            assert set(row) == live and len(row) == len(live)  # no evicted item, no free row
        for uid, row in zip(users, model.recommend(users, k=20).items, strict=True):
            assert set(row) <= live - model.seen_items(uid)
    assert len(ever) > 100 and len(ever - live) > 80  # most items were evicted along the way
    model.add_items(["brand-new"], tags=[("drama",)])
    assert model.n_items <= 12 and "brand-new" in model.recommend(["nobody"], k=20).items[0]
    # save/load keeps the tombstones, the activity times and the caps: both evict the same ids afterwards
    loaded = OnlineRecommender.load(model.save(tmp_path / "m"))
    assert (loaded.max_users, loaded.max_items) == (10, 12)
    assert loaded.user_index.ids == model.user_index.ids and loaded.item_index.ids == model.item_index.ids
    users = [*events.users[-4:].tolist(), "nobody"]
    assert loaded.recommend(users, k=5).items == model.recommend(users, k=5).items
    more = open_catalogue_stream(n_events=60, seed=4)
    for m in (model, loaded):
        m.learn(more)
        assert m.n_users <= 10 and m.n_items <= 12
    assert loaded.user_index.ids == model.user_index.ids and loaded.item_index.ids == model.item_index.ids
    users = [*more.users[-4:].tolist(), "nobody"]
    assert loaded.recommend(users, k=5).items == model.recommend(users, k=5).items
    assert model.clone().max_items == 12


def test_every_registered_model_is_tested() -> None:
    tested = {c.values[0] for c in CASES}
    assert tested == set(models.available())
    assert "popularity" in tested


def test_popularity_ranks_the_same_for_everyone() -> None:
    model = fitted("popularity", {"half_life": None})
    assert not model.personalized
    a, b = model.recommend(["u0", "u20"], k=20, exclude_seen=False).items
    assert a == b

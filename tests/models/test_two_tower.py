"""The two-tower model: cold items by content, features from the context, determinism, growth, persistence."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from models import Interactions, OnlineRecommender
from models.sharing import UserStates
from models.two_tower import TwoTower, title_tokens
from tests.models.test_sharing import assert_same_lists, partition, relay

SMALL = {"n_factors": 16, "micro_batch": 32, "n_negatives": 16, "lr": 0.05, "device": "cpu", "seed": 0}


def grouped_stream(n_users: int = 60, n_items: int = 40, n_events: int = 3000, seed: int = 0) -> Interactions:
    """Users ``g0-*`` interact with items tagged ``g0``, users ``g1-*`` with items tagged ``g1`` (all warm)."""
    rng = np.random.default_rng(seed)
    users, items = [], []
    for _ in range(n_events):
        g = int(rng.integers(2))
        users.append(f"g{g}-u{rng.integers(n_users // 2)}")
        items.append(f"g{g}-i{rng.integers(n_items // 2)}")
    return Interactions.from_columns(users, items, timestamps=np.arange(n_events) * 60.0)


def catalogue(n_items: int = 40, prefix: str = "i") -> tuple[list[str], list[tuple[str, ...]]]:
    ids = [f"g{g}-{prefix}{j}" for g in (0, 1) for j in range(n_items // 2)]
    return ids, [(f"g{i[1]}", "film") for i in ids]


def learn_in_batches(model: OnlineRecommender, events: Interactions, size: int = 50) -> None:
    for start in range(0, len(events), size):
        model.learn(events.select(np.arange(start, min(start + size, len(events)))))


def trained(**params: object) -> TwoTower:
    model = TwoTower(**{**SMALL, **params})
    ids, tags = catalogue()
    model.add_items(ids, tags=tags)
    learn_in_batches(model, grouped_stream())
    return model


def test_held_back_items_rank_by_their_tags_before_any_interaction() -> None:
    model = trained()
    new_ids, new_tags = catalogue(n_items=20, prefix="new")
    model.add_items(new_ids, tags=new_tags)
    rows = model.item_index.lookup(new_ids)
    assert not model._item_trained[rows].any()  # never interacted: content alone scores them
    for group in (0, 1):
        users = [f"g{group}-u{j}" for j in range(30)]
        ranked = model.recommend(users, k=model.n_items, with_reasons=False).items
        auc = []
        for row in ranked:
            position = {item: p for p, item in enumerate(row)}
            right = [position[i] for i in new_ids if i.startswith(f"g{group}-")]
            wrong = [position[i] for i in new_ids if not i.startswith(f"g{group}-")]
            auc.append(np.mean([r < w for r in right for w in wrong]))
        assert np.mean(auc) > 0.9, f"group {group}: new items of the right group ranked first in {np.mean(auc):.2f}"
    # the id embedding of an item waits for its first learned event: new items score by content only
    x, b = model._item_output64(rows)
    saved = model._tables["item"][torch.from_numpy(rows)].clone()
    model._tables["item"][torch.from_numpy(rows)] = 100.0  # whatever the id rows hold
    x2, b2 = model._item_output64(rows)
    model._tables["item"][torch.from_numpy(rows)] = saved
    np.testing.assert_array_equal(x, x2)
    np.testing.assert_array_equal(b, b2)


def test_without_content_new_items_score_alike() -> None:
    model = trained()
    model.add_items(["plain-a", "plain-b"])
    u = model.user_index.lookup(["g0-u1"])
    scores = model._score(u)[0, model.item_index.lookup(["plain-a", "plain-b"])]
    assert scores[0] == scores[1]


def test_same_seed_same_model_on_cpu() -> None:
    a, b = trained(), trained()
    sa, sb = a._state(), b._state()
    assert sa.keys() == sb.keys()
    for key in sa:
        np.testing.assert_array_equal(sa[key], sb[key], err_msg=key)
    users = ["g0-u1", "g1-u2", "nobody"]
    assert a.recommend(users, k=10).items == b.recommend(users, k=10).items
    c = trained(seed=1)
    assert not np.array_equal(c._state()["table.item"], sa["table.item"])


def test_learning_event_by_event_equals_learning_in_batches() -> None:
    events = grouped_stream(n_events=700)
    batched, single = TwoTower(**SMALL), TwoTower(**SMALL)
    learn_in_batches(batched, events, size=250)
    learn_in_batches(single, events, size=1)
    for key, value in batched._state().items():
        np.testing.assert_allclose(value, single._state()[key], rtol=1e-5, atol=1e-6, err_msg=key)


def test_tables_grow_with_new_users_items_and_features() -> None:
    model = TwoTower(**SMALL)
    model.learn(Interactions.from_columns(["a"], ["x"], contexts=[{"device": "tv"}]))
    assert (model.n_users, model.n_items) == (1, 1)
    assert "device=tv" in model.feature_index and model._n_buffered == 1
    events = grouped_stream(n_events=200)
    learn_in_batches(model, events)
    assert model.n_items == 1 + len(set(events.items.tolist()))
    assert model._rows["item"] == model.n_items and model._tables["item"].shape[0] >= model.n_items
    model.add_items(["late"], tags=[("brand-new-tag",)], titles=["The Late Show (2001)"])
    assert "brand-new-tag" in model.tag_index and "2000s" in model.token_index
    assert model._rows["tag"] == len(model.tag_index) and model._rows["token"] == len(model.token_index)
    assert "late" in model.recommend(["g0-u1"], k=model.n_items).items[0]
    learn_in_batches(model, grouped_stream(n_events=100, seed=9))  # a step with the new rows in the tables
    assert np.isfinite(model._score(model.user_index.lookup(["g0-u1"]))).all()


def test_save_load_and_continued_learning(tmp_path) -> None:
    model = trained()
    model.learn(Interactions.from_columns(["g0-u1", "g1-u2"], ["g0-i3", "g1-i4"], timestamps=[1e6, 1e6 + 1]))
    assert model._n_buffered > 0  # events waiting for the next step are part of the state
    loaded = OnlineRecommender.load(model.save(tmp_path / "m"))
    assert isinstance(loaded, TwoTower) and loaded._n_buffered == model._n_buffered
    assert not list((tmp_path / "m").glob("*.pkl"))
    users = ["g0-u1", "g1-u2", "nobody"]
    assert loaded.recommend(users, k=10).items == model.recommend(users, k=10).items
    more = grouped_stream(n_events=300, seed=4)
    learn_in_batches(model, more)
    learn_in_batches(loaded, more)
    for key, value in model._state().items():
        np.testing.assert_array_equal(value, loaded._state()[key], err_msg=key)
    assert loaded.recommend(users, k=10).items == model.recommend(users, k=10).items


def feature_stream(n_events: int = 6000, seed: int = 0) -> Interactions:
    """Everyone first watches "hub"; then women watch ``f*`` items and men ``m*`` items."""
    rng = np.random.default_rng(seed)
    users, items, contexts = [], [], []
    for n in range(n_events):
        u = int(rng.integers(200))
        gender = "F" if u % 2 else "M"
        users.append(f"u{u}")
        items.append("hub" if n % 5 == 0 else f"{gender.lower()}{rng.integers(30)}")
        contexts.append({"gender": gender, "age": 20 + u % 40, "zip": str(u)})
    return Interactions.from_columns(users, items, timestamps=np.arange(n_events) * 60.0, contexts=contexts)


@pytest.mark.parametrize("use_features", [True, False])
def test_user_features_from_the_context_decide_taste(use_features: bool) -> None:
    keys = ("age", "gender") if use_features else ()
    model = TwoTower(**{**SMALL, "context_keys": keys})
    learn_in_batches(model, feature_stream())
    newcomers = Interactions.from_columns(
        ["new-f", "new-m"], ["hub", "hub"], timestamps=[1e6, 1e6], contexts=[{"gender": "F"}, {"gender": "M"}]
    )
    model.learn(newcomers)
    lists = model.recommend(["new-f", "new-m"], k=10).items
    own = [sum(i.startswith(prefix) for i in row) for row, prefix in zip(lists, ("f", "m"), strict=True)]
    if use_features:  # the same single item; the gender decides
        assert min(own) >= 6, lists
        assert {"age=2", "age=5", "gender=F"} <= set(model.feature_index.ids)
        assert not any(f.startswith("zip=") for f in model.feature_index.ids)  # keys not asked for are ignored
    else:
        assert lists[0] == lists[1]  # nothing tells the newcomers apart
        assert not model.feature_index.ids


def test_forget_user_erases_history_features_and_buffered_events() -> None:
    model = TwoTower(**{**SMALL, "micro_batch": 1000})
    events = feature_stream(n_events=300)
    learn_in_batches(model, events)
    user = events.users[0]
    row = model.user_index.get(user)
    assert (model._buf_user[: model._n_buffered] == row).any() and (model._hist[row] >= 0).any()
    before = model._n_buffered
    assert model.forget_user(user)
    assert not (model._buf_user[: model._n_buffered] == row).any() and model._n_buffered < before
    assert (model._hist[row] == -1).all() and (model._feats[row] == -1).all()


def test_evicted_items_leave_the_recent_items() -> None:
    model = TwoTower(**SMALL)
    model.learn(Interactions.from_columns(["a", "a", "a", "b"], ["x", "y", "z", "y"]))
    model.set_capacity(max_items=3)
    model.learn(Interactions.from_columns(["b"], ["w"]))  # x, the least recently active item, goes
    assert "x" not in model.item_index
    recent = model._hist[model.user_index.get("a")]
    assert model.item_index.ids_of(recent[recent >= 0]) == ["y", "z"] and (recent[-2:] >= 0).all()


def test_repeats_move_an_item_to_the_front_but_are_learned_only_when_asked() -> None:
    events = Interactions.from_columns(["a", "a", "a"], ["x", "y", "x"])
    model = TwoTower(**{**SMALL, "learn_repeats": False})
    model.learn(events)
    assert model._n_buffered == 2
    recent = model._hist[0]
    assert model.item_index.ids_of(recent[recent >= 0]) == ["y", "x"]
    keen = TwoTower(**{**SMALL, "learn_repeats": True})
    keen.learn(events)
    assert keen._n_buffered == 3


def test_topk_device_agrees_with_recommend() -> None:
    model = trained()
    users = ["g0-u1", "g1-u3", "nobody"]
    idx, scores = model.topk_device(users, k=5)
    recs = model.recommend(users, k=5)
    for n in range(len(users)):
        assert model.item_index.ids_of(idx[n].tolist()) == recs.items[n]
        np.testing.assert_allclose(scores[n].numpy(), recs.scores[n], rtol=1e-4, atol=1e-4)


def test_title_tokens_and_bad_parameters() -> None:
    assert title_tokens("Heat (1995)") == ("heat", "1995", "1990s")
    assert title_tokens(None) == ()
    with pytest.raises(ValueError, match="micro_batch"):
        TwoTower(micro_batch=0)
    with pytest.raises(ValueError, match="lr"):
        TwoTower(lr=0.0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_learns_and_ranks_like_the_cpu() -> None:
    cpu, gpu = trained(), trained(device="cuda")
    assert gpu.torch_device.type == "cuda" and gpu._tables["item"].is_cuda
    users = [f"g{g}-u{j}" for g in (0, 1) for j in range(5)]
    for model in (cpu, gpu):
        for user, row in zip(users, model.recommend(users, k=5).items, strict=True):
            assert sum(i.startswith(user[:3]) for i in row) >= 4, (model.torch_device, user, row)
    idx, values = gpu.topk_device(users, k=5)
    assert idx.is_cuda
    recs = gpu.recommend(users, k=5)  # the same scores rank by rank (ties may swap)
    np.testing.assert_allclose(values.cpu().numpy(), np.array(recs.scores), rtol=1e-4, atol=1e-4)


# -- sharing across workers: item rows, vocabularies and dense weights as increments ---------


def context_stream(n_events: int = 3000, seed: int = 0) -> Interactions:
    """:func:`grouped_stream` over 200 items, with each user's gender and age in the events' context."""
    base = grouped_stream(n_items=200, n_events=n_events, seed=seed)
    contexts = [{"gender": u[:2], "age": 20 + int(u.split("-u")[1]) % 40} for u in base.users.tolist()]
    return Interactions.from_columns(base.users, base.items, timestamps=base.timestamps, contexts=contexts)


SHARED = {**SMALL, "hidden": 8, "use_hour": True}


def split_learning(
    events: Interactions, every: int = 50, **params: object
) -> tuple[TwoTower, list[TwoTower], list[str]]:
    """One model of the stream, and two workers learning its user partitions, deltas exchanged as bytes."""
    whole, workers = TwoTower(**{**SHARED, **params}), [TwoTower(**{**SHARED, **params}) for _ in range(2)]
    ids, tags = catalogue(n_items=200)
    for n, model in enumerate([whole, *workers]):
        model.add_items(ids if n != 2 else ids[::-1], tags=tags if n != 2 else tags[::-1])  # any order
    for worker in workers:
        worker.begin_sharing()
    owner = np.array([partition(u) for u in events.users.tolist()])
    for start in range(0, len(events), every):
        part = np.arange(start, min(start + every, len(events)))
        whole.learn(events.select(part))
        for w, worker in enumerate(workers):
            mine = part[owner[part] == w]
            if len(mine):
                worker.learn(events.select(mine))
        deltas = [relay(worker.take_item_delta()) for worker in workers]
        workers[0].apply_item_delta(deltas[1])
        workers[1].apply_item_delta(deltas[0])
    return whole, workers, sorted(set(events.users.tolist()))


def by_id(model: TwoTower, table: str, index: object) -> dict[str, np.ndarray]:
    rows = model._tables[table][: model._rows[table]].numpy()
    return {key: rows[r] for r, key in enumerate(index.ids) if key is not None}  # type: ignore[attr-defined]


def test_two_workers_exchanging_deltas_hold_one_item_state_and_recommend_like_one_model() -> None:
    whole, workers, users = split_learning(context_stream())
    a, b = workers
    # every increment reached both: the same item, tag and feature rows and dense weights, by id
    for table, index in (
        ("item", "item_index"),
        ("item_bias", "item_index"),
        ("tag", "tag_index"),
        ("feature", "feature_index"),
    ):
        left, right = by_id(a, table, getattr(a, index)), by_id(b, table, getattr(b, index))
        assert left.keys() == right.keys() and left
        for key in left:
            np.testing.assert_allclose(left[key], right[key], rtol=1e-5, atol=1e-6, err_msg=f"{table} {key}")
    for name in ("position", "mix", "hidden_in", "hidden_out"):
        np.testing.assert_allclose(a._tables[name].numpy(), b._tables[name].numpy(), rtol=1e-5, atol=1e-6)
    # event counts add up exactly to the single model's
    counts = {key: whole._item_events[r] for r, key in enumerate(whole.item_index.ids)}
    for worker in workers:
        assert {key: worker._item_events[r] for r, key in enumerate(worker.item_index.ids)} == counts
    # asynchronous SGD: lists as good as the single model's (every item from the user's group),
    # and as close to its lists (0.60) as another seed of it is (0.53 on this stream)
    overlaps = []
    for w, worker in enumerate(workers):
        mine = [u for u in users if partition(u) == w]
        assert all(worker.has_history(u) for u in mine) and not any(
            worker.has_history(u) for u in users if u not in mine
        )
        got, want = worker.recommend(mine, k=10).items, whole.recommend(mine, k=10).items
        assert all(item[:2] == user[:2] for user, row in zip(mine, got, strict=True) for item in row)
        assert all(item[:2] == user[:2] for user, row in zip(mine, want, strict=True) for item in row)
        overlaps += [len(set(x) & set(y)) / len(y) for x, y in zip(got, want, strict=True)]
    assert np.mean(overlaps) >= 0.5


def test_users_move_between_workers_with_their_lists() -> None:
    _, workers, users = split_learning(context_stream(n_events=1500, seed=1))
    source, target = workers
    moving = [u for u in users if partition(u) == 0]
    before = source.recommend(moving, k=10)
    records = json.loads(json.dumps(source.export_users(moving).records()))  # as the changelog holds them
    assert records[moving[0]]["extra"]["two_tower_features"][0].startswith("age=")
    target.import_users(UserStates.from_records("two_tower", records))
    assert_same_lists(target.recommend(moving, k=10), before, "two_tower")
    # a fresh worker: the item state, then the users, through bytes
    fresh = TwoTower(**SHARED)
    fresh.import_items(relay(source.export_items()))
    fresh.import_users(UserStates.from_bytes(source.export_users(moving).to_bytes()))
    assert_same_lists(fresh.recommend(moving, k=10), before, "two_tower")
    # a user neither worker moved is scored from the item state alone (tags and content included)
    assert_same_lists(fresh.recommend(["g0-u1"], k=10), source.recommend(["g0-u1"], k=10), "two_tower")
    # the source hands them off: their buffered events stay and train here
    buffered = source._n_buffered
    assert buffered and source.drop_users(moving) == len(moving)
    assert source._n_buffered == buffered and not any(source.has_history(u) for u in moving)
    assert (source._buf_user[:buffered] < 0).any()  # kept, without a user row
    trained_before = source._item_trained.sum()
    source.learn(context_stream(n_events=SHARED["micro_batch"], seed=2))  # type: ignore[arg-type]
    assert source._item_trained.sum() == trained_before + SHARED["micro_batch"]  # type: ignore[operator]
    assert not (source._buf_user[: source._n_buffered] < 0).any()


def test_initial_rows_are_a_function_of_the_id() -> None:
    first, second = TwoTower(**SMALL), TwoTower(**SMALL)
    first.add_items(["a", "b", "c"], tags=[("x",), ("y",), ("x", "y")])
    second.add_items(["c", "b", "a"], tags=[("y", "x"), ("y",), ("x",)])
    for table, index in (("item", "item_index"), ("tag", "tag_index")):
        left, right = by_id(first, table, getattr(first, index)), by_id(second, table, getattr(second, index))
        assert all(np.array_equal(left[key], right[key]) for key in left)
    # a freed row taken by a new item starts from the new item's row, as on a worker that never evicted
    first.set_capacity(max_items=3)
    first.learn(Interactions.from_columns(["u"], ["d"]))
    second.add_items(["d"])
    assert first.item_index.get("d") < 3
    np.testing.assert_array_equal(
        by_id(first, "item", first.item_index)["d"], by_id(second, "item", second.item_index)["d"]
    )

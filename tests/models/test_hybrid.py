"""Tests of the hybrid: weights learned from hits, popularity for cold users, content for new items."""

from __future__ import annotations

import json
import zlib

import numpy as np
import pytest

from models import Interactions, OnlineRecommender
from models.hybrid import Hybrid
from models.popularity import Popularity
from models.sharing import ItemDelta, UserStates

SCIFI = [f"scifi{j}" for j in range(30)]
ROMANCE = [f"romance{j}" for j in range(30)]


def taste_events(seed: int = 0) -> Interactions:
    """Users f0-f19 watch science fiction, r0-r19 romance; each saw 5 of the 30 films of their genre."""
    rng = np.random.default_rng(seed)
    rows = []
    for user in range(40):
        name, films = (f"f{user}", SCIFI) if user < 20 else (f"r{user}", ROMANCE)
        rows += [(name, film) for film in rng.choice(films, size=5, replace=False)]
    rows = [rows[j] for j in rng.permutation(len(rows))]
    users, items = zip(*rows, strict=True)
    return Interactions.from_columns(users, items, timestamps=np.arange(len(rows), dtype=float))


def trained(**params) -> Hybrid:
    params.setdefault("components", ("itemknn", "isgd"))
    model = Hybrid(**params)
    model.add_items(SCIFI + ROMANCE, tags=[("scifi",)] * 30 + [("romance",)] * 30)
    events = taste_events()
    for _ in range(10):
        for start in range(0, len(events), 50):
            model.learn(events.select(np.arange(start, min(start + 50, len(events)))))
    return model


@pytest.fixture(scope="module")
def model() -> Hybrid:
    return trained()


def test_cold_users_get_the_popularity_ranking() -> None:
    events = taste_events()
    hybrid = Hybrid(components=("itemknn",), popularity_half_life=None)
    hybrid.learn(events)
    popularity = Popularity(half_life=None)
    popularity.learn(events)
    n = popularity.n_items
    assert hybrid.recommend(["newcomer"], k=n).items == popularity.recommend(["newcomer"], k=n).items


def test_components_learn_every_batch(model: Hybrid) -> None:
    assert [m.name for m in model.component_models] == ["itemknn", "isgd"]
    assert all(m.n_learned == model.n_learned for m in model.component_models)
    assert all(m.item_index.ids == model.item_index.ids for m in model.component_models)


def test_personal_lists_follow_taste(model: Hybrid) -> None:
    recs = model.recommend(["f0", "r20"], k=10).items
    assert all(item.startswith("scifi") for item in recs[0])
    assert all(item.startswith("romance") for item in recs[1])


def test_new_item_with_matching_tags_surfaces_for_that_taste(model: Hybrid) -> None:
    model = trained()
    model.add_items(["new-scifi"], tags=[("scifi",)])
    fan, other = model.recommend(["f0", "r20"], k=60).items
    # content_weight 0.75 places a perfect match like an item the components rank about 21st
    assert "new-scifi" in fan[:25]
    assert fan.index("new-scifi") < min(j for j, item in enumerate(fan) if item.startswith("romance"))
    assert other[-1] == "new-scifi"  # no overlap with a romance profile: after every warm item
    eager = trained(content_weight=1.0)
    eager.add_items(["new-scifi"], tags=[("scifi",)])
    assert "new-scifi" in eager.recommend(["f0"], k=3).items[0]
    shy = trained(content_weight=0.0)
    shy.add_items(["new-scifi"], tags=[("scifi",)])
    assert shy.recommend(["f0"], k=60).items[0][-1] == "new-scifi"


def test_item_stops_being_cold_once_interacted_with() -> None:
    model = trained()
    model.add_items(["new-scifi"], tags=[("scifi",)])
    model.learn(Interactions.from_columns(["f1"], ["new-scifi"], timestamps=[1e6]))
    # now scored by the components, not by content alone
    assert model._item_events[model.item_index.get("new-scifi")] == 1


def test_single_component_keeps_its_order() -> None:
    events = taste_events()
    for temperature in (0.0, 0.1):
        hybrid = Hybrid(components=("popularity",), temperature=temperature)  # the default half-life
        hybrid.learn(events)
        popularity = Popularity()
        popularity.learn(events)
        assert hybrid.recommend(["f0"], k=60).items == popularity.recommend(["f0"], k=60).items


def test_reasons_come_from_itemknn(model: Hybrid) -> None:
    recs = model.recommend(["f0", "stranger"], k=3)
    assert recs.reasons is not None
    assert all(reason in model.seen_items("f0") for reason in recs.reasons[0])
    assert recs.reasons[1] == [None, None, None]


def test_save_load_keeps_tags_and_components(model: Hybrid, tmp_path) -> None:
    model = trained(temperature=0.1)
    model.add_items(["new-scifi"], tags=[("scifi",)])
    loaded = OnlineRecommender.load(model.save(tmp_path / "hybrid"))
    assert isinstance(loaded, Hybrid)
    assert loaded.tag_index.ids == model.tag_index.ids
    users = ["f0", "r20", "nobody"]
    assert loaded.recommend(users, k=60).items == model.recommend(users, k=60).items
    assert [m.n_learned for m in loaded.component_models] == [m.n_learned for m in model.component_models]
    assert loaded.hit_rates() == model.hit_rates()
    assert (tmp_path / "hybrid" / "meta.json").is_file()
    assert not list(tmp_path.glob("hybrid/*/"))  # one directory: components are inside arrays.npz


def test_invalid_hyperparameters_are_rejected() -> None:
    with pytest.raises(ValueError, match="unknown component"):
        Hybrid(components=("itemknn", "nope"))
    with pytest.raises(ValueError, match="hybrid cannot contain"):
        Hybrid(components=("hybrid",))
    with pytest.raises(ValueError, match="temperature"):
        Hybrid(temperature=-1.0)
    with pytest.raises(ValueError, match="bucket_edges"):
        Hybrid(bucket_edges=(5, 1))
    with pytest.raises(ValueError, match="half_life"):
        Hybrid(half_life=0.0)
    with pytest.raises(ValueError, match="content_weight"):
        Hybrid(content_weight=-1.0)
    with pytest.raises(ValueError, match="candidates"):
        Hybrid(candidates=0)


# -- weights learned from the members' hits ---------------------------------------------------


def one_by_one(model: Hybrid, events: Interactions, recommend_first: bool = False) -> Hybrid:
    for j in range(len(events)):
        event = events.select(np.array([j]))
        if recommend_first:
            model.recommend([str(event.users[0])], k=5)
        model.learn(event)
    return model


def neighbour_events() -> Interactions:
    """Everyone clicks "hit"; pairs (a<j>, b<j>) then always follow; users b* follow a* item by item."""
    rows = [(f"fan{j}", "hit") for j in range(20)]
    for j in range(10):
        rows += [(f"ann{j}", f"a{j}"), (f"ann{j}", f"b{j}")]
    rows += [(f"bob{j}", item) for j in range(10) for item in (f"a{j}", f"b{j}")]
    users, items = zip(*rows, strict=True)
    return Interactions.from_columns(users, items, timestamps=np.arange(len(rows), dtype=float))


def test_the_member_that_hits_gets_the_bucket() -> None:
    model = one_by_one(Hybrid(components=("popularity", "itemknn"), hit_k=1), neighbour_events())
    rates = model.hit_rates()
    # bob<j> clicking b<j> after a<j>: item-kNN ranks b<j> first, popularity ranks "hit" first
    assert rates[1]["itemknn"] == 1.0 and rates[1]["popularity"] == 0.0
    assert rates[0] == {"popularity": 0.0, "itemknn": 0.0}  # users with no history are not scored
    itemknn = model.component_models[1]
    model.learn(Interactions.from_columns(["carl"], ["a3"], timestamps=[100.0]))
    itemknn_list = itemknn.recommend(["carl"], k=5).items
    assert model.recommend(["carl"], k=5).items == itemknn_list


def test_hits_use_the_members_before_the_event() -> None:
    events = Interactions.from_columns(["ann", "ann", "bob", "bob"], ["x", "y", "x", "z"], timestamps=[0, 1, 2, 3])
    model = one_by_one(Hybrid(components=("itemknn",), hit_k=1), events)
    # z was never clicked before bob clicked it: not counted (no member could rank it)
    assert model._trials.sum() == 0
    model.learn(Interactions.from_columns(["cid", "cid"], ["x", "z"], timestamps=[4, 5]))
    # in one batch, cid's second event uses states older than its first: not counted either
    assert model._trials.sum() == 0
    model.learn(Interactions.from_columns(["cid"], ["y"], timestamps=[6]))
    assert model._trials.sum() == 1 and model.hit_rates()[1]["itemknn"] == 1.0  # y: the one item cid has not seen


def test_scores_kept_from_recommend_give_the_same_rates() -> None:
    events = taste_events()
    plain = one_by_one(Hybrid(components=("itemknn", "isgd"), temperature=0.05), events)
    cached = one_by_one(Hybrid(components=("itemknn", "isgd"), temperature=0.05), events, recommend_first=True)
    assert plain._trials.sum() > 100
    np.testing.assert_array_equal(plain._hits, cached._hits)
    np.testing.assert_array_equal(plain._trials, cached._trials)


# -- several workers --------------------------------------------------------------------------


def relay(delta: ItemDelta) -> ItemDelta:
    return ItemDelta.from_bytes(delta.to_bytes())  # through bytes, as Kafka carries it


def owner(user: str) -> int:
    return zlib.crc32(user.encode()) % 2


def by_id(delta: ItemDelta) -> dict[str, dict[str, np.ndarray]]:
    """A whole item state (export_items) as item id -> array name -> row."""
    return {item: {name: values[n] for name, values in delta.arrays.items()} for n, item in enumerate(delta.items)}


def pairs(delta: ItemDelta) -> dict[tuple[str, str], float]:
    """Item-kNN's co-occurrence counts in a whole item state (export_items), by pair of item ids."""
    ids, cells = delta.extra["cell_items"], delta.extra_arrays["cells"]
    return {
        (ids[a], ids[b]): float(c)
        for a, b, c in zip(
            cells[0].tolist(), cells[1].tolist(), delta.extra_arrays["cell_counts"].tolist(), strict=True
        )
    }


def shared_run(
    half_life: float, every: int = 25, receiver_decays: bool = True
) -> tuple[Hybrid, list[Hybrid], Interactions, int]:
    """One hybrid fed every event, two fed their users' events and exchanging deltas after each micro-batch.

    Also returns the most updates one bucket got within one micro-batch on one worker.
    ``receiver_decays=False`` strips the update counts from the deltas (what a scheme that only adds
    the other worker's hits, as adaptive popularity's undecayed counts, would do).
    """
    events = taste_events(seed=3)
    params = {"components": ("itemknn", "sknn"), "half_life": half_life, "temperature": 0.05}
    whole, workers = Hybrid(**params), [Hybrid(**params), Hybrid(**params)]
    tags = [("scifi",)] * 30 + [("romance",)] * 30
    for model in (whole, *workers):
        model.add_items(SCIFI + ROMANCE, tags=tags)  # every worker reads the whole catalogue
    for worker in workers:
        worker.begin_sharing()
    side = np.array([owner(u) for u in events.users.tolist()])
    most = 0
    for epoch in range(3):
        shifted = Interactions.from_columns(events.users, events.items, timestamps=events.timestamps + 1000.0 * epoch)
        for start in range(0, len(events), every):
            part = np.arange(start, min(start + every, len(events)))
            whole.learn(shifted.select(part))
            for w, worker in enumerate(workers):
                mine = part[side[part] == w]
                if len(mine):
                    worker.learn(shifted.select(mine))
            deltas = [worker.take_item_delta() for worker in workers]
            most = max([most, *(max(d.extra.get("hybrid_updates", [0])) for d in deltas)])
            if not receiver_decays:
                for d in deltas:
                    d.extra.pop("hybrid_updates", None)
            workers[0].apply_item_delta(relay(deltas[1]))
            workers[1].apply_item_delta(relay(deltas[0]))
    return whole, workers, events, most


@pytest.mark.parametrize("half_life", [2000.0, 50.0])
def test_workers_exchanging_deltas_hold_one_models_item_state(half_life: float) -> None:
    whole, workers, events, most = shared_run(half_life)
    assert whole._trials.sum() > 100 and most > 0
    want = whole.export_items()
    users = set(events.users.tolist())
    for worker in workers:
        # the hybrid's own event counts per item: exact
        got = by_id(worker.export_items())
        assert got.keys() == by_id(want).keys()
        assert all(got[item]["_item_events"] == row["_item_events"] for item, row in by_id(want).items())
        itemknn, sknn, popularity = worker._owned()
        one_itemknn, one_sknn, one_popularity = whole._owned()
        # item-kNN: the same counts and co-occurrences; session kNN: every user's session (no ring overflowed)
        assert by_id(itemknn.export_items()).keys() == by_id(one_itemknn.export_items()).keys()
        for item, row in by_id(one_itemknn.export_items()).items():
            assert by_id(itemknn.export_items())[item]["_counts"] == row["_counts"]
        assert pairs(itemknn.export_items()) == pairs(one_itemknn.export_items())
        assert all(sknn.session(u) == one_sknn.session(u) for u in users)
        # popularity: the same decayed scores, up to float rounding (anchors moved in another order)
        for item, row in by_id(one_popularity.export_items()).items():
            np.testing.assert_allclose(by_id(popularity.export_items())[item]["_acc"], row["_acc"], rtol=1e-5)
        # hit sums: each event weighs what it weighs in one model up to the order within one exchange,
        # so each sum is within a factor 2 ** (most / half_life) of one model's, and each rate within its square
        bound = 2.0 ** (most / half_life)
        for mine_sum, one_sum in ((worker._hits, whole._hits), (worker._trials, whole._trials)):
            positive = one_sum > 0
            assert (mine_sum[~positive] == 0).all()
            ratio = mine_sum[positive] / one_sum[positive]
            assert (ratio <= bound * (1 + 1e-9)).all() and (ratio >= (1 - 1e-9) / bound).all(), (ratio, bound)
        for mine_rates, one_rates in zip(worker.hit_rates(), whole.hit_rates(), strict=True):
            for name, rate in one_rates.items():
                assert rate / bound**2 - 1e-12 <= mine_rates[name] <= rate * bound**2 + 1e-12


def test_the_bound_is_tight_enough_to_catch_a_receiver_that_does_not_decay() -> None:
    whole, workers, _, most = shared_run(50.0, receiver_decays=False)
    positive = whole._trials > 0
    ratio = workers[0]._trials[positive] / whole._trials[positive]
    assert ratio.max() > 2.0 ** (most / 50.0)


def test_users_move_between_hybrids_with_their_lists() -> None:
    _, workers, events, _ = shared_run(2000.0)
    source, target = workers
    users = sorted({u for u in events.users.tolist() if owner(u) == 0})
    before = source.recommend(users, k=10)
    target.import_users(UserStates.from_bytes(source.export_users([*users, "never-seen"]).to_bytes()))
    got = target.recommend(users, k=10)
    assert got.items == before.items
    np.testing.assert_allclose(np.array(got.scores), np.array(before.scores), rtol=1e-6)
    assert all(target.seen_items(u) == source.seen_items(u) for u in users)
    assert all(m.seen_items(u) == target.seen_items(u) for m in target._owned() for u in users)
    # per-user JSON records (the changelog) carry the same
    records = json.loads(json.dumps(source.export_users(users).records()))
    fresh = Hybrid(components=("itemknn", "sknn"), temperature=0.05)
    fresh.import_items(relay(source.export_items()))
    fresh.import_users(UserStates.from_records("hybrid", records))
    assert fresh.recommend(users, k=10).items == before.items
    assert fresh.hit_rates() == source.hit_rates()
    # the source hands them off: not a forget, so session kNN keeps their sessions for its neighbours
    assert source.drop_users(users) == len(users)
    assert not any(source.has_history(u) for u in users)
    sknn = source.component_models[1]
    assert all(sknn.session(u) for u in users) and not any(sknn.has_history(u) for u in users)
    assert "sknn_removed" not in (source.take_item_delta().extra.get("members") or {}).get("1", {})


def test_a_hybrid_with_a_member_that_cannot_share_says_which() -> None:
    model = Hybrid(components=("itemknn", "isgd"))
    assert not model.shares_state and Hybrid.shares_state
    with pytest.raises(NotImplementedError, match="isgd cannot"):
        model.begin_sharing()
    assert Hybrid().shares_state  # the default members all share

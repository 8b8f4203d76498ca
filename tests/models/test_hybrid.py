"""Tests of the hybrid: weights learned from hits, popularity for cold users, content for new items."""

from __future__ import annotations

import numpy as np
import pytest

from models import Interactions, OnlineRecommender
from models.hybrid import Hybrid
from models.popularity import Popularity

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

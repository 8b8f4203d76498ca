"""Issue 21: one bad or hostile producer must not take over the list every new user gets.

(b) one user clicking one item 1,500 times among 5,000 ordinary events: popularity counts
people (``per_user="max"``), so the item stays out of the fallback and other users' lists;
(a) one event stamped in the year 2100: :class:`~streamrec.admission.EventTimeGuard` keeps
it from popularity's decay clock, so the fallback goes on following the stream.
"""

from __future__ import annotations

import json
import zlib

import numpy as np
import pytest

from models import Interactions
from models.popularity import Popularity
from models.sharing import UserStates
from streamrec.admission import EventTimeGuard
from streamrec.events import Interaction, to_interactions
from streamrec.pipeline import RecommendationPipeline

START = 1_764_000_000.0
YEAR_2100 = 4_102_444_800.0
TYPES = ("view", "click", "add_to_cart", "purchase")


def ordinary_events(
    n: int = 5000, n_users: int = 500, n_items: int = 300, seed: int = 0, start: float = START, step: float = 10.0
) -> list[Interaction]:
    """``n`` events of ``n_users`` users, items drawn by a Zipf law (item ``i0`` the most popular)."""
    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, n_items + 1)
    p /= p.sum()
    users = rng.integers(0, n_users, n)
    items = rng.choice(n_items, size=n, p=p)
    types = rng.choice(len(TYPES), size=n, p=[0.6, 0.25, 0.1, 0.05])
    return [
        Interaction(f"u{u}", f"i{i}", start + step * j, TYPES[t])
        for j, (u, i, t) in enumerate(zip(users.tolist(), items.tolist(), types.tolist(), strict=True))
    ]


def flooded_events(seed: int = 0, n_flood: int = 1500) -> list[Interaction]:
    """The ordinary events with one user's ``n_flood`` clicks on ``promo`` interleaved at random places."""
    ordinary = ordinary_events(seed=seed)
    n = len(ordinary) + n_flood
    flood_at = set(np.random.default_rng(seed + 100).choice(n, size=n_flood, replace=False).tolist())
    rest = iter(ordinary)
    events = [Interaction("flooder", "promo", 0.0, "click") if j in flood_at else next(rest) for j in range(n)]
    return [Interaction(e.user_id, e.item_id, START + 10.0 * j, e.event_type) for j, e in enumerate(events)]


def learn_in_batches(model: Popularity, events: list[Interaction], size: int) -> Popularity:
    for start in range(0, len(events), size):
        model.learn(to_interactions(events[start : start + size]))
    return model


def fallback(model: Popularity, k: int = 10) -> list[str]:
    """The list every new user gets, as the pipeline takes it."""
    return model.recommend(["*"], k=k, exclude_seen=False).items[0]


OTHERS = [f"u{n}" for n in range(500)]


@pytest.mark.parametrize("batch", [1, 100, 1000])
def test_one_users_flood_reaches_neither_the_fallback_nor_other_users_lists(batch: int) -> None:
    events = flooded_events()
    model = learn_in_batches(Popularity(), events, batch)
    assert "promo" not in fallback(model, k=10)
    assert "promo" not in fallback(model, k=50)
    assert "promo" not in model.recommend(["someone-new"], k=10).items[0]
    assert not any("promo" in items for items in model.recommend(OTHERS, k=20).items)
    # the flooder's 1,500 clicks weigh what one click weighs (decayed since the flooder's last one)
    scores = dict(zip(model.item_index.ids, model.item_scores().tolist(), strict=True))
    assert 1.9 < scores["promo"] <= 2.0
    # the rest of the list is what the ordinary events alone give
    alone = learn_in_batches(Popularity(), [e for e in events if e.user_id != "flooder"], batch)
    assert fallback(model, k=20) == fallback(alone, k=20)


def test_counting_events_as_before_reproduces_the_issue() -> None:
    model = learn_in_batches(Popularity(per_user="sum"), flooded_events(), 100)
    assert fallback(model, k=10)[0] == "promo"
    assert all("promo" in items for items in model.recommend(OTHERS, k=20).items)


def test_a_users_part_is_their_strongest_event() -> None:
    """No decay: a first view counts 1, a later purchase raises the user's part to 5, repeats add nothing."""
    events = [
        Interaction("ann", "tea", 1.0, "view"),
        Interaction("ann", "tea", 2.0, "view"),
        Interaction("bob", "tea", 3.0, "click"),
        Interaction("ann", "tea", 4.0, "purchase"),
        Interaction("ann", "tea", 5.0, "purchase"),
        Interaction("ann", "tea", 6.0, "click"),
        Interaction("bob", "jam", 7.0, "view"),
    ]
    want = {"tea": 5.0 + 2.0, "jam": 1.0}
    for size in (1, 2, 3, len(events)):
        model = learn_in_batches(Popularity(half_life=None), events, size)
        assert dict(zip(model.item_index.ids, model.item_scores().tolist(), strict=True)) == want, size
    summed = learn_in_batches(Popularity(half_life=None, per_user="sum"), events, 3)
    assert summed.item_scores().tolist() == [1 + 1 + 2 + 5 + 5 + 2, 1.0]


def test_with_decay_a_repeat_adds_only_what_time_took_from_the_users_part() -> None:
    hour = 3600.0
    model = Popularity(half_life=hour)
    model.learn(Interactions.from_columns(["ann"], ["tea"], timestamps=[0.0], weights=[2.0]))
    model.learn(Interactions.from_columns(["ann"], ["tea"], timestamps=[hour], weights=[2.0]))
    assert model.item_scores().tolist() == pytest.approx([2.0])  # refreshed to one fresh click, not 1 + 2
    model.learn(Interactions.from_columns(["ann"], ["tea"], timestamps=[2 * hour], weights=[1.0]))
    assert model.item_scores().tolist() == pytest.approx([1.0])  # a view now outweighs a click an hour ago
    model.learn(Interactions.from_columns(["ann", "bob"], ["tea", "jam"], timestamps=[2 * hour, 3 * hour]))
    assert model.item_scores().tolist() == pytest.approx([0.5, 1.0])  # bob's view counts; ann's repeat nothing
    summed = Popularity(half_life=hour, per_user="sum")
    summed.learn(Interactions.from_columns(["ann", "ann"], ["tea", "tea"], timestamps=[0.0, hour], weights=[2.0, 2.0]))
    assert summed.item_scores().tolist() == pytest.approx([3.0])


def test_events_of_no_weight_add_nothing() -> None:
    model = Popularity(half_life=None)
    model.learn(Interactions.from_columns(["ann", "bob", "bob"], ["tea", "tea", "jam"], weights=[0.0, -1.0, 1.0]))
    model.learn(Interactions.from_columns(["ann"], ["tea"], weights=[0.0]))
    assert model.item_scores().tolist() == [0.0, 1.0]
    assert model.seen_items("ann") == {"tea"}  # still seen: left out of ann's list


def test_the_users_parts_survive_save_and_load(tmp_path) -> None:
    events = flooded_events()
    model = learn_in_batches(Popularity(), events[:3000], 100)
    loaded = Popularity.load(model.save(tmp_path / "m"))
    assert loaded.get_params() == {"half_life": 7 * 24 * 3600.0, "per_user": "max", "seed": 0}
    for m in (model, loaded):
        learn_in_batches(m, events[3000:], 100)
    assert fallback(loaded, k=20) == fallback(model, k=20)
    np.testing.assert_allclose(loaded.item_scores(), model.item_scores(), rtol=1e-12)
    assert "promo" not in fallback(loaded, k=50)
    assert Popularity.load(Popularity(per_user="sum").save(tmp_path / "s")).per_user == "sum"


def test_a_forgotten_user_counts_again_when_they_come_back() -> None:
    """The parts are per-user state: forgetting (or evicting) the user forgets them too."""
    model = Popularity(half_life=None)
    model.learn(Interactions.from_columns(["ann", "ann"], ["tea", "tea"], weights=[2.0, 2.0]))
    model.forget_user("ann")
    assert model._strongest == {}
    model.learn(Interactions.from_columns(["ann"], ["tea"], weights=[2.0]))
    assert model.item_scores().tolist() == [4.0]


def test_an_evicted_item_is_dropped_from_the_users_parts() -> None:
    model = Popularity(half_life=None)
    model.set_capacity(max_items=2)
    model.learn(Interactions.from_columns(["ann", "ann"], ["tea", "jam"]))
    model.learn(Interactions.from_columns(["bob"], ["ham"]))  # tea, the least recent, goes
    assert "tea" not in model.item_index
    assert all(len(parts) <= 2 for parts in model._strongest.values())
    assert set(model.export_users(["ann"]).extra["strongest"][0]["items"]) == {"jam"}


def partition(user: str, n: int = 2) -> int:
    return zlib.crc32(user.encode()) % n


def test_two_workers_with_a_user_moving_between_them_hold_what_one_holds() -> None:
    """The flooder's parts move with the flooder (a JSON record per user), so the flood counts once everywhere."""
    events = flooded_events()
    whole = Popularity()
    workers = [Popularity(), Popularity()]
    for worker in workers:
        worker.begin_sharing()
    owner = {e.user_id: partition(e.user_id) for e in events}
    for start in range(0, len(events), 100):
        if start == 3000:  # a rebalance: every user changes worker, state through the changelog's JSON records
            for w, worker in enumerate(workers):
                mine = sorted(u for u, o in owner.items() if o == w)
                records = json.loads(json.dumps(worker.export_users(mine).records()))
                workers[1 - w].import_users(UserStates.from_records("popularity", records))
                worker.drop_users(mine)
            owner = {u: 1 - o for u, o in owner.items()}
        part = events[start : start + 100]
        whole.learn(to_interactions(part))
        for w, worker in enumerate(workers):
            mine = [e for e in part if owner[e.user_id] == w]
            if mine:
                worker.learn(to_interactions(mine))
        deltas = [worker.take_item_delta() for worker in workers]
        workers[0].apply_item_delta(deltas[1])
        workers[1].apply_item_delta(deltas[0])
    want = dict(zip(whole.item_index.ids, whole.item_scores().tolist(), strict=True))
    for worker in workers:
        got = dict(zip(worker.item_index.ids, worker.item_scores().tolist(), strict=True))
        assert got.keys() == want.keys()
        np.testing.assert_allclose([got[i] for i in want], list(want.values()), rtol=1e-9)
        assert fallback(worker, k=20) == fallback(whole, k=20)
        assert "promo" not in fallback(worker, k=50)


def test_per_user_is_checked() -> None:
    with pytest.raises(ValueError, match="per_user must be 'max' or 'sum'"):
        Popularity(per_user="mean")  # type: ignore[arg-type]


# -- (a) a timestamp in the year 2100 ---------------------------------------------------------


def stream_with_a_time_bomb() -> list[Interaction]:
    """A day of ordinary events; a click stamped 2100 on ``bomb``; then, a week later, everyone buys ``new-hit``."""
    before = ordinary_events(n=2000, n_users=300, seed=1)
    bomb = Interaction("mallory", "bomb", YEAR_2100, "click")
    later = START + 7 * 86400.0
    after = ordinary_events(n=2000, n_users=300, seed=2, start=later)
    hit = [Interaction(f"u{n}", "new-hit", later + 20_000.0 + n, "purchase") for n in range(300)]
    return [*before, bomb, *after, *hit]


def run_pipeline(
    events: list[Interaction], guard: EventTimeGuard | None, fallback: str = "adaptive_popularity"
) -> tuple[list[list[str]], list[str]]:
    """Every batch's fallback list, and the reasons of the events the guard refused."""
    pipe = RecommendationPipeline.from_names(["popularity"], default_model="popularity", top_n=10, fallback=fallback)
    lists, refused = [], []
    arrival = START
    for start in range(0, len(events), 250):
        batch = []
        for event in events[start : start + 250]:
            if event.timestamp < YEAR_2100:  # live: an event arrives a second after it happened
                arrival = event.timestamp + 1.0
            checked = event if guard is None else guard.apply(event, arrival)
            if isinstance(checked, str):
                refused.append(checked)
            else:
                batch.append(checked)
        lists.append(pipe.process(batch).fallback.items[0])
    return lists, refused


def test_without_the_guard_a_year_2100_event_takes_the_fallback_for_good() -> None:
    lists, _ = run_pipeline(stream_with_a_time_bomb(), guard=None, fallback="popularity")
    assert lists[-1][0] == "bomb"  # a week later, 300 users on new-hit change nothing
    # the adaptive fallback stops serving the decays the bomb owns: its counts still follow the stream
    lists, _ = run_pipeline(stream_with_a_time_bomb(), guard=None)
    assert lists[-1][0] == "new-hit"


@pytest.mark.parametrize("future", ["deadletter", "clamp"])
def test_through_the_guard_the_fallback_follows_later_events(future: str) -> None:
    events = stream_with_a_time_bomb()
    guard = EventTimeGuard(max_skew=300.0, future=future)
    lists, refused = run_pipeline(events, guard)
    bombed = next(j for j, e in enumerate(events) if e.item_id == "bomb") // 250
    hit = next(j for j, e in enumerate(events) if e.item_id == "new-hit") // 250
    assert "bomb" not in lists[bombed]  # one click, or none: nowhere near the top
    assert all(items[0] == "i0" for items in lists[1:hit])  # the Zipf head, before and after the bomb
    assert lists[-1][0] == "new-hit"  # the fallback still follows the stream
    if future == "deadletter":
        assert refused == [
            "timestamp: 4102444800 is 2,338,424,809 s ahead of its arrival 1764019991, "
            "more than the allowed skew of 300 s"
        ]
        assert guard.counts == {"future": 1}
    else:
        assert refused == [] and guard.counts == {"clamped": 1}


def test_one_users_flood_stays_out_of_a_new_users_sasrec_list() -> None:
    """The sequence model caps what one user's repeats of one item train (``repeat_cap``)."""
    pytest.importorskip("torch")
    from models.sequence import SASRec

    events = flooded_events()
    capped, uncapped = SASRec(device="cpu", seed=0), SASRec(device="cpu", seed=0, repeat_cap=None)
    for model in (capped, uncapped):
        for start in range(0, len(events), 100):
            model.learn(to_interactions(events[start : start + 100]))
    assert "promo" not in capped.recommend(["someone-new"], k=50).items[0]
    holding = sum("promo" in items for items in capped.recommend(OTHERS, k=10).items)
    assert holding <= 5, f"{holding} of 500 users get the flooded item"
    assert capped.seen_items("flooder") == {"promo"}  # the flooder's own state still learns their clicks

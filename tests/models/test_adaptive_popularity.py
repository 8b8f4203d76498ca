"""The adaptive fallback: each arm is exactly a Popularity; the choice follows the log; workers agree."""

from __future__ import annotations

import numpy as np

from models import Interactions
from models.adaptive_popularity import AdaptivePopularity
from models.popularity import Popularity
from models.sharing import ItemDelta


def drifting(n: int = 3000, n_items: int = 60, period: float = 6 * 3600.0, seed: int = 0) -> Interactions:
    """One event a minute; each period a new set of five items is what people take (80%), else anything."""
    rng = np.random.default_rng(seed)
    ts = np.arange(n) * 60.0
    hot = (ts // period).astype(int) * 5 % n_items
    items = hot + rng.integers(0, 5, n)
    noise = rng.random(n) < 0.2
    items[noise] = rng.integers(0, n_items, int(noise.sum()))
    users = rng.integers(0, 2000, n)
    return Interactions.from_columns([f"u{u}" for u in users], [f"i{i}" for i in items], timestamps=ts)


def stationary(n: int = 3000, seed: int = 1) -> Interactions:
    """Zipf-like item popularity that never changes."""
    rng = np.random.default_rng(seed)
    items = np.minimum(rng.zipf(1.5, n), 200)
    users = rng.integers(0, 2000, n)
    return Interactions.from_columns([f"u{u}" for u in users], [f"i{i}" for i in items], timestamps=np.arange(n) * 60.0)


def learn(model: AdaptivePopularity, events: Interactions, every: int = 10) -> AdaptivePopularity:
    for start in range(0, len(events), every):
        model.learn(events.select(np.arange(start, min(start + every, len(events)))))
    return model


def newcomers_events(events: Interactions, newcomers: int) -> Interactions:
    """The events of users with fewer than ``newcomers`` distinct earlier items, found one event at a time."""
    seen: dict[str, set[str]] = {}
    keep = []
    for j, (u, i) in enumerate(zip(events.users.tolist(), events.items.tolist(), strict=True)):
        mine = seen.setdefault(u, set())
        if len(mine) < newcomers:
            keep.append(j)
        mine.add(i)
    return events.select(np.array(keep))


def test_each_arm_scores_exactly_as_popularity_with_its_half_life() -> None:
    events = drifting()
    model = AdaptivePopularity(
        half_lives=(None, 3600.0, 86400.0), newcomer_half_lives=(None, 3600.0), newcomers=2, judge=None
    )
    learn(model, events)
    assert [arm.label for arm in model._arms] == ["none", "1h", "1d", "new none", "new 1h"]
    newcomers = newcomers_events(events, 2)
    assert 0 < len(newcomers) < len(events)
    for arm in model._arms:
        plain = Popularity(half_life=arm.half_life)
        plain.learn(newcomers if arm.newcomers_only else events)
        rows = model.item_index.lookup(plain.item_index.ids)
        np.testing.assert_allclose(arm.item_scores()[rows], plain.item_scores(), rtol=1e-9)


def test_the_choice_follows_the_log() -> None:
    fast = learn(
        AdaptivePopularity(half_lives=(None, 3600.0), newcomer_half_lives=(), memory=500, judge=None), drifting()
    )
    assert fast.chosen == 3600.0, fast.hit_rates()
    steady = learn(
        AdaptivePopularity(half_lives=(3600.0, None), newcomer_half_lives=(), memory=500, judge=None), stationary()
    )
    assert steady.chosen is None, steady.hit_rates()
    # what it serves is the chosen arm's list
    plain = Popularity(half_life=3600.0)
    plain.learn(drifting())
    assert fast.recommend(["new"], k=10).items == plain.recommend(["new"], k=10).items


def test_what_newcomers_take_first_is_served_when_it_hits_more() -> None:
    """Regulars take a; newcomers start with b: judged on first events, the newcomers' arm wins."""
    users = [f"regular{n}" for n in range(100) for _ in range(2)] + [f"new{n}" for n in range(60)]
    items = [item for n in range(100) for item in (f"z{n}", "a")] + ["b"] * 60
    events = Interactions.from_columns(users, items, timestamps=np.arange(len(users)) * 60.0)
    model = AdaptivePopularity(half_lives=(None,), newcomer_half_lives=(None,), newcomers=1, k=1, memory=None, judge=1)
    learn(model, events)
    assert model.chosen_label == "new none", model.hit_rates()
    assert model.recommend(["someone-new"], k=1).items == [["b"]]
    # a category page is for everyone: ordered by the arm over all events, where a (100 people) leads b (60)
    browse = model.browse_scores()
    assert model.item_index.id_of(int(np.argmax(browse))) == "a" and browse[model.item_index.get("b")] == 60
    rates = model.hit_rates()
    assert rates["new none"] > 0.2 > rates["none"] == 0.0, rates


def test_the_lists_judged_are_each_arms_top_k_after_every_batch() -> None:
    """The kept top k of each arm is mended as events come; it must equal one computed afresh."""
    events = drifting(n=1500, n_items=40)
    model = AdaptivePopularity(half_lives=(None, 3600.0), newcomer_half_lives=(None, 60.0), newcomers=2, k=5)
    for start in range(0, len(events), 7):
        model.learn(events.select(np.arange(start, min(start + 7, len(events)))))
        for arm in model._arms:
            acc = arm._acc[: model.n_items]
            fresh = sorted(range(model.n_items), key=lambda r: (-acc[r], r))[:5]
            assert arm.judged_rows(5) == fresh, (arm.label, start)


def test_new_users_judge_counts_only_first_events() -> None:
    events = Interactions.from_columns(["a", "a", "b"], ["x", "y", "x"], timestamps=[0.0, 1.0, 2.0])
    model = AdaptivePopularity(half_lives=(None,), newcomer_half_lives=(), judge=1, memory=None)
    for j in range(3):
        model.learn(events.select(np.array([j])))
    assert model._judged == 2  # a's second event is not judged
    assert model.hit_rates() == {"none": 0.5}  # b's x was in the list, a's first x was not


def test_two_workers_choose_what_one_model_chooses_and_hold_its_scores() -> None:
    events = drifting(seed=3)
    params = {"half_lives": (None, 3600.0), "newcomer_half_lives": (None,), "memory": 500, "judge": None}
    whole = AdaptivePopularity(**params)
    workers = [AdaptivePopularity(**params) for _ in range(2)]
    for w in workers:
        w.begin_sharing()
    owner = np.array([hash(u) % 2 for u in events.users.tolist()])
    for start in range(0, len(events), 20):
        part = np.arange(start, min(start + 20, len(events)))
        whole.learn(events.select(part))
        for n, w in enumerate(workers):
            mine = part[owner[part] == n]
            if len(mine):
                w.learn(events.select(mine))
        deltas = [ItemDelta.from_bytes(w.take_item_delta().to_bytes()) for w in workers]
        workers[0].apply_item_delta(deltas[1])
        workers[1].apply_item_delta(deltas[0])
    for w in workers:
        assert w.chosen_label == whole.chosen_label
        assert w.chosen == whole.chosen == 3600.0
        assert w._judged == whole._judged
        rows = w.item_index.lookup(whole.item_index.ids)
        np.testing.assert_allclose(w.item_scores()[rows], whole.item_scores(), rtol=1e-6)
        for mine, one in zip(w._arms, whole._arms, strict=True):  # the newcomers' arms too
            np.testing.assert_allclose(mine.item_scores()[rows], one.item_scores(), rtol=1e-6)
        assert w.recommend(["new"], k=10).items == whole.recommend(["new"], k=10).items

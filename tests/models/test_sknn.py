"""Known-answer tests of the session-aware nearest-neighbour model."""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

import numpy as np
import pytest

from models import Interactions, OnlineRecommender
from models.sknn import SessionKNN


def events(pairs: list[tuple[str, str]]) -> Interactions:
    users, items = zip(*pairs, strict=True)
    return Interactions.from_columns(users, items)


def random_stream(n: int = 400, n_users: int = 12, n_items: int = 25, seed: int = 3) -> list[tuple[str, str]]:
    """Events with repeats, immediate re-clicks and skewed items."""
    rng = np.random.default_rng(seed)
    pairs = [(f"u{u}", f"i{i}") for u, i in zip(rng.integers(0, n_users, n), rng.zipf(1.4, n) % n_items, strict=True)]
    for j in range(0, n - 1, 17):  # some immediate re-clicks
        pairs[j + 1] = pairs[j]
    return pairs


class Reference:
    """The algorithm written plainly with dicts, one event at a time."""

    def __init__(self, **params: Any) -> None:
        defaults = SessionKNN().get_params()
        self.p = {**defaults, **params}
        self.windows: dict[str, dict[int, str]] = defaultdict(dict)  # user -> position -> item
        self.n_pos: dict[str, int] = defaultdict(int)
        self.rings: dict[str, list[tuple[str, int] | None]] = {}
        self.heads: dict[str, int] = defaultdict(int)
        self.active: dict[str, int] = {}
        self.t = 0

    def learn(self, pairs: list[tuple[str, str]]) -> None:
        size, ring_size = self.p["window"], self.p["index_size"]
        for user, item in pairs:
            self.active[user] = self.t
            self.t += 1
            win, n = self.windows[user], self.n_pos[user]
            if n and win.get(n - 1) == item:
                continue
            ring = self.rings.setdefault(item, [None] * ring_size)
            at = None
            if item in win.values():
                del win[next(p for p, i in win.items() if i == item)]
                at = next((a for a, e in enumerate(ring) if e is not None and e[0] == user), None)
            if n - size in win:
                dropped = self.rings[win.pop(n - size)]
                for a, e in enumerate(dropped):
                    if e is not None and e[0] == user:
                        dropped[a] = None
            win[n] = item
            self.n_pos[user] = n + 1
            if at is None:
                at = self.heads[item]
                self.heads[item] = (at + 1) % ring_size
            ring[at] = (user, n)

    def scores(self, user: str) -> dict[str, float]:
        p = self.p
        win = self.windows.get(user, {})
        session = [win[q] for q in sorted(win)][-p["session_length"] :]
        s = len(session)
        weight = {item: math.exp((j + 1 - s) / (p["lambda_spw"] * s)) for j, item in enumerate(session)}
        norm = math.sqrt(sum(w * w for w in weight.values()))
        entries = [
            (e[0], e[1], item) for item in session for e in self.rings.get(item, []) if e is not None and e[0] != user
        ]
        found = sorted({v for v, _, _ in entries}, key=lambda v: -self.active[v])[: p["sample_size"]]
        sim = {
            v: sum(weight[item] for w, _, item in entries if w == v) / (norm * math.sqrt(len(self.windows[v])))
            for v in found
        }
        kept = sorted(sim, key=lambda v: (-sim[v], -self.active[v]))[: p["k"]]
        out: dict[str, float] = defaultdict(float)
        for v, pos, item in entries:
            if v not in kept:
                continue
            for q in range(pos - p["span"], pos + p["span"] + 1):
                if q in self.windows[v]:
                    out[self.windows[v][q]] += sim[v] * weight[item] * math.exp(-abs(q - pos) / p["lambda_inh"])
        return dict(out)


def model_scores(model: SessionKNN, user: str) -> dict[str, float]:
    recs = model.recommend([user], k=1000, exclude_seen=False, with_reasons=False)
    return {i: s for i, s in zip(recs.items[0], recs.scores[0], strict=True) if s > 0}


PARAMS = [
    {},
    {"k": 3, "sample_size": 5, "session_length": 3, "window": 4, "index_size": 3, "span": 2, "lambda_inh": 1.5},
    {"k": 6, "session_length": 2, "window": 8, "index_size": 5, "span": 20, "lambda_spw": 0.2},
]


@pytest.mark.parametrize("params", PARAMS)
@pytest.mark.parametrize("batch", [1, 9, 1000])
def test_scores_match_the_plain_reference(params: dict[str, Any], batch: int) -> None:
    pairs = random_stream()
    model, reference = SessionKNN(**params), Reference(**params)
    stream = events(pairs)
    for start in range(0, len(pairs), batch):
        model.learn(stream.select(np.arange(start, min(start + batch, len(pairs)))))
    reference.learn(pairs)
    for user in sorted({u for u, _ in pairs}):
        assert model.session(user) == [reference.windows[user][q] for q in sorted(reference.windows[user])]
        got, want = model_scores(model, user), reference.scores(user)
        assert got.keys() == {i for i, s in want.items() if s > 0}, user
        for item, score in want.items():
            assert got[item] == pytest.approx(score, rel=1e-5), (user, item)


def test_window_keeps_distinct_items_newest_last() -> None:
    model = SessionKNN(window=3, session_length=3)
    model.learn(events([("a", "x"), ("a", "x"), ("a", "y"), ("a", "x"), ("a", "z"), ("a", "w")]))
    # the re-click of x changes nothing, the later x moves to the newest end, w pushes y out
    assert model.session("a") == ["x", "z", "w"]
    assert model.session("nobody") == []


def test_neighbours_items_near_the_shared_item_score_more() -> None:
    model = SessionKNN(lambda_inh=1.0, span=5)
    model.learn(events([("v", "far"), ("v", "x"), ("v", "near"), ("v", "mid"), ("u", "x")]))
    scores = model_scores(model, "u")
    assert scores["near"] == pytest.approx(scores["far"]) and scores["far"] > 0  # one step before or after x
    assert scores["mid"] == pytest.approx(scores["near"] * math.exp(-1.0))


def test_similar_neighbours_weigh_more() -> None:
    model = SessionKNN()
    model.learn(
        events([("close", "a"), ("close", "b"), ("close", "c1"), ("loose", "a"), ("loose", "q"), ("loose", "c2")])
    )
    model.learn(events([("u", "a"), ("u", "b")]))
    scores = model_scores(model, "u")
    assert scores["c1"] > scores["c2"] > 0  # close shares a and b, loose only a


def test_reasons_name_the_session_item_the_list_came_from() -> None:
    model = SessionKNN()
    model.learn(events([("v", "tea"), ("v", "cake"), ("w", "ham"), ("w", "eggs"), ("u", "tea"), ("u", "ham")]))
    recs = model.recommend(["u"], k=2)
    assert dict(zip(recs.items[0], recs.reasons[0], strict=True)) == {"cake": "tea", "eggs": "ham"}
    assert model.recommend(["stranger"], k=2).reasons == [[None, None]]


def test_forgetting_equals_never_learning_and_leaves_no_entry() -> None:
    pairs = random_stream(n=300, seed=8)
    model = SessionKNN(index_size=200)
    model.learn(events(pairs))
    row = model.user_index.get("u3")
    assert model.forget_user("u3")
    inv = model._inv[: model.n_items]
    assert not ((inv >= 0) & ((inv >> 32) == row)).any()
    assert (model._seq[row] == -1).all()
    never = SessionKNN(index_size=200)
    never.learn(events([(u, i) for u, i in pairs if u != "u3"]))
    for user in sorted({u for u, _ in pairs} - {"u3"}):
        got, want = model_scores(model, user), model_scores(never, user)
        assert got.keys() == want.keys()
        assert all(got[i] == pytest.approx(want[i], rel=1e-6) for i in want)


def test_evicted_items_leave_windows_and_index(tmp_path) -> None:
    model = SessionKNN(index_size=4, window=5)
    model.set_capacity(max_items=6)
    model.learn(events(random_stream(n=300, n_items=40, seed=2)))
    live = model.item_index.live_mask()
    seq = model._seq[: model.n_users]
    assert live[seq[seq >= 0]].all()
    assert ((seq >= 0).sum(axis=1) == model._n_live[: model.n_users]).all()
    for item in range(model.n_items):
        for code in model._inv[item][model._inv[item] >= 0].tolist():
            user, pos = code >> 32, code & 0xFFFFFFFF
            assert model._seq[user, pos & (model._ring - 1)] == item
    loaded = OnlineRecommender.load(model.save(tmp_path / "m"))
    np.testing.assert_array_equal(loaded._seq[: model.n_users], seq)
    np.testing.assert_array_equal(loaded._inv[: model.n_items], model._inv[: model.n_items])


@pytest.mark.parametrize(
    "bad",
    [{"k": 0}, {"window": 0}, {"lambda_inh": 0.0}, {"index_size": 2.5}],
)
def test_bad_parameters_are_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=next(iter(bad))):
        SessionKNN(**bad)


def test_reasons_are_the_same_alone_and_in_a_large_call() -> None:
    pairs = random_stream(n=500, n_users=20, seed=11)
    model = SessionKNN()
    model.learn(events(pairs))
    users = sorted({u for u, _ in pairs})
    together = model.recommend(users, k=5)  # past the users whose neighbourhoods _score keeps for _reasons
    for n, user in enumerate(users):
        alone = model.recommend([user], k=5)
        assert alone.items[0] == together.items[n] and alone.reasons[0] == together.reasons[n], user
        assert all(r is None or r in model.session(user) for r in alone.reasons[0])

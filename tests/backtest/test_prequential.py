"""The prequential harness: what is scored, when models learn, determinism, robustness."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from typing import Any

import numpy as np
import pytest

import models
from models import Interactions, Recommendations
from streamrec.backtest import EventLog, Prequential
from streamrec.events import Interaction, ItemUpdate, Rating


def interaction_log(n: int = 600, n_users: int = 20, n_items: int = 40, seed: int = 0) -> EventLog:
    """A small stream with skewed items, mixed event types and tied timestamps."""
    rng = np.random.default_rng(seed)
    users = rng.integers(0, n_users, n)
    items = np.minimum(rng.zipf(1.5, n), n_items) - 1
    types = rng.choice(["view", "click", "add_to_cart", "purchase"], n, p=[0.6, 0.2, 0.1, 0.1])
    ts = np.sort(rng.integers(0, n // 2, n)).astype(float)  # ties on purpose
    return EventLog.from_events(
        Interaction(f"u{u}", f"i{i}", float(t), str(e)) for u, i, t, e in zip(users, items, ts, types, strict=True)
    )


def numbered_log(n: int) -> EventLog:
    """Event ``j`` has timestamp ``j``: the learned timestamps say which events were learned."""
    return EventLog.from_events(Interaction(f"u{j % 7}", f"i{j % 11}", float(j)) for j in range(n))


class OracleRecommender:
    """A test double that knows the future: each user's list is their next items, in order.

    It is told the whole log up front and follows the public protocol only: it
    moves a user's pointer forward when ``learn`` gives it that user's events.
    """

    uses_ratings = False

    def __init__(self, log: EventLog) -> None:
        self.future: dict[str, list[str]] = defaultdict(list)
        for user, item in zip(log.users.tolist(), log.items.tolist(), strict=True):
            self.future[user].append(item)
        self.position: Counter[str] = Counter()

    def add_items(self, items: Iterable[Any], tags: Any = None) -> None:
        pass

    def learn(self, batch: Interactions) -> None:
        self.position.update(batch.users.tolist())

    def recommend(self, users: Iterable[Any], k: int = 10, **kwargs: Any) -> Recommendations:
        ids = [str(u) for u in users]
        lists = [list(dict.fromkeys(self.future[u][self.position[u] :]))[:k] for u in ids]
        return Recommendations(ids, lists, [[1.0] * len(x) for x in lists])


class NullRecommender:
    """Recommends nothing to anyone; records what the harness does to it."""

    uses_ratings = False

    def __init__(self) -> None:
        self.learned_ts: list[float] = []
        self.calls: list[tuple[int, list[str]]] = []  # (events learned so far, users asked for)
        self.catalogue: list[tuple[int, list[str]]] = []

    def add_items(self, items: Iterable[Any], tags: Any = None) -> None:
        self.catalogue.append((len(self.learned_ts), [str(i) for i in items]))

    def learn(self, batch: Interactions) -> None:
        self.learned_ts.extend(batch.timestamps.tolist())

    def recommend(self, users: Iterable[Any], k: int = 10, **kwargs: Any) -> Recommendations:
        ids = [str(u) for u in users]
        self.calls.append((len(self.learned_ts), ids))
        return Recommendations(ids, [[] for _ in ids], [[] for _ in ids])


class FutureRater(NullRecommender):
    """A rating model that predicts the true rating of every pair (it read the log)."""

    uses_ratings = True

    def __init__(self, log: EventLog, offset: float = 0.0) -> None:
        super().__init__()
        self.truth = {
            (u, i): r for u, i, r in zip(log.users.tolist(), log.items.tolist(), log.ratings.tolist(), strict=True)
        }
        self.offset = offset

    def predict(self, users: Iterable[Any], items: Iterable[Any]) -> np.ndarray:
        return np.array([self.truth[(str(u), str(i))] + self.offset for u, i in zip(users, items, strict=True)])


class BrokenRecommender(NullRecommender):
    def learn(self, batch: Interactions) -> None:
        if len(self.learned_ts) >= 100:
            raise FloatingPointError("diverged")
        super().learn(batch)


def figures(result: Any) -> dict[str, Any]:
    """Everything but timings and memory."""
    data = result.to_dict()
    data.pop("harness")
    data.pop("machine")
    for m in data["models"].values():
        m.pop("timing")
        m.pop("memory")
    return data


# -- known answers ----------------------------------------------------------------------


@pytest.mark.parametrize(("batch_size", "k"), [(1, 1), (1, 5), (40, 40)])
def test_an_oracle_hits_every_event_first(batch_size: int, k: int) -> None:
    log = interaction_log()  # tied timestamps: freshness 0 still shows every earlier event
    result = Prequential({"oracle": OracleRecommender(log)}, ks=(k,), batch_size=batch_size, window=100).run(log)
    overall = result.models["oracle"].overall
    assert overall["scored"] == len(log)
    assert overall[f"HR@{k}"] == overall["MRR"] == overall[f"NDCG@{k}"] == 1.0
    assert all(w[f"HR@{k}"] == 1.0 for w in result.models["oracle"].windows)


def test_a_model_that_recommends_nothing_scores_zero() -> None:
    log = interaction_log()
    result = Prequential({"null": NullRecommender()}, ks=(5, 10)).run(log)
    overall = result.models["null"].overall
    assert overall["HR@5"] == overall["HR@10"] == overall["NDCG@10"] == overall["MRR"] == 0.0
    assert overall["coverage@10"] == 0.0


def test_popularity_figures_match_a_plain_per_event_loop() -> None:
    log = interaction_log(seed=3)
    result = Prequential({"pop": models.create("popularity")}, ks=(5,), batch_size=30).run(log)
    model, hits = models.create("popularity"), 0
    for j in range(len(log)):
        event = log.interactions(j, j + 1)
        hits += event.items[0] in model.recommend([event.users[0]], k=5).items[0]
        model.learn(event)
    assert result.models["pop"].overall["HR@5"] == pytest.approx(hits / len(log))


def test_rating_errors_are_measured_before_learning() -> None:
    log = EventLog.from_events(Rating(f"u{j % 5}", f"i{j}", float(1 + j % 5), float(j)) for j in range(50))
    perfect = Prequential({"r": FutureRater(log)}, batch_size=7).run(log).models["r"].overall
    assert perfect["RMSE"] == 0.0 and perfect["MAE"] == 0.0 and perfect["rated"] == 50
    off = Prequential({"r": FutureRater(log, offset=0.5)}, batch_size=7, warmup=0.2).run(log).models["r"].overall
    assert off["RMSE"] == pytest.approx(0.5) and off["rated"] == 40
    # a model without ratings gets no rating figures
    assert "RMSE" not in Prequential({"n": NullRecommender()}).run(log).models["n"].overall


# -- what a list reflects, in event time ----------------------------------------------------


def test_freshness_zero_scores_each_event_against_every_earlier_event() -> None:
    ties = EventLog.from_events(Interaction(f"u{j % 7}", f"i{j % 11}", float(j // 3)) for j in range(60))
    for log in (numbered_log(60), ties):
        model = NullRecommender()
        Prequential({"m": model}, batch_size=1000).run(log)
        assert [learned for learned, _ in model.calls] == list(range(60))  # equal timestamps do not hide or leak
        assert [users for _, users in model.calls] == [[u] for u in log.users.tolist()]
        assert model.learned_ts == log.timestamps.tolist()


@pytest.mark.parametrize("batch_size", [1, 3, 1000])
def test_freshness_hides_the_events_of_the_last_seconds(batch_size: int) -> None:
    log = numbered_log(40)  # event j at t = j
    model = NullRecommender()
    Prequential({"m": model}, freshness=5.0, batch_size=batch_size).run(log)
    # event j sees the events with t <= j - 5; events sharing that prefix are scored together
    expected: dict[int, list[str]] = defaultdict(list)
    for j in range(40):
        expected[max(0, j - 4)].append(log.users[j])
    calls: dict[int, list[str]] = defaultdict(list)
    for learned, users in model.calls:
        assert len(users) <= batch_size
        calls[learned].extend(users)
    assert {p: sorted(set(u)) for p, u in calls.items()} == {p: sorted(set(u)) for p, u in expected.items()}


def test_refresh_serves_lists_computed_at_the_last_refresh() -> None:
    log = numbered_log(45)
    model = NullRecommender()
    Prequential({"m": model}, refresh=10.0).run(log)
    # lists recomputed at t = 0, 10, 20, ... from the events strictly before
    assert [learned for learned, _ in model.calls] == [0, 10, 20, 30, 40]
    assert [len(users) for _, users in model.calls] == [7, 7, 7, 7, 5]
    assert model.learned_ts == [float(j) for j in range(45)]


def test_models_learn_in_chunks_that_end_on_multiples_of_learn_batch() -> None:
    log = numbered_log(100)
    sizes: list[int] = []

    class Chunks(NullRecommender):
        def learn(self, batch: Interactions) -> None:
            sizes.append(len(batch))
            super().learn(batch)

    Prequential({"m": Chunks()}, refresh=50.0, learn_batch=20).run(log)
    assert sizes == [20, 20, 10, 10, 20, 20]  # up to t = 50, then the rest at the end


def test_history_buckets_count_the_users_own_visible_events() -> None:
    events = [Interaction("a", f"i{j}", float(j)) for j in range(8)] + [Interaction("b", "i0", 100.0)]
    result = Prequential({"n": NullRecommender()}).run(EventLog.from_events(events))
    split = {label: figures["scored"] for label, figures in result.models["n"].by_history.items()}
    assert split == {"none": 2, "1-4": 4, "5+": 3}


def test_warmup_is_learned_but_not_scored_and_every_nth_event_is_evaluated() -> None:
    log = numbered_log(100)
    model = NullRecommender()
    result = Prequential({"m": model}, batch_size=10, warmup=0.3, every=3).run(log)
    assert result.models["m"].overall["scored"] == len(range(30, 100, 3))
    assert [learned for learned, _ in model.calls] == list(range(30, 100, 3))  # no lists during the warm-up
    assert len(model.learned_ts) == 100
    assert result.stream["scored"] == 24


def test_positive_types_and_min_rating_choose_the_scored_events() -> None:
    events = [Interaction("u", f"i{j}", float(j), ["view", "purchase"][j % 2]) for j in range(10)]
    events += [Rating("v", f"r{j}", float(j % 5 + 1), 100.0 + j) for j in range(10)]
    log = EventLog.from_events(events)
    scored = {
        None: 20,
        ("purchase",): 5,
        ("view", "rating"): 15,
    }
    for positives, expected in scored.items():
        assert Prequential({"n": NullRecommender()}, positives=positives).run(log).stream["scored"] == expected
    assert Prequential({"n": NullRecommender()}, min_rating=4.0).run(log).stream["scored"] == 10 + 4
    with pytest.raises(ValueError, match="positives"):
        Prequential({}, positives=["like"])


def test_windows_hold_window_scored_events() -> None:
    result = Prequential({"pop": models.create("popularity")}, batch_size=64, window=250).run(interaction_log())
    assert [w["scored"] for w in result.windows] == [250, 250, 100]
    assert len(result.models["pop"].windows) == 3
    assert result.windows[0]["first_event"] == 0 and result.windows[-1]["last_event"] == 599
    hr = [w["HR@10"] for w in result.models["pop"].windows]
    assert np.average(hr, weights=[250, 250, 100]) == pytest.approx(result.models["pop"].overall["HR@10"])


def test_catalogue_updates_reach_models_before_the_events_after_them() -> None:
    events: list[Any] = [ItemUpdate("cat-a", 0.0, tags=("x",))]
    events += [Interaction("u", f"i{j}", float(j + 1)) for j in range(30)]
    events.insert(13, ItemUpdate("cat-b", 12.5))  # after the event at t=12, i.e. 12 events before it
    log = EventLog.from_events(events)
    assert log.catalogue_positions.tolist() == [0, 12]
    model = NullRecommender()
    result = Prequential({"m": model}).run(log)
    assert model.catalogue == [(0, ["cat-a"]), (12, ["cat-b"])]  # (events learned when added, items)
    assert result.windows[0]["items_known"] == 32


# -- batch size is a compute detail ---------------------------------------------------------


@pytest.mark.parametrize("name", models.available())
@pytest.mark.parametrize("when", [{"freshness": 0.0}, {"freshness": 7.0}, {"refresh": 40.0}])
def test_batch_size_does_not_change_the_ranks(name: str, when: dict[str, float]) -> None:
    log = interaction_log(n=300, seed=5)

    def ranks(batch_size: int) -> np.ndarray:
        from streamrec.served import ServedLists

        model = models.create(name, seed=1)
        served = model if name == "popularity" else ServedLists(model)
        result = Prequential({name: served}, ks=(10,), batch_size=batch_size, learn_batch=50, **when).run(log)
        assert result.models[name].error is None, result.models[name].error
        return result.models[name].ranks

    np.testing.assert_array_equal(ranks(1), ranks(1000))


# -- robustness and determinism -----------------------------------------------------------


def test_a_failing_model_is_reported_and_the_others_run() -> None:
    log = interaction_log()
    result = Prequential({"bad": BrokenRecommender(), "pop": models.create("popularity")}, batch_size=50).run(log)
    assert "FloatingPointError in learn" in result.models["bad"].error
    assert "diverged" in result.models["bad"].error
    assert result.models["pop"].error is None and result.models["pop"].overall["scored"] == 600


def test_seeded_backtest_is_deterministic() -> None:
    names = ["popularity", "itemknn", "isgd", "river_funk_mf"]

    def run() -> dict[str, Any]:
        ms = {n: models.create(n, seed=7) for n in names}
        return figures(Prequential(ms, ks=(5, 10), batch_size=40, window=200, memory="state").run(interaction_log()))

    first, second = run(), run()
    assert first == second
    assert first["models"]["isgd"]["overall"]["HR@10"] > 0


def test_memory_is_measured() -> None:
    model = models.create("itemknn")
    result = Prequential({"knn": model}, memory="trace", memory_events=200, batch_size=50).run(interaction_log())
    memory = result.models["knn"].memory
    assert memory["state_bytes"] > 0
    assert memory["peak_traced_bytes"] > 0 and memory["traced_events"] == 200
    assert model.n_learned == 600  # the traced pass used a fresh clone


def test_events_and_timings_are_reported() -> None:
    result = Prequential({"pop": models.create("popularity")}).run(interaction_log())
    timing = result.models["pop"].timing
    assert timing["events_per_s"] > 0
    assert timing["model_s"] == pytest.approx(
        timing["recommend_s"] + timing["learn_s"] + timing["predict_s"] + timing["catalogue_s"], abs=1e-5
    )
    assert result.harness["replay_wall_s"] >= timing["model_s"]


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("batch_size", 0),
        ("learn_batch", 0),
        ("freshness", -1.0),
        ("refresh", 0.0),
        ("warmup", 1.0),
        ("every", 0),
        ("window", 0),
        ("memory", "rss"),
    ],
)
def test_bad_options_say_what_is_wrong(option: str, value: Any) -> None:
    with pytest.raises(ValueError, match=option):
        Prequential({}, **{option: value})


def test_unbought_keeps_seen_items_but_leaves_out_what_the_user_bought() -> None:
    """``exclude_bought`` (the worker's ``STREAMREC_REPEATS=unbought``): only the re-view of a bought item is lost."""
    events = [Interaction(f"o{j}", item, float(j), "view") for j in range(20) for item in ("a",) * 3 + ("b",) * 2]
    events += [Interaction(f"p{j}", "b", 30.0 + j, "view") for j in range(10)]  # a: 20 people, b: 30
    events += [
        Interaction("u", "b", 100.0, "view"),
        Interaction("u", "b", 101.0, "purchase"),  # b bought
        Interaction("u", "b", 102.0, "view"),  # a re-view of a bought item: not a hit when bought ones are left out
        Interaction("u", "c", 103.0, "view"),
    ]
    log = EventLog.from_events(events)

    def hits(**options: Any) -> float:
        result = Prequential({"pop": models.create("popularity", half_life=None)}, ks=(1,), **options).run(log)
        return result.models["pop"].overall["HR@1"] * len(log)

    kept, unbought = hits(exclude_seen=False), hits(exclude_seen=False, exclude_bought=True)
    assert kept - unbought == pytest.approx(1.0)
    assert hits(exclude_bought=True) == pytest.approx(hits())  # seen items (bought ones among them) are out anyway
    config = Prequential({}, exclude_seen=False, exclude_bought=True).config()
    assert config["exclude_bought"] is True and config["exclude_seen"] is False

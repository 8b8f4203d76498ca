"""Models that run on several workers: split learning with exchanged deltas equals one model; users move."""

from __future__ import annotations

import json
import zlib

import numpy as np
import pytest

import models
import models.sharing
from models import Interactions, OnlineRecommender, Recommendations
from models.sharing import ItemDelta, UserStates


def shares(name: str, params: dict) -> bool:
    """Whether model ``name`` with ``params`` shares state (a hybrid shares only when all its members do)."""
    return models.model_class(name).shares_state and models.create(name, **params).shares_state


SHARING = [
    pytest.param(name, params, id=f"{name}-{j}")
    for name in models.available()
    for j, params in enumerate(models.model_class(name)._test_params())
    if shares(name, params)
]


#: Where split learning is known to agree less with one model than the 0.5 asserted elsewhere.
#: two_tower's stress parameters (a hidden layer updated by both workers' increments, micro-batches
#: of 7 events, 2 steps each): over seeds 0-5 its split lists overlapped one model's by 0.16-0.52
#: (with either initial-row generator), while one model against the same model reseeded agreed
#: 0.36-0.73; without the hidden layer the split lists overlap 0.81-0.85. A known limit of
#: asynchronous updates of shared dense layers, not hidden by a lucky seed.
_ASYNC_FLOOR = {("two_tower", 8): 0.1}


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


def overlap(got: Recommendations, want: Recommendations) -> float:
    """The mean share of each list of ``want`` that ``got`` holds too."""
    return float(np.mean([len(set(a) & set(b)) / max(len(b), 1) for a, b in zip(got.items, want.items, strict=True)]))


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
    assert {"popularity", "itemknn", "two_tower", "sasrec"} <= {p.values[0] for p in SHARING}
    inexact = {n for n in models.available() if models.model_class(n).shares_state}
    inexact -= {n for n in inexact if models.model_class(n).sharing_is_exact}
    assert inexact <= set(INEXACT), "every model whose sharing is not exact states its tolerance here"


def split_learning(
    name: str, params: dict, events: Interactions, n_workers: int = 2, every: int = 25
) -> tuple[list[OnlineRecommender], float]:
    """Workers learning their users' events, deltas exchanged (as bytes) every ``every`` events.

    Returns the workers and their HR@10 on the stream: before each block of
    ``every`` events, each event's user gets a list from their worker (seen
    items excluded), a hit when it holds the event's item; then the block is
    learned. With one worker, the single model.
    """
    workers = [models.create(name, **params) for _ in range(n_workers)]
    if n_workers > 1:
        for worker in workers:
            worker.begin_sharing()
    users, items = events.users.tolist(), events.items.tolist()
    owner = np.array([partition(u, n_workers) for u in users])
    hits: list[bool] = []
    for start in range(0, len(events), every):
        part = np.arange(start, min(start + every, len(events)))
        for w, worker in enumerate(workers):
            mine = part[owner[part] == w]
            if len(mine):
                asked = sorted({users[j] for j in mine})
                lists = dict(zip(asked, worker.recommend(asked, k=10, with_reasons=False).items, strict=True))
                hits += [items[j] in lists[users[j]] for j in mine.tolist()]
                worker.learn(events.select(mine))
        if n_workers > 1:
            deltas = [relay(worker.take_item_delta()) for worker in workers]
            for w, worker in enumerate(workers):
                for v, delta in enumerate(deltas):
                    if v != w:
                        worker.apply_item_delta(delta)
    return workers, float(np.mean(hits))


def cluster_stream(n_events: int = 3000, n_users: int = 300, n_clusters: int = 20, seed: int = 0) -> Interactions:
    """Each user's items come from one cluster of 10 items (80%) or anywhere (20%); ordered within a cluster."""
    rng = np.random.default_rng(seed)
    users = rng.integers(0, n_users, n_events)
    steps = np.zeros(n_users, dtype=np.int64)
    items = np.empty(n_events, dtype=np.int64)
    for n, u in enumerate(users.tolist()):  # a user walks their cluster in order: some sequence to learn
        items[n] = (u % n_clusters) * 10 + (u + steps[u]) % 10
        steps[u] += 1
    noise = rng.random(n_events) < 0.2
    items[noise] = rng.integers(0, n_clusters * 10, int(noise.sum()))
    return Interactions.from_columns(
        [f"u{u}" for u in users], [f"i{i}" for i in items], timestamps=np.arange(n_events) * 60.0
    )


#: Models whose sharing is not exact, their parameters for the quality test, and how much HR@10
#: two workers exchanging deltas every 50 events may lose against one model of all events. Two-tower
#: and SASRec: asynchronous SGD; session kNN: capped rings filled in another order; adaptive popularity:
#: exact scores, the decay chosen from hits each worker judged against its own view; hybrid: its members'
#: sharing, and hit rates each worker judged on its own events.
INEXACT: dict[str, tuple[dict, float]] = {
    "adaptive_popularity": ({"half_lives": (None, 600.0), "memory": 200}, 0.03),
    "two_tower": (
        {"n_factors": 16, "micro_batch": 32, "n_negatives": 16, "lr": 0.05, "hidden": 8, "device": "cpu"},
        0.03,
    ),
    "sknn": ({}, 0.03),
    "hybrid": ({"components": ("itemknn", "sknn")}, 0.03),
    "sasrec": ({"n_factors": 16, "max_len": 6, "batch_size": 32, "n_negatives": 16, "device": "cpu"}, 0.03),
}


@pytest.mark.parametrize("name", sorted(INEXACT))
def test_workers_exchanging_deltas_recommend_about_as_well_as_one_model(name: str) -> None:
    """Asynchronous SGD: HR@10 within the stated tolerance of one model's, item rows no farther from its
    than another seed's are (SGD trajectories diverge: the seed's distance is the yardstick)."""
    params, tolerance = INEXACT[name]
    events = cluster_stream()
    (whole,), one = split_learning(name, {**params, "seed": 0}, events, 1, every=50)
    (other,), _ = split_learning(name, {**params, "seed": 1}, events, 1, every=50)
    workers, two = split_learning(name, {**params, "seed": 0}, events, 2, every=50)
    assert two >= one - tolerance, f"{name}: HR@10 {two:.3f} with two workers, {one:.3f} with one"
    if models.model_class(name).personalized:
        assert one > 0.1  # the stream is learnable (10 of 200 items at random: 0.05)
    tables = models.model_class(name)._item_arrays
    if not tables:  # no trained item rows
        return
    ids = sorted(i for i in whole.item_index.ids if i is not None)

    def learned(model: OnlineRecommender) -> np.ndarray:  # each item's embedding row minus its initial row
        delta = model.export_items()
        at = {item: n for n, item in enumerate(delta.items)}
        return delta.arrays[tables[0]][[at[i] for i in ids]] - model._initial_item_rows(tables[0], ids)

    base = learned(whole)
    by_seed = np.linalg.norm(learned(other) - base)
    for worker in workers:
        assert np.linalg.norm(learned(worker) - base) <= 1.1 * by_seed, name


@pytest.mark.parametrize(("name", "params"), SHARING)
def test_a_lone_worker_that_takes_deltas_and_applies_empty_ones_learns_as_if_it_did_not_share(
    name: str, params: dict
) -> None:
    events = stream()
    plain, sharing, idle = (models.create(name, **params) for _ in range(3))
    sharing.begin_sharing()
    idle.begin_sharing()
    for start in range(0, len(events), 25):
        part = events.select(np.arange(start, min(start + 25, len(events))))
        plain.learn(part)
        sharing.learn(part)
        sharing.take_item_delta()
        sharing.apply_item_delta(relay(idle.take_item_delta()))
    users = sorted(set(events.users.tolist()))
    got, want = sharing.recommend(users, k=10), plain.recommend(users, k=10)
    assert got.items == want.items and got.scores == want.scores, name


@pytest.mark.parametrize(("name", "params"), SHARING)
def test_split_learning_is_deterministic(name: str, params: dict) -> None:
    events = stream(n=400)
    first, _ = split_learning(name, params, events)
    again, _ = split_learning(name, params, events)
    users = sorted(set(events.users.tolist()))
    for a, b in zip(first, again, strict=True):
        got, want = a.recommend(users, k=10), b.recommend(users, k=10)
        assert got.items == want.items and got.scores == want.scores, name


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
            floor = _ASYNC_FLOOR.get((name, params.get("hidden", 0)), 0.5)
            assert overlap(got, want) >= floor, f"{name}: lists overlap {overlap(got, want):.2f}"


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
    got, want = target.recommend(users, k=10), source.recommend(users, k=10)
    if source.sharing_is_exact:
        assert_same_lists(got, want, name)
    else:  # gradient steps on the source's waiting examples and its own negatives: close, not equal
        assert overlap(got, want) >= 0.7, f"{name}: lists overlap {overlap(got, want):.2f}"
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


def test_raw_payloads_round_trip_and_npz_ones_still_read() -> None:
    """Increments travel in the raw layout; compressed (and older, ``.npz``) payloads still read; objects refused."""
    from models.sharing import _pack, _unpack

    arrays = {
        "f": np.arange(6, dtype=np.float32).reshape(2, 3),
        "i": np.array([3, -1], dtype=np.int64),
        "empty": np.zeros((0, 4), dtype=np.float32),
        "u": np.array(["tea", "jam"]),
        "last_empty": np.zeros(0, dtype=np.int32),
    }
    meta = {"kind": "items", "items": ["a", "b"], "t": 1.5}
    for compress in (False, True):
        got_meta, got = _unpack(_pack(meta, arrays, compress))
        assert got_meta == meta
        assert set(got) == set(arrays)
        for name, value in arrays.items():
            assert got[name].dtype == value.dtype and got[name].shape == value.shape
            assert np.array_equal(got[name], value)
            assert got[name].flags.writeable
    raw = _pack(meta, arrays, compress=False)
    with pytest.raises(ValueError, match="truncated"):
        _unpack(raw[:-3])
    with pytest.raises(ValueError, match="Python objects"):
        _pack(meta, {"o": np.array([{"x": 1}], dtype=object)}, compress=False)


# -- item state owned by item: pieces of every worker's delta merged by the piece's owner --------

OWNED = [p for p in SHARING if models.model_class(p.values[0]).merges_item_deltas]


def owned_learning(
    name: str,
    params: dict,
    events: Interactions,
    n_workers: int = 3,
    parts: int = 4,
    every: int = 25,
    merge_every: int = 1,
    tagged: bool = False,
) -> tuple[OnlineRecommender, list[OnlineRecommender], int]:
    """One model of all events, and workers whose item state comes through the owners of item parts.

    After each block every worker cuts its delta by item part; the owner of a
    part (the worker ``part % n_workers``) merges every worker's piece of it;
    every worker applies each merge less its own piece, every part's joined
    into one delta (as a worker applies one fetch of merges). Returns the whole
    model, the workers, and how many merged item rows (or row-less merges) the workers applied.
    The owners merge every ``merge_every`` blocks: a merge then holds several
    pieces of each worker, as when an owner merges less often than workers commit.
    ``tagged``: the catalogue comes first, every item with a tag (content models learn tag rows).
    """
    whole = models.create(name, **params)
    workers = [models.create(name, **params) for _ in range(n_workers)]
    if tagged:
        ids = sorted(set(events.items.tolist()))
        for model in (whole, *workers):
            model.add_items(ids, tags=[(f"g{int(i[1:]) % 3}",) for i in ids])
    for worker in workers:
        worker.begin_sharing()
    owner = np.array([partition(u, n_workers) for u in events.users.tolist()])
    applied = 0
    sent: list[list[dict[int, ItemDelta]]] = [[] for _ in workers]  # each worker's pieces since the last merge
    for n, start in enumerate(range(0, len(events), every)):
        block = np.arange(start, min(start + every, len(events)))
        whole.learn(events.select(block))
        for w, worker in enumerate(workers):
            mine = block[owner[block] == w]
            if len(mine):
                worker.learn(events.select(mine))
            sent[w].append(worker.split_item_delta(relay(worker.take_item_delta()), parts))
        if (n + 1) % merge_every and start + every < len(events):
            continue
        pieces, sent = sent, [[] for _ in workers]
        netted: list[list[list[ItemDelta]]] = [[] for _ in workers]  # per worker, per part: what to apply in order
        for part in range(parts):
            held = [relay(p[part]) for mine in pieces for p in mine if part in p]
            if not held:
                continue
            merged = relay(workers[part % n_workers].merge_item_deltas(held))
            for w, worker in enumerate(workers):
                own = [p[part] for p in pieces[w] if part in p]
                netted[w].append(worker.net_item_deltas(merged, own))
        for worker, lists in zip(workers, netted, strict=True):  # every part's merge at once, as a worker's fetch
            for k in range(max((len(x) for x in lists), default=0)):
                joined = relay(worker.join_item_deltas([x[k] for x in lists if len(x) > k]))
                worker.apply_item_delta(joined)
                applied += len(joined.items) or len(joined.extra_arrays)  # session appends name no item rows
    return whole, workers, applied


def test_the_models_that_merge_item_deltas_are_tested() -> None:
    assert {p.values[0] for p in SHARING} == {p.values[0] for p in OWNED}  # every model that shares


@pytest.mark.parametrize(("name", "params"), OWNED)
def test_every_item_of_a_delta_lands_in_exactly_one_piece(name: str, params: dict) -> None:
    model = models.create(name, **params)
    model.begin_sharing()
    model.learn(stream(n=300))
    delta = model.take_item_delta()
    pieces = model.split_item_delta(relay(delta), 4)
    held = [i for piece in pieces.values() for i in piece.items]
    assert sorted(held) == sorted(delta.items)
    for part, piece in pieces.items():
        assert all(p == part for p in models.sharing.item_parts(piece.items, 4).tolist())
        if "cells" in piece.extra_arrays:  # a co-occurrence cell goes with the item of its row
            rows = [piece.extra["cell_items"][n] for n in piece.extra_arrays["cells"][0].tolist()]
            assert set(models.sharing.item_parts(rows, 4).tolist()) == {part}


@pytest.mark.parametrize("merge_every", [1, 3])
@pytest.mark.parametrize(("name", "params"), OWNED)
def test_workers_fed_by_item_owners_equal_one_model(name: str, params: dict, merge_every: int) -> None:
    """What the owners merge, less each worker's own pieces, gives each worker one model's item state."""
    events = stream()
    whole, workers, applied = owned_learning(name, params, events, merge_every=merge_every)
    assert applied > 0
    users = sorted(set(events.users.tolist()))
    for w, worker in enumerate(workers):
        mine = [u for u in users if partition(u, len(workers)) == w]
        got, want = worker.recommend(mine, k=10), whole.recommend(mine, k=10)
        if whole.sharing_is_exact:
            assert_same_lists(got, want, name)
        elif name == "adaptive_popularity":  # exact scores in every arm; the arm served is chosen from local hits
            ids = sorted(i for i in whole.item_index.ids if i is not None)
            for mine_arm, one_arm in zip(worker._arms, whole._arms, strict=True):
                by_id = dict(zip(worker.item_index.ids, mine_arm.item_scores().tolist(), strict=False))
                one = dict(zip(whole.item_index.ids, one_arm.item_scores().tolist(), strict=False))
                np.testing.assert_allclose([by_id[i] for i in ids], [one[i] for i in ids], rtol=1e-5, atol=1e-9)
        else:
            floor = _ASYNC_FLOOR.get((name, params.get("hidden", 0)), 0.5)
            assert overlap(got, want) >= floor, f"{name}: lists overlap {overlap(got, want):.2f}"


@pytest.mark.parametrize("name", ["two_tower", "hybrid"])
def test_workers_fed_by_item_owners_learn_content_rows_like_one_model(name: str) -> None:
    """Tag embeddings (two-tower's vocabulary rows, with part 0) reach every worker through the owners."""
    events = stream()
    params = (
        {**INEXACT[name][0], "components": ("itemknn", "sknn", "two_tower")} if name == "hybrid" else INEXACT[name][0]
    )
    whole, workers, _ = owned_learning(name, params, events, tagged=True)
    users = sorted(set(events.users.tolist()))
    for w, worker in enumerate(workers):
        mine = [u for u in users if partition(u, len(workers)) == w]
        got, want = worker.recommend(mine, k=10), whole.recommend(mine, k=10)
        assert overlap(got, want) >= 0.5, f"{name}: lists overlap {overlap(got, want):.2f}"


def test_two_tower_vocabulary_rows_are_summed_by_id_and_a_workers_own_taken_back() -> None:
    params = INEXACT["two_tower"][0]
    events = stream(n=400)
    ids = sorted(set(events.items.tolist()))
    a, b = models.create("two_tower", **params), models.create("two_tower", **params)
    for m, half in ((a, np.arange(0, 200)), (b, np.arange(200, 400))):
        m.add_items(ids, tags=[(f"g{int(i[1:]) % 3}",) for i in ids])
        m.begin_sharing()
        m.learn(events.select(half))
    da, db = relay(a.take_item_delta()), relay(b.take_item_delta())
    assert da.extra.get("two_tower.tag") and db.extra.get("two_tower.tag")
    merged = relay(a.merge_item_deltas([da, db]))
    for key in ("two_tower.tag", "two_tower.tag.adagrad"):
        by_tag = dict(zip(merged.extra["two_tower.tag"], merged.extra_arrays[key], strict=True))
        want = {t: v.copy() for t, v in zip(da.extra["two_tower.tag"], da.extra_arrays[key], strict=True)}
        for t, v in zip(db.extra["two_tower.tag"], db.extra_arrays[key], strict=True):
            want[t] = want[t] + v if t in want else v
        for tag, value in want.items():
            np.testing.assert_allclose(by_tag[tag], value, rtol=1e-5, atol=1e-7)
    (net,) = a.net_item_deltas(merged, [da])
    got = dict(zip(net.extra["two_tower.tag"], net.extra_arrays["two_tower.tag"], strict=True))
    for tag, value in zip(db.extra["two_tower.tag"], db.extra_arrays["two_tower.tag"], strict=True):
        np.testing.assert_allclose(got[tag], value, rtol=1e-4, atol=1e-6)


def test_session_appends_go_to_the_part_of_their_user_in_order_and_a_removal_drops_earlier_ones() -> None:
    model = models.create("sknn")
    model.begin_sharing()
    model.learn(Interactions.from_columns(["ann", "bob", "ann", "cat"], ["tea", "tea", "jam", "ham"]))
    first = relay(model.take_item_delta())
    pieces = model.split_item_delta(first, 4)
    for part, piece in pieces.items():
        users = piece.extra.get("sknn_users", [])
        assert set(models.sharing.item_parts(users, 4).tolist()) <= {part}
    model.forget_user("ann")
    model.learn(Interactions.from_columns(["ann", "bob"], ["cake", "jam"]))
    second = relay(model.take_item_delta())
    merged = model.merge_item_deltas([first, second])
    users, items = merged.extra["sknn_users"], merged.extra["sknn_items"]
    appends = [(users[u], items[i], p) for u, i, p in merged.extra_arrays["sknn_appends"].T.tolist()]
    assert merged.extra["sknn_removed"] == ["ann"]
    assert [a for a in appends if a[0] == "ann"] == [("ann", "cake", 0)]  # the appends before the removal went
    assert [a for a in appends if a[0] == "bob"] == [("bob", "tea", 0), ("bob", "jam", 1)]
    assert model.negate_item_delta(second).extra_arrays == {}  # a replica skips appends it holds


@pytest.mark.parametrize(("name", "params"), OWNED)
def test_merging_leaves_the_owner_unchanged(name: str, params: dict) -> None:
    events = stream(n=400)
    a, b = models.create(name, **params), models.create(name, **params)
    for m in (a, b):
        m.begin_sharing()
        m.learn(events)
    users = sorted(set(events.users.tolist()))[:10]
    before = a.recommend(users, k=10)
    other = models.create(name, **params)
    other.begin_sharing()
    other.learn(stream(n=200, seed=9))
    merged = a.merge_item_deltas([other.take_item_delta(), b.take_item_delta()])
    a.negate_item_delta(merged)
    after = a.recommend(users, k=10)
    assert after.items == before.items and after.scores == before.scores


def test_a_model_that_cannot_merge_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    model = models.create("sknn")
    monkeypatch.setattr(type(model), "merges_item_deltas", False)  # every sharing model merges today
    model.begin_sharing()
    with pytest.raises(NotImplementedError, match="broadcast"):
        model.split_item_delta(model.take_item_delta(), 2)

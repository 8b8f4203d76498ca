"""SASRec: sequential patterns, the per-event path and its lag, growing tables, determinism, save/load, CUDA."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import models
from models import Interactions, OnlineRecommender
from models.sequence import SASRec

PARAMS = {"n_factors": 16, "max_len": 6, "batch_size": 32, "n_negatives": 16, "seed": 11}
N_GROUPS, CYCLE = 4, 8


def cycle_stream(n_users: int = 240, seed: int = 0) -> Interactions:
    """Each user walks 4-7 steps of their group's cycle of 8 items from a random start; users interleave."""
    rng = np.random.default_rng(seed)
    walks = []
    for u in range(n_users):
        g, start, length = u % N_GROUPS, int(rng.integers(CYCLE)), int(rng.integers(4, 8))
        walks.append([(f"u{seed}-{u}", f"g{g}-{(start + t) % CYCLE}") for t in range(length)])
    events, position = [], [0] * n_users
    live = [u for u in range(n_users)]
    while live:  # interleave the walks, each in its own order
        u = live[int(rng.integers(len(live)))]
        events.append(walks[u][position[u]])
        position[u] += 1
        if position[u] == len(walks[u]):
            live.remove(u)
    users, items = zip(*events, strict=True)
    return Interactions.from_columns(users, items, timestamps=np.arange(len(events), dtype=float))


def prequential_hits(model: OnlineRecommender, events: Interactions, k: int = 3) -> float:
    """Share of events (of users with history) whose item is in the user's top-k just before it."""
    hits = scored = 0
    for j in range(len(events)):
        user, item = events.users[j], events.items[j]
        if model.has_history(user):
            scored += 1
            hits += item in model.recommend([user], k=k).items[0]
        model.learn(events.select(np.array([j])))
    return hits / scored


def train(model: OnlineRecommender, events: Interactions, batch: int = 50) -> OnlineRecommender:
    for start in range(0, len(events), batch):
        model.learn(events.select(np.arange(start, min(start + batch, len(events)))))
    return model


def state(model: SASRec) -> dict[str, np.ndarray]:
    return model._state()


def assert_same_state(a: SASRec, b: SASRec) -> None:
    sa, sb = state(a), state(b)
    assert sa.keys() == sb.keys()
    for name, value in sa.items():
        np.testing.assert_array_equal(value, sb[name], err_msg=name)


def test_learns_a_sequential_pattern_better_than_popularity() -> None:
    events = cycle_stream(n_users=300)
    seq = prequential_hits(SASRec(**PARAMS, device="cpu"), events)
    pop = prequential_hits(models.create("popularity"), events)
    assert seq > 0.6 and seq > 2 * pop, (seq, pop)


def test_order_matters_the_next_item_of_the_cycle_comes_first() -> None:
    model = train(SASRec(**PARAMS, device="cpu"), cycle_stream(n_users=1200))
    model.learn(Interactions.from_columns(["ann"] * 3 + ["bob"] * 3, ["g1-2", "g1-3", "g1-4", "g2-7", "g2-0", "g2-1"]))
    ann, bob = model.recommend(["ann", "bob"], k=2).items
    assert ann[0] == "g1-5" and bob[0] == "g2-2", (ann, bob)


def test_a_learned_event_changes_the_users_list_at_once_and_the_weights_after_batch_size_examples() -> None:
    model = train(SASRec(**PARAMS, device="cpu"), cycle_stream(n_users=600))
    version, waiting = model._version, model._n_buffered
    model.learn(Interactions.from_columns(["cid"], ["g3-0"]))  # first event: no window, no example
    assert model._n_buffered == waiting and model.recommend(["cid"], k=1).items == [["g3-1"]]
    for step in range(1, 4):
        model.learn(Interactions.from_columns(["cid"], [f"g3-{step}"]))
        assert model.recommend(["cid"], k=1).items == [[f"g3-{step + 1}"]]  # the window moved at once
    assert model._version == version + (waiting + 3) // PARAMS["batch_size"]
    filler = model.batch_size - model._n_buffered
    model.learn(Interactions.from_columns(["dan"] * (filler + 1), [f"g0-{j % CYCLE}" for j in range(filler + 1)]))
    assert model._version == version + (waiting + 3) // PARAMS["batch_size"] + 1 and model._n_buffered == 0


def test_windows_hold_the_newest_items_in_order() -> None:
    model = SASRec(**{**PARAMS, "batch_size": 1000}, device="cpu")
    model.learn(Interactions.from_columns(["ann"] * 8 + ["bob"], [f"i{j}" for j in range(8)] + ["i3"]))
    ann, bob = model.user_index.get("ann"), model.user_index.get("bob")
    ids = model.item_index.ids
    assert [ids[j] for j in model._win[ann]] == [f"i{j}" for j in range(2, 8)]
    assert model._win[bob].tolist()[:-1] == [-1] * 5 and ids[model._win[bob, -1]] == "i3"
    # one event at a time gives the same windows as one batch
    single = SASRec(**{**PARAMS, "batch_size": 1000}, device="cpu")
    for j in range(9):
        single.learn(Interactions.from_columns(["ann"] * 8 + ["bob"], [f"i{j}" for j in range(8)] + ["i3"]).select([j]))
    np.testing.assert_array_equal(single._win[:2], model._win[:2])


def test_user_vectors_are_the_stated_attention() -> None:
    """Known answer: the cached NumPy vector is the formula of the docstring, computed here in torch."""
    model = train(SASRec(**PARAMS, device="cpu"), cycle_stream(n_users=300))
    d, length = model.n_factors, model.max_len
    table = torch.from_numpy(state(model)["item_table"]).double()
    w = {k: torch.from_numpy(v.copy()).double() for k, v in model._mirrors().items() if k not in ("e", "b")}
    for user in ["u0-3", "u0-10", "u0-77"]:
        row = model.user_index.get(user)
        window = [j for j in model._win[row].tolist() if j >= 0]
        x, k = table[window, :d], len(window)
        keys = x @ w["wk"] + w["pos"][length - k :]
        z = w["pos_bias"][length - k :] + keys @ (w["wq"] @ x[-1]) / math.sqrt(d)
        expected = w["wv"] @ (torch.softmax(z, 0) @ x)
        got = model._user_vectors(np.array([row]))[0]
        np.testing.assert_allclose(got, expected.float().numpy(), rtol=1e-5, atol=1e-6)
        scores = model._score(np.array([row]))[0]
        np.testing.assert_allclose(
            scores, (table[:, :d] @ expected + table[:, d]).float().numpy(), rtol=1e-5, atol=1e-5
        )


def test_same_seed_same_model_on_cpu() -> None:
    events = cycle_stream(n_users=200)
    a = train(SASRec(**PARAMS, device="cpu"), events)
    b = train(SASRec(**PARAMS, device="cpu"), events)
    c = train(SASRec(**{**PARAMS, "seed": 12}, device="cpu"), events)
    assert a._version > 5
    assert_same_state(a, b)
    assert not np.array_equal(state(a)["item_table"], state(c)["item_table"])


def test_growing_tables_keep_learned_rows_and_optimiser_state() -> None:
    model = train(SASRec(**PARAMS, device="cpu"), cycle_stream(n_users=200))
    before = state(model)
    capacity = model._e.shape[0]
    model.add_items([f"new{j}" for j in range(3 * capacity)])
    assert model._e.shape[0] >= model.n_items > capacity
    after = state(model)
    for name in ("item_table", "item_table_adagrad", "item_counts", "attention", "attention_adagrad", "user_windows"):
        np.testing.assert_array_equal(after[name][: len(before[name])], before[name], err_msg=name)
    new_rows = after["item_table"][len(before["item_table"]) :]
    assert np.all(np.linalg.norm(new_rows[:, :-1], axis=1) > 0) and np.all(new_rows[:, -1] == 0)
    assert np.all(after["item_table_adagrad"][len(before["item_table"]) :] == 0)
    # the grown model goes on learning and ranks the new items too
    model.learn(Interactions.from_columns(["u0-1", "u0-2"], ["new5", "g0-1"]))
    assert len(model.recommend(["u0-1"], k=10_000).items[0]) == model.n_items - len(model.seen_items("u0-1"))


def test_save_load_then_continued_learning_equal(tmp_path) -> None:
    events = cycle_stream(n_users=300)
    half = len(events) // 2
    model = train(SASRec(**PARAMS, device="cpu"), events.select(np.arange(half)))
    assert model._n_buffered > 0  # waiting examples are part of the state
    path = model.save(tmp_path / "sasrec")
    assert sorted(p.name for p in path.iterdir()) == ["arrays.npz", "meta.json"]
    loaded = OnlineRecommender.load(path)
    assert isinstance(loaded, SASRec) and loaded.get_params() == model.get_params()
    assert_same_state(model, loaded)
    extra = Interactions.from_columns(["brand-new", "u0-1", "brand-new"], ["g0-1", "brand-new-item", "g0-2"])
    for m in (model, loaded):
        train(m, events.select(np.arange(half, len(events))), batch=7)
        m.learn(extra)
    assert_same_state(model, loaded)
    users = ["u0-1", "u0-2", "brand-new", "nobody"]
    before, after = model.recommend(users, k=10), loaded.recommend(users, k=10)
    assert before.items == after.items and before.scores == after.scores


def test_forget_user_erases_the_window_and_the_waiting_examples() -> None:
    model = train(SASRec(**{**PARAMS, "batch_size": 10_000}, device="cpu"), cycle_stream(n_users=100))
    row = model.user_index.get("u0-5")
    assert (model._win[row] >= 0).any() and row in model._buffered()[0]
    waiting = model._n_buffered
    mine = int(np.sum(model._buffered()[0] == row))
    model.forget_user("u0-5")
    assert (model._win[row] == -1).all() and row not in model._buffered()[0]
    assert model._n_buffered == waiting - mine


def test_evicted_items_leave_windows_and_waiting_examples() -> None:
    model = SASRec(**{**PARAMS, "batch_size": 10_000}, device="cpu")
    model.learn(
        Interactions.from_columns(["ann"] * 4 + ["bob"] * 2 + ["cid"] * 2, ["a", "b", "c", "d", "b", "e", "x", "y"])
    )
    b = model.item_index.get("b")
    model._drop_item_rows(np.array([b]))
    ids = model.item_index.ids
    ann, bob = model.user_index.get("ann"), model.user_index.get("bob")
    assert [ids[j] for j in model._win[ann] if j >= 0] == ["a", "c", "d"]
    assert [ids[j] for j in model._win[bob] if j >= 0] == ["e"]
    _, windows, targets, _ = model._buffered()
    assert b not in targets and not np.isin(windows, [b]).any()
    assert model._n_buffered == 1  # only cid's [x] -> y: each of ann's and bob's examples held b


def test_invalid_parameters() -> None:
    for bad in ({"n_factors": 0}, {"max_len": 0}, {"batch_size": 0}, {"n_negatives": 0}, {"n_steps": 0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            SASRec(**bad)
    with pytest.raises(ValueError, match="recency"):
        SASRec(recency=0.0)


def test_auto_device() -> None:
    model = SASRec()
    assert model.get_params()["device"] is None
    assert model.torch_device.type == ("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cpu_and_cuda_agree_and_cuda_is_deterministic() -> None:
    events = cycle_stream(n_users=400)
    cpu = train(SASRec(**PARAMS, device="cpu"), events)
    gpu = train(SASRec(**PARAMS, device="cuda"), events)
    assert gpu._e.device.type == "cuda"
    for name, value in state(cpu).items():
        if name != "generator_state":
            np.testing.assert_allclose(state(gpu)[name], value, rtol=1e-3, atol=1e-4, err_msg=name)
    users = sorted(set(events.users.tolist()))[:60]
    a, b = cpu.recommend(users, k=10), gpu.recommend(users, k=10)
    overlap = np.mean([len(set(x) & set(y)) / max(len(x), 1) for x, y in zip(a.items, b.items, strict=True)])
    assert overlap >= 0.9
    idx, _ = gpu.topk_device(users, k=10)
    assert idx.device.type == "cuda"
    assert [gpu.item_index.ids_of(row) for row in idx.cpu().tolist()] == b.items
    assert_same_state(gpu, train(SASRec(**PARAMS, device="cuda"), events))


def test_topk_device_ranks_as_recommend() -> None:
    model = train(SASRec(**PARAMS, device="cpu"), cycle_stream(n_users=300))
    users = ["u0-3", "u0-8", "nobody"]
    idx, vals = model.topk_device(users, k=8)
    recs = model.recommend(users, k=8)
    for user, row, items in zip(users, idx.cpu().tolist(), recs.items, strict=True):
        assert set(model.item_index.ids_of(row)) == set(items)
        assert not set(items) & model.seen_items(user)
    np.testing.assert_allclose(vals.cpu().numpy(), np.array(recs.scores), rtol=1e-6, atol=1e-6)
    idx, vals = model.topk_device(["u0-3"], k=1000)  # more than the eligible items: padded
    n_eligible = model.n_items - len(model.seen_items("u0-3"))
    assert (idx[0] >= 0).sum().item() == n_eligible and torch.isneginf(vals[0, n_eligible:]).all()
    assert model.topk_device(["u0-3"], k=0)[0].shape == (1, 0)
    with pytest.raises(ValueError, match="k must be"):
        model.topk_device(["u0-3"], k=-1)


def test_the_per_event_copies_follow_every_step() -> None:
    """The float64 copies are updated row by row after steps; they always equal the tables."""
    model = SASRec(**PARAMS, device="cpu")
    events = cycle_stream(n_users=200)
    for start in range(0, len(events), 20):  # steps between recommend calls, new items, an eviction
        model.learn(events.select(np.arange(start, min(start + 20, len(events)))))
        model.recommend([events.users[start]], k=3)
        if start == 400:
            model._drop_item_rows(np.array([3]))
    mirror, table = model._mirrors(), state(model)["item_table"].astype(np.float64)
    np.testing.assert_array_equal(mirror["e"], table[:, :-1])
    np.testing.assert_array_equal(mirror["b"], table[:, -1])
    np.testing.assert_array_equal(
        mirror["wq"], state(model)["attention"][model._layout["wq"][0] : model._layout["wq"][1]].reshape(16, 16)
    )

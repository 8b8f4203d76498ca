"""Smoke tests of the benchmarks (each in a tiny configuration, seconds) and of the ANN index wrapper."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import pytest

from bench import gpu, offline, reads, scale
from bench.__main__ import main
from models import Interactions, create
from models.ann import ANNRecommender
from models.biased_mf import BiasedMF
from models.isgd import ISGD
from models.torch_mf import TorchBPR

# -- the benchmarks, tiny -----------------------------------------------------------------------


def test_offline_tiny() -> None:
    cfg = dataclasses.replace(
        offline.config(quick=True),
        ml_events=1_500,
        ml_models=("popularity", "itemknn"),
        synthetic_events=3_000,
        synthetic_users=500,
        synthetic_items=300,
        synthetic_models=("isgd", "biased_mf"),
        synthetic_cap_s=0.5,
        river_sample_users=3,
        river_cap_s=0.3,
        numpy_cap_s=0.2,
    )
    result = offline.run(cfg)
    syn = result["synthetic"]
    assert syn["models"]["isgd"]["run"]["events_per_s"] > 0
    assert syn["models"]["biased_mf"]["run"]["events_per_s"] > 0  # it learns clicks as picks too
    assert syn["river"]["extrapolated"] is True and syn["river"]["events_per_s"] > 0
    assert syn["numpy_per_event"]["events"] > 0
    if "movielens" in result:  # the data set is found through STREAMREC_DATA_DIR (tests/conftest.py)
        ml = result["movielens"]
        knn = ml["models"]["itemknn"]
        assert knn["events_per_s"]["median"] > 0 and knn["vs_numpy_per_event"] > 0
        ref = ml["references"]["numpy_itemknn"]
        assert ref["events"] > 0 and ref["events_per_s"]["median"] > 0
        if ref["events"] == ml["events"]:  # the loop is the same model: the same hits
            assert ref["hr"] == pytest.approx(knn["median_run"]["hr"], abs=0.01)
        assert [t["target"].split(",")[1].strip() for t in result["targets"]] == ["popularity", "itemknn"]
    text = offline.markdown(result)
    assert "isgd" in text and "biased_mf" in text
    json.dumps(result)  # JSON-ready apart from NaN handling done by write_json


@pytest.mark.usefixtures("redis_server_binary")
def test_reads_tiny() -> None:
    cfg = dataclasses.replace(
        reads.config(quick=True),
        users=100,
        rate=2_000,
        paced_s=0.2,
        max_rate_s=0.05,
        breakdown_s=0.05,
        bench_requests=2_000,
        profile=False,
    )
    result = reads.run(cfg)
    assert result["paced"]["requests"] == 400
    assert result["paced"]["fallback_answers"] == 0
    assert result["document"]["median_bytes"] > 1_000  # a top-100 list with scores and reasons
    assert result["targets"][0]["ok"] in (True, False)
    assert "redis-benchmark" in reads.markdown(result)


@pytest.mark.usefixtures("redis_server_binary")
def test_redis_server_is_stopped_by_pid() -> None:
    server = reads.RedisServer().start()
    pid = server.pid
    assert pid is not None
    server.stop()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_scale_tiny() -> None:
    cfg = dataclasses.replace(
        scale.config(quick=True),
        sizes=(600,),
        n_factors=8,
        stream_users=1_000,
        train_events=5_000,
        batch_users=50,
        nprobes=(64,),
        state_models=("isgd", "popularity"),
        state_events=2_000,
    )
    result = scale.run(cfg)
    (fig,) = result["sizes"]
    assert fig["ann"][0]["recall"] > 0.8
    assert fig["ann_incremental"]["add_1000_items_s"] >= 0
    # 10 float32 factors (default n_factors), their Adagrad sums, the bias and its sum, ...
    assert result["state"]["models"]["isgd"]["bytes_per_item"] >= 40.0
    assert result["targets"][0]["ok"] is None  # 1M items not in this run
    assert "recall" in scale.markdown(result)


def test_catalogue_tiny() -> None:
    from bench import catalogue

    cfg = dataclasses.replace(
        catalogue.config(quick=True),
        sizes=(1_000, 10_000),
        models=("popularity", "itemknn"),
        exact_items=1_000,
        memory_items=2_000,
        warm_events=500,
        events=50,
    )
    result = catalogue.run(cfg)
    rows = {(r["model"], r["items"], r["exact"]) for r in result["rows"]}
    assert ("popularity", 10_000, True) in rows and ("popularity", 10_000, False) in rows  # reference in the same run
    assert ("itemknn", 10_000, False) in rows
    hr = {(r["model"], r["exact"]): r["hr_at_10"] for r in result["rows"] if r["items"] == 1_000}
    assert 0 < hr[("itemknn", False)] == hr[("itemknn", True)]  # its sparse ranking is exact
    assert result["memory_mib"]["itemknn"]["serving"] > 0
    assert result["targets"] and "events/s" in catalogue.markdown(result)


def test_long_stream_tiny() -> None:
    from bench import long_stream

    cfg = dataclasses.replace(long_stream.config(quick=True), sizes=(6_000,), warm_events=20_000, events=40)
    result = long_stream.run(cfg)
    labels = [r["label"] for r in result["rows"]]
    assert "itemknn, whole rows (reference)" in labels and "itemknn (default cap)" in labels  # both in one run
    assert all(r["warm_seconds"] > 0 and r["events_per_second"] > 0 for r in result["rows"])
    assert len(result["targets"]) == 1 and "HR@10" in long_stream.markdown(result)


def test_gpu_tiny() -> None:
    cfg = gpu.Config(
        n_users=500, n_items=300, batch_sizes=(200,), learn_events=600, topn_items=(400,),
        topn_train_events=1_000, topn_users=20, repeats=1, devices=("cpu",),
    )  # fmt: skip
    result = gpu.run(cfg)
    assert isinstance(result["cuda"], bool)
    cpu = result["devices"]["cpu"]
    assert cpu["learn"][0]["events_per_s"] > 0 and cpu["topn"][0]["seconds"]["median"] > 0
    assert "topk_device" in gpu.markdown(result)


def test_runner_writes_json_and_report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tiny = gpu.Config(
        n_users=300, n_items=200, batch_sizes=(100,), learn_events=200, topn_items=(300,),
        topn_train_events=500, topn_users=10, repeats=1, devices=("cpu",),
    )  # fmt: skip
    monkeypatch.setattr(gpu, "config", lambda quick=False: tiny)
    assert main(["--quick", "--only", "gpu", "--out", str(tmp_path)]) == 0
    doc = json.loads((tmp_path / "gpu.json").read_text())
    assert doc["mode"] == "quick" and doc["machine"]["cpu_count"] >= 1 and doc["error"] is None
    report = (tmp_path / "results.md").read_text()
    assert "## GPU" in report and "## Machine" in report and "Live pipeline" in report


# -- models/ann.py ---------------------------------------------------------------------------------


def _random_isgd(n_items: int, n_users: int, dim: int, seed: int = 0) -> tuple[ISGD, list[str]]:
    """ISGD whose factors are its N(0, 1) initial vectors (a learning rate too small to move them)."""
    model = ISGD(n_factors=dim, init_std=1.0, lr=1e-12, seed=seed)
    model.add_items([f"i{j}" for j in range(n_items)])
    rng = np.random.default_rng(seed)
    users = [f"u{j}" for j in range(n_users)]
    model.learn(Interactions.from_columns(users * 3, [f"i{j}" for j in rng.integers(0, n_items, 3 * n_users)]))
    return model, users


def test_ann_recall_on_random_factors() -> None:
    model, users = _random_isgd(n_items=3_000, n_users=100, dim=16)
    ann = ANNRecommender(model, nprobe=32, seed=0)
    recs = ann.recommend(users, k=10)
    p, q = model.factors()
    rows = model.user_index.lookup(users)
    exact, _ = scale.exact_top_k(p[rows], q, [sorted(model._seen[r]) for r in rows.tolist()], k=10)
    got = [model.item_index.lookup(items) for items in recs.items]
    assert scale.recall(got, exact) >= 0.9
    # scores are the model's inner products of the returned items, best first
    first = model.item_index.lookup(recs.items[0])
    assert np.allclose(recs.scores[0], q[first] @ p[rows[0]], atol=1e-4)
    assert recs.scores[0] == sorted(recs.scores[0], reverse=True)


def test_ann_excludes_seen_and_requested_items() -> None:
    model, users = _random_isgd(n_items=200, n_users=5, dim=8)
    ann = ANNRecommender(model, nprobe=64)
    user = users[0]
    exact = model.recommend([user], k=20, exclude_seen=False).items[0]
    banned = set(exact[:5])
    recs = ann.recommend([user], k=20, exclude={user: banned})
    assert not banned & set(recs.items[0])
    assert not model.seen_items(user) & set(recs.items[0])
    assert len(recs.items[0]) == 20
    with_seen = ann.recommend([user], k=20, exclude_seen=False).items[0]
    assert with_seen == exact  # a small catalogue, every list probed: the exact list


@pytest.mark.parametrize(
    "factory", [lambda: BiasedMF(n_factors=4, seed=1), lambda: TorchBPR(n_factors=4, device="cpu", seed=1)]
)
def test_ann_matches_models_with_biases(factory) -> None:
    model = factory()
    rng = np.random.default_rng(0)
    users = [f"u{j}" for j in rng.integers(0, 30, 600)]
    items = [f"i{j}" for j in rng.integers(0, 80, 600)]
    model.learn(Interactions.from_columns(users, items, ratings=rng.integers(1, 6, 600)))
    ann = ANNRecommender(model, nprobe=64)
    exact = model.recommend(["u1", "u2"], k=5)
    approx = ann.recommend(["u1", "u2"], k=5)
    assert approx.items == exact.items
    assert np.allclose(approx.scores, exact.scores, atol=1e-4)


def test_ann_cold_users_get_the_models_list() -> None:
    model, _ = _random_isgd(n_items=100, n_users=5, dim=4)
    ann = ANNRecommender(model)
    assert ann.recommend(["stranger"], k=3).items == model.recommend(["stranger"], k=3).items


def test_ann_follows_the_model_incrementally() -> None:
    model = ISGD(n_factors=8, seed=0)
    model.learn(Interactions.from_columns(["a", "b", "c"] * 10, [f"i{j % 12}" for j in range(30)]))
    ann = ANNRecommender(model)
    assert ann.n_indexed == 12
    ann.learn(Interactions.from_columns(["a", "d"], ["i3", "new"]))
    _, q = model.factors()
    assert ann.n_indexed == 13 and np.array_equal(ann._vectors[:13], q)
    ann.add_items(["x", "y"])
    assert ann.n_indexed == 15
    assert ann.recommend(["d"], k=15).items[0] and "new" not in ann.recommend(["d"], k=15).items[0]


def test_ann_drops_evicted_items() -> None:
    model = ISGD(n_factors=4, seed=0)
    if not hasattr(model, "set_capacity"):
        pytest.skip("models have no capacity caps in this tree")
    model.set_capacity(max_items=5)
    model.learn(Interactions.from_columns(["a"] * 5, [f"i{j}" for j in range(5)]))
    ann = ANNRecommender(model)
    ann.learn(Interactions.from_columns(["b", "b"], ["i7", "i8"]))  # evicts two items, reuses their rows
    recs = ann.recommend(["b"], k=10, exclude_seen=False).items[0]
    assert None not in recs and set(recs) <= set(model.item_index.ids)
    assert ann.n_indexed == 5


def test_ann_rejects_models_without_factors() -> None:
    with pytest.raises(TypeError, match="factors"):
        ANNRecommender(create("popularity"))
    model, _ = _random_isgd(n_items=20, n_users=2, dim=4)
    with pytest.raises(ValueError, match="k must be"):
        ANNRecommender(model).recommend(["u0"], k=-1)


def test_ann_answers_near_whole_catalogue_queries_exactly() -> None:
    model, users = _random_isgd(n_items=50, n_users=4, dim=4)
    ann = ANNRecommender(model, nprobe=1)  # one list probed: the exact path must answer
    assert ann.recommend(users, k=45).items == model.recommend(users, k=45).items


def test_split_quality_tiny(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Counting models split over workers that exchange increments score what one worker scores."""
    from bench import split_quality

    monkeypatch.setenv("STREAMREC_DATA_DIR", str(tmp_path))  # generated MovieLens-format data, never the real set
    cfg = split_quality.Config(models=("itemknn",), workers=(1, 3), stress_workers=(3,), limit=1500, exchange_every=300)
    result = split_quality.run(cfg)
    one, three = (r["hr"] for r in result["runs"])
    assert one > 0 and three == one  # exchanged once per second of event time: the counts add up exactly
    assert result["stress"][0]["exchanges"] == 4
    assert "3 workers" in split_quality.markdown(result)


def test_experiment_separation_tiny() -> None:
    from bench import experiment_separation

    cfg = dataclasses.replace(experiment_separation.config(quick=True), max_events=1_500, check_every=500)
    result = experiment_separation.run(cfg)
    for figures in result["logs"].values():
        assert figures["events"] == 1_500 and len(figures["checks"]) == 3
        assert set(figures["report"]["variants"]) == {"d", "p", "k", "dp", "dk"}
    assert "events to separate" in experiment_separation.markdown(result)


def test_live_eval_pipeline_cost_tiny() -> None:
    from bench import live_eval

    cfg = dataclasses.replace(live_eval.config(quick=True), cpu_events=2_000, n_users=200, n_items=300)
    cost = live_eval._pipeline_cpu(cfg, ("popularity", "itemknn"), "itemknn", live_eval.EXPERIMENT)
    assert cost["events"] == 2_000 and cost["off_us_per_event"] > 0 and 0 < cost["ratio"] < 2


def test_sharing_cost_measures_what_an_event_costs_its_worker_and_the_others() -> None:
    from bench import sharing_cost

    cfg = dataclasses.replace(sharing_cost.config(quick=True), warmup_events=300, batch=100, batches=2)
    result = sharing_cost.run(cfg)
    rows = {r["model"]: r for r in result["models"]}
    assert set(rows) == {"popularity", "itemknn"}
    assert all(r["bytes"] > 0 and r["receive_us"] > 0 and 0 < r["efficiency"]["64"] <= 1 for r in rows.values())
    assert "b: receive (us)" in sharing_cost.markdown(result)


def test_owned_state_compares_both_designs_and_each_holds_one_model() -> None:
    from bench import owned_state

    cfg = dataclasses.replace(owned_state.config(quick=True), workers=(1, 3), warmup_events=500, per_worker=100)
    result = owned_state.run(cfg)
    rows = {(r["model"], r["workers"]): r for r in result["rows"]}
    assert set(rows) == {(m, n) for m in ("popularity", "itemknn") for n in (1, 3)}
    assert all(r["same_as_one_model"] for r in rows.values())
    assert rows[("itemknn", 1)]["broadcast_us"] == 0.0 or rows[("itemknn", 1)]["broadcast_bytes"] == 0.0
    assert rows[("itemknn", 3)]["owned_bytes"] > 0 and rows[("itemknn", 3)]["broadcast_bytes"] > 0
    assert "owned: us per own event" in owned_state.markdown(result)


def test_learned_fusion_tiny(monkeypatch: pytest.MonkeyPatch) -> None:
    """The learned fusion starts at RRF (same hits without learning) and never exceeds what the candidates hold."""
    from bench import learned_fusion

    rng = np.random.default_rng(0)
    users = np.array([f"u{j}" for j in rng.integers(0, 40, 600)])
    items = np.array([f"i{j}" for j in rng.integers(0, 30, 600)])
    monkeypatch.setattr(learned_fusion, "load", lambda name: (users, items, np.arange(600.0)))
    still = learned_fusion.run("yoochoose", lr=0.0, fraction=1.0)
    assert still["HR@10"]["learned"] == still["HR@10"]["rrf"] > 0
    moved = learned_fusion.run("yoochoose", rules=True, trending=True, fraction=1.0)
    assert moved["warm_events"] == still["warm_events"] > 500
    assert max(moved["HR@10"].values()) <= moved["candidates_hold_item"] <= 1.0

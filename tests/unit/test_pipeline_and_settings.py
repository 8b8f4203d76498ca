"""The batch pipeline between the stream app and the models, and settings."""

from __future__ import annotations

import pytest

from streamrec.events import Interaction, ItemUpdate, Rating
from streamrec.pipeline import RecommendationPipeline
from streamrec.settings import Settings
from streamrec.store import RecList


def test_lists_exclude_seen_items_and_carry_newest_event_time() -> None:
    pipe = RecommendationPipeline.from_names(["popularity"], default_model="popularity", top_n=5)
    events = [
        Interaction("u1", "a", 10.0),
        Interaction("u2", "a", 11.0),
        Interaction("u2", "b", 12.0),
        Rating("u3", "c", 4.0, 13.0),
    ]
    out = pipe.process(events, ingest_ts=[100.0, 101.0, 102.0, 103.0])
    assert out.users == ["u1", "u2", "u3"]
    lists = out.lists["popularity"].as_dict()
    assert "a" not in lists["u1"] and not {"a", "b"} & set(lists["u2"]) and "c" not in lists["u3"]
    assert out.event_ts == {"u1": 10.0, "u2": 12.0, "u3": 13.0}
    assert out.ingest_ts["u2"] == 102.0
    docs = out.rec_lists("popularity", computed_at=200.0)
    assert all(is_default for _, is_default in docs)
    u2 = next(d for d, _ in docs if d.user_id == "u2")
    assert (u2.event_ts, u2.ingest_ts, u2.computed_at) == (12.0, 102.0, 200.0)
    assert RecList.from_json(u2.to_json()) == u2
    assert out.fallback_list().items[0] == "a"


def test_batches_report_the_time_each_model_spent() -> None:
    pipe = RecommendationPipeline.from_names(["popularity", "itemknn"], default_model="itemknn", top_n=5)
    out = pipe.process([Interaction("u1", "a", 1.0), Interaction("u1", "b", 2.0)])
    assert set(out.model_seconds) == {"popularity", "itemknn"}
    assert all(learn > 0 and recommend > 0 for learn, recommend in out.model_seconds.values())
    assert sum(learn for learn, _ in out.model_seconds.values()) <= out.learn_seconds


def test_catalogue_updates_reach_every_model_and_fallback_is_added() -> None:
    pipe = RecommendationPipeline.from_names(["popularity"], default_model="popularity", top_n=5)
    pipe.process([ItemUpdate("new", 1.0, "New", ("Drama",))])
    assert "new" in pipe.models["popularity"].item_index
    assert pipe.fallback_model.name == "adaptive_popularity" and "new" in pipe.fallback_model.item_index
    assert "_fallback" in pipe.all_models()
    old = RecommendationPipeline.from_names(["popularity"], default_model="popularity", fallback="popularity")
    assert old.fallback_model is old.models["popularity"] and "_fallback" not in old.all_models()


def test_the_fallback_survives_a_checkpoint_and_old_checkpoints_keep_popularity() -> None:
    pipe = RecommendationPipeline.from_names(["popularity", "itemknn"], default_model="itemknn")
    pipe.process([Interaction("u1", "a", 1.0), Interaction("u2", "a", 2.0), Interaction("u2", "b", 3.0)])
    again = RecommendationPipeline.from_saved(pipe.all_models(), "itemknn")
    assert again.fallback_model is pipe.fallback_model
    saved = {n: m for n, m in pipe.all_models().items() if n != "_fallback"}  # as saved before the adaptive one
    assert RecommendationPipeline.from_saved(saved, "itemknn").fallback_model is saved["popularity"]
    with pytest.raises(ValueError, match="STREAMREC_FALLBACK"):
        Settings.from_env({"STREAMREC_FALLBACK": "itemknn"})
    assert Settings.from_env({}).fallback == "adaptive_popularity"
    assert Settings.from_env({"STREAMREC_FALLBACK": "popularity"}).as_env()["STREAMREC_FALLBACK"] == "popularity"


def test_unknown_default_model_is_rejected() -> None:
    with pytest.raises(ValueError, match="default model"):
        RecommendationPipeline.from_names(["popularity"], default_model="nope")
    with pytest.raises(ValueError, match="STREAMREC_DEFAULT_MODEL"):
        Settings.from_env({"STREAMREC_MODELS": "popularity", "STREAMREC_DEFAULT_MODEL": "isgd"})


def test_settings_round_trip_through_environment() -> None:
    s = Settings.from_env(
        {
            "STREAMREC_MODELS": "popularity,isgd",
            "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1",
            "REDIS_URL": "redis://x",
            "STREAMREC_KEY_TTL": "60",
        }
    )
    again = Settings.from_env(s.as_env())
    assert again.models == s.models and again.default_model == "isgd" and again.key_ttl == 60
    assert again.kafka_bootstrap_servers == "127.0.0.1:1"


def test_repeats_let_lists_hold_seen_items_when_set() -> None:
    events = [Interaction("u1", "a", 1.0), Interaction("u2", "a", 2.0), Interaction("u2", "b", 3.0)]
    default = RecommendationPipeline.from_names(["itemknn"], default_model="itemknn", top_n=5)
    repeats = RecommendationPipeline.from_names(["itemknn"], default_model="itemknn", top_n=5, repeats=True)
    assert "a" not in default.process(events).lists["itemknn"].as_dict()["u1"]
    assert "a" in repeats.process(events).lists["itemknn"].as_dict()["u1"]
    assert Settings.from_env({}).repeats == "off"
    for mode in ("on", "unbought"):
        chosen = Settings.from_env({"STREAMREC_REPEATS": mode})
        assert chosen.repeats == mode and Settings.from_env(chosen.as_env()).repeats == mode
    with pytest.raises(ValueError, match="STREAMREC_REPEATS"):
        Settings.from_env({"STREAMREC_REPEATS": "yes please"})


def test_unbought_lets_viewed_items_back_but_never_a_bought_one() -> None:
    """A shop's "recently viewed": seen items may come back, bought ones never, and that moves with the user."""
    warm = [Interaction(f"w{n}", item, float(n), "view") for n in range(30) for item in ("a", "b", "c")]
    mine = [Interaction("u", "a", 100.0, "view"), Interaction("u", "b", 101.0, "view")]
    mine += [Interaction("u", "b", 102.0, "purchase")]
    lists = {}
    for mode in ("off", "on", "unbought"):
        pipeline = RecommendationPipeline.from_names(["itemknn"], default_model="itemknn", top_n=5, repeats=mode)
        lists[mode] = pipeline.process([*warm, *mine]).lists["itemknn"].as_dict()["u"]
        if mode == "unbought":
            assert pipeline.user_exclusions.export_users(["u"]) == {"u": {"bought": ["b"]}}
            later = pipeline.process([Interaction("u", "c", 103.0, "view")]).lists["itemknn"].as_dict()["u"]
            assert "b" not in later and "a" in later
            moved = RecommendationPipeline.from_names(["itemknn"], default_model="itemknn", top_n=5, repeats=mode)
            moved.user_exclusions.import_users(pipeline.user_exclusions.export_users(["u"]))
            assert moved.user_exclusions.of("u") == {"b"}
    assert not {"a", "b"} & set(lists["off"])
    assert {"a", "b"} <= set(lists["on"])
    assert "a" in lists["unbought"] and "b" not in lists["unbought"]
    with pytest.raises(ValueError, match="repeats"):
        RecommendationPipeline.from_names(["itemknn"], default_model="itemknn", repeats="sometimes")


def test_not_interested_is_taught_as_a_negative_to_the_models_that_learn_negatives_only() -> None:
    from streamrec.events import Interaction
    from streamrec.pipeline import RecommendationPipeline

    pipe = RecommendationPipeline.from_names(["popularity", "itemknn", "isgd"], "isgd", top_n=5)
    events = [Interaction(f"u{n % 7}", f"i{(n * 3) % 97}", float(n)) for n in range(300)]
    pipe.process(events)
    isgd, knn = pipe.models["isgd"], pipe.models["itemknn"]
    target = isgd.recommend(["u0"], k=1).items[0][0]
    score = float(isgd.predict(["u0"], [target])[0])
    knn_before = knn.recommend(["u0"], k=5).items
    out = pipe.process([Interaction("u0", target, 400.0 + n, "not_interested") for n in range(5)])
    assert float(isgd.predict(["u0"], [target])[0]) < score  # pushed away
    assert knn.recommend(["u0"], k=5).items == knn_before  # item-kNN cannot use it: unchanged
    assert target not in isgd.seen_items("u0") and out.n_events == 5 and not out.quality


def test_automatic_state_mode_asks_the_configured_instance_whether_it_shares() -> None:
    assert Settings(models=("popularity", "hybrid"), state="auto").state_mode() == "kafka"
    # a hybrid whose members include one that cannot share runs on one worker, with local state
    one_worker = {"hybrid": {"components": ["itemknn", "isgd"]}}
    assert Settings(models=("hybrid",), model_params=one_worker, state="auto").state_mode() == "local"
    assert Settings(models=("isgd",), state="auto").state_mode() == "local"

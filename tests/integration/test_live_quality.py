"""Live quality and experiments through the real broker, workers and Redis.

- One worker handling one event per batch gives, from Redis, exactly the
  figures of the offline backtest at freshness 0 with lists as written
  (``ServedLists(cached=True)``): the live check and the backtest are one protocol.
- Two workers over two partitions count every event once (none lost, none
  twice), as one worker does, and their figures stay close to one worker's.
- With an experiment, each user's plain key serves their variant's list and
  says which; ``streamrec experiment`` reports every variant.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import orjson
import pytest

from producers.publisher import EventPublisher
from streamrec.cli import main
from streamrec.experiments import Experiment
from streamrec.live_quality import summarise
from streamrec.settings import Settings
from streamrec.status import collect_status, format_status
from streamrec.store import RecsClient
from streamrec.topics import ensure_topics
from tests.integration.test_scale_out import TIMEOUT, ratings_of, scale_settings, start_worker
from tests.unit.test_live_quality import as_written_backtest

pytestmark = pytest.mark.integration

MODELS = ("popularity", "itemknn")
KS = (10, 20)


def _quality(settings) -> dict[str, float]:  # type: ignore[no-untyped-def]
    client = RecsClient(settings.redis_url, settings.key_prefix)
    try:
        return client.quality()
    finally:
        client.close()


def _one_worker_processes(settings: Settings, events: list, folder: Path) -> None:
    """One worker takes ``events`` from fresh topics and stops cleanly."""
    ensure_topics(settings)
    worker = start_worker(settings, folder, "w")
    try:
        with EventPublisher(settings) as publisher:
            publisher.publish(events, progress=False)
        worker.wait_processed(len(events), TIMEOUT)
    finally:
        assert worker.stop() == 0, worker.log_tail()


def test_one_event_per_batch_gives_the_backtest_figures_exactly(
    isolated_settings, movielens_format_dir, tmp_path
) -> None:
    settings = replace(scale_settings(isolated_settings, "live1", partitions=1, list_depth=20, top_n=20), batch_size=1)
    ratings = ratings_of(movielens_format_dir, 1500)
    _one_worker_processes(settings, ratings, tmp_path)
    live = summarise(_quality(settings), KS)
    offline = as_written_backtest(ratings)
    for model in MODELS:
        figures = offline.models[model].overall
        assert live[model]["all"]["scored"] == figures["scored"] == len(ratings)
        for k in KS:
            assert live[model]["all"][f"HR@{k}"] == pytest.approx(figures[f"HR@{k}"], abs=1e-9), model
        assert live[model]["all"]["MRR"] == pytest.approx(figures["MRR"], abs=1e-6), model


def _run(settings, ratings, folder, workers: int) -> dict[str, float]:  # type: ignore[no-untyped-def]
    ensure_topics(settings)
    procs = [start_worker(settings, folder, f"w{n}") for n in range(workers)]
    try:
        with EventPublisher(settings) as publisher:
            publisher.publish(ratings, rate=1500, progress=False)
        procs[0].wait_processed(len(ratings), TIMEOUT)  # the counters are every worker's
    finally:
        for proc in procs:
            assert proc.stop() == 0, proc.log_tail()
    return _quality(settings)


def test_two_workers_count_every_event_once_and_serve_each_users_variant(
    isolated_settings, movielens_format_dir, tmp_path, capsys
) -> None:
    text = "e1: knn=itemknn 1, pop=popularity 1, mix=itemknn/popularity 1"
    experiment = Experiment.parse(text)
    ratings = ratings_of(movielens_format_dir, 3000)
    one = scale_settings(isolated_settings, "one", partitions=2, experiment=text)
    two = scale_settings(isolated_settings, "two", partitions=2, experiment=text)
    by_one = summarise(_run(one, ratings, tmp_path / "one", 1), KS)
    counts = _run(two, ratings, tmp_path / "two", 2)
    by_two = summarise(counts, KS)
    for model in (*MODELS, "mix", "exp:knn", "exp:pop", "exp:mix"):
        assert by_one[model]["all"]["scored"] > 0
    assert by_one["mix"]["all"]["scored"] == by_one["exp:mix"]["all"]["scored"]  # only its users see that list
    for model in MODELS:
        assert by_one[model]["all"]["scored"] == len(ratings)
        unknown = by_two[model].get("-", {}).get("unknown", 0.0)  # users whose partition moved mid-run
        assert by_two[model]["all"]["scored"] + unknown == len(ratings), model
        assert unknown <= 0.005 * len(ratings), unknown  # lists of moved users are read from Redis
        assert abs(by_two[model]["all"]["HR@10"] - by_one[model]["all"]["HR@10"]) < 0.02, model
    assert sum(by_two[f"exp:{v.name}"]["all"]["scored"] for v in experiment.variants) + by_two["itemknn"].get(
        "-", {}
    ).get("unknown", 0.0) == len(ratings)
    client = RecsClient(two.redis_url, two.key_prefix)
    try:
        users = sorted({r.user_id for r in ratings})
        for user in users[:200]:
            doc = orjson.loads(client.redis.get(client.layout.user_key(user)))
            variant = experiment.assign(user)
            assert doc["variant"] == variant.name
            assert doc["model"] == (variant.name if variant.interleaved else variant.models[0])
            assert client.get(user).variant == variant.name  # the read step says which variant it serves
        reached = client.variant_users("e1", [v.name for v in experiment.variants])
    finally:
        client.close()
    assert abs(sum(reached.values()) - len(users)) <= 0.03 * len(users)  # HyperLogLog estimates
    env = {**two.as_env()}
    with pytest.MonkeyPatch.context() as mp:
        for name, value in env.items():
            mp.setenv(name, value)
        assert main(["experiment", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report["variants"]) == {"knn", "pop", "mix"}
    assert report["variants"]["mix"]["wins"]["itemknn"] + report["variants"]["mix"]["wins"]["popularity"] > 0
    text_status = format_status(collect_status(replace(two)))
    assert "live quality" in text_status and "exp:mix" in text_status


def test_exposures_joined_with_later_events_give_the_click_through_the_test_built(isolated_settings, tmp_path) -> None:
    """200 users are shown five items each; 50 click a shown item, 20 buy one, the rest click elsewhere.

    Exposures go through ``RecsClient.record_exposure`` (the asynchronous log) while the events go through
    the publisher: the two topics may reach the worker in any order, and the join must count the same.
    """
    from producers.exposures import ExposureLog
    from streamrec.events import Interaction
    from tests.integration.test_hostile_producers import deadletters

    settings = scale_settings(isolated_settings, "shown", partitions=2)
    ensure_topics(settings)
    users = [f"u{n}" for n in range(200)]
    shown = ["i1", "i2", "i3", "i4", "i5"]
    start = time.time()
    first = [Interaction(u, "i9", start - 60 + n * 0.01, "view") for n, u in enumerate(users)]
    later = []  # 10 s after the exposures (recorded at the wall clock's time), well within their window
    for n, u in enumerate(users):
        if n % 10 == 0:
            later.append(Interaction(u, shown[3], start + 10 + n * 0.01, "purchase"))
        elif n % 4 == 0:
            later.append(Interaction(u, shown[2], start + 10 + n * 0.01, "click"))
        else:
            later.append(Interaction(u, "i8", start + 10 + n * 0.01, "click"))
    worker = start_worker(settings, tmp_path, "w")
    try:
        with EventPublisher(settings) as publisher:
            publisher.publish(first, progress=False)
            publisher.send_raw("exposure", b'{"user_id": "u1", "item_ids": [], "timestamp": 1}', b"u1")
        exposures = ExposureLog(settings)
        client = RecsClient(settings.redis_url, settings.key_prefix, exposures=exposures)
        try:
            for n, u in enumerate(users):
                assert client.record_exposure(u, shown, variant="v1", exposure_id=f"page-{n}")
            client.record_exposure(users[0], shown, variant="v1", exposure_id="page-0")  # a repeat
        finally:
            exposures.close()
            client.close()
        with EventPublisher(settings) as publisher:
            publisher.publish(later, progress=False)
        worker.wait_processed(len(first) + 1 + len(users) + 1 + len(later), TIMEOUT)
    finally:
        assert worker.stop() == 0, worker.log_tail()
    counts = _quality(settings)
    assert counts["shown:v1|-|exposures"] == 200 and counts["shown:-|-|duplicate"] == 1
    bought = sum(1 for n in range(200) if n % 10 == 0)
    clicked = sum(1 for n in range(200) if n % 4 == 0 and n % 10 != 0)
    assert counts["shown:v1|-|converted"] == bought
    assert counts["shown:v1|-|clicked"] == clicked
    assert counts["shown:v1|p2|events"] == clicked and counts["shown:v1|p3|events"] == bought
    [(value, reason)] = deadletters(settings, 1)
    assert b'"item_ids": []' in value and "item_ids" in reason


def test_an_interleaving_finds_the_model_built_to_be_better(isolated_settings, tmp_path, capsys) -> None:
    """Users walk along item chains: item-kNN learns the next item, popularity cannot; every user is interleaved."""
    from tests.unit.test_live_quality import _log

    text = "il: mix=itemknn/popularity 1"
    settings = scale_settings(isolated_settings, "il", partitions=1, experiment=text)
    events = _log(4000, users=200)
    _one_worker_processes(settings, events, tmp_path)
    with pytest.MonkeyPatch.context() as mp:
        for name, value in settings.as_env().items():
            mp.setenv(name, value)
        assert main(["experiment", "--json"]) == 0
    mix = json.loads(capsys.readouterr().out)["variants"]["mix"]
    assert mix["scored"] == len(events)
    assert mix["winner"] == "itemknn" and mix["share_ci"][0] > 0.5, mix  # the 95% interval excludes a tie


def test_quality_windows_sum_the_minutes_each_covers_and_the_totals(isolated_settings) -> None:
    client = RecsClient(isolated_settings.redis_url, isolated_settings.key_prefix)
    try:
        now = 1_800_000_000.0
        minute = int(now // 60)
        for ago, scored in ((0, 1.0), (3, 2.0), (100, 4.0), (2000, 8.0)):
            client.redis.hset(client.layout.quality_key(minute - ago), "m|5+|scored", scored)
        client.redis.hset(client.layout.quality_key(), "m|5+|scored", 99.0)
        windows = client.quality_windows({"5m": 5, "1h": 60, "1d": 1440, "all": None}, now=now)
        assert {label: counts.get("m|5+|scored", 0.0) for label, counts in windows.items()} == {
            "5m": 3.0, "1h": 3.0, "1d": 7.0, "all": 99.0
        }  # fmt: skip
        assert client.quality(5, now=now) == windows["5m"] and client.quality() == windows["all"]
    finally:
        client.close()

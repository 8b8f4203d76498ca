"""Controlling what is served, through the live path: a real broker, the worker, Redis (single and cluster).

While clicks flow: a hidden item leaves every kind of list and comes back when
made available again; an item expires by time alone; category reads return
``k`` items of the category and follow a tag change; ``not_interested`` removes
an item from its user's reads at once and for good; explicit and per-request
exclusions hold; malformed catalogue and feedback events are dead-lettered;
negative feedback is never learned as a positive.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import pytest

from producers.publisher import EventPublisher
from streamrec.cli import main
from streamrec.events import Exclusion, Interaction, ItemUpdate
from streamrec.redis_cluster import LocalRedisCluster
from streamrec.settings import Settings
from streamrec.store import RecList, RecsClient
from streamrec.topics import ensure_topics
from streamrec.workerproc import WorkerProcess
from tests.integration.publishing import PacedPublisher

pytestmark = pytest.mark.integration

N_ITEMS = 60
USERS = [f"u{n}" for n in range(40)]
TIMEOUT = 180.0
#: Items whose similar-items lists the checks read.
SIMILAR_OF = ["i3", "i4", "i5", "i6"]


def _category(n: int) -> str:
    return "shoes" if n < N_ITEMS // 2 else "hats"


def _clicks(n_events: int, seed: int, start: float) -> list[Interaction]:
    """Clicks with a skew (low item numbers are popular), one event per 1 ms of event time."""
    rng = random.Random(seed)
    out = []
    for j in range(n_events):
        item = min(int(rng.expovariate(1 / 12)), N_ITEMS - 1)
        out.append(Interaction(rng.choice(USERS), f"i{item}", start + j * 0.001, "click"))
    return out


def _wait(predicate: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll ``predicate`` until it holds; return the seconds it took."""
    started = time.monotonic()
    while not predicate():
        assert time.monotonic() - started < timeout, f"timed out after {timeout} s waiting until {what}"
        time.sleep(0.02)
    return time.monotonic() - started


@contextmanager
def _served(settings: Settings, tmp_path: Path) -> Iterator[tuple[WorkerProcess, RecsClient, EventPublisher]]:
    ensure_topics(settings)
    worker = WorkerProcess(settings, tmp_path / "worker.log").start()
    client = RecsClient(settings.redis_url or "", settings.key_prefix, k=10)
    publisher = EventPublisher(settings)
    try:
        yield worker, client, publisher
    finally:
        publisher.close()
        client.close()
        assert worker.stop() == 0, worker.log_tail()


def _every_list(client: RecsClient, users: list[str], item: str) -> list[str]:
    """Which kinds of list still serve ``item`` to any of ``users``."""
    leaks = []
    for user in users:
        for name, rec in (
            ("user", client.read(user, k=50)),
            ("model", client.read(user, "popularity", k=50)),
            ("category", client.read(user, k=50, categories=["shoes", "hats"])),
        ):
            if rec is not None and item in rec.items:
                leaks.append(f"{name}:{user}")
    fallback = client.read("someone-new", k=50)
    if fallback is not None and item in fallback.items:
        leaks.append("fallback")
    for other in SIMILAR_OF:
        rec = client.similar(other, k=50)
        if rec is not None and item in rec.items:
            leaks.append(f"similar:{other}")
    return leaks


def _stored(client: RecsClient, user: str, model: str | None = None) -> RecList | None:
    raw = client.redis.get(client.layout.user_key(user, model))
    return None if raw is None else RecList.from_json(raw)


def _check_controls(settings: Settings, tmp_path: Path) -> None:
    now = time.time()
    catalogue = [ItemUpdate(f"i{n}", now, tags=(_category(n),)) for n in range(N_ITEMS)]
    ghost = "ghost"  # hidden before anything is known of it, then catalogued and clicked by everyone
    with _served(settings, tmp_path) as (worker, client, publisher):
        publisher.publish([ItemUpdate(ghost, now, available=False)], progress=False)
        publisher.publish(catalogue, progress=False)
        warm = _clicks(3000, seed=1, start=now - 3600)
        warm += [Interaction(u, ghost, now - 3000 + n, "purchase") for n, u in enumerate(USERS)]
        publisher.publish([*warm, ItemUpdate(ghost, now, tags=("shoes",))], progress=False)  # no availability: kept
        worker.wait_processed(1 + len(catalogue) + len(warm) + 1, TIMEOUT)
        flow = PacedPublisher(settings, _clicks(20_000, seed=2, start=now - 1800), rate=600).start()
        try:
            users = USERS[:8]
            hot = "i0"  # the most clicked item: in the fallback, the category lists and most users' lists
            _wait(lambda: bool(_every_list(client, users, hot)), 30, f"{hot} is served")
            assert not _every_list(client, USERS, ghost), "an item hidden before it was first seen is served"
            stored_fallback = RecList.from_json(client.redis.get(client.layout.fallback_key()))
            assert ghost not in stored_fallback.items  # the models do not even propose it
            _wait(lambda: all(f"similar:{i}" in _every_list(client, [], hot) for i in SIMILAR_OF), 30, "similar items")
            similar = client.similar("i0", k=10)
            assert similar is not None and len(similar.items) == 10 and "i0" not in similar.items
            assert similar.scores == sorted(similar.scores, reverse=True) and similar.model == "itemknn"

            # 1. hide while events flow: gone from every kind of list, then back
            hidden_at = time.time()
            publisher.publish([ItemUpdate(hot, hidden_at, tags=("shoes",), available=False)], progress=False)
            gone_after = _wait(lambda: not _every_list(client, users, hot), 10, f"{hot} is hidden everywhere")
            print(f"hide to gone from every list: {gone_after * 1000:.0f} ms (includes the read sweep)")
            for _ in range(20):  # stays hidden while new lists are written
                assert not _every_list(client, users, hot)
                time.sleep(0.05)
            # the models stop proposing it: lists written after the hide (stored, before any read filter) lack it
            _wait(lambda: any(
                (rec := _stored(client, u, "popularity")) is not None and rec.computed_at > hidden_at + 0.5
                for u in USERS), 30, "a list is written after the hide")  # fmt: skip
            for u in USERS:
                for model in ("popularity", "itemknn"):
                    rec = _stored(client, u, model)
                    if rec is not None and rec.computed_at > hidden_at + 0.5:
                        assert hot not in rec.items, f"{model} proposed a hidden item to {u}"
            publisher.publish([ItemUpdate(hot, time.time(), tags=("shoes",), available=True)], progress=False)
            _wait(lambda: bool(_every_list(client, users, hot)), 10, f"{hot} is served again")

            # 2. expiry by time alone (no further event)
            expiring = "i1"
            update = ItemUpdate(expiring, time.time(), tags=("shoes",), expires_at=time.time() + 3)
            publisher.publish([update], progress=False)
            expires_at = time.time() + 3
            _wait(lambda: not _every_list(client, users, expiring), 15, f"{expiring} expired")
            assert time.time() >= expires_at - 0.5, "expired before its time"

            # 3. categories: k items, all of the category; a tag change is followed at once
            for user in users:
                rec = client.read(user, k=10, categories=["hats"])
                assert rec is not None and len(rec.items) == 10
                assert all(int(i[1:]) >= N_ITEMS // 2 for i in rec.items), rec.items
            moved = "i2"
            publisher.publish([ItemUpdate(moved, time.time(), tags=("hats",))], progress=False)
            _wait(
                lambda: all(moved not in (client.read(u, k=50, categories=["shoes"]) or RecList("", "", [], [])).items
                            for u in users),
                10, f"{moved} left the shoes reads",
            )  # fmt: skip

            # 4. not interested: gone at once, never back while the user's lists are rewritten
            user = users[1]
            before = client.read(user, k=10)
            assert before is not None and before.items
            target = before.items[0]
            publisher.publish([Interaction(user, target, time.time() - 1, "not_interested")], progress=False)
            _wait(lambda: target not in client.read(user, k=50).items, 10, "not_interested is followed")
            last = _stored(client, user)
            for _ in range(60):
                assert target not in client.read(user, k=50).items
                assert target not in client.read(user, "popularity", k=50).items
                time.sleep(0.05)
            newest = _stored(client, user)
            if newest is not None and last is not None and newest.computed_at > last.computed_at:
                assert target not in newest.items, "the worker put a not-interested item back in a new list"

            # 5. explicit exclusion (not feedback) and per-request exclusions
            other = users[3]
            shown = client.read(other, k=10).items
            publisher.publish([Exclusion(other, (shown[0], shown[1]), time.time())], progress=False)
            _wait(lambda: not {shown[0], shown[1]} & set(client.read(other, k=50).items), 10, "the exclusion holds")
            leave_out = client.read(other, k=10, exclude=shown[2:5]).items
            assert not set(shown[2:5]) & set(leave_out) and len(leave_out) == 10
            publisher.publish([Exclusion(other, (shown[0],), time.time(), action="remove")], progress=False)
            _wait(lambda: shown[0] in client.read(other, k=50).items, 10, "a removed exclusion serves the item again")
        finally:
            flow.join()

        # 6. bad input is dead-lettered, and negative feedback is never learned as a positive
        before = client.stats()
        publisher.send_raw("item", b'{"item_id": "i3", "timestamp": 1700000000, "available": "no"}', key=b"i3")
        publisher.send_raw("exclusion", b'{"user_id": "u1", "timestamp": 1700000000, "item_ids": []}', key=b"u1")
        publisher.send_raw("interaction", b'{"user_id": "u1", "item_id": "i3", "timestamp": 1, "event_type": "meh"}')
        cold = "never-clicked"
        publisher.publish([ItemUpdate(cold, time.time(), tags=("hats",))], progress=False)
        publisher.publish(
            [Interaction(f"hater{n}", cold, time.time() - 1, "not_interested") for n in range(300)], progress=False
        )
        expected = 2 + len(catalogue) + len(warm) + 20_000 + 7 + 3 + 1 + 300  # 7: the control events of 1. to 5.
        stats = worker.wait_processed(expected, TIMEOUT)
        assert stats["events_deadlettered"] - before.get("events_deadlettered", 0) >= 3
        fallback = client.read("someone-else-new", k=50)
        assert fallback is not None and cold not in fallback.items  # 300 "not interested" raised nothing

        # 7. a Redis that lost its functions (a restart): the worker loads them again to hide, a reader to read
        shown = client.read("someone-else-new", k=5).items[0]
        client.redis.function_flush()
        update = ItemUpdate(shown, time.time(), tags=(_category(int(shown[1:])),), available=False)
        publisher.publish([update], progress=False)
        _wait(lambda: shown not in client.read("someone-else-new", k=50).items, 20, "a hide after FUNCTION FLUSH")
        assert worker.alive(), worker.log_tail()


def test_controls_through_the_live_path(
    isolated_settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = replace(isolated_settings, models=("popularity", "itemknn"), default_model="itemknn")
    _check_controls(settings, tmp_path)
    # the command line reads through the same step
    for name, value in settings.as_env().items():
        monkeypatch.setenv(name, value)
    capsys.readouterr()
    assert main(["recs", "u5", "--category", "hats", "--k", "5", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert len(doc["items"]) == 5 and all(int(i[1:]) >= N_ITEMS // 2 for i in doc["items"])
    assert main(["similar", "i3", "--k", "4", "--exclude", "i0"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("items similar to i3 (model itemknn)") and " i0 " not in out


def test_controls_through_the_live_path_on_a_redis_cluster(isolated_settings: Settings, tmp_path: Path) -> None:
    with LocalRedisCluster(tmp_path / "cluster") as cluster:
        settings = replace(
            isolated_settings, models=("popularity", "itemknn"), default_model="itemknn", redis_url=cluster.url
        )
        _check_controls(settings, tmp_path)


def test_unbought_serves_viewed_items_again_but_never_a_bought_one(isolated_settings: Settings, tmp_path: Path) -> None:
    """``STREAMREC_REPEATS=unbought`` through the live path: a shop's "recently viewed", without what was bought."""
    settings = replace(isolated_settings, models=("popularity", "itemknn"), default_model="itemknn", repeats="unbought")
    now = time.time()
    with _served(settings, tmp_path) as (worker, client, publisher):
        warm = _clicks(2000, seed=3, start=now - 3600)
        publisher.publish(warm, progress=False)
        worker.wait_processed(len(warm), TIMEOUT)
        user, viewed, bought = "buyer", ["i1", "i2", "i3"], "i2"
        mine = [Interaction(user, item, now - 60 + n, "view") for n, item in enumerate(viewed)]
        mine.append(Interaction(user, bought, now - 50, "purchase"))
        publisher.publish(mine, progress=False)
        worker.wait_processed(len(warm) + len(mine), TIMEOUT)

        def written() -> bool:
            rec = _stored(client, user)
            return rec is not None and rec.event_ts is not None and rec.event_ts >= now - 50

        _wait(written, 30, "the list after the purchase is written")
        stored = _stored(client, user)
        assert stored is not None and bought not in stored.items, stored.items
        assert {"i1", "i3"} & set(stored.items), f"no viewed item came back: {stored.items}"
        read = client.read(user, k=50)
        assert read is not None and bought not in read.items
        assert worker.alive(), worker.log_tail()

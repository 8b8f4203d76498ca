"""Controls with two workers over two partitions, and a hand-over: every worker's follower writes hides
(versioned, so neither brings back an older state), and a user's exclusions move with their partition."""

from __future__ import annotations

import random
import time

import pytest

from producers.publisher import EventPublisher
from streamrec.events import Exclusion, Interaction, ItemUpdate
from streamrec.store import RecList, RecsClient
from streamrec.topics import ensure_topics
from tests.integration.test_scale_out import TIMEOUT, owned_partitions, scale_settings, start_worker

pytestmark = pytest.mark.integration

USERS = [f"s{n}" for n in range(30)]


def _clicks(n: int, seed: int, start: float) -> list[Interaction]:
    rng = random.Random(seed)
    return [
        Interaction(rng.choice(USERS), f"i{min(int(rng.expovariate(1 / 8)), 39)}", start + j * 0.01, "click")
        for j in range(n)
    ]


def _wait(predicate, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.05)


def _written_at(client: RecsClient, user: str) -> float:
    raw = client.redis.get(client.layout.user_key(user, "itemknn"))
    return 0.0 if raw is None else RecList.from_json(raw).computed_at


def test_controls_over_two_workers_and_a_hand_over(isolated_settings, tmp_path) -> None:  # type: ignore[no-untyped-def]
    settings = scale_settings(isolated_settings, "ctl", partitions=2)
    ensure_topics(settings)
    first, second = start_worker(settings, tmp_path, "a"), start_worker(settings, tmp_path, "b")
    client = RecsClient(settings.redis_url or "", settings.key_prefix, k=50)
    publisher = EventPublisher(settings)
    now = time.time()
    try:
        catalogue = [ItemUpdate(f"i{n}", now, tags=("low" if n < 20 else "high",)) for n in range(40)]
        warm = _clicks(2000, 1, now - 600)
        publisher.publish([*catalogue, *warm], progress=False)
        first.wait_processed(len(catalogue) + len(warm), TIMEOUT)
        _wait(lambda: owned_partitions(tmp_path / "a.log") and owned_partitions(tmp_path / "b.log"), 60, "both own")

        def served(item: str) -> bool:
            reads = [client.read(u) for u in USERS] + [client.read("nobody")]
            return any(rec is not None and item in rec.items for rec in reads)

        _wait(lambda: served("i0"), 30, "i0 is served")
        publisher.publish([ItemUpdate("i0", time.time(), tags=("low",), available=False)], progress=False)
        _wait(lambda: not served("i0"), 10, "i0 is hidden for every user of both workers")

        # a user's "not interested" and exclusion, then the user's partition moves to the other worker
        user = "s3"
        shown = client.read(user).items
        publisher.publish(
            [Interaction(user, shown[0], time.time() - 1, "not_interested"), Exclusion(user, (shown[1],), time.time())],
            progress=False,
        )
        _wait(lambda: not {shown[0], shown[1]} & set(client.read(user).items), 10, "the user's exclusions")
        time.sleep(1.5)  # a commit (every 0.5 s) carries the user's exclusions to the changelog
        assert second.stop() == 0, second.log_tail()
        _wait(lambda: owned_partitions(tmp_path / "a.log") == {0, 1}, 60, "the first worker owns both partitions")
        handed_over = time.time()
        more = [Interaction(user, f"i{n}", time.time() - 1, "click") for n in range(25, 30)]
        publisher.publish(more, progress=False)
        _wait(lambda: _written_at(client, user) > handed_over, 30, "the user's list is written by the new owner")
        for model in ("itemknn", "popularity"):
            rec = RecList.from_json(client.redis.get(client.layout.user_key(user, model)))
            assert not {shown[0], shown[1], "i0"} & set(rec.items), f"{model}: the new owner forgot the exclusions"
        assert not {shown[0], shown[1]} & set(client.read(user).items)

        publisher.publish([ItemUpdate("i0", time.time(), tags=("low",), available=True)], progress=False)
        _wait(lambda: served("i0"), 15, "i0 is served again")
    finally:
        publisher.close()
        client.close()
        assert first.stop() == 0, first.log_tail()
        second.kill()

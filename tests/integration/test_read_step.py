"""The one read step, against every kind of list, on a single Redis and on a three-node Redis Cluster.

Each check writes one list of each kind in :data:`streamrec.serving.list_kinds.LIST_KINDS`
(a new kind is covered by adding it there), sets controls the way the worker
writes them (:class:`streamrec.store.ControlWrites`), and reads through
:class:`streamrec.store.RecsClient`, i.e. ``FCALL_RO streamrec_read``.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest

from streamrec.redis_cluster import LocalRedisCluster
from streamrec.services import LocalRedis
from streamrec.serving.list_kinds import CATEGORY, LIST_KINDS, ListKind
from streamrec.serving.list_kinds import list_kind as list_kind_named
from streamrec.serving.read_step import ReadCall, load_library
from streamrec.store import ControlWrites, RecList, RecsClient

pytestmark = pytest.mark.integration

#: The stored list: items tagged with the category under test and X or Y; "h" has no category tag.
ITEMS = ["a", "b", "c", "d", "e", "f", "g", "h"]
TAGS = [[CATEGORY, "X"], [CATEGORY, "Y"], [CATEGORY, "X"], [CATEGORY, "Y"], [CATEGORY, "X"], [CATEGORY, "Y"],
        [CATEGORY, "X"], ["X"]]  # fmt: skip
#: The filler lists (fallback and the category's list) hold other items.
FILLER = ["p", "q", "r"]


@pytest.fixture(scope="module", params=["single", "cluster"])
def redis_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp(f"redis-{request.param}")
    server = LocalRedis(folder) if request.param == "single" else LocalRedisCluster(folder)
    with server:
        yield server.url


@pytest.fixture
def client(redis_url: str) -> Iterator[RecsClient]:
    client = RecsClient(redis_url, f"rt{uuid.uuid4().hex[:8]}", k=5)
    load_library(client.redis)  # the worker loads it at start; these checks write as the worker does
    try:
        yield client
    finally:
        client.close()


def _owner(kind: ListKind) -> str:
    return "sku-under-test" if kind.name == "similar" else f"user-{kind.name}"


def _store(client: RecsClient, kind: ListKind, controls: ControlWrites | None = None) -> str:
    """Write the list of ``kind``, the fillers every read may use, and ``controls``; return the list's owner."""
    owner = _owner(kind)
    layout = client.layout
    doc = RecList(owner, "itemknn", ITEMS, [float(10 - j) for j in range(len(ITEMS))], tags=TAGS)
    filler = RecList("", "popularity", FILLER, [3.0, 2.0, 1.0], tags=[[CATEGORY, "X"]] * 3)
    pipe = client.redis.pipeline(transaction=False)
    if kind.name not in ("fallback", "category"):  # the fillers of every read: the fallback and the category list
        for key in layout.fallback_keys():
            pipe.set(key, filler.to_json())
        ControlWrites(categories={CATEGORY: filler}).add(pipe, layout)
    for key in kind.keys(layout, CATEGORY if kind.name == "category" else owner):
        pipe.set(key, doc.to_json())
    if controls is not None:
        controls.add(pipe, layout)
    pipe.execute()
    return owner


def _read(client: RecsClient, kind: ListKind, **options: object) -> list[str]:
    rec = kind.read(client, _owner(kind), **options)
    assert rec is not None, f"{kind.name}: nothing served"
    return rec.items


KINDS = pytest.mark.parametrize("kind", LIST_KINDS, ids=[k.name for k in LIST_KINDS])


@KINDS
def test_a_list_is_served_as_stored(client: RecsClient, kind: ListKind) -> None:
    _store(client, kind)
    expected = [i for i in ITEMS if kind.name != "category" or i != "h"][:5]
    assert _read(client, kind) == expected


@KINDS
def test_hidden_items_leave_every_list_and_come_back(client: RecsClient, kind: ListKind) -> None:
    _store(client, kind, ControlWrites(hidden={"a": 0.0, "c": 0.0, "p": 0.0}))
    got = _read(client, kind, k=20)
    assert "a" not in got and "c" not in got and "p" not in got
    ControlWrites(hidden={"a": None}).add(pipe := client.redis.pipeline(transaction=False), client.layout)
    pipe.execute()
    got = _read(client, kind, k=20)
    assert "a" in got and "c" not in got


@KINDS
def test_expiry_by_time_alone(client: RecsClient, kind: ListKind) -> None:
    now = time.time()
    _store(client, kind, ControlWrites(hidden={"a": now - 1.0, "b": now + 1.5, "d": now + 3600.0}))
    got = _read(client, kind, k=20)
    assert "a" not in got and "b" in got and "d" in got
    time.sleep(max(0.0, now + 1.6 - time.time()))  # no event: the server's clock alone
    got = _read(client, kind, k=20)
    assert "b" not in got and "d" in got


@KINDS
def test_request_exclusions(client: RecsClient, kind: ListKind) -> None:
    _store(client, kind)
    got = _read(client, kind, k=20, exclude=["a", "b", "q"])
    assert not {"a", "b", "q"} & set(got) and "c" in got


@KINDS
def test_user_exclusions_and_not_interested(client: RecsClient, kind: ListKind) -> None:
    owner = _owner(kind)
    controls = ControlWrites(
        user_sets=[(owner, "not-interested", "add", ("a",)), (owner, "excluded", "add", ("b", "p"))]
    )
    _store(client, kind, controls)
    got = _read(client, kind, k=20)
    if kind.per_user:
        assert not {"a", "b", "p"} & set(got) and "c" in got
        assert "a" in _read_as(client, kind, "someone-else")
    else:  # a similar-items read is for an item, not a user: a user's sets do not apply to it
        assert {"a", "b"} <= set(got)


def _read_as(client: RecsClient, kind: ListKind, user: str) -> list[str]:
    """What another user (without the sets) is served from a list of the same kind."""
    layout = client.layout
    doc = RecList(user, "itemknn", ITEMS, [1.0] * len(ITEMS), tags=TAGS)
    for key in kind.keys(layout, CATEGORY if kind.name == "category" else user):
        client.redis.set(key, doc.to_json())
    rec = kind.read(client, user, k=20)
    assert rec is not None
    return rec.items


@KINDS
def test_categories_keep_only_their_items_and_follow_tag_changes(client: RecsClient, kind: ListKind) -> None:
    _store(client, kind)
    got = _read(client, kind, k=20, categories=[CATEGORY])
    assert "h" not in got and "a" in got
    # "a" leaves the category after the list was written: the override in its bucket copies wins at once
    ControlWrites(tag_overrides={"a": ("Z",)}).add(pipe := client.redis.pipeline(transaction=False), client.layout)
    pipe.execute()
    got = _read(client, kind, k=20, categories=[CATEGORY])
    assert "a" not in got and "b" in got


@KINDS
def test_short_answers_are_filled_through_the_same_filter(client: RecsClient, kind: ListKind) -> None:
    _store(client, kind, ControlWrites(hidden={"q": 0.0}))
    rec = kind.read(client, _owner(kind), k=20, categories=[CATEGORY])
    assert rec is not None
    assert "q" not in rec.items and "h" not in rec.items
    if kind.name not in ("category", "fallback"):  # their list is the filler itself
        assert rec.items[-2:] == ["p", "r"] and rec.filled == 2


@KINDS
def test_at_most_m_per_category(client: RecsClient, kind: ListKind) -> None:
    _store(client, kind)
    got = _read(client, kind, k=20, per_category=2)
    # a and b fill the category under test (every item but h carries it); h is the second of X
    assert got == (["a", "b"] if kind.name == "category" else ["a", "b", "h"])


def test_similar_reads_leave_out_the_item_itself(client: RecsClient) -> None:
    layout = client.layout
    client.redis.set(layout.similar_key("a"), RecList("a", "itemknn", ["a", "b"], [1.0, 0.5]).to_json())
    rec = client.similar("a", k=5)
    assert rec is not None and rec.items == ["b"]


def test_similar_reads_for_a_user_leave_out_their_exclusions(client: RecsClient) -> None:
    """A user's sets are in the user's hash slot: ``similar(..., user_id=)`` reads them first and leaves them out."""
    kind = list_kind_named("similar")
    user = "user-on-a-product-page"
    sets = [(user, "not-interested", "add", ("a",)), (user, "excluded", "add", ("b",))]
    owner = _store(client, kind, ControlWrites(user_sets=sets, hidden={"c": 0.0}))
    got = client.similar(owner, k=20, user_id=user, exclude=["d"]).items
    assert not {"a", "b", "c", "d"} & set(got) and "e" in got
    assert {"a", "b"} <= set(client.similar(owner, k=20, user_id="someone-else").items)


def test_unknown_category_returns_nothing_rather_than_an_error(client: RecsClient) -> None:
    _store(client, LIST_KINDS[0])
    rec = client.read(_owner(LIST_KINDS[0]), categories=["no-such-category"], k=5)
    assert rec is not None and rec.items == []


def test_the_documented_call_is_the_one_the_client_makes(client: RecsClient) -> None:
    """What another language sends (the read protocol's key order and arguments) gives the same answer."""
    kind = LIST_KINDS[0]
    owner = _store(client, kind, ControlWrites(hidden={"b": 0.0}))
    layout = client.layout
    bucket = layout.bucket(owner)
    call = ReadCall(
        [layout.user_key(owner), *layout.control_keys(bucket, owner)],
        [f"{layout.prefix}:fallback:{layout.tag(bucket)}"],
        k=5,
        leave_out=["c"],
    )
    raw = client.redis.fcall_ro(*call.command()[1:])
    assert b'"items":["a","d","e","f","g"]' in raw
    assert client.read(owner, k=5, exclude=["c"]).items == ["a", "d", "e", "f", "g"]


def test_an_older_availability_write_never_brings_back_an_older_state(client: RecsClient) -> None:
    """Workers follow the catalogue at their own pace: a write carries its event's offset, and older ones lose."""
    kind = LIST_KINDS[0]
    _store(client, kind, ControlWrites(hidden={"a": 0.0}, versions={"a": 10}))

    def write(controls: ControlWrites) -> None:
        pipe = client.redis.pipeline(transaction=False)
        controls.add(pipe, client.layout)
        pipe.execute()

    write(ControlWrites(hidden={"a": None}, versions={"a": 9}))  # a slower worker's older "available again"
    assert "a" not in _read(client, kind, k=20)
    write(ControlWrites(hidden={"a": None}, versions={"a": 11}))
    assert "a" in _read(client, kind, k=20)


def test_many_users_in_one_pipeline_through_the_same_step(client: RecsClient) -> None:
    """``get_many`` pipelines one call per user (a cluster pipeline groups them by slot)."""
    users = [f"many-{n}" for n in range(40)]  # spread over many buckets, hence slots
    pipe = client.redis.pipeline(transaction=False)
    for user in users[:-1]:
        pipe.set(client.layout.user_key(user), RecList(user, "itemknn", ITEMS, [1.0] * len(ITEMS), tags=TAGS).to_json())
    ControlWrites(hidden={"a": 0.0}).add(pipe, client.layout)
    pipe.execute()
    got = client.get_many(users, k=3)
    assert [got[u].items for u in users[:-1]] == [["b", "c", "d"]] * (len(users) - 1)
    assert got[users[-1]] is None  # no list, and get_many does not fill from the fallback


def test_times_come_back_to_the_microsecond(client: RecsClient) -> None:
    """The reply spells the document's times as stored (Lua's cjson would round them to 14 digits)."""
    now = time.time()
    doc = RecList("t", "itemknn", ["a"], [1.0], computed_at=now, event_ts=now - 60.123456, ingest_ts=now - 1e-6)
    client.redis.set(client.layout.user_key("t"), doc.to_json())
    rec = client.read("t")
    assert rec is not None and (rec.computed_at, rec.event_ts, rec.ingest_ts) == (now, now - 60.123456, now - 1e-6)

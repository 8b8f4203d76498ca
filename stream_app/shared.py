"""A worker's part of the distributed model state: its partitions' users, everyone's item increments.

:class:`SharedState` drives the topics of :mod:`stream_app.state` for one
worker process:

- **start**: the item state is bootstrapped from the newest snapshot and the
  updates topic after it; a follower then keeps adding the other workers'
  increments (within about a second of their commits);
- **partitions assigned** (Faust's rebalance callback): each new partition's
  users are restored from the changelog, and its event offsets from the
  partition's marker, before any of its events is processed (:meth:`ready`);
- **commit** (every ``STREAMREC_CHECKPOINT_INTERVAL``, on revocation and on
  stop): one Kafka transaction with this worker's item increments, the state
  of every user its batches touched, the offsets markers and the consumer
  group's offsets;
- **partitions revoked**: a commit, then the partitions' users are dropped
  from the local models (the new owner restores them from the changelog).

The worker that owns partition 0 also writes an item-state snapshot every
``STREAMREC_SNAPSHOT_INTERVAL`` seconds, so that a starting worker replays
only the increments after it.

Every configured model must share its state (``shares_state``); the stream
app checks this at start-up.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

import orjson

from models import OnlineRecommender
from models.sharing import ItemDelta, UserStates
from stream_app.owners import HeldPieces, ItemOwners
from stream_app.state import (
    StateWriter,
    UpdatesFollower,
    WorkerFenced,
    new_worker_id,
    read_partitions_state,
    read_snapshot,
    stop_reader,
    worker_slot,
    write_snapshot,
)
from streamrec.settings import Settings

__all__ = ["CatalogueFollower", "SharedState"]

log = logging.getLogger("streamrec.shared")


class SharedState:
    """One worker's side of the state that travels through Kafka (see the module docstring)."""

    def __init__(
        self,
        settings: Settings,
        models: Mapping[str, OnlineRecommender],
        lock: asyncio.Lock,
        event_topics: Iterable[str],
        user_parts: Mapping[str, Any] | None = None,
    ) -> None:
        unsharing = [name for name, m in models.items() if not m.shares_state]
        if unsharing:
            raise ValueError(
                f"model(s) {', '.join(unsharing)} cannot share state across workers; "
                "run them with local checkpoints (STREAMREC_STATE=local, one worker)"
            )
        self.item_owned = settings.item_state == "owned"
        unmerging = [name for name, m in models.items() if not m.merges_item_deltas]
        if self.item_owned and unmerging:
            raise ValueError(
                f"model(s) {', '.join(unmerging)} cannot cut and merge their item increments by item; "
                "run them with STREAMREC_ITEM_STATE=broadcast"
            )
        self.settings = settings
        self.models = dict(models)
        for model in self.models.values():
            model.begin_sharing()  # increments from here on: the state starts empty and comes from Kafka
        self.lock = lock
        self.event_topics = list(event_topics)
        #: per-user state beside the models that moves with the user's partition (name -> an object with
        #: ``export_users``, ``import_users`` and ``drop_users``, e.g. the worker's event-id filter)
        self.user_parts = dict(user_parts or {})
        #: called with the users of partitions handed off (what the worker keeps of them beside the models)
        self.on_drop: list[Callable[[list[str]], None]] = []
        self.worker_id = new_worker_id()
        self.writer = StateWriter(settings, self.worker_id, worker_slot(settings))
        self.follower: UpdatesFollower | None = None
        self.user_partition: dict[str, int] = {}
        self.touched: dict[int, set[str]] = {}
        self.forgotten: dict[int, set[str]] = {}
        self.owned: set[int] = set()
        self.applied: dict[str, dict[int, int]] = {}  # event topic -> partition -> next offset
        self._restoring: dict[int, asyncio.Task[None]] = {}
        self._snapshot_skip: tuple[str, int] | None = None  # (origin, sequence) a snapshot included
        self._unsent: list[dict[str, ItemDelta]] = []  # increments of commits that failed: sent with the next
        self._suspended: set[int] = set()  # revoked, users kept until the new assignment says
        self._commit_lock = asyncio.Lock()  # one transaction at a time
        self._inflight: set[asyncio.Future[int]] = set()  # commits that outlive a cancelled caller
        self.handed_over = False  # a rebalance took the partitions during a stop: no commit after it
        #: awaited after a commit's state is taken and before it is sent (``strict``: a periodic commit): the
        #: worker writes the lists of the events the commit includes to Redis, or raises to hold the commit back
        self.before_send: Callable[[bool], Awaitable[None]] | None = None
        #: called when another worker fenced this one's transactions (the worker stops: see WorkerFenced)
        self.on_fenced: Callable[[WorkerFenced], None] | None = None
        self._last_snapshot = time.monotonic()
        #: item state owned by item (STREAMREC_ITEM_STATE=owned): the parts this worker merges, and the pieces of
        #: increments the local item state holds that merged records will hold too (origin -> part -> [(sequence,
        #: pieces)]): this worker's own, and those a snapshot it started from held
        self.owners = ItemOwners(settings, self.models) if self.item_owned else None
        self._held = HeldPieces(own=self.worker_id)
        #: what sharing cost this worker so far (the stream app adds them to its counters)
        self.counters: dict[str, float] = {
            "restored_users": 0,
            "deltas_applied": 0,
            "apply_seconds": 0.0,
            "commits": 0,
            "collect_seconds": 0.0,
            "users_written": 0,
        }

    # -- start and stop -------------------------------------------------------------------

    async def start(self) -> None:
        """Bootstrap the item state (snapshot, then the updates after it) and follow the updates topic."""
        await self.writer.start()
        start_offset = None
        snapshot = await read_snapshot(self.settings)
        if snapshot is not None:
            manifest, deltas = snapshot
            mode = manifest.get("item_state", "broadcast")
            if mode != self.settings.item_state:
                raise ValueError(
                    f"the item state in Kafka was written with STREAMREC_ITEM_STATE={mode}; keep that setting, "
                    "or start from empty state topics (streamrec reset)"
                )
            async with self.lock:
                for name, delta in deltas.items():
                    if not self._held.load(name, delta) and name in self.models:
                        self.models[name].import_items(delta)
            start_offset = int(manifest["updates_offset"])
            self._snapshot_skip = (manifest["origin"], int(manifest["sequence"]))
            log.info("item state from snapshot %s (updates from offset %d)", manifest["snapshot_id"], start_offset)
        kind = "item-merged" if self.item_owned else "model-updates"
        batched = self._apply_batch if self.item_owned else None
        self.follower = UpdatesFollower(self.settings, self._apply, self._skip, start_offset, kind, batched)
        await self.follower.start()
        await self.follower.caught_up.wait()
        log.info("item state caught up with the updates topic at offset %d", self.follower.position)

    async def stop(self) -> None:
        if self.owners is not None:
            await self.owners.stop()
        if self._inflight:  # a commit whose caller was cancelled finishes before its producer closes
            await asyncio.gather(*self._inflight, return_exceptions=True)
        if self.follower is not None:
            await self.follower.stop()
        await self.writer.stop()

    def _skip(self, header: Mapping[str, Any]) -> bool:
        if self.item_owned:
            return False  # a merge holds every worker's pieces: _apply_batch takes the held ones back
        if header.get("origin") == self.worker_id:
            return True  # our own increments are in the local models already
        if self._snapshot_skip is not None and header.get("origin") == self._snapshot_skip[0]:
            return int(header.get("sequence", 0)) <= self._snapshot_skip[1]
        return False

    async def _apply(self, deltas: Mapping[str, ItemDelta], next_offset: int, header: Mapping[str, Any]) -> None:
        # shielded: a cancelled follower must not leave a thread adding increments after the lock is released
        await asyncio.shield(self._apply_locked(deltas, next_offset, header))

    async def _apply_locked(self, deltas: Mapping[str, ItemDelta], next_offset: int, header: Mapping[str, Any]) -> None:
        async with self.lock:
            started = time.perf_counter()
            await asyncio.to_thread(self._apply_now, deltas)  # broadcast only: owned merges come in batches
            self.counters["apply_seconds"] += time.perf_counter() - started
            assert self.follower is not None
            self.follower.position = next_offset  # under the lock: a snapshot sees deltas and position together
        self.counters["deltas_applied"] += 1

    async def _apply_batch(self, records: list[tuple[dict[str, ItemDelta], dict[str, Any]]], next_offset: int) -> None:
        """The item owners' merges of one fetch, less the held pieces, joined per model: one apply (or two) each."""
        await asyncio.shield(self._apply_batch_locked(records, next_offset))

    async def _apply_batch_locked(
        self, records: list[tuple[dict[str, ItemDelta], dict[str, Any]]], next_offset: int
    ) -> None:
        async with self.lock:
            started = time.perf_counter()
            # a fetch may hold several merges of one part (they share items): each round holds one per part at most
            rounds: list[list[dict[str, list[ItemDelta]]]] = []
            seen: dict[int, int] = {}
            for deltas, header in records:
                part = int(header.get("part", -1))
                n = seen[part] = seen.get(part, -1) + 1
                if n == len(rounds):
                    rounds.append([])
                rounds[n].append(self._held.less(self.models, deltas, header))
            for netted in rounds:
                await asyncio.to_thread(self._apply_joined, netted)
            self.counters["apply_seconds"] += time.perf_counter() - started
            assert self.follower is not None
            self.follower.position = next_offset
        self.counters["deltas_applied"] += len(records)

    def _apply_joined(self, netted: list[dict[str, list[ItemDelta]]]) -> None:
        """Apply, per model, the k-th delta of every record's netted list joined into one (parts hold no item twice)."""
        for name, model in self.models.items():
            lists = [n[name] for n in netted if name in n]
            for k in range(max((len(x) for x in lists), default=0)):
                model.apply_item_delta(model.join_item_deltas([x[k] for x in lists if len(x) > k]))

    def _apply_now(self, deltas: Mapping[str, ItemDelta]) -> None:
        for name, delta in deltas.items():
            model = self.models.get(name)
            if model is not None:
                model.apply_item_delta(delta)

    # -- partitions -----------------------------------------------------------------------

    async def assign(self, partitions: Iterable[int]) -> None:
        """The new assignment (Faust's callback): drop the users of partitions gone, restore the new ones.

        Kafka revokes every partition at each rebalance and then assigns
        the new set; partitions kept across it are neither dropped nor
        restored.
        """
        wanted = set(partitions)
        gone = self._suspended - wanted
        self._suspended = set()
        if gone:
            async with self.lock:
                self._drop(gone)
        if self.owners is not None:
            await self.owners.assign(wanted)  # item part p goes with partition p of the events
        new = sorted(wanted - self.owned)
        if new:
            self.owned.update(new)
            task = asyncio.create_task(self._restore(new))  # one reader for every new partition
            for p in new:
                self._restoring[p] = task

    async def ready(self, partitions: Iterable[int]) -> None:
        """Wait until the users of ``partitions`` are restored (before processing their events)."""
        tasks = [self._restoring[p] for p in set(partitions) if p in self._restoring]
        if tasks:
            await asyncio.gather(*tasks)

    async def _restore(self, partitions: list[int]) -> None:
        started = time.perf_counter()
        states = await read_partitions_state(self.settings, partitions)
        by_model: dict[str, dict[str, dict[str, Any]]] = {name: {} for name in self.models}
        for partition, state in states.items():
            for user, doc in state.users.items():
                for name, record in doc.get("models", {}).items():
                    if name in by_model:
                        by_model[name][user] = record
                self.user_partition[user] = partition
        parts: dict[str, dict[str, Any]] = {name: {} for name in self.user_parts}
        for state in states.values():
            for user, doc in state.users.items():
                for name in parts:
                    if doc.get(name) is not None:
                        parts[name][user] = doc[name]
        async with self.lock:
            for name, records in by_model.items():
                if records:
                    self.models[name].import_users(UserStates.from_records(self.models[name].name, records))
            for name, records in parts.items():
                if records:
                    self.user_parts[name].import_users(records)
        for partition, state in states.items():
            for topic in self.event_topics:
                if topic in state.offsets:
                    self.applied.setdefault(topic, {})[partition] = state.offsets[topic]
            self.counters["restored_users"] += len(state.users)
            self._restoring.pop(partition, None)
        seconds = time.perf_counter() - started
        for partition, state in states.items():
            log.info(
                "partition %d restored: %d users, offsets %s (%.2f s)",
                partition,
                len(state.users),
                state.offsets,
                seconds,
            )

    async def revoke(self, partitions: Iterable[int]) -> None:
        """Faust's callback: commit everything learned; the users stay until the new assignment is known."""
        gone = set(partitions) & self.owned
        if not gone:
            return
        for p in gone:
            task = self._restoring.pop(p, None)
            if task is not None:
                task.cancel()
                self.owned.discard(p)  # never restored: nothing to keep or commit
        await self.commit(strict=False)
        self._suspended |= gone & self.owned

    async def hand_over(self, partitions: Iterable[int]) -> None:
        """A last commit of everything learned, after which this worker writes no state (it is stopping).

        Events handled after it (the last batch of a stop) are replayed by the
        partitions' next owner from the offsets committed here.
        """
        if set(partitions) & self.owned:
            log.info("partitions %s leave while stopping: committing what is learned", sorted(partitions))
            sequence = await self.commit(strict=False)
            log.info("hand-over commit %d written", sequence)
        self.handed_over = True

    def _drop(self, partitions: set[int]) -> None:
        """Forget the users of ``partitions`` (their new owner restores them from the changelog)."""
        users = [u for u, p in self.user_partition.items() if p in partitions]
        for model in self.models.values():
            model.drop_users(users)
        for part in self.user_parts.values():
            part.drop_users(users)
        for drop in self.on_drop:
            drop(users)
        for u in users:
            del self.user_partition[u]
        for p in partitions:
            self.owned.discard(p)
            self.touched.pop(p, None)
            self.forgotten.pop(p, None)
            for topic in self.applied.values():
                topic.pop(p, None)
        log.info("partitions %s handed off: %d users dropped", sorted(partitions), len(users))

    # -- events ---------------------------------------------------------------------------

    def note(self, user: str, partition: int) -> None:
        """An event of ``user`` arrived on ``partition``: their state goes to that changelog partition."""
        self.user_partition[user] = partition
        self.touched.setdefault(partition, set()).add(user)
        gone = self.forgotten.get(partition)
        if gone is not None:
            gone.discard(user)  # back after a forget: the new state replaces the tombstone

    def note_forgotten(self, user: str, partition: int) -> None:
        """``user`` asked to be forgotten: their changelog entry is deleted at the next commit."""
        self.forgotten.setdefault(partition, set()).add(user)
        touched = self.touched.get(partition)
        if touched is not None:
            touched.discard(user)

    # -- commits --------------------------------------------------------------------------

    async def commit(self, strict: bool = True) -> int:
        """One transaction: increments, touched users' states, markers and offsets (see the module docstring).

        The commit runs to its end even when its caller is cancelled (Faust
        cancels the agent and rebalance callbacks of a worker that stops): a
        commit cut short after it took the models' increments, and before it
        sent them, would lose them while a later commit still wrote the
        offsets of their events. The soak found exactly that: 663 events whose
        users' states were in Kafka but whose item increments were not.
        """
        task = asyncio.ensure_future(self._serial_commit(strict))
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)
        return await asyncio.shield(task)

    async def _serial_commit(self, strict: bool) -> int:
        async with self._commit_lock:
            return await self._commit(strict)

    async def _commit(self, strict: bool = True) -> int:
        if self.handed_over:
            return 0  # the partitions went to other workers during a stop: they replay what came after
        snapshot_due = 0 in self.owned and time.monotonic() - self._last_snapshot >= self.settings.snapshot_interval
        async with self.lock:
            started = time.perf_counter()
            deltas, users = await asyncio.to_thread(self._collect)
            self.counters["collect_seconds"] += time.perf_counter() - started
            self.counters["users_written"] += sum(len(us) for us in users.values())
            # no marker for a partition still being restored: it would replace the one the restore is reading with {}
            ready = [p for p in self.owned if p not in self._restoring]
            markers = {p: {t: parts[p] for t, parts in self.applied.items() if p in parts} for p in ready}
            offsets = {(t, p): o for t, parts in self.applied.items() for p, o in parts.items() if p in self.owned}
            touched, forgotten = self.touched, self.forgotten
            self.touched, self.forgotten = {}, {}
            batches = [*self._unsent, deltas]
            pieces, sequence_next = None, self.writer.sequence + 1
            if self.item_owned:  # cut by item part, and held until the parts' merges come back
                pieces = await asyncio.to_thread(self._cut, batches)
                self._held.hold(self.worker_id, pieces, sequence_next)
            # a snapshot holds exactly what this commit publishes: taken in the same hold of the lock
            whole = {name: model.export_items() for name, model in self.models.items()} if snapshot_due else None
            if whole is not None and self.item_owned:
                whole.update(self._held.entries())
            position = self.follower.position if self.follower is not None else 0
        try:
            if self.before_send is not None:
                await self.before_send(strict)
            if pieces is not None:
                sequence = await self.writer.commit([], users, markers, offsets, pieces)
            else:
                sequence = await self.writer.commit(batches, users, markers, offsets)
        except BaseException as exc:
            # nothing was committed: the next commit carries these increments and users again
            if pieces is not None:
                self._held.unhold(self.worker_id, sequence_next)
            self._unsent = batches
            for p, us in touched.items():
                self.touched.setdefault(p, set()).update(us)
            for p, us in forgotten.items():
                self.forgotten.setdefault(p, set()).update(us)
            if isinstance(exc, WorkerFenced) and self.on_fenced is not None:
                self.on_fenced(exc)  # no next commit: another worker owns what this one had not committed
            raise
        self._unsent = []
        self.counters["commits"] += 1
        if whole is not None and sequence:
            await self._send_snapshot(whole, position, sequence)
        return sequence

    def _cut(self, batches: list[dict[str, ItemDelta]]) -> dict[int, dict[str, ItemDelta]]:
        """Every model's increments of ``batches`` cut by item part, one merged piece per part and model."""
        by_part: dict[int, dict[str, list[ItemDelta]]] = {}
        for batch in batches:
            for name, delta in batch.items():
                if delta.is_empty():
                    continue
                for part, piece in self.models[name].split_item_delta(delta, self.settings.topic_partitions).items():
                    by_part.setdefault(part, {}).setdefault(name, []).append(piece)
        return {
            part: {
                name: ds[0] if len(ds) == 1 else self.models[name].merge_item_deltas(ds) for name, ds in named.items()
            }
            for part, named in by_part.items()
        }

    def owner_counters(self) -> dict[str, float]:
        """What owning item parts cost this worker (zeros when item state is broadcast)."""
        return self.owners.counters() if self.owners is not None else {}

    def _collect(self) -> tuple[dict[str, ItemDelta], dict[int, dict[str, bytes | None]]]:
        deltas = {name: model.take_item_delta() for name, model in self.models.items()}
        users: dict[int, dict[str, bytes | None]] = {}
        for p, us in self.touched.items():
            if p not in self.owned:
                continue
            wanted = sorted(us)
            docs: dict[str, dict[str, Any]] = {u: {"models": {}} for u in wanted}
            for name, model in self.models.items():
                for user, record in model.export_users(wanted).records().items():
                    docs[user]["models"][name] = record
            for name, part in self.user_parts.items():
                for user, record in part.export_users(wanted).items():
                    docs[user][name] = record
            users[p] = {u: orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY) for u, doc in docs.items()}
        for p, us in self.forgotten.items():
            if p in self.owned:
                users.setdefault(p, {}).update({u: None for u in us})  # tombstones
        return deltas, users

    async def _send_snapshot(self, whole: Mapping[str, ItemDelta], position: int, sequence: int) -> None:
        """Write the item state taken at commit ``sequence`` (it includes the updates before ``position``)."""
        chunks = await asyncio.to_thread(write_snapshot, whole)
        manifest = {
            "snapshot_id": f"{self.worker_id}-{sequence}",
            "origin": self.worker_id,
            "sequence": sequence,
            "updates_offset": position,
            "chunks": len(chunks),
            "at": time.time(),
            "item_state": self.settings.item_state,
        }
        await self.writer.send_snapshot(chunks, manifest)
        self._last_snapshot = time.monotonic()
        log.info("item-state snapshot %s: %d chunks, updates offset %d", manifest["snapshot_id"], len(chunks), position)


class CatalogueFollower:
    """Reads the whole items topic (every partition, from the beginning) into ``add`` as it grows.

    Every worker needs the whole catalogue, which the items topic (keyed by
    item) spreads over partitions: no consumer group, each worker reads all.
    Adding an item twice is harmless, so a restart reads it again from the start.

    ``availability``, when given, receives ``(update, offset)`` for every update
    that sets an item's availability as soon as it is read. ``add`` (which waits
    for the models' lock, held while a batch is learned) runs in a task of its
    own, in order, fed through a bounded queue: reading the next updates, and so
    the next hides, never waits for the models.
    """

    #: Batches of updates read and not yet added, at most (then reading waits for the models).
    QUEUED = 64

    def __init__(self, settings: Settings, topics: Iterable[str], add: Any, availability: Any = None) -> None:
        self.settings = settings
        self.topics = list(topics)
        self.add = add
        self.availability = availability
        self.added = 0
        self._task: asyncio.Task[None] | None = None
        self._adder: asyncio.Task[None] | None = None
        self._queue: asyncio.Queue[list[Any]] = asyncio.Queue(maxsize=self.QUEUED)
        self._consumer: Any = None

    async def start(self) -> None:
        from aiokafka import AIOKafkaConsumer

        from stream_app.state import _client_kwargs

        if not self.topics:
            return
        # subscribed without a group: every partition of the topics is assigned, from the earliest offset (the
        # partitions were looked up in metadata the consumer had not fetched: it assigned nothing, and no model
        # ever held the catalogue in a worker with state in Kafka)
        self._consumer = AIOKafkaConsumer(
            group_id=None, enable_auto_commit=False, auto_offset_reset="earliest", **_client_kwargs(self.settings)
        )
        await self._consumer.start()
        self._consumer.subscribe(self.topics)
        self._adder = asyncio.create_task(self._add_in_order())
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        from streamrec.events import InvalidEvent, decode

        while True:
            try:
                batch = await self._consumer.getmany(timeout_ms=500, max_records=1000)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("reading the items topic failed; retrying")
                await asyncio.sleep(1.0)
                continue
            updates = []
            versioned = []
            for messages in batch.values():
                for message in messages:
                    try:
                        update = decode(message.value, "item", self.settings.limits)
                    except InvalidEvent:
                        continue  # the agent of the partition's owner dead-letters it
                    updates.append(update)
                    if update.sets_availability:  # type: ignore[union-attr]
                        versioned.append((update, message.offset))
            if versioned and self.availability is not None:
                try:
                    await self.availability(versioned)
                except Exception:
                    log.exception("writing the availability of %d items failed; the worker retries", len(versioned))
            if updates:
                await self._queue.put(updates)

    async def _add_in_order(self) -> None:
        while True:
            updates = await self._queue.get()
            try:
                await self.add(updates)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("adding %d catalogue updates to the models failed", len(updates))
                continue
            self.added += len(updates)

    async def stop(self) -> None:
        await stop_reader(self._task, self._consumer)
        await stop_reader(self._adder, None)

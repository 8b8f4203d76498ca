"""What the agent does with one micro-batch: decode, dead-letter, learn, write.

:class:`StreamWorker` is deliberately thin: decoding is :mod:`streamrec.events`,
the models are driven by :class:`streamrec.pipeline.RecommendationPipeline`
(run in a thread so the event loop keeps fetching), and lists go to Redis
through :class:`streamrec.store.AsyncRecSink`.

Model state is crash-safe and, with ``STREAMREC_STATE=kafka`` (the default
when every configured model can share its state), travels through Kafka
(:class:`stream_app.shared.SharedState`): every ``checkpoint_interval``
seconds (and on revocation and a clean stop) one transaction commits this
worker's item increments, the state of the users its batches touched and the
event offsets they include. Any number of workers share the partitions; a
worker assigned a partition restores its users from the changelog first, and
skips events below the restored offsets. With ``STREAMREC_STATE=local`` (one
worker; models that cannot share) all models are checkpointed to the local
state folder with their offsets, and only then are offsets committed. Either
way, after ``kill -9`` no event is lost from the models and none is learned
twice.

Nothing stops the worker: an invalid event goes to the dead-letter topic with
its reason and original bytes; a batch the models fail on is dead-lettered
whole with the error; lists that cannot be written because Redis is away are
kept (the newest per user and model) and written when Redis answers again.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from stream_app.shared import CatalogueFollower, SharedState
from streamrec.admission import DUPLICATE, Admission
from streamrec.checkpoint import CheckpointStore, Offsets
from streamrec.events import (
    Exclusion,
    Exposure,
    ForgetUser,
    Interaction,
    InvalidEvent,
    ItemUpdate,
    Rating,
    decode,
)
from streamrec.experiments import Experiment
from streamrec.exposures import ExposureJoin
from streamrec.live_quality import LiveQuality
from streamrec.metrics import WorkerMetrics, WorkerState
from streamrec.pipeline import RecommendationPipeline
from streamrec.serving.availability import hidden_until
from streamrec.settings import Settings
from streamrec.store import AsyncRecSink, ControlWrites, RecList

log = logging.getLogger("streamrec.worker")

#: Seconds between writes of the fallback list (64 bucket copies and the global key).
FALLBACK_EVERY = 0.5
#: Seconds between writes of the counters and live quality counts (a command per counter: written with every
#: batch's lists, they were most of a small batch's Redis commands, and batches shrink as workers are added).
COUNTERS_EVERY = 0.25
#: Seconds between sweeps of the event ids past their window (users who stopped sending).
IDS_EXPIRE_EVERY = 60.0
#: Seconds between recomputations of the category lists (64 bucket copies of each changed one) and of the
#: similar-items lists of the items touched meanwhile.
CATEGORIES_EVERY = 1.0

REDIS_ERRORS: tuple[type[BaseException], ...]
try:
    import redis.exceptions

    # a refused command (a server out of memory, a lost function) keeps the writes pending as an outage does
    REDIS_ERRORS = (
        redis.exceptions.ConnectionError,
        redis.exceptions.TimeoutError,
        redis.exceptions.ResponseError,
        OSError,
    )
except ImportError:  # pragma: no cover
    REDIS_ERRORS = (OSError,)


class RedisAway(RuntimeError):
    """Lists could not be written to Redis, so the offsets of their events are not committed yet."""


#: Exit status of a worker that another worker fenced (EX_TEMPFAIL: restart it and it rejoins).
FENCED_EXIT = 75


def _stop_fenced(exc: Exception) -> None:
    """Another worker fenced this one's transactions: exit at once, writing nothing more.

    What it learned since its last commit is replayed by the owners of its
    partitions; a clean stop would write lists (and try commits) of events that
    are theirs now. A worker is fenced only when its commit stayed open past
    the fencing delay of a partition's new owner: it died, or it hung.
    """
    log.critical("%s: stopping at once (exit %d); restarted, the worker rejoins and restores", exc, FENCED_EXIT)
    logging.shutdown()
    os._exit(FENCED_EXIT)


def _brings_back(updates: Sequence[Any]) -> bool:
    """Whether some update makes an item available again (or gives it a later expiry)."""
    return any(isinstance(u, ItemUpdate) and u.sets_availability and hidden_until(u) != 0.0 for u in updates)


class StreamWorker:
    """State and logic behind the agent (one instance per agent).

    ``metrics`` receives what happens (Prometheus); ``highwaters`` returns the
    highwater offset of each assigned ``(topic, partition)`` (consumer lag).
    """

    def __init__(
        self,
        settings: Settings,
        kind_by_topic: Mapping[str, str],
        deadletter_topic: Any,
        commit: Callable[[], Awaitable[Any]] | None = None,
        metrics: WorkerMetrics | None = None,
        highwaters: Callable[[], Mapping[tuple[str, int], int | None]] | None = None,
    ) -> None:
        if not settings.redis_url:
            raise ValueError("REDIS_URL is not set")
        self.settings = settings
        self.kind_by_topic = dict(kind_by_topic)
        self.deadletter_topic = deadletter_topic
        self._commit = commit
        self.mode = settings.state_mode()
        if self.mode == "kafka" and settings.checkpoint_interval <= 0:
            raise ValueError("STREAMREC_CHECKPOINT_INTERVAL must be > 0 with STREAMREC_STATE=kafka")
        if self.mode == "local" and settings.topic_partitions > 1:
            raise ValueError(
                f"STREAMREC_STATE=local keeps the models in one process: use STREAMREC_TOPIC_PARTITIONS=1 "
                f"(models {', '.join(settings.models)}), or models that share their state"
            )
        local = self.mode == "local" and settings.checkpoint_interval > 0
        self.checkpoints = CheckpointStore(settings.checkpoint_dir) if local else None
        self.applied: Offsets = {}
        self.admission = Admission.from_settings(settings)  # event time, event ids, rate: before the models
        self._ids_expired_at = time.monotonic()
        self._newest_event_ts = float("-inf")
        self.pipeline = self._restore() or RecommendationPipeline.from_names(
            settings.models,
            settings.default_model,
            settings.depth,
            settings.model_params,
            settings.fallback,
            settings.repeats,
        )
        #: hidden items, tags, exclusions, category lists: written with the next flush
        self._controls = ControlWrites()
        self._tag_updates: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {}  # item -> (first, last) tags
        self._categories_at = float("-inf")
        self._categories_sent: dict[str, list[str]] = {}  # category -> the items last written
        self._global_due = False  # an item came back: the fallback and category lists are recomputed soon
        self.experiment = Experiment.parse(settings.experiment) if settings.experiment else None
        live = exposures = None
        if settings.live_ks:
            live = LiveQuality(list(self.pipeline.models), settings.live_ks, settings.live_users, self.experiment)
            exposures = ExposureJoin(settings.exposure_window, settings.live_users, lazy=True)
        self.pipeline.use(live, self.experiment, exposures)
        #: the lists written per user: every model's, and each interleaved variant's
        self._list_names = [*settings.models]
        if self.experiment is not None:
            self._list_names += [v.name for v in self.experiment.variants if v.interleaved]
        #: live quality counts not yet in Redis, per wall-clock minute (``{prefix}:quality:<minute>``)
        self._quality: dict[int, Counter[str]] = {}
        #: users seen per variant since the last write (``PFADD`` to the experiment's HyperLogLogs)
        self._variant_users: dict[str, set[str]] = {}
        if settings.max_users or settings.max_items:
            for model in self.pipeline.all_models().values():
                model.set_capacity(settings.max_users, settings.max_items)
        self._last_checkpoint = time.monotonic()
        self._since_checkpoint = 0
        self.sink = AsyncRecSink(settings.redis_url, settings.key_prefix, settings.key_ttl, **settings.redis_kwargs())
        self.counters: Counter[str] = Counter()
        self._pending: dict[tuple[str, str], tuple[RecList, bool]] = {}
        self._pending_fallback: RecList | None = None
        self._pending_ingest: list[float] = []
        self._pending_forget: set[str] = set()
        self._flush_lock = asyncio.Lock()
        self._model_lock = asyncio.Lock()  # learning and checkpointing never overlap
        self.shared: SharedState | None = None
        self._catalogue: CatalogueFollower | None = None
        if self.mode == "kafka":
            user_topics = [t for t, kind in self.kind_by_topic.items() if kind != "item"]
            self.shared = SharedState(
                settings,
                self.pipeline.all_models(),
                self._model_lock,
                user_topics,
                {"ids": self.admission.ids, "exclusions": self.pipeline.user_exclusions},
            )
            self.applied = self.shared.applied
            self.shared.on_drop.append(self._forget_served)
            self.shared.before_send = self._lists_written
            self.shared.on_fenced = _stop_fenced
        self._retry_task: asyncio.Task[None] | None = None
        self._backoff = 0.1
        self._fallback_written = float("-inf")
        self._counters_written = float("-inf")
        self._sharing_reported: dict[str, float] = {}
        self._commit_task: asyncio.Task[None] | None = None
        self._meta_written = False
        self.metrics = metrics if metrics is not None else WorkerMetrics(settings.models)
        self._highwaters = highwaters
        self._started = False
        self._redis_ok = True

    def _restore(self) -> RecommendationPipeline | None:
        """The pipeline of the newest checkpoint, when it holds the configured models."""
        if self.checkpoints is None:
            return None
        ckpt = self.checkpoints.load_latest()
        if ckpt is None:
            return None
        configured = set(self.settings.models)
        saved = {n for n in ckpt.models if not n.startswith("_")}
        if ckpt.extra.get("topic_prefix", self.settings.topic_prefix) != self.settings.topic_prefix:
            log.warning(
                "checkpoint %s was written for topics %s.*: starting fresh", ckpt.path, ckpt.extra["topic_prefix"]
            )
            return None
        if saved != configured:
            log.warning(
                "checkpoint %s holds models %s, configured are %s: starting fresh",
                ckpt.path,
                sorted(saved),
                sorted(configured),
            )
            return None
        self.applied = ckpt.offsets
        self.admission.ids.import_users(ckpt.extra.get("event_ids", {}))
        exclusions = ckpt.extra.get("exclusions", {})
        log.info(
            "restored checkpoint %s (%s)", ckpt.path.name, ", ".join(f"{t}:{dict(p)}" for t, p in ckpt.offsets.items())
        )
        pipeline = RecommendationPipeline.from_saved(
            ckpt.models, self.settings.default_model, self.settings.depth, self.settings.repeats
        )
        pipeline.user_exclusions.import_users(exclusions)
        return pipeline

    async def start(self) -> None:
        try:
            await self.sink.check()
        except REDIS_ERRORS as exc:
            log.warning("Redis does not answer yet (%s); lists will be written when it does", type(exc).__name__)
        if self.shared is not None:
            await self.shared.start()
            items = [t for t, kind in self.kind_by_topic.items() if kind == "item"]
            self._catalogue = CatalogueFollower(self.settings, items, self._add_items, self._availability)
            await self._catalogue.start()
        await self._report_items_held()
        self._retry_task = asyncio.create_task(self._retry_loop())
        self._started = True
        log.info(
            "worker ready: models=%s default=%s top_n=%d",
            ",".join(self.settings.models),
            self.settings.default_model,
            self.settings.top_n,
        )

    async def drain(self) -> None:
        """Commit what is learned and write the pending lists and counters; the worker can go on after it.

        The app calls it when it stops, once Faust has stopped the flow of
        events and before it stops the agent and leaves the group
        (``on_before_shutdown``): the commit is made while the partitions are
        still this worker's, and before the event loop is torn down. Faust
        does not always wait for the agent's own end before it closes the
        loop; a commit left to it was cut off once in CI (the next worker
        replayed 254 events whose offsets the cut commit would have written).
        """
        if self._commit_task is not None:
            await asyncio.gather(self._commit_task, return_exceptions=True)
        if self._since_checkpoint:
            log.info("stopping: committing %d events", self._since_checkpoint)
            try:
                await self.checkpoint()
            except Exception:
                log.exception("the final checkpoint failed; the last one stands")
            else:
                log.info("final commit written")
        try:
            await asyncio.wait_for(self.flush(final=True), timeout=5)
        except (TimeoutError, *REDIS_ERRORS):
            log.warning("stopping with %d lists not written to Redis", len(self._pending))

    async def stop(self) -> None:
        """Commit what is left (see :meth:`drain`), then close the connections."""
        self._started = False
        if self._retry_task is not None:
            self._retry_task.cancel()
        await self.drain()
        await self.sink.close()
        if self._catalogue is not None:
            await self._catalogue.stop()
        if self.shared is not None:
            await self.shared.stop()

    # -- partitions (STREAMREC_STATE=kafka) ------------------------------------------------

    async def partitions_assigned(self, partitions: set[int]) -> None:
        """Faust's rebalance callback: restore the users of partitions new to this worker."""
        if self.shared is not None:
            await self.shared.assign(partitions)

    async def partitions_revoked(self, partitions: set[int]) -> None:
        """Faust's rebalance callback: commit everything learned, then hand the partitions' users off."""
        if self.shared is not None:
            await self.shared.revoke(partitions)
            self._since_checkpoint = 0
            self._last_checkpoint = time.monotonic()

    async def partitions_lost_while_stopping(self, partitions: set[int]) -> None:
        """A rebalance began while this worker stops: commit what is learned, then never commit again."""
        if self.shared is not None:
            await self.shared.hand_over(partitions)
            self._since_checkpoint = 0

    async def _add_items(self, updates: Sequence[ItemUpdate]) -> None:
        """Catalogue updates (every worker reads the whole items topic)."""
        async with self._model_lock:
            await asyncio.to_thread(self.pipeline.add_catalogue, updates)
        if _brings_back(updates):  # after the models' catalogue took it: the global lists may hold the item again
            self._global_due = True
        await self._report_items_held()

    # -- what is served: availability, tags, exclusions ------------------------------------

    def _queue_catalogue(self, update: ItemUpdate, offset: int) -> None:
        """A catalogue update of this worker's partitions: its tags (and availability, with one worker) go to Redis.

        With state in Kafka every worker's catalogue follower writes
        availability as soon as it reads the update (:meth:`_availability`),
        without waiting for this agent's batch to be learned.
        """
        if update.sets_availability and self._catalogue is None:
            self._controls.hidden[update.item_id] = hidden_until(update)
            self._controls.versions[update.item_id] = offset
        first = self._tag_updates.get(update.item_id, (update.tags, update.tags))[0]
        self._tag_updates[update.item_id] = (first, update.tags)

    async def _availability(self, updates: Sequence[tuple[ItemUpdate, int]]) -> None:
        """The catalogue follower read updates that hide or show items: write them now, versioned by offset.

        In a pipeline of their own, without waiting for the agent's flush (the
        writes are versioned, so their order against it does not matter); on
        a Redis error the next flush retries them.
        """
        writes = ControlWrites()
        for update, offset in updates:
            writes.hidden[update.item_id] = hidden_until(update)
            writes.versions[update.item_id] = offset
        try:
            await self.sink.write_hides(writes)
        except REDIS_ERRORS as exc:
            log.warning("writing %d hides failed (%s); retried with the next flush", len(updates), type(exc).__name__)
            self._controls.merge(writes)

    async def _decide_tags(self, controls: ControlWrites) -> None:
        """Move the pending tag updates into ``controls``: overrides for items whose tags changed.

        Lists carry each item's tags as they were when written; an item whose
        tags change afterwards gets an override that reads prefer. A first
        setting needs none (no list could carry other tags for it), so the
        overrides grow with tag changes, not with the catalogue.
        """
        if not self._tag_updates:
            return
        updates, self._tag_updates = self._tag_updates, {}
        try:
            previous = await self.sink.previous_tags(list(updates))
        except BaseException:
            for item, (first, last) in updates.items():  # keep them, merged with any newer ones
                newer = self._tag_updates.get(item)
                self._tag_updates[item] = (first, newer[1] if newer is not None else last)
            raise
        for item, (first, last) in updates.items():
            before = previous.get(item)
            if before is None and not first and not last:
                continue  # no tags, and none before: nothing to record (an untagged catalogue writes nothing)
            if first != last or (before is not None and before != last):
                controls.tag_overrides[item] = last
            controls.item_tags[item] = last

    def _queue_categories(self, docs: Mapping[str, RecList]) -> None:
        """Category lists whose items changed since they were last written."""
        for category, doc in docs.items():
            if self._categories_sent.get(category) != doc.items:
                self._controls.categories[category] = doc
                self._categories_sent[category] = doc.items

    def _not_interested(self, event: Interaction) -> None:
        """Negative feedback: the item leaves the user's reads for good and their new lists (under the model lock)."""
        self.pipeline.user_exclusions.add(event.user_id, [event.item_id], kind="not_interested")
        self._controls.user_sets.append((event.user_id, "not-interested", "add", (event.item_id,)))
        self.counters["feedback_not_interested"] += 1

    def _exclude(self, event: Exclusion) -> None:
        """An explicit exclusion (not feedback): items left out of, or back in, the user's reads and lists."""
        if event.action == "add":
            self.pipeline.user_exclusions.add(event.user_id, event.item_ids)
        else:
            self.pipeline.user_exclusions.remove(event.user_id, event.item_ids)
        self._controls.user_sets.append((event.user_id, "excluded", event.action, event.item_ids))
        self.counters["exclusions"] += 1
        self.counters["events_accepted"] += 1

    async def _report_items_held(self) -> None:
        """How many items the models hold (``items_held`` in ``{prefix}:stats``; ``streamrec status`` shows it)."""
        held = max((m.item_index.n_live for m in self.pipeline.all_models().values()), default=0)
        try:
            await self.sink.set_stat("items_held", held)
        except REDIS_ERRORS:
            pass  # the next catalogue update reports it again

    async def handle(self, events: Sequence[Any]) -> None:
        """Process one batch of Faust events (``stream.take_events``)."""
        started = time.perf_counter()
        skipped = 0
        out = None
        good = []
        ingest: list[float | None] = []
        sources = []
        limits = self.settings.limits
        applied = self.applied
        shared = self.shared
        if shared is not None:  # events of a partition wait until its users are restored
            await shared.ready({event.message.partition for event in events})
        done: dict[tuple[str, int], int] = {}  # offsets this batch completes: recorded once it is learned
        notes: list[tuple[str, int, bool]] = []  # (user, partition, forgotten) for the state that moves
        catalogue = 0
        decoded_events: list[tuple[Any, Any]] = []
        for event in events:
            msg = event.message
            learned = applied.get(msg.topic)
            if learned is not None and msg.offset < learned.get(msg.partition, -1):
                self.counters["events_skipped_already_learned"] += 1  # replayed after a restart
                skipped += 1
                continue
            done[(msg.topic, msg.partition)] = msg.offset + 1
            kind = self.kind_by_topic.get(msg.topic)
            if kind is None:
                await self.deadletter(msg, f"no event kind is configured for topic {msg.topic!r}")
                continue
            try:
                decoded = decode(msg.value, kind, limits)  # type: ignore[arg-type]
            except InvalidEvent as exc:
                await self.deadletter(msg, str(exc))
                continue
            if isinstance(decoded, ItemUpdate):
                self._queue_catalogue(decoded, msg.offset)  # for reads: this worker owns the item's partition
            if shared is not None and isinstance(decoded, ItemUpdate):
                catalogue += 1  # validated and counted here; every worker's catalogue follower adds it
                continue
            decoded_events.append((msg, decoded))
        self.counters["events_received"] += len(events)
        self.counters["events_accepted"] += catalogue
        refused: list[tuple[Any, str]] = []
        # shielded: if the agent is cancelled (the worker stops), the batch still finishes learning and records its
        # offsets; otherwise the lock would be released while a thread still learns, and a commit could write
        # increments whose offsets it does not write
        out, error = await asyncio.shield(self._learn(decoded_events, done, good, notes, ingest, sources, refused))
        if self.shared is None and _brings_back([e for _, e in decoded_events if isinstance(e, ItemUpdate)]):
            self._global_due = True  # the batch's lists were made with it; category lists may wait for a batch
        for msg, reason in refused:  # too far ahead in time, or over the user's rate
            await self.deadletter(msg, reason)
        if good:
            if error is not None:
                log.exception("processing a batch of %d events failed; dead-lettering it", len(good), exc_info=error)
                self.counters["batches_failed"] += 1
                for msg in sources:
                    await self.deadletter(msg, f"processing failed: {type(error).__name__}: {error}"[:500])
                async with self._model_lock:
                    self._advance(done, [])
            else:  # its lists were queued under the model lock (_learn)
                self.counters["events_accepted"] += len(good)
                self.counters["learn_seconds"] += out.learn_seconds
                self.counters["recommend_seconds"] += out.recommend_seconds
        self.counters["batches"] += 1
        self._since_checkpoint += len(events)
        await self.flush()
        if out is not None:
            for name, (learn_s, recommend_s) in out.model_seconds.items():
                self.metrics.observe_model(name, learn_s, recommend_s)
        self.metrics.observe_batch(
            received=len(events),
            accepted=len(good) if out is not None else 0,
            seconds=time.perf_counter() - started,
            learn_seconds=out.learn_seconds if out is not None else 0.0,
            recommend_seconds=out.recommend_seconds if out is not None else 0.0,
            skipped=skipped,
            failed=bool(good) and out is None,
        )
        if self._checkpoint_due():
            if self.shared is None:
                await self.checkpoint()
            elif self._commit_task is None or self._commit_task.done():
                # the transaction's I/O runs beside the next batches (the model lock is held only to collect)
                self._commit_task = asyncio.create_task(self._checkpoint_or_retry())

    async def _checkpoint_or_retry(self) -> None:
        """A checkpoint (a commit) that, when it fails, is retried at the next interval instead of raising."""
        try:
            await self.checkpoint()
        except RedisAway as exc:
            log.warning("%s; retried at the next interval", exc)
            self._last_checkpoint = time.monotonic()
        except Exception:
            log.exception("commit failed; retried at the next interval")
            self._last_checkpoint = time.monotonic()

    async def _learn(
        self,
        decoded_events: Sequence[tuple[Any, Any]],
        done: Mapping[tuple[str, int], int],
        good: list[Any],
        notes: list[tuple[str, int, bool]],
        ingest: list[float | None],
        sources: list[Any],
        refused: list[tuple[Any, str]],
    ) -> tuple[Any, Exception | None]:
        """Admit the decoded events and learn the admitted ones, under the model lock (fills the lists given)."""
        out, error = None, None
        async with self._model_lock:  # a commit sees the models, the offsets and the touched users together
            # under the lock: a revocation's commit cannot come between taking a batch and learning it
            await self._restore_served(decoded_events)
            # admission under the lock: an event id is remembered in the same commit as the event's offset
            now = time.time()
            for msg, decoded in decoded_events:
                if isinstance(decoded, Exclusion):  # not feedback: no admission, no model learns it
                    self._exclude(decoded)
                    notes.append((decoded.user_id, msg.partition, False))
                    continue
                if isinstance(decoded, Exposure):  # what was shown: joined with later events, never learned
                    self.counters["exposures"] += 1
                    good.append(decoded)
                    ingest.append(None)  # no list is written for it: no freshness sample
                    sources.append(msg)
                    continue
                admitted = self.admission.admit(decoded, now=now, arrival=msg.timestamp)
                if isinstance(admitted, str):
                    refused.append((msg, admitted))
                    continue
                if admitted is DUPLICATE:
                    self.counters["events_duplicate"] += 1
                    continue
                if isinstance(admitted, Interaction) and admitted.is_feedback:  # never learned as a positive
                    self._not_interested(admitted)
                    notes.append((admitted.user_id, msg.partition, False))
                    good.append(admitted)  # the models that learn negatives learn it (the pipeline)
                    ingest.append(None)  # no list is written for it: no freshness sample
                    sources.append(msg)
                    continue
                good.append(admitted)
                if isinstance(admitted, Interaction | Rating) and admitted.timestamp > self._newest_event_ts:
                    self._newest_event_ts = admitted.timestamp
                if not isinstance(admitted, ItemUpdate):
                    notes.append((admitted.user_id, msg.partition, isinstance(admitted, ForgetUser)))
                ingest.append(msg.timestamp)
                sources.append(msg)
            if good:
                categories = time.monotonic() - self._categories_at >= CATEGORIES_EVERY
                try:
                    out = await asyncio.to_thread(
                        self.pipeline.process, good, ingest, categories, None, categories
                    )  # category and similar-items lists at most every CATEGORIES_EVERY
                except Exception as exc:  # a model bug must neither stop the worker nor lose events
                    error = exc
                if categories:
                    self._categories_at = time.monotonic()
                if error is None:
                    self._queue_output(out, ingest)
            if error is None:
                self._advance(done, notes)
            if time.monotonic() - self._ids_expired_at > IDS_EXPIRE_EVERY:  # ids out of their window
                self.admission.ids.expire(self._newest_event_ts)
                self._ids_expired_at = time.monotonic()
        return out, error

    def _queue_output(self, out: Any, ingest: Sequence[float | None]) -> None:
        """Queue a learned batch's lists for Redis (under the model lock, where its offsets are recorded).

        Under the lock, so that a commit that includes the batch's offsets
        also finds its lists pending and writes them first (:meth:`_lists_written`).
        """
        now = time.time()
        self._queue_categories(out.category_docs(now))
        self._controls.similar.update(out.similar_docs(now))
        for doc, is_default in out.rec_lists(self.settings.default_model, now):
            self._pending[(doc.model, doc.user_id)] = (doc, is_default)
        if out.quality:
            self._quality.setdefault(int(now // 60), Counter()).update(out.quality)
            self.metrics.observe_quality(out.quality)
        for user, (variant, _) in out.served_as.items():
            self._variant_users.setdefault(variant, set()).add(user)
        self._pending_fallback = out.fallback_list(now) or self._pending_fallback
        self._pending_ingest.extend(t for t in ingest if t is not None)
        for user in out.forgotten:
            self._pending_forget.add(user)
            for model in self._list_names:
                self._pending.pop((model, user), None)
            self.counters["users_forgotten"] += 1
        if len(self._pending_ingest) > self.settings.freshness_cap:  # Redis away for long
            del self._pending_ingest[: -self.settings.freshness_cap]

    async def _lists_written(self, strict: bool) -> None:
        """Before a commit makes events' offsets durable: their lists are in Redis.

        Otherwise a worker killed between the commit and its next write would
        leave those users' lists behind their state for good: the next owner
        starts after the committed offsets and never writes them (a soak run
        found 3 such lists). ``strict`` (a periodic commit): Redis away means
        no commit now (the next one carries it all); a revocation or a stop
        commits anyway, and the lists stay pending here.
        """
        if await self.flush():
            return
        if strict:
            raise RedisAway(f"Redis is away with {len(self._pending)} lists pending: the commit waits for them")
        log.warning("committing with %d lists not yet written to Redis (Redis away)", len(self._pending))

    def _report_sharing(self) -> None:
        """Move what sharing cost since the last report into the counters (``streamrec:stats``)."""
        if self.shared is None:
            return
        totals = {
            **self.shared.counters,
            **self.shared.owner_counters(),
            "state_bytes_sent": float(self.shared.writer.bytes_sent),
            "increment_bytes_sent": float(self.shared.writer.increment_bytes),
        }
        for name, value in totals.items():
            change = value - self._sharing_reported.get(name, 0.0)
            if change:
                self.counters[f"shared_{name}"] += change
            self._sharing_reported[name] = value

    def _advance(self, done: Mapping[tuple[str, int], int], notes: Sequence[tuple[str, int, bool]]) -> None:
        """Record a handled batch: its offsets, and whose state changed (under the model lock)."""
        for (topic, partition), offset in done.items():
            self.applied.setdefault(topic, {})[partition] = offset
        if self.shared is not None:
            for user, partition, forgotten in notes:
                if forgotten:
                    self.shared.note_forgotten(user, partition)
                else:
                    self.shared.note(user, partition)

    def _checkpoint_due(self) -> bool:
        return (
            (self.checkpoints is not None or self.shared is not None)
            and self._since_checkpoint > 0
            and time.monotonic() - self._last_checkpoint >= self.settings.checkpoint_interval
        )

    async def checkpoint(self) -> None:
        """Save every model with the offsets it includes, then commit those offsets.

        The events of the batch being handled are acknowledged only after
        :meth:`handle` returns, so the commit never passes the checkpoint.
        """
        if self.shared is not None:
            started = time.perf_counter()
            pending, self._since_checkpoint = self._since_checkpoint, 0
            try:
                sequence = await self.shared.commit()
            except BaseException:
                self._since_checkpoint += pending  # retried at the next interval
                raise
            self._last_checkpoint = time.monotonic()
            self.counters["checkpoints"] += 1
            self.counters["checkpoint_seconds"] += time.perf_counter() - started
            self._report_sharing()
            self.metrics.observe_checkpoint(time.perf_counter() - started)
            log.debug("commit %d in %.3f s", sequence, time.perf_counter() - started)
            return
        if self.checkpoints is None:
            return
        async with self._model_lock:
            started = time.perf_counter()
            if not await self.flush():  # the lists of the events this checkpoint includes go first
                self._last_checkpoint = time.monotonic()  # retried at the next interval
                log.warning("Redis is away with %d lists pending: the checkpoint waits for them", len(self._pending))
                return
            offsets = {t: dict(p) for t, p in self.applied.items()}
            extra = {
                "app_id": self.settings.app_id,
                "topic_prefix": self.settings.topic_prefix,
                "event_ids": self.admission.ids.export_users(self.admission.ids.users()),
                "exclusions": self.pipeline.user_exclusions.export_users(self.pipeline.user_exclusions.users()),
            }
            path = await asyncio.to_thread(self.checkpoints.save, self.pipeline.all_models(), offsets, extra)
            self._last_checkpoint = time.monotonic()
            self._since_checkpoint = 0
        self.counters["checkpoints"] += 1
        self.counters["checkpoint_seconds"] += time.perf_counter() - started
        self.metrics.observe_checkpoint(time.perf_counter() - started)
        log.info("checkpoint %s written in %.2f s", path.name, time.perf_counter() - started)
        if self._commit is not None:
            try:
                await self._commit()
            except Exception:  # the next checkpoint commits again; restarts skip what is learned
                log.exception("committing offsets after checkpoint %s failed", path.name)

    async def deadletter(self, msg: Any, reason: str) -> None:
        """Send the original bytes to the dead-letter topic with the reason in headers."""
        headers = [
            ("streamrec-reason", reason.encode("utf-8", "replace")),
            ("streamrec-source-topic", str(msg.topic).encode()),
            ("streamrec-source-partition", str(msg.partition).encode()),
            ("streamrec-source-offset", str(msg.offset).encode()),
            ("streamrec-deadlettered-at", f"{time.time():.6f}".encode()),
        ]
        await self.deadletter_topic.send(key=msg.key, value=msg.value, headers=headers)
        self.counters["events_deadlettered"] += 1
        self.metrics.observe_deadlettered()
        log.debug("dead-lettered %s[%s]@%s: %s", msg.topic, msg.partition, msg.offset, reason)

    async def flush(self, final: bool = False) -> bool:
        """Write pending lists and counters in one pipeline; keep them if Redis is away."""
        async with self._flush_lock:
            counting = self._counters_due(final)
            if (
                not self._pending
                and self._pending_fallback is None
                and not (counting and self.counters)
                and not self._pending_forget
                and not self._controls
                and not self._tag_updates
                and not (counting and self._quality)
            ):
                return True
            controls, self._controls = self._controls, ControlWrites()
            try:
                await self._decide_tags(controls)
            except REDIS_ERRORS as exc:
                controls.merge(self._controls)
                self._controls = controls
                self.counters["redis_errors"] += 1
                self._redis_ok = False
                log.warning("Redis read of item tags failed (%s); catalogue changes pending", type(exc).__name__)
                return False
            forget = {user: self._list_names for user in self._pending_forget}
            lists = list(self._pending.values())
            counters = dict(self.counters) if counting else {}
            meta = None
            if not self._meta_written:
                meta = {
                    "models": ",".join(self.settings.models),
                    "default_model": self.settings.default_model,
                    "top_n": str(self.settings.top_n),
                    "list_depth": str(self.settings.depth),
                    "started_at": f"{time.time():.3f}",
                }
            # the fallback goes to one key per user bucket (see streamrec.store): at most twice a second
            fallback = self._pending_fallback
            if fallback is not None and time.monotonic() - self._fallback_written < FALLBACK_EVERY and not final:
                fallback = None
            quality, self._quality = (self._quality, {}) if counting else ({}, self._quality)  # merged back if it fails
            variant_users, self._variant_users = self._variant_users, {}
            experiment = None
            if self.experiment is not None and variant_users:
                experiment = (self.experiment.name, {v: sorted(u) for v, u in variant_users.items()})
            ingest = list(self._pending_ingest)  # snapshot: handle() may append while we await
            offsets = {(t, p): o for t, parts in self.applied.items() for p, o in parts.items()}
            written_at = time.time()
            freshness = [written_at - t for t in ingest]
            try:
                await self.sink.write(
                    lists,
                    fallback,
                    counters,
                    meta,
                    freshness,
                    self.settings.freshness_cap,
                    forget,
                    offsets=offsets,
                    controls=controls,
                    quality=quality,
                    experiment=experiment,
                )
            except REDIS_ERRORS as exc:
                controls.merge(self._controls)  # written again with the next flush; newer changes win
                self._controls = controls
                for minute, counts in quality.items():
                    self._quality.setdefault(minute, Counter()).update(counts)
                for variant, users in variant_users.items():
                    self._variant_users.setdefault(variant, set()).update(users)
                self.counters["redis_errors"] += 1
                self.metrics.observe_redis_error()
                self._redis_ok = False
                if self.counters["redis_errors"] in (1, 10, 100) or self.counters["redis_errors"] % 1000 == 0:
                    log.warning("Redis write failed (%s: %s); %d lists pending", type(exc).__name__, exc, len(lists))
                return False
            self._meta_written = True
            self._redis_ok = True
            if counting:
                self._counters_written = time.monotonic()
            self.metrics.observe_written(len(lists), freshness)
            del self._pending_ingest[: len(ingest)]
            self._pending_forget.difference_update(forget)
            for key, value in counters.items():
                self.counters[key] -= value
                if not self.counters[key]:
                    del self.counters[key]
            for doc, _ in lists:
                key = (doc.model, doc.user_id)
                if self._pending.get(key, (None,))[0] is doc:
                    del self._pending[key]
            if fallback is not None:
                if self._pending_fallback is fallback:
                    self._pending_fallback = None
                self._fallback_written = time.monotonic()
            self._backoff = 0.1
            return True

    def _counters_due(self, final: bool = False) -> bool:
        """Whether the counters go with this write (every :data:`COUNTERS_EVERY` seconds, and on the last one)."""
        return final or time.monotonic() - self._counters_written >= COUNTERS_EVERY

    def _forget_served(self, users: list[str]) -> None:
        """Users handed to another worker: their served lists and exposures here are no longer the newest."""
        for user in users:
            if self.pipeline.live is not None:
                self.pipeline.live.forget(user)
            if self.pipeline.exposures is not None:
                self.pipeline.exposures.forget(user)

    async def _restore_served(self, decoded_events: Sequence[tuple[Any, Any]]) -> None:
        """Live quality: read from Redis the lists last served to users whose lists this worker does not hold.

        Users whose partition moved here were served by another worker; their next event is scored
        against the lists that worker wrote (one pipeline per batch, for those users only).
        """
        live = self.pipeline.live
        if live is None:
            return
        default = self.pipeline.models[self.settings.default_model]
        users = [e.user_id for _, e in decoded_events if isinstance(e, Interaction | Rating)]
        missing = live.missing(users, default.has_history)
        if not missing and live.has_fallback:
            return
        try:
            lists, fallback = await self.sink.read_lists(missing, list(live.models))
        except REDIS_ERRORS as exc:  # scored as unknown; the lists come with the next batches
            log.debug("reading served lists failed (%s)", type(exc).__name__)
            return
        live.restore(lists, lambda u: len(default.seen_items(u)), fallback)
        self.counters["live_lists_read"] += len(lists)

    def alive(self) -> bool:
        """Whether the background task (Redis retries, idle checkpoints) still runs (liveness)."""
        return self._retry_task is not None and not self._retry_task.done()

    def state(self) -> WorkerState:
        """A snapshot for gauges and readiness: lag per partition, pending lists, checkpoint age."""
        highwaters = self._highwaters() if self._highwaters is not None else {}
        lag = {}
        for (topic, partition), high in highwaters.items():
            done = self.applied.get(topic, {}).get(partition)
            if high is not None and done is not None:  # known once the partition's first event is handled
                lag[(topic, partition)] = max(0, high - done)
        return WorkerState(
            started=self._started,
            pending_lists=len(self._pending),
            checkpoint_age=time.monotonic() - self._last_checkpoint if self.checkpoints is not None else None,
            lag=lag,
            redis_ok=self._redis_ok,
            assigned=len(highwaters),
        )

    async def _refresh_global_lists(self) -> None:
        """Recompute the fallback and category lists without events: an item was made available again.

        Lists written while it was hidden leave it out; users' lists take it
        back as they act, the global lists at once (within a second).
        """
        self._global_due = False
        async with self._model_lock:
            out = await asyncio.to_thread(self.pipeline.global_lists)
        now = time.time()
        self._pending_fallback = out.fallback_list(now) or self._pending_fallback
        self._fallback_written = float("-inf")  # written with the next flush, whenever the last one was
        self._queue_categories(out.category_docs(now))
        await self.flush()

    async def _retry_loop(self) -> None:
        """Retry pending writes with exponential backoff, and checkpoint when idle."""
        while True:
            await asyncio.sleep(self._backoff)
            if self._global_due and time.monotonic() - self._categories_at >= CATEGORIES_EVERY:
                try:
                    await self._refresh_global_lists()
                except Exception:
                    log.exception("recomputing the fallback and category lists failed; the next batch does")
            counts = (self.counters or self._quality) and self._counters_due()
            if self._pending or self._pending_fallback is not None or self._controls or self._tag_updates or counts:
                ok = await self.flush()
                self._backoff = 0.1 if ok else min(self._backoff * 2, 5.0)
            if self._checkpoint_due():
                await self._checkpoint_or_retry()

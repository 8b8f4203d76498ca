"""Prequential (test-then-train) replay of an event log in event time.

Every evaluated event is scored against the list the live system would have
served when it arrived, then learned. What that list reflects is set in
**event time**, not in events:

- ``freshness=F`` (seconds): the list served for an event at time ``t``
  reflects exactly the events before it in the log whose timestamp is
  ``<= t - F``; never the event itself or a later one, even at equal
  timestamps. ``F = 0`` means every earlier event (strictly per event); the
  live system's measured freshness (its p99) is the realistic setting.
- ``refresh=I`` (seconds): what systems that recompute lists periodically
  serve: lists recomputed from every event before each refresh time (the
  multiples of ``I`` since the epoch: hourly on the hour, daily at 00:00 UTC)
  and served unchanged until the next one. Seen items are those known at the
  refresh.

Users without history in that state get the list the model gives unknown
users (wrap models in :class:`~streamrec.served.ServedLists` to serve the
popularity fallback, as the live worker does).

Because the log is in time order, the events a list reflects are always a
prefix of the log: the replay learns the log in order and, before each
evaluated event, catches the models up to that event's visible prefix. Models
learn in chunks that end wherever some evaluated event needs a new prefix, at
multiples of ``learn_batch`` events (the live worker's largest micro-batch)
and at catalogue updates; those chunks depend only on the log and the
freshness, so **``batch_size`` is a compute detail**: it caps how many
evaluated events sharing one visible prefix are scored with one ``recommend``
call, and any value gives the same ranks (models promise that a user's list
does not depend on the other users in the call).

Which events are scored:

- ``warmup``: the first ``floor(warmup * n_events)`` events are learned, never scored;
- ``every``: after the warm-up, events ``0, every, 2 * every, ...`` are evaluated;
- ``positives``: event types that count as positives (``view``, ``click``,
  ``add_to_cart``, ``purchase``, ``rating``; default all), and ``min_rating``:
  a rating below it is not a positive. Ranking metrics use the evaluated
  positives; RMSE and MAE use every evaluated rated event.

Metrics are computed from the recorded ranks and predictions by the pure
functions of :mod:`streamrec.backtest.metrics`: overall, per window of
``window`` consecutive scored events, and per history bucket: how many of the
user's own events the list reflects (``none``, ``1-4``, ``5+``).

Timings are wall-clock seconds inside the models' ``recommend``, ``predict``,
``learn`` and ``add_items`` calls; ``events/s`` is the number of replayed
events divided by their sum. Reading the log is not timed; the harness's own
work (planning, rank lookup) is reported apart as ``harness_s``.

Memory, per model (``memory="trace"``): ``state_bytes`` is the size of what
the model's ``save`` writes at the end of the replay (its arrays, ids and
seen items); ``peak_traced_bytes`` is the peak of ``tracemalloc`` above its
starting point during a separate replay of a fresh clone of the model over the
first ``memory_events`` events (everything allocated through Python's and
NumPy's allocators, including the harness's small per-batch arrays; memory
that torch or other native libraries allocate themselves is not seen).
``memory="state"`` measures only ``state_bytes``. The harness also records the
peak resident set size of the whole process (``harness.process_peak_rss_bytes``:
every model, the log, and the imported libraries together).

Examples
--------
>>> from models import create
>>> from streamrec.backtest.sources import EventLog
>>> from streamrec.events import Interaction
>>> events = [Interaction(f"u{j % 7}", f"i{j % 5}", float(j)) for j in range(200)]
>>> result = Prequential({"popularity": create("popularity")}, ks=(3,), freshness=0.0).run(EventLog.from_events(events))
>>> figures = result.models["popularity"].overall
>>> figures["scored"], 0.0 <= figures["HR@3"] <= 1.0
(200, True)
>>> sorted(result.models["popularity"].by_history)
['1-4', '5+', 'none']
"""

from __future__ import annotations

import math
import os
import platform
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np

from models import OnlineRecommender
from streamrec.backtest import metrics
from streamrec.backtest.memory import peak_rss, traced_peak
from streamrec.backtest.sources import EventLog
from streamrec.events import EVENT_TYPES, Event

__all__ = [
    "HISTORY_BUCKETS",
    "POSITIVE_TYPES",
    "BacktestResult",
    "ModelResult",
    "Prequential",
    "machine_info",
    "visible_prefix",
]

#: Event types that can count as positives (interaction types and ``rating``).
POSITIVE_TYPES: tuple[str, ...] = (*EVENT_TYPES, "rating")
MEMORY_MODES = ("trace", "state", "off")


def machine_info() -> dict[str, Any]:
    """Where the figures were measured."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        usable = os.cpu_count()
    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor() or None,
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "cpu_count": os.cpu_count(),
        "usable_cpus": usable,
    }


@dataclass
class ModelResult:
    """Figures of one model: ``overall`` metrics, one dict per window, timing and memory."""

    name: str
    params: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    overall: dict[str, float] = field(default_factory=dict)
    windows: list[dict[str, float]] = field(default_factory=list)
    timing: dict[str, float] = field(default_factory=dict)
    memory: dict[str, Any] = field(default_factory=dict)
    by_history: dict[str, dict[str, float]] = field(default_factory=dict)
    #: 0-based rank of each scored event's item in its list (-1: absent); not written to JSON
    ranks: np.ndarray | None = field(default=None, repr=False)


@dataclass
class BacktestResult:
    """Everything a backtest measured; :meth:`to_dict` is what ``results.json`` holds."""

    config: dict[str, Any]
    stream: dict[str, Any]
    windows: list[dict[str, Any]]
    models: dict[str, ModelResult]
    harness: dict[str, float]
    machine: dict[str, Any] = field(default_factory=machine_info)
    #: the user of each scored event, in the order of every model's ``ranks`` (not written to JSON)
    scored_users: np.ndarray | None = field(default=None, repr=False)
    #: the offline twin of an experiment's report (``streamrec backtest --experiment``)
    experiment: dict[str, Any] | None = None

    @property
    def metric_names(self) -> list[str]:
        """Names of the ranking and rating metrics, in table order."""
        ks = self.config["ks"]
        names = [f"HR@{k}" for k in ks] + [f"NDCG@{k}" for k in ks] + ["MRR"] + [f"coverage@{k}" for k in ks]
        if any("RMSE" in m.overall for m in self.models.values()):
            names += ["RMSE", "MAE"]
        return names

    def add_failure(self, name: str, error: str, params: Mapping[str, Any] | None = None) -> None:
        """Record a model that could not be created or run."""
        self.models[name] = ModelResult(name=name, params=dict(params or {}), error=error)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (``NaN`` becomes ``None``)."""
        return _json_ready(
            {
                "config": self.config,
                "stream": self.stream,
                "windows": self.windows,
                "models": {
                    name: {
                        "params": m.params,
                        "error": m.error,
                        "overall": m.overall,
                        "by_history": m.by_history,
                        "windows": m.windows,
                        "timing": m.timing,
                        "memory": m.memory,
                    }
                    for name, m in self.models.items()
                },
                "harness": self.harness,
                "machine": self.machine,
                **({"experiment": self.experiment} if self.experiment is not None else {}),
            }
        )


def _json_ready(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_ready(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


class _Codes(dict):  # type: ignore[type-arg]
    """Item id -> int code; an id not seen before gets the next code."""

    def __missing__(self, key: str) -> int:
        code = len(self)
        self[key] = code
        return code


#: History buckets: how many of the user's own events the served list reflects.
HISTORY_BUCKETS: tuple[tuple[str, int, float], ...] = (("none", 0, 0), ("1-4", 1, 4), ("5+", 5, math.inf))


def visible_prefix(timestamps: np.ndarray, freshness: float = 0.0, refresh: float | None = None) -> np.ndarray:
    """Per event, how many events of the (time-ordered) log its served list reflects.

    With ``refresh`` the list was computed at the last multiple of ``refresh``
    seconds at or before the event, from the events strictly before that time;
    otherwise from the events at or before ``t - freshness``. Never the event
    itself or a later one.

    Examples
    --------
    >>> ts = np.array([0.0, 0.0, 1.0, 2.5, 4.0])
    >>> visible_prefix(ts).tolist()                 # every earlier event, equal timestamps included
    [0, 1, 2, 3, 4]
    >>> visible_prefix(ts, freshness=1.5).tolist()  # events at or before t - 1.5
    [0, 0, 0, 3, 4]
    >>> visible_prefix(ts, refresh=2.0).tolist()    # recomputed at t = 0, 2, 4 from the events before
    [0, 0, 0, 3, 4]
    """
    n = len(timestamps)
    if refresh is not None:
        cut = np.floor(timestamps / refresh) * refresh
        vis = np.searchsorted(timestamps, cut, side="left")
    else:
        vis = np.searchsorted(timestamps, timestamps - freshness, side="right")
    return np.minimum(vis, np.arange(n)).astype(np.int64)


@dataclass
class _Plan:
    """What the replay needs to know about the log, computed once (not timed as model work)."""

    n: int
    user_ids: np.ndarray  # distinct user ids (object)
    user_code: np.ndarray  # per event, index into user_ids
    item_code: np.ndarray  # per event, item code
    codes: _Codes
    scored_idx: np.ndarray  # event positions with ranking metrics, increasing
    rated_idx: np.ndarray  # event positions with rating metrics, increasing
    window_of: np.ndarray  # per event, its window
    n_windows: int
    known_sorted: np.ndarray  # sorted first positions of every item (catalogue or event)
    visible: np.ndarray  # per event, the prefix of the log its list reflects
    history: np.ndarray  # per event, the user's own events within that prefix
    steps: list[tuple[int, int, int, int, int]]  # (visible prefix, scored from, to, rated from, to)


class _Tracker:
    """Per model: ranks, predictions, coverage codes and timings gathered during a replay."""

    def __init__(self, n_scored: int, n_rated: int, ks: Sequence[int], n_windows: int, rates: bool) -> None:
        self.ranks = np.full(n_scored, -1, dtype=np.int32)
        self.predictions = np.full(n_rated, np.nan, dtype=np.float64) if rates else None
        self.rates = rates
        self.ks = tuple(ks)
        self.covered: dict[int, list[list[np.ndarray]]] = {k: [[] for _ in range(n_windows)] for k in self.ks}
        self.seconds = {"recommend_s": 0.0, "predict_s": 0.0, "learn_s": 0.0, "catalogue_s": 0.0, "score_s": 0.0}
        self.error: str | None = None
        # lists waiting for the vectorised rank lookup: one entry per recommend call
        self._lists: list[list[str]] = []
        self._rows: list[np.ndarray] = []
        self._at: list[int] = []
        self._pending = 0

    def record(self, lists: list[list[str]], rows: np.ndarray, at: int) -> None:
        """Keep the lists served to scored events ``at .. at + len(rows)`` (``rows[n]``: which list)."""
        if len(rows) and int(rows.max()) >= len(lists):
            raise RuntimeError(f"recommend returned {len(lists)} lists for {int(rows.max()) + 1} users")
        self._rows.append(rows + len(self._lists))
        self._lists.extend(lists)
        self._at.append(at)
        self._pending += len(rows)

    def flush(self, plan: _Plan) -> None:
        """Look up the ranks of every kept event in one vectorised pass; gather coverage."""
        if not self._rows:
            return
        lists, width = self._lists, max(self.ks)
        rows = np.concatenate(self._rows)
        at = np.concatenate([np.arange(a, a + len(r)) for a, r in zip(self._at, self._rows, strict=True)])
        self._lists, self._rows, self._at, self._pending = [], [], [], 0
        lengths = np.fromiter(map(len, lists), dtype=np.int64, count=len(lists))
        codes = plan.codes
        flat = np.fromiter(map(codes.__getitem__, chain.from_iterable(lists)), dtype=np.int64, count=int(lengths.sum()))
        table = np.full((len(lists), width), -1, dtype=np.int64)
        if len(flat):
            r = np.repeat(np.arange(len(lists)), lengths)
            c = np.arange(len(flat)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
            keep = c < width
            table[r[keep], c[keep]] = flat[keep]
        events = plan.scored_idx[at]
        self.ranks[at] = metrics.rank_lookup(table, rows, plan.item_code[events])
        wins = plan.window_of[events]
        for w in np.unique(wins).tolist():
            served = table[np.unique(rows[wins == w])]
            for k in self.ks:
                block = served[:, :k]
                bucket = self.covered[k][w]
                bucket.append(np.unique(block[block >= 0]))
                if len(bucket) >= 64:
                    bucket[:] = [np.unique(np.concatenate(bucket))]

    def covered_codes(self, k: int, w: int | None = None) -> np.ndarray:
        parts = self.covered[k] if w is None else [self.covered[k][w]]
        arrays = [a for bucket in parts for a in bucket]
        return np.unique(np.concatenate(arrays)) if arrays else np.zeros(0, dtype=np.int64)


def _rates(model: Any) -> bool:
    return bool(getattr(model, "uses_ratings", False)) and callable(getattr(model, "predict", None))


def _describe_error(exc: BaseException, phase: str, position: int) -> str:
    return f"{type(exc).__name__} in {phase} (at event {position}): {exc}"


class Prequential:
    """Replay a log through several models in event time: recommend, score, then learn.

    Parameters
    ----------
    models
        Name -> model implementing the :class:`~models.OnlineRecommender` protocol
        (``learn``, ``recommend``, ``add_items``; optionally ``predict``, ``save``, ``clone``).
    ks
        List lengths to score; lists of ``max(ks)`` are requested.
    freshness
        Seconds: a list reflects the events at or before ``t - freshness`` (0: every earlier event).
    refresh
        Seconds between list recomputations (``None``: lists follow ``freshness``);
        excludes a non-zero ``freshness``.
    batch_size
        Most evaluated events scored with one ``recommend`` call (a compute detail: any value gives the same ranks).
    learn_batch
        Most events a model learns in one call; chunks end at multiples of it.
    warmup
        Fraction of the events, from the start, learned but not scored.
    every
        Evaluate every ``every``-th event after the warm-up.
    positives
        Event types that count as positives (default: every type, ratings included).
    min_rating
        Ratings below this are not positives (``None``: every rating is).
    window
        Scored events per window of the figures over time.
    exclude_seen
        Leave the user's seen items out of the lists (as the live worker does).
    exclude_bought
        With ``exclude_seen=False``: leave out the items the user bought (``purchase`` events
        learned so far), as the worker's ``STREAMREC_REPEATS=unbought``. Applies where lists are
        computed at the scored event (not to lists cached as written).
    memory
        ``"trace"``: measure the saved state size and a traced peak (see the module
        docstring); ``"state"``: the saved state size only; ``"off"``.
    memory_events
        Events replayed by the traced pass (``None``: all).
    progress
        Show tqdm progress bars (on stderr).
    """

    def __init__(
        self,
        models: Mapping[str, OnlineRecommender],
        ks: Sequence[int] = (10,),
        *,
        freshness: float = 0.0,
        refresh: float | None = None,
        batch_size: int = 1000,
        learn_batch: int = 1000,
        warmup: float = 0.0,
        every: int = 1,
        positives: Iterable[str] | None = None,
        min_rating: float | None = None,
        window: int = 5000,
        exclude_seen: bool = True,
        exclude_bought: bool = False,
        memory: str = "state",
        memory_events: int | None = 20_000,
        progress: bool = False,
    ) -> None:
        ks = tuple(int(k) for k in ks)
        if not ks or min(ks) < 1:
            raise ValueError(f"ks must be one or more list lengths >= 1, got {ks}")
        if not (math.isfinite(freshness) and freshness >= 0):
            raise ValueError(f"freshness must be >= 0 seconds, got {freshness}")
        if refresh is not None and not (math.isfinite(refresh) and refresh > 0):
            raise ValueError(f"refresh must be > 0 seconds, got {refresh}")
        if refresh is not None and freshness:
            raise ValueError("give freshness or refresh, not both")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if learn_batch < 1:
            raise ValueError(f"learn_batch must be >= 1, got {learn_batch}")
        if not 0.0 <= warmup < 1.0:
            raise ValueError(f"warmup is a fraction of the events in [0, 1), got {warmup}")
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        if window < 1:
            raise ValueError(f"window must be >= 1 scored events, got {window}")
        if memory not in MEMORY_MODES:
            raise ValueError(f"memory must be one of {MEMORY_MODES}, got {memory!r}")
        positives = tuple(POSITIVE_TYPES if positives is None else positives)
        unknown = sorted(set(positives) - set(POSITIVE_TYPES))
        if unknown or not positives:
            raise ValueError(
                f"positives must be among {', '.join(POSITIVE_TYPES)}; got {', '.join(positives) or 'none'}"
            )
        self.models = dict(models)
        self.ks = tuple(sorted(set(ks)))
        self.freshness = float(freshness)
        self.refresh = None if refresh is None else float(refresh)
        self.batch_size = batch_size
        self.learn_batch = learn_batch
        self.warmup = warmup
        self.every = every
        self.positives = positives
        self.min_rating = min_rating
        self.window = window
        self.exclude_seen = exclude_seen
        self.exclude_bought = exclude_bought and not exclude_seen  # seen items, bought ones among them, are out anyway
        self.memory = memory
        self.memory_events = memory_events
        self.progress = progress

    def config(self) -> dict[str, Any]:
        """The options, as recorded in the result."""
        return {
            "ks": list(self.ks),
            "freshness_s": self.freshness,
            "refresh_s": self.refresh,
            "batch_size": self.batch_size,
            "learn_batch": self.learn_batch,
            "warmup": self.warmup,
            "every": self.every,
            "positives": list(self.positives),
            "min_rating": self.min_rating,
            "window": self.window,
            "window_unit": "scored events",
            "exclude_seen": self.exclude_seen,
            "exclude_bought": self.exclude_bought,
            "memory": self.memory,
            "memory_events": self.memory_events,
        }

    # -- planning ----------------------------------------------------------------------

    def _plan(self, log: EventLog) -> _Plan:
        n = len(log)
        if n:
            user_ids, user_code = np.unique(log.users, return_inverse=True)
        else:
            user_ids, user_code = np.zeros(0, dtype=object), np.zeros(0, dtype=np.int64)
        user_code = np.asarray(user_code, dtype=np.int64).ravel()
        codes = _Codes()
        for item in log.catalogue_items.tolist():
            codes.setdefault(item, len(codes))
        item_code = np.fromiter(map(codes.__getitem__, log.items.tolist()), dtype=np.int64, count=n)
        first = np.full(len(codes), n, dtype=np.int64)
        if len(log.catalogue_items):
            cat = np.fromiter(map(codes.__getitem__, log.catalogue_items.tolist()), dtype=np.int64)
            np.minimum.at(first, cat, log.catalogue_positions)
        if n:
            seen, at = np.unique(item_code, return_index=True)
            np.minimum.at(first, seen, at)
        positive = np.isin(log.event_types, list(self.positives)) if n else np.zeros(0, dtype=bool)
        rated = ~np.isnan(log.ratings)
        if self.min_rating is not None:
            with np.errstate(invalid="ignore"):
                positive &= ~rated | (log.ratings >= self.min_rating)
        evaluated = np.zeros(n, dtype=bool)
        evaluated[math.floor(self.warmup * n) :: self.every] = True
        scored = evaluated & positive
        scored_idx, rated_idx = np.flatnonzero(scored), np.flatnonzero(evaluated & rated)
        n_scored = len(scored_idx)
        n_windows = -(-n_scored // self.window)
        window_of = np.minimum(np.maximum(np.cumsum(scored) - 1, 0) // self.window, max(n_windows - 1, 0))
        visible = visible_prefix(log.timestamps, self.freshness, self.refresh)
        # the user's own events before the visible prefix: positions sorted by (user, position)
        key = user_code * (n + 1) + np.arange(n)
        by_user = np.sort(key)
        history = np.searchsorted(by_user, user_code * (n + 1) + visible) - np.searchsorted(
            by_user, user_code * (n + 1)
        )
        return _Plan(
            n=n,
            user_ids=user_ids,
            user_code=user_code,
            item_code=item_code,
            codes=codes,
            scored_idx=scored_idx,
            rated_idx=rated_idx,
            window_of=window_of,
            n_windows=n_windows,
            known_sorted=np.sort(first),
            visible=visible,
            history=history,
            steps=self._steps(visible, scored_idx, rated_idx),
        )

    def _steps(
        self, visible: np.ndarray, scored_idx: np.ndarray, rated_idx: np.ndarray
    ) -> list[tuple[int, int, int, int, int]]:
        """Runs of evaluated events that share a visible prefix, at most ``batch_size`` each."""
        evaluated = np.union1d(scored_idx, rated_idx)
        if not len(evaluated):
            return []
        prefix = visible[evaluated]
        new_run = np.ones(len(evaluated), dtype=bool)
        new_run[1:] = prefix[1:] != prefix[:-1]
        run_start = np.maximum.accumulate(np.where(new_run, np.arange(len(evaluated)), 0))
        starts = np.flatnonzero((np.arange(len(evaluated)) - run_start) % self.batch_size == 0)
        ends = np.append(starts[1:], len(evaluated))
        first, last = evaluated[starts], evaluated[ends - 1] + 1  # event positions [first, last)
        s_lo, s_hi = np.searchsorted(scored_idx, first), np.searchsorted(scored_idx, last)
        r_lo, r_hi = np.searchsorted(rated_idx, first), np.searchsorted(rated_idx, last)
        return list(
            zip(prefix[starts].tolist(), s_lo.tolist(), s_hi.tolist(), r_lo.tolist(), r_hi.tolist(), strict=True)
        )

    def _known(self, plan: _Plan, position: int) -> int:
        """Items that appeared (catalogue or event) up to event ``position``, inclusive."""
        return int(np.searchsorted(plan.known_sorted, position, side="right"))

    # -- the replay --------------------------------------------------------------------

    def _replay(
        self,
        models: Mapping[str, Any],
        trackers: Mapping[str, _Tracker],
        log: EventLog,
        plan: _Plan,
        n_events: int,
        desc: str,
    ) -> float:
        """Run the test-then-train loop over the first ``n_events``; return its wall time."""
        from tqdm.auto import tqdm

        kmax, exclude_seen = max(self.ks), self.exclude_seen
        scored_idx, rated_idx = plan.scored_idx, plan.rated_idx
        user_code, user_ids = plan.user_code, plan.user_ids
        cat_positions, n_cat = log.catalogue_positions, len(log.catalogue_items)
        learn_batch = self.learn_batch
        perf = time.perf_counter
        bar = tqdm(total=n_events, desc=desc, unit="ev", unit_scale=True, disable=not self.progress, leave=False)
        state = {"learned": 0, "cat": 0}
        bought: dict[str, set[str]] | None = {} if self.exclude_bought else None  # user -> items bought so far

        def run_models(phase: str, at: int, call: Any, timer: str, after: Any = None) -> None:
            """``call(model, tracker)`` for every model still running, timed; ``after(result, tracker)`` untimed."""
            for name, model in models.items():
                tracker = trackers[name]
                if tracker.error is not None:
                    continue
                try:
                    t0 = perf()
                    out = call(model, tracker)
                    tracker.seconds[timer] += perf() - t0
                    if after is not None:
                        after(out, tracker)
                except Exception as exc:
                    tracker.error = _describe_error(exc, phase, at)

        def advance(target: int) -> None:
            """Learn events (and add catalogue updates) up to the prefix ``target``."""
            learned = state["learned"]
            while True:
                cat = state["cat"]
                if cat < n_cat and cat_positions[cat] <= learned:
                    end = int(np.searchsorted(cat_positions, learned, side="right"))
                    ids, tags = log.catalogue_items[cat:end].tolist(), list(log.catalogue_tags[cat:end])
                    titles = list(log.catalogue_titles[cat:end]) if log.catalogue_titles else []
                    content = {"tags": tags, **({"titles": titles} if any(titles) else {})}
                    state["cat"] = end
                    run_models(
                        "add_items",
                        learned,
                        lambda m, _t, ids=ids, content=content: m.add_items(ids, **content),
                        "catalogue_s",
                    )
                if learned >= target:
                    break
                stop = min(target, (learned // learn_batch + 1) * learn_batch)
                if state["cat"] < n_cat:
                    stop = min(stop, max(int(cat_positions[state["cat"]]), learned + 1))
                batch = log.interactions(learned, stop)
                run_models("learn", learned, lambda m, _t, batch=batch: m.learn(batch), "learn_s")
                if bought is not None:
                    for j in (learned + np.flatnonzero(log.event_types[learned:stop] == "purchase")).tolist():
                        bought.setdefault(str(log.users[j]), set()).add(str(log.items[j]))
                bar.update(stop - learned)
                learned = stop
            state["learned"] = learned

        start = perf()
        for prefix, s_lo, s_hi, r_lo, r_hi in plan.steps:
            first = int(scored_idx[s_lo]) if s_hi > s_lo else int(rated_idx[r_lo])
            if first >= n_events:
                break
            s_hi = min(s_hi, s_lo + int(np.searchsorted(scored_idx[s_lo:s_hi], n_events)))
            r_hi = min(r_hi, r_lo + int(np.searchsorted(rated_idx[r_lo:r_hi], n_events)))
            advance(prefix)
            if s_hi > s_lo:
                codes = user_code[scored_idx[s_lo:s_hi]]
                if s_hi - s_lo == 1:
                    users, rows = [user_ids[codes[0]]], np.zeros(1, dtype=np.int64)
                else:
                    uniq, rows = np.unique(codes, return_inverse=True)
                    users, rows = user_ids[uniq].tolist(), rows.ravel()

                leave_out = {u: bought[u] for u in users if u in bought} if bought else None

                def recommend(model: Any, _t: _Tracker, users: list[str] = users, leave_out: Any = leave_out) -> Any:
                    return model.recommend(
                        users, k=kmax, exclude_seen=exclude_seen, exclude=leave_out, with_reasons=False
                    )

                def record(recs: Any, tracker: _Tracker, rows: np.ndarray = rows, at: int = s_lo) -> None:
                    tracker.record(recs.items, rows, at)

                run_models("recommend", first, recommend, "recommend_s", record)
            if r_hi > r_lo:
                rc = rated_idx[r_lo:r_hi]

                def predict(model: Any, tracker: _Tracker, rc: np.ndarray = rc) -> Any:
                    return model.predict(log.users[rc], log.items[rc]) if tracker.rates else None

                def keep(out: Any, tracker: _Tracker, n: int = len(rc), lo: int = r_lo, hi: int = r_hi) -> None:
                    if out is None:
                        return
                    out = np.asarray(out, dtype=np.float64)
                    if out.shape != (n,):
                        raise RuntimeError(f"predict returned shape {out.shape}, expected ({n},)")
                    tracker.predictions[lo:hi] = out  # type: ignore[index]

                run_models("predict", first, predict, "predict_s", keep)
            for name, tracker in trackers.items():
                if tracker._pending >= 4096 and tracker.error is None and name in models:
                    t0 = perf()
                    tracker.flush(plan)
                    tracker.seconds["score_s"] += perf() - t0
        advance(n_events)  # the rest of the log: the final state holds every event
        for name, tracker in trackers.items():
            if name in models and tracker.error is None:
                t0 = perf()
                tracker.flush(plan)
                tracker.seconds["score_s"] += perf() - t0
        wall = perf() - start
        bar.close()
        return wall

    # -- figures -----------------------------------------------------------------------

    def _ranking_figures(self, ranks: np.ndarray) -> dict[str, float]:
        out: dict[str, float] = {"scored": len(ranks)}
        for k in self.ks:
            out[f"HR@{k}"] = metrics.hit_rate(ranks, k)
        for k in self.ks:
            out[f"NDCG@{k}"] = metrics.ndcg(ranks, k)
        out["MRR"] = metrics.mrr(ranks)
        return out

    def _figures(
        self, log: EventLog, plan: _Plan, tracker: _Tracker, n_events: int
    ) -> tuple[dict, list[dict], dict[str, dict[str, float]]]:
        ranks = tracker.ranks
        wins = plan.window_of[plan.scored_idx]
        overall = self._ranking_figures(ranks)
        per_window: dict[str, np.ndarray] = {}
        for k in self.ks:
            per_window[f"HR@{k}"] = metrics.window_means(metrics.hit_gains(ranks, k), wins, plan.n_windows)
        for k in self.ks:
            per_window[f"NDCG@{k}"] = metrics.window_means(metrics.ndcg_gains(ranks, k), wins, plan.n_windows)
        per_window["MRR"] = metrics.window_means(metrics.reciprocal_ranks(ranks), wins, plan.n_windows)
        known_end = self._known(plan, n_events - 1)
        for k in self.ks:
            overall[f"coverage@{k}"] = metrics.coverage(tracker.covered_codes(k), known_end)
        if tracker.predictions is not None:
            truth = log.ratings[plan.rated_idx].astype(np.float64)
            pred = tracker.predictions
            overall["rated"] = len(truth)
            overall["RMSE"] = metrics.rmse(pred, truth)
            overall["MAE"] = metrics.mae(pred, truth)
            rwins = plan.window_of[plan.rated_idx]
            per_window["RMSE"] = np.sqrt(metrics.window_means((pred - truth) ** 2, rwins, plan.n_windows))
            per_window["MAE"] = metrics.window_means(np.abs(pred - truth), rwins, plan.n_windows)
        windows = []
        for w in range(plan.n_windows):
            row = {name: float(values[w]) for name, values in per_window.items()}
            last = int(plan.scored_idx[min((w + 1) * self.window, len(plan.scored_idx)) - 1])
            for k in self.ks:
                row[f"coverage@{k}"] = metrics.coverage(tracker.covered_codes(k, w), self._known(plan, last))
            windows.append(row)
        history = plan.history[plan.scored_idx]
        by_history = {
            label: self._ranking_figures(ranks[(history >= lo) & (history <= hi)]) for label, lo, hi in HISTORY_BUCKETS
        }
        return overall, windows, by_history

    def _windows(self, log: EventLog, plan: _Plan) -> list[dict[str, Any]]:
        out = []
        rwins = plan.window_of[plan.rated_idx]
        for w in range(plan.n_windows):
            chunk = plan.scored_idx[w * self.window : (w + 1) * self.window]
            first, last = int(chunk[0]), int(chunk[-1])
            out.append(
                {
                    "window": w,
                    "first_event": first,
                    "last_event": last,
                    "first_timestamp": float(log.timestamps[first]),
                    "last_timestamp": float(log.timestamps[last]),
                    "scored": len(chunk),
                    "rated": int((rwins == w).sum()),
                    "items_known": self._known(plan, last),
                }
            )
        return out

    # -- memory --------------------------------------------------------------------------

    @staticmethod
    def _state_bytes(model: Any) -> int | None:
        save = getattr(model, "save", None)
        if not callable(save):
            return None
        with tempfile.TemporaryDirectory(prefix="streamrec-backtest-") as tmp:
            folder = Path(save(Path(tmp) / "model"))
            return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())

    def _traced_peak(self, name: str, model: Any, log: EventLog, plan: _Plan, n_events: int) -> int:
        fresh = model.clone()
        n_scored = int(np.searchsorted(plan.scored_idx, n_events))
        n_rated = int(np.searchsorted(plan.rated_idx, n_events))
        tracker = _Tracker(n_scored, n_rated, self.ks, plan.n_windows, _rates(fresh))
        peak, _ = traced_peak(
            lambda: self._replay({name: fresh}, {name: tracker}, log, plan, n_events, desc=f"memory {name}")
        )
        if tracker.error is not None:
            raise RuntimeError(tracker.error)
        return peak

    # -- entry point -----------------------------------------------------------------------

    def run(self, log: EventLog | Iterable[Event]) -> BacktestResult:
        """Replay ``log`` (an :class:`EventLog`, or records in any order) and return the figures."""
        if not isinstance(log, EventLog):
            log = EventLog.from_events(log)
        t0 = time.perf_counter()
        plan = self._plan(log)
        prepare_s = time.perf_counter() - t0
        trackers = {
            name: _Tracker(len(plan.scored_idx), len(plan.rated_idx), self.ks, plan.n_windows, _rates(model))
            for name, model in self.models.items()
        }
        wall = self._replay(self.models, trackers, log, plan, plan.n, desc="backtest")
        results: dict[str, ModelResult] = {}
        model_total = 0.0  # seconds inside model calls, all models
        for name, model in self.models.items():
            tracker = trackers[name]
            params = model.get_params() if callable(getattr(model, "get_params", None)) else {}
            result = ModelResult(name=name, params=params, error=tracker.error)
            results[name] = result
            seconds = dict(tracker.seconds)
            model_s = sum(v for k, v in seconds.items() if k != "score_s")
            model_total += model_s
            result.timing = {
                **{k: round(v, 6) for k, v in seconds.items()},
                "model_s": round(model_s, 6),
                "events_per_s": plan.n / model_s if model_s > 0 else float("nan"),
            }
            if tracker.error is not None:
                result.timing.pop("events_per_s")  # it stopped early: no rate over the whole log
                continue
            result.overall, result.windows, result.by_history = self._figures(log, plan, tracker, plan.n)
            result.ranks = tracker.ranks
            if self.memory != "off":
                try:
                    result.memory["state_bytes"] = self._state_bytes(model)
                except Exception as exc:
                    result.memory["state_error"] = f"{type(exc).__name__}: {exc}"
        if self.memory == "trace" and plan.n:
            n_mem = plan.n if self.memory_events is None else min(plan.n, self.memory_events)
            for name, model in self.models.items():
                if results[name].error is not None:
                    continue
                try:
                    results[name].memory["peak_traced_bytes"] = self._traced_peak(name, model, log, plan, n_mem)
                    results[name].memory["traced_events"] = n_mem
                except Exception as exc:
                    results[name].memory["trace_error"] = f"{type(exc).__name__}: {exc}"
        harness_s = max(wall - model_total, 0.0)  # slicing, rank lookup, coverage, progress bar
        return BacktestResult(
            config=self.config(),
            stream={**log.describe(), "scored": len(plan.scored_idx), "rated_evaluated": len(plan.rated_idx)},
            windows=self._windows(log, plan),
            models=results,
            harness={
                "prepare_s": round(prepare_s, 6),
                "replay_wall_s": round(wall, 6),
                "harness_s": round(harness_s, 6),
                "harness_s_per_100k_events": round(harness_s / max(plan.n, 1) * 100_000, 6),
                "process_peak_rss_bytes": peak_rss(),
            },
            scored_users=plan.user_ids[plan.user_code[plan.scored_idx]],
        )

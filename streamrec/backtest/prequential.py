"""Prequential (test-then-train) replay of an event log through online models.

For every micro-batch of ``batch_size`` events, in time order, and for every
model:

1. catalogue updates that arrived before the batch are added (``add_items``);
2. one vectorised ``recommend`` call gives the top-``max(ks)`` list of every
   distinct user among the batch's scored events, from the model's state
   before the batch: the lists Redis would have held when the events arrived;
3. rating models (``uses_ratings`` and a ``predict(users, items)`` method)
   predict the rating of each evaluated rated event;
4. each scored event is looked up in its user's list (its 0-based rank, or
   ``-1``), one vectorised comparison per batch;
5. the model learns the events whose label has arrived (see ``label_delay``).

``batch_size=1`` is strictly per event. Which events are scored:

- ``warmup``: the first ``floor(warmup * n_events)`` events are learned, never scored;
- ``every``: after the warm-up, events ``0, every, 2 * every, ...`` are evaluated;
- ``positives``: event types that count as positives (``view``, ``click``,
  ``add_to_cart``, ``purchase``, ``rating``; default all), and ``min_rating``:
  a rating below it is not a positive. Ranking metrics use the evaluated
  positives; RMSE and MAE use every evaluated rated event.

``label_delay`` is counted in **events**: event ``j`` is learned only once
``label_delay`` further events have arrived, i.e. at the end of the batch that
holds event ``j + label_delay`` (0: each batch is learned right after it is
scored). The last ``label_delay`` events are never learned.

Metrics are computed from the recorded ranks and predictions by the pure
functions of :mod:`streamrec.backtest.metrics`, overall and per window of
``window`` consecutive scored events.

Timings are wall-clock seconds inside the models' ``recommend``, ``predict``,
``learn`` and ``add_items`` calls; ``events/s`` is the number of replayed
events divided by their sum. Reading the log is not timed; the harness's own
work (batch slicing, rank lookup) is reported apart as ``harness_s``.

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
>>> result = Prequential({"popularity": create("popularity")}, ks=(3,), batch_size=20).run(EventLog.from_events(events))
>>> figures = result.models["popularity"].overall
>>> figures["scored"], 0.0 <= figures["HR@3"] <= 1.0
(200, True)
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

__all__ = ["POSITIVE_TYPES", "BacktestResult", "ModelResult", "Prequential", "machine_info"]

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


@dataclass
class BacktestResult:
    """Everything a backtest measured; :meth:`to_dict` is what ``results.json`` holds."""

    config: dict[str, Any]
    stream: dict[str, Any]
    windows: list[dict[str, Any]]
    models: dict[str, ModelResult]
    harness: dict[str, float]
    machine: dict[str, Any] = field(default_factory=machine_info)

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
                        "windows": m.windows,
                        "timing": m.timing,
                        "memory": m.memory,
                    }
                    for name, m in self.models.items()
                },
                "harness": self.harness,
                "machine": self.machine,
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

    def score(
        self, lists: list[list[str]], rows: np.ndarray, targets: np.ndarray, wins: np.ndarray, at: int, codes: _Codes
    ) -> None:
        n_users, width = int(rows.max()) + 1, max(self.ks)
        if len(lists) != n_users:
            raise RuntimeError(f"recommend returned {len(lists)} lists for {n_users} users")
        lengths = np.fromiter(map(len, lists), dtype=np.int64, count=n_users)
        flat = np.fromiter(map(codes.__getitem__, chain.from_iterable(lists)), dtype=np.int64, count=int(lengths.sum()))
        table = np.full((n_users, width), -1, dtype=np.int64)
        if (lengths == width).all():
            table[:] = flat.reshape(n_users, width)
        elif len(flat):
            r = np.repeat(np.arange(n_users), lengths)
            c = np.arange(len(flat)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
            keep = c < width
            table[r[keep], c[keep]] = flat[keep]
        self.ranks[at : at + len(rows)] = metrics.rank_lookup(table, rows, targets)
        first, last = int(wins[0]), int(wins[-1])
        for w in range(first, last + 1):
            served = table if first == last else table[np.unique(rows[wins == w])]
            for k in self.ks:
                block = served[:, :k]
                bucket = self.covered[k][w]
                bucket.append(block[block >= 0])
                if len(bucket) >= 64:
                    bucket[:] = [np.unique(np.concatenate(bucket))]

    def covered_codes(self, k: int, w: int | None = None) -> np.ndarray:
        parts = self.covered[k] if w is None else [self.covered[k][w]]
        arrays = [a for bucket in parts for a in bucket]
        return np.unique(np.concatenate(arrays)) if arrays else np.zeros(0, dtype=np.int64)


def _rates(model: Any) -> bool:
    return bool(getattr(model, "uses_ratings", False)) and callable(getattr(model, "predict", None))


def _describe_error(exc: BaseException, phase: str, position: int) -> str:
    return f"{type(exc).__name__} in {phase} (batch starting at event {position}): {exc}"


class Prequential:
    """Replay a log through several models: recommend, score, then learn, batch by batch.

    Parameters
    ----------
    models
        Name -> model implementing the :class:`~models.OnlineRecommender` protocol
        (``learn``, ``recommend``, ``add_items``; optionally ``predict``, ``save``, ``clone``).
    ks
        List lengths to score; lists of ``max(ks)`` are requested once per batch.
    batch_size
        Events per micro-batch (1: strictly per event).
    warmup
        Fraction of the events, from the start, learned but not scored.
    every
        Evaluate every ``every``-th event after the warm-up.
    positives
        Event types that count as positives (default: every type, ratings included).
    min_rating
        Ratings below this are not positives (``None``: every rating is).
    label_delay
        Events that must arrive after an event before it is learned.
    window
        Scored events per window of the figures over time.
    exclude_seen
        Leave the user's seen items out of the lists (as the live worker does).
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
        batch_size: int = 1000,
        warmup: float = 0.0,
        every: int = 1,
        positives: Iterable[str] | None = None,
        min_rating: float | None = None,
        label_delay: int = 0,
        window: int = 5000,
        exclude_seen: bool = True,
        memory: str = "state",
        memory_events: int | None = 20_000,
        progress: bool = False,
    ) -> None:
        ks = tuple(int(k) for k in ks)
        if not ks or min(ks) < 1:
            raise ValueError(f"ks must be one or more list lengths >= 1, got {ks}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not 0.0 <= warmup < 1.0:
            raise ValueError(f"warmup is a fraction of the events in [0, 1), got {warmup}")
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        if label_delay < 0:
            raise ValueError(f"label_delay must be >= 0 events, got {label_delay}")
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
        self.batch_size = batch_size
        self.warmup = warmup
        self.every = every
        self.positives = positives
        self.min_rating = min_rating
        self.label_delay = label_delay
        self.window = window
        self.exclude_seen = exclude_seen
        self.memory = memory
        self.memory_events = memory_events
        self.progress = progress

    def config(self) -> dict[str, Any]:
        """The options, as recorded in the result."""
        return {
            "ks": list(self.ks),
            "batch_size": self.batch_size,
            "warmup": self.warmup,
            "every": self.every,
            "positives": list(self.positives),
            "min_rating": self.min_rating,
            "label_delay": self.label_delay,
            "label_delay_unit": "events",
            "window": self.window,
            "window_unit": "scored events",
            "exclude_seen": self.exclude_seen,
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
        n_scored = int(scored.sum())
        n_windows = -(-n_scored // self.window)
        window_of = np.minimum(np.maximum(np.cumsum(scored) - 1, 0) // self.window, max(n_windows - 1, 0))
        return _Plan(
            n=n,
            user_ids=user_ids,
            user_code=np.asarray(user_code, dtype=np.int64).ravel(),
            item_code=item_code,
            codes=codes,
            scored_idx=np.flatnonzero(scored),
            rated_idx=np.flatnonzero(evaluated & rated),
            window_of=window_of,
            n_windows=n_windows,
            known_sorted=np.sort(first),
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

        active = [name for name in models if trackers[name].error is None]
        kmax = max(self.ks)
        scored_idx, rated_idx = plan.scored_idx, plan.rated_idx
        s_ptr = r_ptr = cat_ptr = 0
        learned = 0
        n_cat = len(log.catalogue_items)
        perf = time.perf_counter
        bar = tqdm(total=n_events, desc=desc, unit="ev", unit_scale=True, disable=not self.progress, leave=False)
        start = perf()
        for s in range(0, n_events, self.batch_size):
            e = min(s + self.batch_size, n_events)
            # catalogue updates that arrived before this batch
            cat_ids: list[str] | None = None
            if cat_ptr < n_cat and log.catalogue_positions[cat_ptr] <= s:
                cat_end = int(np.searchsorted(log.catalogue_positions, s, side="right"))
                cat_ids = log.catalogue_items[cat_ptr:cat_end].tolist()
                cat_tags = list(log.catalogue_tags[cat_ptr:cat_end])
                cat_ptr = cat_end
            # who is scored in this batch, against which list row
            s_end = int(np.searchsorted(scored_idx, e, side="left"))
            sc = scored_idx[s_ptr:s_end]
            users: list[str] = []
            if len(sc):
                uniq, rows = np.unique(plan.user_code[sc], return_inverse=True)
                users = plan.user_ids[uniq].tolist()
                rows = rows.ravel()
                targets = plan.item_code[sc]
                wins = plan.window_of[sc]
            r_end = int(np.searchsorted(rated_idx, e, side="left"))
            rc = rated_idx[r_ptr:r_end]
            learn_to = max(learned, e - self.label_delay)
            batch = log.interactions(learned, learn_to) if learn_to > learned else None
            for name in active:
                tracker = trackers[name]
                if tracker.error is not None:
                    continue
                model = models[name]
                phase = "add_items"
                try:
                    t0 = perf()
                    if cat_ids:
                        model.add_items(cat_ids, tags=cat_tags)
                    t1 = perf()
                    phase = "recommend"
                    recs = model.recommend(users, k=kmax, exclude_seen=self.exclude_seen) if users else None
                    t2 = perf()
                    phase = "predict"
                    predictions = None
                    if tracker.rates and len(rc):
                        predictions = np.asarray(model.predict(log.users[rc], log.items[rc]), dtype=np.float64)
                    t3 = perf()
                    phase = "learn"
                    if batch is not None:
                        model.learn(batch)
                    t4 = perf()
                    phase = "scoring"
                    if recs is not None:
                        tracker.score(recs.items, rows, targets, wins, s_ptr, plan.codes)
                    if predictions is not None:
                        if predictions.shape != (len(rc),):
                            raise RuntimeError(f"predict returned shape {predictions.shape}, expected ({len(rc)},)")
                        tracker.predictions[r_ptr:r_end] = predictions  # type: ignore[index]
                    t5 = perf()
                except Exception as exc:
                    tracker.error = _describe_error(exc, phase, s)
                    continue
                seconds = tracker.seconds
                seconds["catalogue_s"] += t1 - t0
                seconds["recommend_s"] += t2 - t1
                seconds["predict_s"] += t3 - t2
                seconds["learn_s"] += t4 - t3
                seconds["score_s"] += t5 - t4
            s_ptr, r_ptr, learned = s_end, r_end, learn_to
            bar.update(e - s)
        wall = perf() - start
        bar.close()
        return wall

    # -- figures -----------------------------------------------------------------------

    def _figures(self, log: EventLog, plan: _Plan, tracker: _Tracker, n_events: int) -> tuple[dict, list[dict]]:
        ranks = tracker.ranks
        wins = plan.window_of[plan.scored_idx]
        overall: dict[str, float] = {"scored": len(ranks)}
        per_window: dict[str, np.ndarray] = {}
        for k in self.ks:
            overall[f"HR@{k}"] = metrics.hit_rate(ranks, k)
            per_window[f"HR@{k}"] = metrics.window_means(metrics.hit_gains(ranks, k), wins, plan.n_windows)
        for k in self.ks:
            overall[f"NDCG@{k}"] = metrics.ndcg(ranks, k)
            per_window[f"NDCG@{k}"] = metrics.window_means(metrics.ndcg_gains(ranks, k), wins, plan.n_windows)
        overall["MRR"] = metrics.mrr(ranks)
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
        return overall, windows

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
            result.overall, result.windows = self._figures(log, plan, tracker, plan.n)
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
        )

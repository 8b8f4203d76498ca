"""What scaling out costs in quality: per-event HR@10 with the users split over 1, 3 and 8 workers.

The workers are simulated in one process with the code the live workers run
(the models' sharing protocol, :mod:`models.sharing`): a log's users are
spread over ``partitions`` partitions as the producer spreads them (murmur2 of
the user id, kafka-python's default partitioner) and the partitions over the
workers round-robin, as Kafka's assignors do. Every worker's models learn only
their own users' events; every ``exchange_every`` events (the worker commits
once a second: at 2,000 events/s that is 2,000 events) each worker takes its
item increments (:meth:`~models.base.OnlineRecommender.take_item_delta`, sent
as bytes) and every other worker applies them, as the updates topic carries
them. Each event is scored first: its user's list (K = 10, seen items
excluded) from the worker that owns them, or, for a user without history, the
popularity list of a popularity model that learns every event (it shares
exactly, so every worker holds the same); then it is learned by its worker.

With one worker this is the per-event backtest at freshness 0. The popularity
and item-kNN counts add up exactly, so their only loss is the items other
workers' users made popular since the last exchange; SGD-trained tables
(``two_tower``, ``sasrec``) are summed asynchronously and may lose more.
The figures are on MovieLens 100K (``../shared/data``), or on generated
MovieLens-format data when it is absent (then they say so).
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.common import md_table, target

DEFAULT_MODELS = ("itemknn", "sknn", "sasrec")


@dataclass
class Config:
    models: tuple[str, ...] = DEFAULT_MODELS
    workers: tuple[int, ...] = (1, 3, 8)
    partitions: int = 24
    #: Exchange when this much event time passed since the last exchange (the worker commits every second).
    exchange_seconds: float = 1.0
    #: The stress case: exchange every this many events, as if the log arrived at 2,000 events/s.
    exchange_every: int = 2000
    stress_workers: tuple[int, ...] = (3,)
    limit: int | None = None
    k: int = 10


def config(quick: bool = False) -> Config:
    if quick:
        return Config(models=("itemknn", "sknn"), workers=(1, 3), stress_workers=(3,), limit=10_000)
    return Config()


def _log(limit: int | None) -> tuple[Any, str]:
    from producers.movielens_format import write_movielens
    from streamrec.backtest.sources import movielens_log
    from streamrec.datasets import find_movielens

    folder = find_movielens(download=False)
    source = "MovieLens 100K"
    if folder is None:
        folder = Path(tempfile.mkdtemp(prefix="bench-split-")) / "ml"
        write_movielens(folder, n_ratings=30_000, seed=7)
        source = "generated MovieLens-format ratings (the real set is absent)"
    log = movielens_log(folder)
    n = len(log) if limit is None else min(limit, len(log))
    return log, source if n == len(log) else f"{source}, first {n:,} events"


def split_run(
    log: Any, name: str, n_workers: int, cfg: Config, every: int | None = None, item_state: str = "broadcast"
) -> dict[str, Any]:
    """HR@10 of ``name`` with the log's users over ``n_workers`` workers (see the module docstring).

    Increments are exchanged every ``cfg.exchange_seconds`` of event time, or
    every ``every`` events when given. ``item_state="owned"``: each worker cuts
    its increments by item part (one part per partition), the owner of part
    ``p`` (the worker of partition ``p``) merges them, and every worker applies
    each merge less its own piece, as ``STREAMREC_ITEM_STATE=owned`` does.
    """
    from kafka.partitioner.default import murmur2

    import models
    from models.sharing import ItemDelta

    n = len(log) if cfg.limit is None else min(cfg.limit, len(log))
    workers = [models.create(name) for _ in range(n_workers)]
    popularity = models.create("popularity")
    if n_workers > 1:
        for w in workers:
            w.begin_sharing()
    if len(log.catalogue_items):  # the catalogue (genres, titles) first, as the worker reads the items topic
        ids = log.catalogue_items.tolist()
        for model in [*workers, popularity]:
            model.add_items(ids, tags=list(log.catalogue_tags), titles=list(log.catalogue_titles))
    users = log.users[:n].tolist()
    items = log.items[:n].tolist()
    times = log.timestamps[:n].tolist()
    last_exchange = times[0] if n else 0.0
    owner_of: dict[str, int] = {}
    history: dict[str, int] = {}
    hits = 0
    exchanged = 0
    delta_bytes = 0
    started = time.perf_counter()
    for j in range(n):
        user, item = users[j], items[j]
        due = (j % every == 0) if every else (times[j] - last_exchange >= cfg.exchange_seconds)
        if n_workers > 1 and j and due and item_state == "owned":
            delta_bytes += _exchange_owned(workers, cfg.partitions)
            exchanged += 1
            last_exchange = times[j]
        elif n_workers > 1 and j and due:
            blobs = [w_.take_item_delta().to_bytes(compress=False) for w_ in workers]
            delta_bytes += sum(len(b) for b in blobs)
            for a, target_worker in enumerate(workers):
                for b, blob in enumerate(blobs):
                    if a != b:
                        target_worker.apply_item_delta(ItemDelta.from_bytes(blob))
            exchanged += 1
            last_exchange = times[j]
        w = owner_of.get(user)
        if w is None:
            w = owner_of[user] = ((murmur2(user.encode()) & 0x7FFFFFFF) % cfg.partitions) % n_workers
        worker = workers[w]
        if history.get(user, 0):
            listed = worker.recommend([user], k=cfg.k, with_reasons=False).items[0]
        else:
            listed = popularity.recommend([user], k=cfg.k, with_reasons=False).items[0]
        hits += item in listed
        batch = log.interactions(j, j + 1)
        worker.learn(batch)
        popularity.learn(batch)
        history[user] = history.get(user, 0) + 1
    return {
        "model": name,
        "workers": n_workers,
        "item_state": item_state,
        "events": n,
        "hr": hits / n if n else float("nan"),
        "exchange": f"every {every:,} events" if every else f"every {cfg.exchange_seconds:g} s of event time",
        "exchanges": exchanged,
        "delta_bytes_per_event": delta_bytes / n if n else 0.0,
        "seconds": time.perf_counter() - started,
    }


def _exchange_owned(workers: list[Any], parts: int) -> int:
    """One exchange through item parts' owners; returns the bytes of the merges (each read by every worker)."""
    from models.sharing import ItemDelta

    pieces = [w.split_item_delta(w.take_item_delta(), parts) for w in workers]
    written = 0
    for p in range(parts):
        held = [ItemDelta.from_bytes(q[p].to_bytes(compress=False)) for q in pieces if p in q]
        if not held:
            continue
        blob = workers[p % len(workers)].merge_item_deltas(held).to_bytes(compress=False)
        written += len(blob)
        for worker, own in zip(workers, pieces, strict=True):
            for part in worker.net_item_deltas(ItemDelta.from_bytes(blob), [own[p]] if p in own else []):
                worker.apply_item_delta(part)
    return written


def run(cfg: Config) -> dict[str, Any]:
    from streamrec.settings import limit_torch_threads

    limit_torch_threads()
    log, source = _log(cfg.limit)
    runs = [split_run(log, name, w, cfg) for name in cfg.models for w in cfg.workers]
    stress = [split_run(log, name, w, cfg, every=cfg.exchange_every) for name in cfg.models for w in cfg.stress_workers]
    import models

    owned = [split_run(log, name, w, cfg, item_state="owned") for name in cfg.models for w in cfg.workers
             if w > 1 and models.model_class(name).merges_item_deltas]  # fmt: skip
    out: dict[str, Any] = {"config": asdict(cfg), "source": source, "runs": runs, "stress": stress, "owned": owned,
                           "targets": []}  # fmt: skip
    for name in cfg.models:
        by_w = {r["workers"]: r["hr"] for r in runs if r["model"] == name}
        one = by_w.get(1)
        for w, hr in by_w.items():
            if w == 1 or one is None:
                continue
            out["targets"].append(
                target(
                    f"HR@10 of {name} over {w} workers",
                    "within 2% of one worker",
                    f"{hr:.4f} vs {one:.4f} ({hr / one - 1:+.1%})",
                    hr >= 0.98 * one,
                    reference=f"1 worker {one:.4f}",
                )
            )
        for r in (r for r in owned if r["model"] == name and one is not None):
            out["targets"].append(
                target(
                    f"HR@10 of {name} over {r['workers']} workers, item state owned by item",
                    "within 2% of one worker",
                    f"{r['hr']:.4f} vs {one:.4f} ({r['hr'] / one - 1:+.1%})",
                    r["hr"] >= 0.98 * one,
                    reference=f"1 worker {one:.4f}",
                )
            )
    return out


def markdown(result: dict[str, Any]) -> str:
    cfg = result["config"]
    names = list(dict.fromkeys(r["model"] for r in result["runs"]))
    counts = sorted({r["workers"] for r in result["runs"]})
    stress = result.get("stress", [])
    rows = []
    for name in names:
        by_w = {r["workers"]: r for r in result["runs"] if r["model"] == name}
        row = [f"`{name}`"]
        for w in counts:
            r = by_w.get(w)
            row.append(f"{r['hr']:.4f}" if r else "–")
        for r in (r for r in stress if r["model"] == name):
            row.append(f"{r['hr']:.4f} ({r['workers']} workers)")
        big = by_w.get(max(counts))
        row.append(f"{big['delta_bytes_per_event']:.0f}" if big else "–")
        mine = [r for r in result.get("owned", []) if r["model"] == name]
        row.append(" / ".join(f"{r['hr']:.4f} ({r['workers']})" for r in mine) if mine else "–")
        rows.append(row)
    head = ["model", *[f"{w} worker{'s' if w > 1 else ''}" for w in counts]]
    if stress:
        head.append(f"exchange every {cfg['exchange_every']:,} events")
    head.append(f"increment bytes/event ({max(counts)} workers)")
    head.append("item state owned by item (workers)")
    return (
        f"{result['source']}, every event scored (HR@{cfg['k']}, per event at freshness 0); users over "
        f"{cfg['partitions']} partitions (murmur2, as the producer), partitions over the workers round-robin; "
        f"increments exchanged once every {cfg['exchange_seconds']:g} s of event time (the worker commits every "
        f"second). The stress column exchanges only every {cfg['exchange_every']:,} events, as if the log arrived "
        f"at 2,000 events/s: others' events of the last second are then missing from every list.\n\n"
        + md_table(head, rows)
        + "\n"
    )

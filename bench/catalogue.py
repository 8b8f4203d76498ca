"""Catalogue scale: what one event costs as the catalogue grows from 10,000 to 1,000,000 items.

For each catalogue size and model, the model is given the whole catalogue
(``add_items``), learns ``warm_events`` clicks of
:class:`~producers.synthetic.SyntheticStream` (Zipf popularity, users with
home topics) and then replays ``events`` more **per event**, as the live
worker and the backtest at freshness 0 do: learn one event, then the top-20
of its user with seen items excluded, and the fallback's top-20 (the
popularity list a user without history gets). Throughput is events over the
seconds inside those calls. The first list after the warm events is timed on
its own (the embedding models build their item index there, once).

Quality is measured on the same replay, per event: an event is a hit when its
item is in the top 10 of the list its user was last served (the user's list
after their previous event, the fallback's for a user's first event).

No model ranks by a pass over the catalogue any more: popularity keeps its
top list, item-kNN and session-kNN rank the items their neighbours reach,
SASRec and the two-tower model rank what a faiss item index retrieves (see
:mod:`models.retrieval`). The references, in the same run: every model at
``exact_items`` items with its full pass switched back on (throughput and
HR@10 of exact scoring), and popularity's full pass at every size.
"""

from __future__ import annotations

import gc
import json
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any

import models
from bench.common import md_table, target
from models import Interactions
from producers.synthetic import SyntheticStream

__all__ = ["Config", "config", "markdown", "run"]


@dataclass(frozen=True)
class Config:
    sizes: tuple[int, ...] = (10_000, 100_000, 1_000_000)
    models: tuple[str, ...] = ("popularity", "itemknn", "sknn", "sasrec", "two_tower")
    exact_items: int = 100_000  # every model also ranks by a full pass at this size (the reference)
    warm_events: int = 5_000
    settle_events: int = 0  # the last of the warm events learned one by one with their lists served, untimed
    events: int = 2_000
    n_users: int = 20_000
    k: int = 20
    hit_k: int = 10
    memory_items: int = 1_000_000  # RSS per this many items, measured in a fresh process per model
    seed: int = 0


def config(quick: bool = False) -> Config:
    if quick:
        return Config(sizes=(10_000, 100_000), models=("popularity",), events=300)
    return Config()


def _exact(model: Any) -> Any:
    """The model ranking by a pass over the whole catalogue (its kept list and its index switched off)."""
    model._global_top = lambda m: None
    model._score_sparse = lambda u, want: None
    return model


def _replay(name: str, n_items: int, cfg: Config, exact: bool, params: dict[str, Any] | None = None) -> dict[str, Any]:
    """Learn ``cfg.warm_events``, then replay ``cfg.events`` per event (``params``: the model's hyperparameters)."""
    gc.collect()
    model = models.create(name, seed=cfg.seed, **(params or {})) if name != "popularity" else models.create(name)
    fallback = models.create("popularity")
    if exact:
        _exact(model)
        _exact(fallback)
    catalogue = [f"i{i}" for i in range(n_items)]  # the ids SyntheticStream uses
    started = time.perf_counter()
    model.add_items(catalogue)
    add_seconds = time.perf_counter() - started
    fallback.add_items(catalogue)
    stream = SyntheticStream(n_users=cfg.n_users, n_items=n_items, seed=cfg.seed)
    batch = next(iter(stream.batches(cfg.warm_events + cfg.events, chunk=cfg.warm_events + cfg.events)))
    started = time.perf_counter()
    bulk = cfg.warm_events - cfg.settle_events
    for a in range(0, bulk, 200_000):  # a long warm stream in large micro-batches
        warm = _part(batch, a, min(a + 200_000, bulk))
        model.learn(warm)
        fallback.learn(warm)
    warm_seconds = time.perf_counter() - started
    for n in range(bulk, cfg.warm_events):  # as the live worker runs: what a model keeps for its lists is warm
        one = _part(batch, n, n + 1)
        model.learn(one)
        fallback.learn(one)
        model.recommend([str(one.users[0])], k=cfg.k)
    t0 = time.perf_counter()
    model.recommend([str(batch.users[cfg.warm_events])], k=cfg.k)  # the first list: an item index is built here
    first_list = time.perf_counter() - t0
    served: dict[str, list[str]] = {}
    top = fallback.recommend(["*"], k=cfg.k, exclude_seen=False).items[0]
    hits = 0
    spent = {"learn": 0.0, "recommend": 0.0, "fallback": 0.0}
    for n in range(cfg.warm_events, cfg.warm_events + cfg.events):
        one = _part(batch, n, n + 1)
        user, item = str(one.users[0]), str(one.items[0])
        hits += item in served.get(user, top)[: cfg.hit_k]
        t0 = time.perf_counter()
        model.learn(one)
        fallback.learn(one)
        t1 = time.perf_counter()
        served[user] = model.recommend([user], k=cfg.k).items[0]
        t2 = time.perf_counter()
        top = fallback.recommend(["*"], k=cfg.k, exclude_seen=False).items[0]
        t3 = time.perf_counter()
        spent["learn"] += t1 - t0
        spent["recommend"] += t2 - t1
        spent["fallback"] += t3 - t2
    total = sum(spent.values())
    del model, fallback
    return {
        "model": name,
        "items": n_items,
        "exact": exact,
        "events_per_second": cfg.events / total,
        "us_per_event": {key: 1e6 * v / cfg.events for key, v in spent.items()},
        "add_items_seconds": add_seconds,
        "warm_seconds": warm_seconds,
        "first_list_seconds": first_list,
        "hr_at_10": hits / cfg.events,
    }


_MEMORY_PROBE = """
import gc, json, sys
import models
from bench.common import rss_bytes
from producers.synthetic import SyntheticStream
name, n = sys.argv[1], int(sys.argv[2])
ids = [f"i{i}" for i in range(n)]
gc.collect()
before = rss_bytes()
model = models.create(name)
model.add_items(ids)
loaded = rss_bytes()
model.learn(next(iter(SyntheticStream(n_users=1000, n_items=n, seed=0).batches(2000, chunk=2000))))
model.recommend(["u1"], k=20)
print(json.dumps({"add_items": (loaded - before) / 2**20, "serving": (rss_bytes() - before) / 2**20}))
"""


def _memory(name: str, n_items: int) -> dict[str, float]:
    """RSS growth (MiB) of a fresh process: over ``add_items`` of ``n_items`` ids, and once it serves lists."""
    out = subprocess.run(
        [sys.executable, "-c", _MEMORY_PROBE, name, str(n_items)], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def _part(batch: Interactions, a: int, b: int) -> Interactions:
    return Interactions(
        batch.users[a:b], batch.items[a:b], batch.timestamps[a:b], batch.weights[a:b], batch.ratings[a:b]
    )


def run(cfg: Config) -> dict[str, Any]:
    rows = []
    for n_items in cfg.sizes:
        for name in cfg.models:
            if name == "popularity" or n_items == cfg.exact_items:
                rows.append(_replay(name, n_items, cfg, exact=True))  # the reference, in the same run
            rows.append(_replay(name, n_items, cfg, exact=False))
    memory = {name: _memory(name, cfg.memory_items) for name in cfg.models} if cfg.memory_items else {}
    by = {(r["model"], r["items"], r["exact"]): r for r in rows}
    small, big = min(cfg.sizes), max(cfg.sizes)
    targets = []
    for name in cfg.models:
        low, high = by.get((name, small, False)), by.get((name, big, False))
        if low and high:
            ratio = high["events_per_second"] / low["events_per_second"]
            reference = by.get((name, big, True)) or by.get((name, cfg.exact_items, True))
            targets.append(
                target(
                    f"per event, `{name}` and the fallback, {big:,} vs {small:,} items",
                    ">= 0.5 x and >= 2,000 events/s",
                    f"{high['events_per_second']:,.0f} events/s ({ratio:.2f} x)",
                    ratio >= 0.5 and high["events_per_second"] >= 2000,
                    reference=(
                        f"full pass: {reference['events_per_second']:,.0f} events/s at {reference['items']:,} items"
                        if reference
                        else ""
                    ),
                )
            )
        fast, exact = by.get((name, cfg.exact_items, False)), by.get((name, cfg.exact_items, True))
        if fast and exact:
            gap = (fast["hr_at_10"] - exact["hr_at_10"]) / max(exact["hr_at_10"], 1e-9)
            targets.append(
                target(
                    f"HR@10 of `{name}` at {cfg.exact_items:,} items against exact scoring",
                    "within 2%",
                    f"{fast['hr_at_10']:.4f} ({gap:+.1%})",
                    abs(gap) <= 0.02,
                    reference=f"exact: {exact['hr_at_10']:.4f}",
                )
            )
    return {"config": asdict(cfg), "rows": rows, "memory_mib": memory, "targets": targets}


def markdown(result: dict[str, Any]) -> str:
    cfg = result["config"]
    table = [
        [
            f"`{r['model']}`" + (" (full pass: reference)" if r["exact"] else ""),
            f"{r['items']:,}",
            f"{r['events_per_second']:,.0f}",
            " / ".join(f"{r['us_per_event'][k]:,.0f}" for k in ("learn", "recommend", "fallback")),
            f"{r['hr_at_10']:.4f}",
            f"{r['add_items_seconds']:.2f}",
            f"{r['first_list_seconds']:.2f}",
        ]
        for r in result["rows"]
    ]
    head = (
        f"Per event (learn 1 event, the user's top-{cfg['k']}, the fallback's top-{cfg['k']}), after "
        f"{cfg['warm_events']:,} events; {cfg['events']:,} events replayed, HR@{cfg['hit_k']} of the list each "
        "event's user was last served.\n\n"
    )
    memory = result.get("memory_mib") or {}
    per_item = (
        f"\n\nRSS of a fresh process per {cfg['memory_items']:,} catalogue items (ids, index and model state; "
        "MiB after `add_items` / once it serves lists): "
        + ", ".join(f"`{m}` {v['add_items']:,.0f} / {v['serving']:,.0f}" for m, v in memory.items())
        + "."
        if memory
        else ""
    )
    return (
        head
        + md_table(
            [
                "model",
                "items",
                "events/s",
                "µs per event: learn / recommend / fallback",
                f"HR@{cfg['hit_k']}",
                "add_items s",
                "first list s",
            ],
            table,
        )
        + per_item
    )

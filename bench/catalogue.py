"""Catalogue scale: what one event costs as the catalogue grows from 10,000 to 1,000,000 items.

For each catalogue size and model, the model is given the whole catalogue
(``add_items``), learns ``warm_events`` clicks of
:class:`~producers.synthetic.SyntheticStream` (Zipf popularity, users with
home topics) and then replays ``events`` more **per event**, as the live
worker and the backtest at freshness 0 do: learn one event, then the top-20
of its user with seen items excluded, and the fallback's top-20 (the
popularity list a user without history gets, which the pipeline recomputes
for every batch). Throughput is events over the seconds inside those calls.

Popularity keeps its top list as scores grow (``models.popularity``): the
reference in the same run is the same model ranking by a full pass over the
catalogue (its kept list switched off). The other models still rank by a
full pass; their figures say what is left to do.
"""

from __future__ import annotations

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
    full_pass_models: tuple[str, ...] = ("itemknn", "sknn", "sasrec", "two_tower")  # only up to full_pass_max_items
    full_pass_max_items: int = 100_000
    warm_events: int = 5_000
    events: int = 2_000
    n_users: int = 20_000
    k: int = 20
    seed: int = 0


def config(quick: bool = False) -> Config:
    if quick:
        return Config(sizes=(10_000, 100_000), models=("popularity",), events=300)
    return Config()


def _without_kept_list(model: Any) -> Any:
    model._global_top = lambda m: None
    return model


def _replay(name: str, n_items: int, cfg: Config, full_pass: bool) -> dict[str, Any]:
    model = models.create(name, seed=cfg.seed) if name != "popularity" else models.create(name)
    if full_pass:
        _without_kept_list(model)
    fallback = models.create("popularity")
    if full_pass:
        _without_kept_list(fallback)
    catalogue = [f"i{i}" for i in range(n_items)]  # the ids SyntheticStream uses
    started = time.perf_counter()
    model.add_items(catalogue)
    fallback.add_items(catalogue)
    add_seconds = time.perf_counter() - started
    stream = SyntheticStream(n_users=cfg.n_users, n_items=n_items, seed=cfg.seed)
    batches = stream.batches(cfg.warm_events + cfg.events, chunk=cfg.warm_events + cfg.events)
    batch = next(iter(batches))
    warm = _part(batch, 0, cfg.warm_events)
    model.learn(warm)
    fallback.learn(warm)
    spent = {"learn": 0.0, "recommend": 0.0, "fallback": 0.0}
    for n in range(cfg.warm_events, cfg.warm_events + cfg.events):
        one = _part(batch, n, n + 1)
        t0 = time.perf_counter()
        model.learn(one)
        fallback.learn(one)
        t1 = time.perf_counter()
        model.recommend([str(one.users[0])], k=cfg.k)
        t2 = time.perf_counter()
        fallback.recommend(["*"], k=cfg.k, exclude_seen=False)
        t3 = time.perf_counter()
        spent["learn"] += t1 - t0
        spent["recommend"] += t2 - t1
        spent["fallback"] += t3 - t2
    total = sum(spent.values())
    return {
        "model": name,
        "items": n_items,
        "full_pass": full_pass,
        "events_per_second": cfg.events / total,
        "us_per_event": {k: 1e6 * v / cfg.events for k, v in spent.items()},
        "add_items_seconds": add_seconds,
    }


def _part(batch: Interactions, a: int, b: int) -> Interactions:
    return Interactions(
        batch.users[a:b], batch.items[a:b], batch.timestamps[a:b], batch.weights[a:b], batch.ratings[a:b]
    )


def run(cfg: Config) -> dict[str, Any]:
    rows = []
    for n_items in cfg.sizes:
        for name in cfg.models:
            if name == "popularity":
                rows.append(_replay(name, n_items, cfg, full_pass=True))  # the reference, in the same run
                rows.append(_replay(name, n_items, cfg, full_pass=False))
            elif n_items <= cfg.full_pass_max_items:
                rows.append(_replay(name, n_items, cfg, full_pass=False))
    by = {(r["model"], r["items"], r["full_pass"]): r for r in rows}
    small, big = min(cfg.sizes), max(cfg.sizes)
    kept_small = by.get(("popularity", small, False))
    kept_big = by.get(("popularity", big, False))
    targets = []
    if kept_small and kept_big:
        ratio = kept_big["events_per_second"] / kept_small["events_per_second"]
        targets.append(
            target(
                f"per event, popularity and the fallback, {big:,} vs {small:,} items",
                ">= 0.5 x and >= 2,000 events/s",
                f"{kept_big['events_per_second']:,.0f} events/s ({ratio:.2f} x)",
                ratio >= 0.5 and kept_big["events_per_second"] >= 2000,
                reference=f"full pass: {by[('popularity', big, True)]['events_per_second']:,.0f} events/s",
            )
        )
    return {"config": asdict(cfg), "rows": rows, "targets": targets}


def markdown(result: dict[str, Any]) -> str:
    cfg = result["config"]
    table = [
        [
            f"`{r['model']}`" + (" (full pass: reference)" if r["full_pass"] and r["model"] == "popularity" else ""),
            f"{r['items']:,}",
            f"{r['events_per_second']:,.0f}",
            " / ".join(f"{r['us_per_event'][k]:,.0f}" for k in ("learn", "recommend", "fallback")),
            f"{r['add_items_seconds']:.2f}",
        ]
        for r in result["rows"]
    ]
    head = (
        f"Per event (learn 1 event, the user's top-{cfg['k']}, the fallback's top-{cfg['k']}), after "
        f"{cfg['warm_events']:,} events; {cfg['events']:,} events replayed. Models other than popularity rank by a "
        f"full pass and are measured up to {cfg['full_pass_max_items']:,} items.\n\n"
    )
    return head + md_table(
        ["model", "items", "events/s", "µs per event: learn / recommend / fallback", "add_items s"], table
    )

"""Sharing cost per model: what one event costs the worker that learned it and every other worker.

Today every worker applies every other worker's item increments (issue 18). The
workers benchmark (:mod:`bench.workers`) measures whole worker processes, where a
fixed cost per process and per second (heartbeats, commits, fetch loops; eight
processes on two cores) mixes with the cost of the increments. This one isolates
the increments, in one process, per model: two copies of a model learn the same
warm-up; one learns batches of ``batch`` synthetic events and sends what changed
(``take_item_delta``, then ``ItemDelta.to_bytes(compress=False)`` as the worker does); the other
decodes and applies each delta, as every other worker would. Per event (medians over
the batches):

- ``learn_us``: learning the event and the user's top 20 (the own work, ``a`` here;
  the worker's whole own work, with Kafka and Redis, is larger: :mod:`bench.workers`);
- ``send_us``: taking and encoding the increments (the sender, once);
- ``bytes``: encoded increments (what each other worker reads);
- ``receive_us``: decoding and applying them (``b``: each other worker, for each event).

The projection ``a / (a + b (n - 1))`` with these ``a`` is the efficiency of ``n``
workers if nothing but the increments were shared; a lower bound for today's design
in that respect, since the worker's own work per event is larger than ``learn_us``.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import time  # noqa: E402
from dataclasses import dataclass, replace  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

import models  # noqa: E402
from bench.common import md_table  # noqa: E402
from models import Interactions  # noqa: E402
from models.sharing import ItemDelta  # noqa: E402

__all__ = ["Config", "config", "markdown", "measure", "run"]


@dataclass(frozen=True)
class Config:
    models: tuple[str, ...] = ("popularity", "adaptive_popularity", "itemknn", "sknn", "sasrec", "two_tower")
    n_users: int = 10_000
    n_items: int = 20_000
    warmup_events: int = 20_000
    batch: int = 1_000
    batches: int = 8
    projected: tuple[int, ...] = (8, 64, 256)
    seed: int = 0
    #: (items, warm-up events, batches) for the catalogue-scale rows, ``catalogue_models`` only: enough
    #: batches that the receiver's folds of others' cells into its matrix are in the mean
    catalogues: tuple[tuple[int, int, int], ...] = ((100_000, 400_000, 60), (1_000_000, 2_000_000, 120))
    catalogue_models: tuple[str, ...] = ("itemknn",)
    #: Users of each batch whose top 20 is timed (``None``: all), the time scaled to the batch's users
    rec_sample: int | None = None


def config(quick: bool = False) -> Config:
    if quick:
        return Config(models=("popularity", "itemknn"), warmup_events=2_000, batch=200, batches=3,
                      catalogues=((50_000, 20_000, 5),))  # fmt: skip
    return Config()


def _events(cfg: Config, n: int, seed: int, t0: float) -> Interactions:
    """Zipf-popular items, users drawn uniformly: every batch touches popular and long-tail items."""
    rng = np.random.default_rng(seed)
    users = rng.integers(0, cfg.n_users, n)
    items = np.minimum(rng.zipf(1.2, n), cfg.n_items) - 1
    return Interactions.from_columns(
        users.astype(str), np.char.add("i", items.astype(str)), timestamps=t0 + np.arange(n, dtype=np.float64)
    )


def measure(name: str, cfg: Config) -> dict[str, Any]:
    """Per-event learn, send, bytes and receive of model ``name`` (medians over ``cfg.batches``)."""
    from streamrec.settings import limit_torch_threads

    limit_torch_threads()
    sender, receiver = models.create(name, seed=cfg.seed), models.create(name, seed=cfg.seed)
    warm = _events(cfg, cfg.warmup_events, cfg.seed, 0.0)
    sender.learn(warm)
    receiver.learn(warm)
    sender.begin_sharing()
    receiver.begin_sharing()
    sender.take_item_delta()  # the first holds everything learned so far (the receiver learned the same warm-up)
    learn, send, size, receive = [], [], [], []
    for b in range(cfg.batches):
        batch = _events(cfg, cfg.batch, cfg.seed + 1 + b, float(cfg.warmup_events + b * cfg.batch))
        users = sorted(set(batch.users.tolist()))
        sample = users[: cfg.rec_sample] if cfg.rec_sample else users
        t0 = time.perf_counter()
        sender.learn(batch)
        t_rec = time.perf_counter()
        sender.recommend(sample, k=20, with_reasons=False)
        t1 = time.perf_counter()
        own = (t_rec - t0) + (t1 - t_rec) * len(users) / len(sample)  # the whole batch's top 20 from the sample's
        data = sender.take_item_delta().to_bytes(compress=False)  # as the worker sends them
        t2 = time.perf_counter()
        receiver.apply_item_delta(ItemDelta.from_bytes(data))
        t3 = time.perf_counter()
        learn.append(own / cfg.batch * 1e6)
        send.append((t2 - t1) / cfg.batch * 1e6)
        receive.append((t3 - t2) / cfg.batch * 1e6)
        size.append(len(data) / cfg.batch)
    a, b = float(np.median(learn)), float(np.median(receive))
    return {
        "model": name,
        "learn_us": round(a, 1),
        "send_us": round(float(np.median(send)), 1),
        "bytes": round(float(np.median(size)), 1),
        "receive_us": round(b, 2),
        "receive_mean_us": round(float(np.mean(receive)), 2),
        "efficiency": {str(n): round(a / (a + b * (n - 1)), 3) for n in cfg.projected},
    }


def run(cfg: Config) -> dict[str, Any]:
    rows = []
    for name in cfg.models:
        try:
            rows.append(measure(name, cfg))
        except Exception as exc:  # a model that cannot share says why, the others are still measured
            rows.append({"model": name, "error": f"{type(exc).__name__}: {exc}"})
    scale = []
    for n_items, warmup, batches in cfg.catalogues:
        at = replace(
            cfg, n_items=n_items, warmup_events=warmup, batches=batches, n_users=max(cfg.n_users, warmup // 40),
            rec_sample=10,
        )  # fmt: skip
        for name in cfg.catalogue_models:
            scale.append({"items": n_items, "warmup_events": warmup, "batches": batches, **measure(name, at)})
    return {"config": {k: v for k, v in cfg.__dict__.items()}, "models": rows, "catalogues": scale}


def markdown(result: dict[str, Any]) -> str:
    cfg = result["config"]
    projected = [str(n) for n in cfg["projected"]]
    rows = []
    for r in result["models"]:
        if "error" in r:
            rows.append([f"`{r['model']}`", r["error"], "", "", "", *[""] * len(projected)])
            continue
        rows.append(
            [f"`{r['model']}`", f"{r['learn_us']:,.1f}", f"{r['send_us']:,.1f}", f"{r['bytes']:,.0f}",
             f"{r['receive_us']:,.2f}", *[f"{r['efficiency'][n]:.2f}" for n in projected]]
        )  # fmt: skip
    head = (
        f"Per event, medians over {cfg['batches']} batches of {cfg['batch']:,} synthetic events after "
        f"{cfg['warmup_events']:,} ({cfg['n_items']:,} items, {cfg['n_users']:,} users), one process, one thread. "
        "a = learn + the user's top 20; b = decode + apply another worker's increments for one of its events; "
        "efficiency a / (a + b (n - 1)) if nothing but the increments were shared.\n\n"
    )
    table = md_table(
        ["model", "a: learn + top 20 (us)", "send (us)", "bytes", "b: receive (us)", *[f"eff. {n}" for n in projected]],
        rows,
    )
    scale = result.get("catalogues") or []
    if not scale:
        return head + table
    scale_rows = [
        [f"`{r['model']}`", f"{r['items']:,}", f"{r['warmup_events']:,}", str(r["batches"]), f"{r['learn_us']:,.1f}",
         f"{r['bytes']:,.0f}", f"{r['receive_us']:,.2f}", f"{r['receive_mean_us']:,.2f}"]
        for r in scale
    ]  # fmt: skip
    scale_head = ["model", "catalogue items", "warm-up events", "batches", "a (us)", "bytes", "b median (us)",
                  "b mean (us)"]  # fmt: skip
    return (
        head + table + "\n\nAt catalogue scale (batches of "
        f"{cfg['batch']:,} events after the warm-up; the mean includes the receiver's folds of others' cells into its "
        "matrix, which the median misses). No efficiency here: `a` is the top 20 of users whose history holds the "
        "head items of a Zipf(1.2) draw (the first item is 18% of the events and co-occurs with most others), "
        "timed on 10 users per batch; it says what such a head costs item-kNN's scoring, not a typical shop:\n\n"
        + md_table(scale_head, scale_rows)
    )

"""Item state owned by item against today's design, in one process, from 1 to 256 workers.

The workers benchmark (:mod:`bench.workers`) runs real worker processes, but eight is
the most two cores hold. This one measures what sharing item state costs one worker
when ``n`` workers run, for ``n`` up to 256, with the models' own sharing code and no
Kafka: per interval (a checkpoint interval) each of ``n`` workers learns ``per_worker``
events of its users (Zipf-popular items of a 100,000-item catalogue). One learner
produces every worker's increments (``take_item_delta`` after each worker's users'
events: item state adds up, and a user's events all go to one worker, so each delta is
that worker's). For worker 0, per interval:

- **broadcast** (today): decode and apply the ``n - 1`` other workers' deltas;
- **owned** (``STREAMREC_ITEM_STATE=owned``): cut its own delta by item part (``P =
  max(8, n)`` parts), merge its share of the parts (``1 / n`` of all owners' merging:
  the parts are spread over the workers), then decode and apply every part's merge less
  its own piece (``merge_item_deltas``, ``negate_item_delta``).

Both observers also learn worker 0's events (not timed), and at the end each must hold
what the learner holds (checked for the exact models). Figures per event of worker 0's
own (``per_worker`` events per interval), medians over the intervals: ``sharing_us``,
and the bytes worker 0 reads. ``efficiency = a / (a + sharing_us)`` with ``a`` a
worker's whole own work per event (the 1-worker figure of the live workers benchmark,
``a_us``).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import time  # noqa: E402
import zlib  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

import models  # noqa: E402
from bench.common import md_table  # noqa: E402
from bench.sharing_cost import _events  # noqa: E402
from models import Interactions  # noqa: E402
from models.sharing import ItemDelta  # noqa: E402

__all__ = ["Config", "config", "markdown", "measure", "run"]


@dataclass(frozen=True)
class Config:
    models: tuple[str, ...] = ("popularity", "adaptive_popularity", "itemknn")
    workers: tuple[int, ...] = (1, 2, 4, 8, 16, 64, 256)
    n_users: int = 200_000
    n_items: int = 100_000
    warmup_events: int = 200_000
    #: events a worker learns in one interval (about a second of one worker's events)
    per_worker: int = 1_000
    intervals: int = 3
    #: a worker's whole own work per event (us): the live workers benchmark's one worker, net of idle
    #: (read from ``bench/results/workers.json`` when it holds one)
    a_us: float = 600.0
    seed: int = 0


def _live_a(path: Any = None) -> float | None:
    """The workers benchmark's one-worker CPU per event net of idle (``bench/results/workers.json``), if any."""
    import json

    from bench.common import REPO_ROOT

    try:
        doc = json.loads((path or REPO_ROOT / "bench" / "results" / "workers.json").read_text())
        return float(doc["result"]["designs"]["broadcast"]["model_net"]["a_us"])
    except (OSError, KeyError, TypeError, ValueError):
        return None


def config(quick: bool = False) -> Config:
    if not quick and (a := _live_a()) is not None:
        return Config(a_us=round(a, 1))
    if quick:
        return Config(models=("popularity", "itemknn"), workers=(1, 2, 8), n_users=5_000, n_items=5_000,
                      warmup_events=5_000, per_worker=200, intervals=2)  # fmt: skip
    return Config()


def _relay(delta: ItemDelta) -> tuple[ItemDelta, int]:
    data = delta.to_bytes(compress=False)
    return ItemDelta.from_bytes(data), len(data)


def _worker_of(users: np.ndarray, n: int) -> np.ndarray:
    return np.fromiter((zlib.crc32(u.encode()) % n for u in users.tolist()), dtype=np.int64, count=len(users))


def measure(name: str, n: int, cfg: Config) -> dict[str, Any]:
    """Worker 0's sharing cost per own event with ``n`` workers, in both designs (medians over the intervals)."""
    from streamrec.settings import limit_torch_threads

    limit_torch_threads()
    parts = max(8, n)
    learner, broadcast, owned = (models.create(name, seed=cfg.seed) for _ in range(3))
    warm = _events(cfg, cfg.warmup_events, cfg.seed, 0.0)  # type: ignore[arg-type]
    for model in (learner, broadcast, owned):
        model.learn(warm)
        model.begin_sharing()
    figures: dict[str, list[float]] = {k: [] for k in ("broadcast_us", "owned_us", "broadcast_bytes", "owned_bytes",
                                                        "own_events", "owned_split_us", "owned_merge_us",
                                                        "owned_apply_us")}  # fmt: skip
    t0 = float(cfg.warmup_events)
    for interval in range(cfg.intervals):
        batch = _events(cfg, n * cfg.per_worker, cfg.seed + 1 + interval, t0)  # type: ignore[arg-type]
        t0 += len(batch)
        worker = _worker_of(batch.users, n)
        deltas: list[ItemDelta] = []
        for w in range(n):
            mine = np.flatnonzero(worker == w)
            if len(mine):
                learner.learn(batch.select(mine))
            deltas.append(learner.take_item_delta())
        mine0: Interactions = batch.select(np.flatnonzero(worker == 0))
        for model in (broadcast, owned):
            model.learn(mine0)
        own = owned.take_item_delta()
        broadcast.take_item_delta()
        # today: every other worker's delta, decoded and applied
        sent = [d.to_bytes(compress=False) for d in deltas[1:]]
        started = time.perf_counter()
        for data in sent:
            broadcast.apply_item_delta(ItemDelta.from_bytes(data))
        broadcast_s = time.perf_counter() - started
        # owned: worker 0 cuts its delta; the owners (all workers) merge; worker 0 does 1/n of that merging
        started = time.perf_counter()
        own_pieces = owned.split_item_delta(own, parts)
        split_s = time.perf_counter() - started
        pieces = [own_pieces] + [learner.split_item_delta(d, parts) for d in deltas[1:]]
        started = time.perf_counter()
        merged = {}
        for p in range(parts):
            held = [q[p] for q in pieces if p in q]
            if held:
                merged[p] = learner.merge_item_deltas(held).to_bytes(compress=False)
        merge_s = (time.perf_counter() - started) / n
        started = time.perf_counter()
        for p, data in merged.items():
            delta = ItemDelta.from_bytes(data)
            for part in owned.net_item_deltas(delta, [own_pieces[p]] if p in own_pieces else []):
                owned.apply_item_delta(part)
        apply_s = time.perf_counter() - started
        events = max(len(mine0), 1)
        figures["own_events"].append(len(mine0))
        figures["broadcast_us"].append(broadcast_s / events * 1e6)
        figures["owned_split_us"].append(split_s / events * 1e6)
        figures["owned_merge_us"].append(merge_s / events * 1e6)
        figures["owned_apply_us"].append(apply_s / events * 1e6)
        figures["owned_us"].append((split_s + merge_s + apply_s) / events * 1e6)
        figures["broadcast_bytes"].append(sum(len(d) for d in sent) / events)
        figures["owned_bytes"].append(sum(len(d) for d in merged.values()) / events)
    same = None
    if learner.sharing_is_exact:  # both designs hold what one model of every event holds
        users = sorted(set(mine0.users.tolist()))[:50]
        want = learner.recommend(users, k=10, with_reasons=False)
        same = all(
            np.allclose(np.concatenate(m.recommend(users, k=10, with_reasons=False).scores or [[]]),
                        np.concatenate(want.scores or [[]]), rtol=1e-5)
            for m in (broadcast, owned)
        )  # fmt: skip
    out: dict[str, Any] = {"model": name, "workers": n, "parts": parts, "same_as_one_model": same}
    for key, values in figures.items():
        out[key] = round(float(np.median(values)), 2)
    for design in ("broadcast", "owned"):
        out[f"{design}_efficiency"] = round(cfg.a_us / (cfg.a_us + out[f"{design}_us"]), 3)
    return out


def run(cfg: Config) -> dict[str, Any]:
    rows = [measure(name, n, cfg) for name in cfg.models for n in cfg.workers]
    return {"config": dict(cfg.__dict__), "rows": rows}


def markdown(result: dict[str, Any]) -> str:
    cfg = result["config"]
    rows = [
        [f"`{r['model']}`", r["workers"], f"{r['own_events']:,.0f}", f"{r['broadcast_us']:,.1f}",
         f"{r['owned_us']:,.1f}", f"{r['owned_split_us']:,.1f} / {r['owned_merge_us']:,.1f} / {r['owned_apply_us']:,.1f}",
         f"{r['broadcast_bytes']:,.0f}", f"{r['owned_bytes']:,.0f}",
         f"{r['broadcast_efficiency']:.2f}", f"{r['owned_efficiency']:.2f}",
         {True: "yes", False: "**no**", None: "n/a"}[r["same_as_one_model"]]]
        for r in result["rows"]
    ]  # fmt: skip
    head = ["model", "workers", "own events", "broadcast: us per own event", "owned: us per own event",
            "owned: cut / merge share / apply (us)", "broadcast: bytes read per own event",
            "owned: bytes read per own event", "broadcast efficiency", "owned efficiency", "both equal one model"]  # fmt: skip
    return (
        f"One worker's cost of sharing item state per event of its own, {cfg['per_worker']:,} own events per interval, "
        f"{cfg['n_items']:,} items, {cfg['n_users']:,} users, after {cfg['warmup_events']:,} events; medians over "
        f"{cfg['intervals']} intervals, one process and thread. Efficiency = a / (a + sharing) with a = "
        f"{cfg['a_us']:.0f} us (a worker's own work per event, live).\n\n" + md_table(head, rows)
    )

"""Per-event cost of a model on one core: ``python -m bench.hybrid_speed {movielens,yoochoose,synthetic} [--model M]``.

``--params`` sets hyperparameters as JSON, e.g. ``'{"components": ["sasrec", "sknn", "itemknn"]}'``.

Learns the first ``--warm`` events of a development log in batches of 1,000, then
times, event by event, what the per-event backtest does for each of the next
``--events``: the user's top 10 (``recommend``), then ``learn`` of the event.
Prints events/s (events / seconds in those two calls). Run it under ``taskset -c 0``
for one core; torch, BLAS and OpenMP are limited to one thread here. Reads
``../shared/data`` (never committed), through :mod:`bench.fallback_choice`'s reader;
``synthetic`` generates a click stream over ``--items`` items (a large catalogue:
from 50,000 items the embedding members search an index).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

import models  # noqa: E402
from bench.fallback_choice import load  # noqa: E402
from models import Interactions  # noqa: E402
from streamrec.settings import limit_torch_threads  # noqa: E402


def synthetic(n_events: int, n_items: int, n_users: int = 5_000, seed: int = 0) -> tuple[np.ndarray, ...]:
    """Sessions that walk a neighbourhood of a Zipf-popular item (some structure for every member)."""
    rng = np.random.default_rng(seed)
    users = rng.integers(0, n_users, n_events)
    anchor = np.minimum(rng.zipf(1.3, n_users), n_items) - 1
    items = (anchor[users] + rng.integers(0, 20, n_events)) % n_items
    return users.astype(str), np.char.add("i", items.astype(str)), np.arange(n_events, dtype=np.float64)


def run(
    log: str,
    model_name: str = "hybrid",
    warm: int = 20_000,
    events: int = 2_000,
    n_items: int = 60_000,
    params: dict[str, object] | None = None,
) -> dict[str, object]:
    limit_torch_threads()
    model = models.create(model_name, **{"seed": 0, **(params or {})})
    if log == "synthetic":
        users, items, ts = synthetic(warm + events, n_items)
        model.add_items([f"i{j}" for j in range(n_items)])
    else:
        users, items, ts = load(log)
    for start in range(0, warm, 1000):
        end = min(start + 1000, warm)
        model.learn(Interactions.from_columns(users[start:end], items[start:end], timestamps=ts[start:end]))
    spent_recommend = spent_learn = 0.0
    for j in range(warm, warm + events):
        t0 = time.perf_counter()
        model.recommend([users[j]], k=10, with_reasons=False)
        t1 = time.perf_counter()
        model.learn(Interactions.from_columns([users[j]], [items[j]], timestamps=[ts[j]]))
        t2 = time.perf_counter()
        spent_recommend += t1 - t0
        spent_learn += t2 - t1
    total = spent_recommend + spent_learn
    return {
        "log": log,
        "model": model_name,
        "params": params or {},
        "warm_events": warm,
        "timed_events": events,
        "items": model.n_items,
        "events_per_s": round(events / total),
        "recommend_ms_per_event": round(1000 * spent_recommend / events, 3),
        "learn_ms_per_event": round(1000 * spent_learn / events, 3),
        "cpu_affinity": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "numpy": np.__version__,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("log", choices=["movielens", "yoochoose", "synthetic"])
    parser.add_argument("--model", default="hybrid")
    parser.add_argument("--warm", type=int, default=20_000)
    parser.add_argument("--events", type=int, default=2_000)
    parser.add_argument("--items", type=int, default=60_000, help="catalogue of the synthetic stream")
    parser.add_argument("--params", type=json.loads, default=None, help="hyperparameters of the model, as JSON")
    args = parser.parse_args()
    print(json.dumps(run(args.log, args.model, args.warm, args.events, args.items, args.params)))


if __name__ == "__main__":
    main()

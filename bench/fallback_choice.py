"""How the adaptive fallback chose: per cold event, each decay's hit and the one served.

``python -m bench.fallback_choice {movielens,yoochoose} [--fraction F]`` replays a
development log per event (freshness 0) through one
:class:`~models.adaptive_popularity.AdaptivePopularity` and, for every event of a
user without history, records whether each arm's top 10 holds the item and which
arm was served. The served HR@10 equals ``streamrec backtest --models
adaptive_popularity`` on the ``none`` history bucket; this script adds each arm's
figure and how often each was chosen. Reads ``../shared/data`` (or
``$STREAMREC_DATA_DIR``; never committed).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from models import Interactions
from models.adaptive_popularity import AdaptivePopularity

#: ``$STREAMREC_DATA_DIR`` when set, else ``../shared/data`` beside the project.
DATA = Path(os.environ.get("STREAMREC_DATA_DIR") or Path(__file__).resolve().parents[2] / "shared" / "data")


def load(name: str, data: Path = DATA) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(users, items, timestamps) of a development log in time order (ties in file order)."""
    if name == "movielens":
        raw = np.loadtxt(data / "ml-100k" / "u.data", dtype=np.int64)
        users, items, ts = raw[:, 0].astype(str), raw[:, 1].astype(str), raw[:, 3].astype(float)
    else:
        rows: list[list[str]] = []
        for part in ("train_full.tsv", "test.tsv"):
            with open(data / "yoochoose-clicks-100k" / part) as fh:
                next(fh)
                rows += [line.rstrip("\n").split("\t") for line in fh]
        users = np.array([r[0] for r in rows])
        items = np.array([r[1] for r in rows])
        ts = np.array([float(r[2]) for r in rows])
    order = np.argsort(ts, kind="stable")
    return users[order], items[order], ts[order]


def run(name: str, fraction: float = 1.0, k: int = 10, params: dict[str, Any] | None = None) -> dict[str, object]:
    users, items, ts = load(name)
    n = int(len(users) * fraction)
    model = AdaptivePopularity(**(params or {}))
    arm_hits = np.zeros(len(model._arms))
    served_hits = cold = 0
    chosen: dict[str, int] = {}
    started = time.perf_counter()
    for j in range(n):
        if not model.has_history(users[j]):
            cold += 1
            row = model.item_index.get(items[j])
            if row >= 0:
                for a, arm in enumerate(model._arms):
                    arm_hits[a] += bool(arm._acc[row] > 0 and row in set(arm.top_rows(k).tolist()))
            served_hits += items[j] in model.recommend(["*"], k=k, exclude_seen=False).items[0]
            chosen[model.chosen_label] = chosen.get(model.chosen_label, 0) + 1
        model.learn(Interactions.from_columns([users[j]], [items[j]], timestamps=[ts[j]]))
    return {
        "log": name,
        "events": n,
        "cold_events": cold,
        "params": params or {},
        f"cold_HR@{k}_by_arm": {arm.label: round(x / cold, 4) for arm, x in zip(model._arms, arm_hits, strict=True)},
        f"cold_HR@{k}_served": round(served_hits / cold, 4),
        "cold_events_by_chosen_arm": chosen,
        "chosen_at_end": model.chosen_label,
        "seconds": round(time.perf_counter() - started, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("log", choices=["movielens", "yoochoose"])
    parser.add_argument("--fraction", type=float, default=1.0, help="replay the first F of the log (0.6: tuning part)")
    parser.add_argument("--params", type=json.loads, default=None, help="AdaptivePopularity parameters, as JSON")
    args = parser.parse_args()
    print(json.dumps(run(args.log, args.fraction, params=args.params)))


if __name__ == "__main__":
    main()

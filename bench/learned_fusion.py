"""Probe: does a learned fusion of the members' candidate lists beat reciprocal-rank fusion?

``python -m bench.learned_fusion {movielens,yoochoose} [--lr LR] [--rules] [--trending] [--one-bucket]``
replays the development part of a log (the first 60%) per event at freshness 0,
through ``sknn`` and ``itemknn`` (the two-member hybrid's members) learning one
event at a time. For every event of a user with history it takes each member's
top 50 (seen items left out) and ranks their union two ways:

- **RRF**: ``sum_m 61 / (60 + rank_m)`` with equal weights (the hybrid's fusion
  when its members hit about equally often, as they do on both logs);
- **learned**: a linear score ``w . x`` of per-candidate features (each
  member's reciprocal rank, whether it lists the item, its score over its
  top score; the item's log event count; its events decayed with half-lives
  of 500 and 5,000 events; how recently it was last taken), ``w`` learned
  online (Adagrad) with a listwise softmax loss on the events whose item is
  among the candidates, *after* the event is scored, one ``w`` per history
  bucket (1-4 and 5+ items; ``--one-bucket`` shares one), started at RRF.

``--rules`` adds a third list: session-rec's sequential rules (``a -> b``
counts ``1 / distance`` for ``b`` up to 10 events after ``a`` in a user's
history, scored from the user's last three items with weights 1, 0.5,
0.25) as candidates and features; ``--trending`` another: the items with the
most events decayed with a half-life of 500 events (what is taken right now).

It prints, over the events of users with history, HR@10 and MRR@10 of both
rankings and how often the item was among the candidates at all (the most
any reranking of them can reach). Users without history get the same
fallback either way and are left out. Reads ``../shared/data`` (or
``$STREAMREC_DATA_DIR``; never committed). Findings: ``docs/tuning/hybrid.md``.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import numpy as np

import models
from bench.fallback_choice import load
from models import Interactions

MEMBERS = ("sknn", "itemknn")
DEPTH = 50
RRF_K = 60.0
#: Half-lives, in events, of the two decayed event counts; the first also scales "last taken".
SHORT, LONG = 500.0, 5000.0


class _Trending:
    """The items with the most events decayed with a half-life of ``SHORT`` events (what is taken right now)."""

    def __init__(self) -> None:
        self.rows: dict[str, int] = {}
        self.ids: list[str] = []
        self.count = np.zeros(0)
        self.at = np.zeros(0)

    def top(self, seen: set[str], depth: int, now: int) -> tuple[list[str], np.ndarray]:
        decayed = self.count * 0.5 ** ((now - self.at) / SHORT)
        want = min(depth + len(seen), len(decayed))
        if want == 0:
            return [], np.zeros(0)
        best = np.argpartition(-decayed, want - 1)[:want] if want < len(decayed) else np.arange(len(decayed))
        best = best[np.argsort(-decayed[best], kind="stable")]
        ids = [(self.ids[r], float(decayed[r])) for r in best.tolist() if self.ids[r] not in seen][:depth]
        return [i for i, _ in ids], np.array([v for _, v in ids], dtype=np.float64)

    def learn(self, item: str, now: int) -> None:
        row = self.rows.get(item)
        if row is None:
            row = self.rows[item] = len(self.ids)
            self.ids.append(item)
            self.count, self.at = np.append(self.count, 0.0), np.append(self.at, float(now))
        self.count[row] = self.count[row] * 0.5 ** ((now - self.at[row]) / SHORT) + 1.0
        self.at[row] = now


class _Rules:
    """Session-rec's sequential rules over each user's history (``a -> b`` weighs ``1 / distance``)."""

    def __init__(self) -> None:
        self.after: dict[str, dict[str, float]] = {}
        self.history: dict[str, list[str]] = {}

    def top(self, user: str, seen: set[str], depth: int) -> tuple[list[str], np.ndarray]:
        score: dict[str, float] = {}
        for back, a in enumerate(reversed(self.history.get(user, [])[-3:])):
            for b, v in self.after.get(a, {}).items():
                if b not in seen:
                    score[b] = score.get(b, 0.0) + 0.5**back * v
        best = sorted(score.items(), key=lambda kv: -kv[1])[:depth]
        return [b for b, _ in best], np.array([v for _, v in best], dtype=np.float64)

    def learn(self, user: str, item: str) -> None:
        history = self.history.setdefault(user, [])
        for distance, a in enumerate(reversed(history[-10:]), start=1):
            if a != item:
                row = self.after.setdefault(a, {})
                row[item] = row.get(item, 0.0) + 1.0 / distance
        history.append(item)


def _features(lists: list[list[str]], scores: list[np.ndarray], items: dict[str, list[float]], now: int):
    """Candidates (sorted ids), their feature rows and their RRF scores over the first two lists."""
    cand = sorted({c for lst in lists for c in lst})
    pos = {c: k for k, c in enumerate(cand)}
    m = len(lists)
    x = np.zeros((len(cand), 3 * m + 4))
    rrf = np.zeros(len(cand))
    for j, (lst, sc) in enumerate(zip(lists, scores, strict=True)):
        top = sc[0] if len(sc) and sc[0] > 0 else 1.0
        for r, c in enumerate(lst):
            k = pos[c]
            gain = (RRF_K + 1.0) / (RRF_K + r + 1.0)
            x[k, j], x[k, m + j], x[k, 2 * m + j] = gain, 1.0, sc[r] / top
            if j < len(MEMBERS):
                rrf[k] += gain
    for k, c in enumerate(cand):
        count, short, long, at = items[c]
        x[k, 3 * m :] = (
            np.log1p(count),
            np.log1p(short * 0.5 ** ((now - at) / SHORT)),
            np.log1p(long * 0.5 ** ((now - at) / LONG)),
            np.exp(-(now - at) / SHORT),
        )
    return pos, x, rrf


def _place(scores: np.ndarray, k: int, at: int) -> int:
    """1-based place of candidate ``at`` in the top ``k`` of ``scores`` (ties in candidate order), 0 if not there."""
    top = np.argsort(-scores, kind="stable")[:k]
    where = np.flatnonzero(top == at)
    return int(where[0]) + 1 if len(where) else 0


def run(
    name: str,
    lr: float = 0.5,
    rules: bool = False,
    buckets: bool = True,
    fraction: float = 0.6,
    k: int = 10,
    trending: bool = False,
) -> dict[str, Any]:
    """Replay the first ``fraction`` of log ``name`` and compare the two fusions (see the module docstring)."""
    users, items, ts = load(name)
    n = int(len(users) * fraction)
    members = [models.create(c, seed=0) for c in MEMBERS]
    seq = _Rules() if rules else None
    now = _Trending() if trending else None
    m = len(MEMBERS) + (1 if rules else 0) + (1 if trending else 0)
    w = np.zeros((2 if buckets else 1, 3 * m + 4))
    w[:, :m] = 10.0  # RRF
    g2 = np.full_like(w, 1e-6)
    item_stats: dict[str, list[float]] = {}
    seen: dict[str, set[str]] = {}
    hits = {"rrf": 0, "learned": 0}
    rr = {"rrf": 0.0, "learned": 0.0}
    warm = reachable = 0
    started = time.perf_counter()
    for e in range(n):
        u, i = str(users[e]), str(items[e])
        s = seen.setdefault(u, set())
        if s:
            warm += 1
            lists, scores = [], []
            for model in members:
                _, rows, sc = model._top_rows_one(u, DEPTH, True)
                lists.append(list(model.item_index.ids_of(rows)) if len(rows) else [])
                scores.append(np.asarray(sc, dtype=np.float64))
            if seq is not None:
                ids, sc = seq.top(u, s, DEPTH)
                lists.append(ids)
                scores.append(sc)
            if now is not None:
                ids, sc = now.top(s, DEPTH, e)
                lists.append(ids)
                scores.append(sc)
            pos, x, rrf = _features(lists, scores, item_stats, e)
            b = min(int(len(s) >= 5), len(w) - 1)
            z = x @ w[b]
            if i in pos:
                reachable += 1
                for key, row in (("rrf", rrf), ("learned", z)):
                    place = _place(row, k, pos[i])
                    hits[key] += place > 0
                    rr[key] += 1.0 / place if place else 0.0
                p = np.exp(z - z.max())
                p /= p.sum()
                grad = p @ x - x[pos[i]]
                g2[b] += grad * grad
                w[b] -= lr * grad / np.sqrt(g2[b])
        batch = Interactions.from_columns([u], [i], timestamps=[float(ts[e])])
        for model in members:
            model.learn(batch)
        if seq is not None:
            seq.learn(u, i)
        if now is not None:
            now.learn(i, e)
        stats = item_stats.setdefault(i, [0.0, 0.0, 0.0, float(e)])
        decay_s, decay_l = 0.5 ** ((e - stats[3]) / SHORT), 0.5 ** ((e - stats[3]) / LONG)
        item_stats[i] = [stats[0] + 1.0, stats[1] * decay_s + 1.0, stats[2] * decay_l + 1.0, float(e)]
        s.add(i)
    warm = max(warm, 1)
    return {
        "log": name,
        "events": n,
        "warm_events": warm,
        "settings": {
            "lr": lr,
            "rules": rules,
            "trending": trending,
            "buckets": buckets,
            "members": list(MEMBERS),
            "depth": DEPTH,
        },
        "candidates_hold_item": reachable / warm,
        f"HR@{k}": {key: hits[key] / warm for key in hits},
        f"MRR@{k}": {key: rr[key] / warm for key in rr},
        "learned_over_rrf": hits["learned"] / max(hits["rrf"], 1),
        "weights": np.round(w, 3).tolist(),
        "seconds": round(time.perf_counter() - started, 1),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("log", choices=("movielens", "yoochoose"))
    parser.add_argument("--lr", type=float, default=0.5)
    parser.add_argument("--rules", action="store_true", help="add sequential rules as a third list")
    parser.add_argument("--trending", action="store_true", help="add the items most taken right now as a list")
    parser.add_argument("--one-bucket", action="store_true", help="one weight vector for every history length")
    parser.add_argument("--fraction", type=float, default=0.6, help="how much of the log (the development part)")
    args = parser.parse_args(argv)
    result = run(args.log, args.lr, args.rules, not args.one_bucket, args.fraction, trending=args.trending)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

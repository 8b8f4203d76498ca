"""Top-100 for a micro-batch of 1,000 users as the catalogue grows: exact versus an inverted-file index.

For each catalogue size (1k, 10k, 100k, 1M items) an ISGD model with
64-dimensional factors (``models.isgd.ISGD(n_factors=64)``, other
hyperparameters at their defaults) is given the whole catalogue
(``add_items``: every item starts from its random initial vector) and learns
``train_events`` events of :class:`~producers.synthetic.SyntheticStream` over
100k users and that catalogue. The 1,000 users are the first 1,000 distinct
known users of the stream's next events: a micro-batch's users, weighted by
activity as the worker sees them. Then, for those users, top-100 with their
seen items excluded:

- **exact**: one matrix product of the users' factors with the item factors
  and ``argpartition``, in blocks of users sized to ``chunk_bytes`` of scores,
  seen items masked; median of ``repeats`` runs; peak memory traced
  (``tracemalloc``) in one more run over the first two blocks of users (the
  blocks run one after the other, so that is the peak for any number);
- **model.recommend**: the same through the model's protocol
  (:meth:`~models.base.OnlineRecommender.recommend`: dense scores, masks, top-k,
  id lists), up to ``model_recommend_max_items`` (beyond, one call would need
  ``4 x users x items`` bytes several times over);
- **ANN**: :class:`models.ann.ANNRecommender` (faiss IVF-Flat over the item
  factors, ``nlist`` lists; hnswlib's HNSW graph until December 2026), build
  time and resident memory added by the index, then each ``nprobe`` of
  ``nprobes``: time of ``recommend`` for the 1,000
  users (median of ``repeats``) and recall@100 against exact (the share of the
  exact list the ANN list holds, averaged over users). The first ``nprobe`` with
  recall >= 0.95 is the one reported against the target. After that, the
  incremental path: the model learns one more micro-batch and the index is
  updated for its items, and 1,000 new items are added.

A second case, at ``random_case_items``, uses random Gaussian factors (the
hardest data for an index: no structure at all).

Bytes per user and per item of model state: every model learns MovieLens 100K
(or the synthetic stream when it is absent); the arrays of ``_state()`` (what
``save`` writes) whose first dimension is the number of users, or of items,
are summed and divided by that number; the rest (co-occurrence pairs,
flattened histories, generator states) is listed apart. The seen items kept
by every model (``8`` bytes per distinct user-item pair in the saved file) are
not in ``_state()`` and are counted apart.
"""

from __future__ import annotations

import gc
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from bench.common import (
    fmt,
    fmt_bytes,
    hotspot_markdown,
    hotspots,
    md_table,
    rss_bytes,
    target,
    time_repeats,
    traced_peak,
)
from models import create
from models.ann import ANNRecommender
from models.base import Interactions
from models.isgd import ISGD
from producers.synthetic import SyntheticStream

__all__ = ["Config", "config", "exact_top_k", "markdown", "run"]

TARGET_SECONDS = 1.0
TARGET_RECALL = 0.95
TARGET_ITEMS = 1_000_000
STATE_MODELS = (
    "popularity",
    "itemknn",
    "isgd",
    "biased_mf",
    "torch_bpr",
    "river_biased_mf",
    "river_funk_mf",
    "river_fm",
    "hybrid",
)


@dataclass
class Config:
    """What the scale benchmark runs; :func:`config` gives the full and ``--quick`` ones."""

    sizes: tuple[int, ...] = (1_000, 10_000, 100_000, 1_000_000)
    n_factors: int = 64
    stream_users: int = 100_000
    train_events: int = 1_000_000
    batch_users: int = 1_000
    k: int = 100
    repeats: int = 3
    repeats_at_1m: int = 1
    chunk_bytes: int = 64 << 20
    model_recommend_max_items: int = 100_000
    nlist: int = 2048
    nprobes: tuple[int, ...] = (32, 64, 128, 192, 256)
    random_case_items: int | None = 100_000
    state_models: tuple[str, ...] = STATE_MODELS
    state_events: int | None = None  # None: all of MovieLens 100K
    profile: bool = True
    seed: int = 0
    notes: list[str] = field(default_factory=list)


def config(quick: bool = False) -> Config:
    """The full configuration, or the ``--quick`` one."""
    if not quick:
        return Config()
    return Config(
        sizes=(1_000, 10_000),
        train_events=50_000,
        repeats=1,
        nprobes=(16, 64, 256),
        random_case_items=None,
        state_events=10_000,
        profile=False,
    )


# -- exact top-k -----------------------------------------------------------------------------------


def exact_top_k(
    user_vectors: np.ndarray, item_vectors: np.ndarray, seen: list[list[int]], k: int, chunk_bytes: int = 64 << 20
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` item rows and scores per user, best first: a matrix product and ``argpartition`` per block.

    Examples
    --------
    >>> p = np.array([[1.0, 0.0]], dtype=np.float32)
    >>> q = np.array([[3.0, 0.0], [2.0, 0.0], [1.0, 0.0]], dtype=np.float32)
    >>> idx, val = exact_top_k(p, q, [[0]], k=2)
    >>> idx.tolist(), val.tolist()
    ([[1, 2]], [[2.0, 1.0]])
    """
    n_users, n_items = len(user_vectors), len(item_vectors)
    k = min(k, n_items)
    block = int(np.clip(chunk_bytes // (4 * max(n_items, 1)), 1, max(n_users, 1)))
    out_idx = np.empty((n_users, k), dtype=np.int64)
    out_val = np.empty((n_users, k), dtype=np.float32)
    for a in range(0, n_users, block):
        scores = user_vectors[a : a + block] @ item_vectors.T
        rows = [r for r, s in enumerate(seen[a : a + block]) for _ in range(len(s))]
        if rows:
            scores[rows, [i for s in seen[a : a + block] for i in s]] = -np.inf
        part = (
            np.argpartition(scores, n_items - k, axis=1)[:, n_items - k :]
            if k < n_items
            else np.argsort(scores, axis=1)
        )
        vals = np.take_along_axis(scores, part, axis=1)
        order = np.argsort(-vals, axis=1, kind="stable")
        out_idx[a : a + block] = np.take_along_axis(part, order, axis=1)
        out_val[a : a + block] = np.take_along_axis(vals, order, axis=1)
    return out_idx, out_val


def recall(approx: list[np.ndarray], exact: np.ndarray) -> float:
    """Mean share of each exact list found in the approximate one."""
    shares = [len(set(a.tolist()) & set(e.tolist())) / max(len(e), 1) for a, e in zip(approx, exact, strict=True)]
    return float(np.mean(shares)) if shares else float("nan")


# -- one catalogue size ----------------------------------------------------------------------------


def _trained_model(cfg: Config, n_items: int) -> tuple[ISGD, SyntheticStream, float]:
    stream = SyntheticStream(n_users=cfg.stream_users, n_items=n_items, seed=cfg.seed)
    model = ISGD(n_factors=cfg.n_factors, seed=cfg.seed)
    start = time.perf_counter()
    model.add_items([f"i{j}" for j in range(n_items)])
    for batch in stream.batches(cfg.train_events, chunk=10_000):
        model.learn(batch)
    return model, stream, time.perf_counter() - start


def _random_model(cfg: Config, n_items: int) -> tuple[ISGD, list[str]]:
    """Gaussian user and item factors: ISGD's N(0, 1) initial vectors, a learning rate too small to move them."""
    model = ISGD(n_factors=cfg.n_factors, init_std=1.0, lr=1e-12, seed=cfg.seed)
    model.add_items([f"i{j}" for j in range(n_items)])
    rng = np.random.default_rng(cfg.seed)
    users = [f"u{j}" for j in range(cfg.batch_users)]
    model.learn(Interactions.from_columns(users, [f"i{j}" for j in rng.integers(0, n_items, len(users)).tolist()]))
    return model, users


def _batch_users(model: ISGD, stream: SyntheticStream, n: int) -> list[str]:
    users: dict[str, None] = {}
    for batch in stream.batches(50 * n, chunk=10 * n):
        for u in batch.users.tolist():
            if model.user_index.get(u) >= 0:
                users.setdefault(u)
        if len(users) >= n:
            break
    return list(users)[:n]


def _measure(
    cfg: Config, model: ISGD, users: list[str], n_items: int, incremental: SyntheticStream | None
) -> dict[str, Any]:
    repeats = cfg.repeats_at_1m if n_items >= 1_000_000 else cfg.repeats
    rows = model.user_index.lookup(users)
    p, q = model.factors()
    seen = [sorted(model._seen[r]) for r in rows.tolist()]
    out: dict[str, Any] = {"items": n_items, "users": len(users), "mean_seen": float(np.mean([len(s) for s in seen]))}
    exact_t, (ex_idx, _) = time_repeats(lambda: exact_top_k(p[rows], q, seen, cfg.k, cfg.chunk_bytes), repeats)
    # blocks of users run one after the other: two blocks show the peak of any number of them
    few = min(len(rows), 2 * int(np.clip(cfg.chunk_bytes // (4 * max(len(q), 1)), 1, len(rows))))
    peak, _ = traced_peak(lambda: exact_top_k(p[rows[:few]], q, seen[:few], cfg.k, cfg.chunk_bytes))
    out["exact"] = {"seconds": exact_t, "peak_traced_bytes": peak, "peak_traced_users": few}
    if n_items <= cfg.model_recommend_max_items:
        rec_t, _ = time_repeats(lambda: model.recommend(users, k=cfg.k), 1)
        peak, _ = traced_peak(lambda: model.recommend(users, k=cfg.k))
        out["model_recommend"] = {"seconds": rec_t, "peak_traced_bytes": peak}
    else:
        out["model_recommend"] = {"skipped": f"not run above {cfg.model_recommend_max_items:,} items"}
    gc.collect()
    rss0 = rss_bytes()
    ann = ANNRecommender(model, nlist=cfg.nlist, nprobe=cfg.nprobes[0], seed=cfg.seed)
    out["ann_build"] = {
        "seconds": ann.build_seconds,
        "rss_added_bytes": rss_bytes() - rss0,
        "nlist": cfg.nlist,
        "note": "rss_added_bytes: the faiss index and its vectors plus the wrapper's copy of the item vectors",
    }
    sweeps = []
    for nprobe in cfg.nprobes:
        ann.nprobe = nprobe
        t, recs = time_repeats(lambda ann=ann: ann.recommend(users, k=cfg.k), repeats)
        got = [model.item_index.lookup(items) for items in recs.items]
        sweeps.append({"nprobe": nprobe, "seconds": t, "recall": recall(got, ex_idx)})
    out["ann"] = sweeps
    chosen = next((s for s in sweeps if s["recall"] >= TARGET_RECALL), max(sweeps, key=lambda s: s["recall"]))
    out["ann_chosen"] = chosen
    if incremental is not None:
        ann.nprobe = chosen["nprobe"]
        more = incremental.batches(2 * cfg.batch_users, chunk=cfg.batch_users)
        model.learn(batch := next(more))
        t0 = time.perf_counter()
        changed = ann.update(np.unique(batch.items))
        t1 = time.perf_counter()
        model.learn(next(more))
        t2 = time.perf_counter()
        scanned = ann.update()
        t3 = time.perf_counter()
        ann.add_items([f"new{j}" for j in range(1000)])
        t4 = time.perf_counter()
        out["ann_incremental"] = {
            "update_batch_items_s": t1 - t0,
            "rows_reinserted": changed,
            "full_scan_update_s": t3 - t2,
            "full_scan_rows_reinserted": scanned,
            "add_1000_items_s": t4 - t3,
        }
    if (
        cfg.profile
        and n_items >= TARGET_ITEMS
        and not (chosen["recall"] >= TARGET_RECALL and chosen["seconds"]["median"] <= TARGET_SECONDS)
    ):
        ann.nprobe = chosen["nprobe"]
        prof, _ = hotspots(lambda ann=ann: ann.recommend(users, k=cfg.k))
        out["profile"] = {
            "what": f"ANNRecommender.recommend, {len(users)} users, {n_items:,} items, nprobe={ann.nprobe}",
            **prof,
        }
    del ann
    gc.collect()
    return out


# -- model state per user and item -------------------------------------------------------------------


def state_bytes(cfg: Config) -> dict[str, Any]:
    """Bytes of ``_state()`` arrays per user and per item, per model, after learning a stream."""
    from streamrec.backtest import movielens_log
    from streamrec.datasets import find_movielens

    folder = find_movielens(download=False)
    if folder is not None:
        log = movielens_log(folder)
        if cfg.state_events is not None:
            log = log.head(cfg.state_events)
        source = f"MovieLens 100K, {len(log):,} events"
        batches = [log.interactions(s, min(s + 1000, len(log))) for s in range(0, len(log), 1000)]
    else:
        stream = SyntheticStream(n_users=5_000, n_items=2_000, seed=cfg.seed)
        batches = list(stream.batches(cfg.state_events or 100_000, chunk=1000))
        source = "synthetic stream (MovieLens 100K not found)"
    out: dict[str, Any] = {"source": source, "models": {}}
    for name in cfg.state_models:
        params = {"device": "cpu"} if name == "torch_bpr" else {}
        try:
            model = create(name, **params)
            for batch in batches:
                model.learn(batch)
            arrays = model._state()
        except Exception as exc:
            out["models"][name] = {"error": f"{type(exc).__name__}: {exc}"}
            continue
        nu, ni = model.n_users, model.n_items
        per_user = per_item = other = 0
        other_names = []
        for key, value in arrays.items():
            a = np.asarray(value)
            lead = a.shape[0] if a.ndim else 0
            if lead == nu and nu != ni:
                per_user += a.nbytes
            elif lead in (ni, ni + 1) and nu not in (ni, ni + 1):
                per_item += a.nbytes
            else:
                other += a.nbytes
                other_names.append(f"{key} {a.shape} {a.dtype}")
        pairs = sum(len(s) for s in model._seen)
        out["models"][name] = {
            "users": nu,
            "items": ni,
            "state_bytes": sum(np.asarray(v).nbytes for v in arrays.values()),
            "bytes_per_user": per_user / nu if nu else None,
            "bytes_per_item": per_item / ni if ni else None,
            "other_bytes": other,
            "other_arrays": other_names,
            "seen_pairs": pairs,
            "seen_bytes_saved": 8 * pairs,
        }
    return out


# -- the benchmark ---------------------------------------------------------------------------------


def run(cfg: Config) -> dict[str, Any]:
    """Run the scale benchmark; return its JSON-ready result (see :func:`markdown`)."""
    out: dict[str, Any] = {"config": asdict(cfg), "notes": list(cfg.notes), "targets": [], "profiles": {}, "sizes": []}
    for n_items in cfg.sizes:
        model, stream, train_s = _trained_model(cfg, n_items)
        users = _batch_users(model, stream, cfg.batch_users)
        fig = _measure(cfg, model, users, n_items, incremental=stream)
        fig["train_s"] = train_s
        fig["model"] = {
            "name": "isgd",
            "n_factors": cfg.n_factors,
            "users": model.n_users,
            "train_events": cfg.train_events,
        }
        if "profile" in fig:
            out["profiles"][f"ANN recommend at {n_items:,} items"] = fig.pop("profile")
        out["sizes"].append(fig)
        del model, stream
        gc.collect()
    if cfg.random_case_items:
        model, users = _random_model(cfg, cfg.random_case_items)
        fig = _measure(cfg, model, users, cfg.random_case_items, incremental=None)
        fig.pop("profile", None)
        out["random_gaussian"] = fig
        del model
        gc.collect()
    out["state"] = state_bytes(cfg)
    at = next((s for s in out["sizes"] if s["items"] == TARGET_ITEMS), None)
    if at is None:
        out["targets"].append(
            target(
                "ANN top-100, 1,000 users, 1M items",
                f"<= {TARGET_SECONDS} s with recall@100 >= {TARGET_RECALL}",
                "not measured (catalogue sizes of this run stop below 1M)",
                None,
            )
        )
    else:
        c = at["ann_chosen"]
        ok = c["recall"] >= TARGET_RECALL and c["seconds"]["median"] <= TARGET_SECONDS
        out["targets"].append(
            target(
                "ANN top-100, 1,000 users, 1M items (CPU)",
                f"<= {TARGET_SECONDS} s with recall@100 >= {TARGET_RECALL}",
                f"{c['seconds']['median']:.3f} s at recall {c['recall']:.3f} (nprobe={c['nprobe']}, "
                f"nlist={cfg.nlist}; build {at['ann_build']['seconds']:.0f} s)",
                ok,
                reference=f"exact: {at['exact']['seconds']['median']:.2f} s",
            )
        )
    return out


# -- the report ---------------------------------------------------------------------------------


def _size_rows(fig: dict[str, Any], label: str) -> list[list[str]]:
    rows = []
    mr = fig["model_recommend"]
    rows.append(
        [
            label,
            f"{fig['items']:,}",
            f"{fig['exact']['seconds']['median']:.3f}",
            fmt_bytes(fig["exact"]["peak_traced_bytes"]),
            f"{mr['seconds']['median']:.3f} / {fmt_bytes(mr['peak_traced_bytes'])}" if "seconds" in mr else "not run",
            f"{fig['ann_build']['seconds']:.1f}",
            fmt_bytes(fig["ann_build"]["rss_added_bytes"]),
            "; ".join(f"nprobe {s['nprobe']}: {s['seconds']['median']:.3f} s, {s['recall']:.3f}" for s in fig["ann"]),
        ]
    )
    return rows


def markdown(result: dict[str, Any]) -> str:
    """The scale section of ``results.md``."""
    cfg = result["config"]
    out = [
        f"Top-{cfg['k']} (seen items excluded) for {cfg['batch_users']:,} users of a micro-batch. Factors: ISGD, "
        f"{cfg['n_factors']} dimensions, trained on {cfg['train_events']:,} synthetic events over "
        f"{cfg['stream_users']:,} users and the catalogue (every item added first, so items never interacted with keep "
        f"their random initial vector). ANN: faiss IVF-Flat, nlist={cfg['nlist']}; "
        f"recall@{cfg['k']} against exact. Times: median of {cfg['repeats']} runs ({cfg['repeats_at_1m']} at 1M items).",
        "",
    ]
    rows = []
    for fig in result["sizes"]:
        rows += _size_rows(fig, "trained ISGD")
    if result.get("random_gaussian"):
        rows += _size_rows(result["random_gaussian"], "random Gaussian")
    out.append(
        md_table(
            [
                "factors",
                "items",
                "exact s",
                "exact peak mem",
                "model.recommend s / peak",
                "ANN build s",
                "ANN index mem",
                "ANN query s, recall@100 per nprobe",
            ],
            rows,
        )
    )
    inc = [f for f in result["sizes"] if "ann_incremental" in f]
    if inc:
        out += [
            "",
            "Incremental index maintenance (after the measurements above): the model learns one more micro-batch, the "
            "index re-inserts the rows of its items whose vector changed (`update(items)`); the model learns another "
            "micro-batch and `update()` finds the changed rows by comparing every row; 1,000 new items are added.",
            "",
            md_table(
                ["items", "update(batch items) s (rows)", "update() full scan s (rows)", "add 1,000 items s"],
                [
                    [
                        f"{f['items']:,}",
                        f"{f['ann_incremental']['update_batch_items_s']:.3f} ({f['ann_incremental']['rows_reinserted']:,})",
                        f"{f['ann_incremental']['full_scan_update_s']:.3f} ({f['ann_incremental']['full_scan_rows_reinserted']:,})",
                        f"{f['ann_incremental']['add_1000_items_s']:.3f}",
                    ]
                    for f in inc
                ],
            ),
        ]
    state = result.get("state")
    if state:
        rows = []
        for name, m in state["models"].items():
            if "error" in m:
                rows.append([name, f"failed: {m['error']}", "", "", "", ""])
                continue
            rows.append(
                [
                    name,
                    fmt_bytes(m["state_bytes"]),
                    fmt(m["bytes_per_user"], 1),
                    fmt(m["bytes_per_item"], 1),
                    f"{fmt_bytes(m['other_bytes'])}"
                    + (f" ({', '.join(m['other_arrays'])})" if m["other_arrays"] else ""),
                    f"{m['seen_pairs']:,} pairs, {fmt_bytes(m['seen_bytes_saved'])}",
                ]
            )
        out += [
            "",
            f"Model state ({state['source']}): `_state()` arrays whose first dimension is the number of users (items), "
            "per user (item); other arrays apart; seen items (kept by the base class for every model) apart.",
            "",
            md_table(["model", "state", "bytes per user", "bytes per item", "other arrays", "seen items"], rows),
        ]
    for note in result.get("notes", []):
        out.append(f"- {note}")
    for name, prof in result.get("profiles", {}).items():
        out += ["", hotspot_markdown(name, prof)]
    return "\n".join(out)

"""Per-event throughput of every model at freshness 0, against plain NumPy loops, measured in one run.

The backtest at freshness 0 and the live worker at low load take the same
path: for each event, recommend the top-``k`` for its user from every earlier
event, then learn the event. Each model replays a stream through
:class:`streamrec.backtest.Prequential` in that setting, serving what the
worker serves (the popularity list for users without history,
:class:`streamrec.served.ServedLists`). ``events/s`` is the number of replayed
events divided by the seconds spent inside the model's ``add_items``,
``recommend`` and ``learn`` calls (rating models' ``predict`` calls, which the
backtest also makes, are reported apart and not counted). Two streams:

- **MovieLens 100K** (100,000 ratings, 943 users, 1,682 items), every model,
  median of ``ml_repeats`` runs (models and references run round-robin, so load
  on the shared machine hits them alike);
- **synthetic**: :class:`producers.synthetic.SyntheticStream`, 1M implicit
  events over 100k users and 50k items. One run per model, **time-capped**:
  the stream is replayed in consecutive segments (the model keeps learning
  across them) until ``synthetic_cap_s`` has passed, and events/s is measured
  over the events replayed. Models that learn from ratings only are skipped.

References, in the same run and on the same streams:

- **NumPy item-kNN per event**: the work ``itemknn`` does, written as a plain
  loop over integer ids, with ``itemknn``'s default hyperparameters: the user's
  ``history_for_scoring`` newest distinct items weighted by
  ``decay ** rank / n_h ** alpha``, one product with a dense co-occurrence array,
  times ``1 / n_j ** alpha``, seen items masked, ``argpartition`` and a sort of the
  top ``k``; users without history get the popularity counts; then the update
  (a window of ``window`` items, co-occurrence and counts). Its HR@k is reported too: it is
  the same model, so the figure shows that the work is the same.
- **NumPy ISGD per event**: score the catalogue (one matrix-vector product),
  mask seen items, ``argpartition`` the top ``k``, one capped SGD step.
- **River**: ``river.reco.BiasedMF`` learned with ``learn_one`` per event, and
  a top-``k`` per event computed as a River user would: ``predict_one`` for
  every known item the user has not seen, then the ``k`` best. Learning is
  timed; recommending is timed on a sample of events and extrapolated: the
  figure is an estimate, labelled as such.
"""

from __future__ import annotations

import heapq
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from bench.common import fmt, fmt_ratio, hotspot_markdown, hotspots, md_table, summarize, target
from models import create
from producers.synthetic import SyntheticStream
from streamrec.backtest import EventLog, Prequential, movielens_log
from streamrec.datasets import find_movielens
from streamrec.events import EVENT_TYPES, EVENT_WEIGHTS

__all__ = ["Config", "config", "markdown", "run"]

ALL_MODELS = (
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
#: Models added by later work run too when their module is present.
OPTIONAL_MODELS = ("sknn", "gru4rec", "sasrec", "two_tower")
#: Hyperparameters beyond the defaults (torch on the CPU here; the GPU benchmark covers CUDA).
MODEL_PARAMS: dict[str, dict[str, Any]] = {"torch_bpr": {"device": "cpu"}}
#: Per-event targets (issue #9): item-kNN, then every other model.
TARGET_ITEMKNN = 10_000
TARGET_OTHERS = 2_000


@dataclass
class Config:
    """What the offline benchmark runs; :func:`config` gives the full and ``--quick`` ones."""

    batch_size: int = 1  # events scored per step: irrelevant to the results at freshness 0 (one event per step)
    k: int = 10
    ml_events: int | None = None  # None: all 100,000
    ml_repeats: int = 3
    ml_models: tuple[str, ...] = ()  # () = every available model
    synthetic_events: int = 1_000_000
    synthetic_users: int = 100_000
    synthetic_items: int = 50_000
    synthetic_models: tuple[str, ...] = ()  # () = every available model
    synthetic_cap_s: float = 30.0
    river_sample_users: int = 150
    river_cap_s: float = 12.0
    numpy_cap_s: float = 30.0
    profile: bool = True
    seed: int = 0
    notes: list[str] = field(default_factory=list)


def config(quick: bool = False) -> Config:
    """The full configuration, or the ``--quick`` one (seconds, for a smoke run)."""
    if not quick:
        return Config()
    return Config(
        ml_events=5_000,
        ml_repeats=1,
        synthetic_events=50_000,
        synthetic_cap_s=1.5,
        river_sample_users=20,
        river_cap_s=1.5,
        numpy_cap_s=1.0,
        profile=False,
    )


# -- streams ---------------------------------------------------------------------------------


def synthetic_log(n_events: int, n_users: int, n_items: int, seed: int = 0) -> EventLog:
    """The synthetic stream as an :class:`EventLog` (implicit events, types from their weights)."""
    stream = SyntheticStream(n_users=n_users, n_items=n_items, seed=seed)
    batches = list(stream.batches(n_events))
    weights = np.concatenate([b.weights for b in batches])
    by_weight = {float(EVENT_WEIGHTS[t]): t for t in EVENT_TYPES}
    types = np.array([by_weight[w] for w in weights.tolist()], dtype=object)
    return EventLog(
        users=np.concatenate([b.users for b in batches]),
        items=np.concatenate([b.items for b in batches]),
        timestamps=np.concatenate([b.timestamps for b in batches]),
        event_types=types,
        ratings=np.concatenate([b.ratings for b in batches]),
        weights=weights,
        source=f"SyntheticStream(n_users={n_users}, n_items={n_items}, seed={seed}), {n_events} events",
    )


def _segment(log: EventLog, start: int, stop: int) -> EventLog:
    """Events ``start:stop`` (catalogue updates before ``start`` are assumed added already)."""
    cat = (
        (log.catalogue_positions >= start) & (log.catalogue_positions < stop)
        if start
        else log.catalogue_positions < stop
    )
    return EventLog(
        users=log.users[start:stop],
        items=log.items[start:stop],
        timestamps=log.timestamps[start:stop],
        event_types=log.event_types[start:stop],
        ratings=log.ratings[start:stop],
        weights=log.weights[start:stop],
        contexts=None if log.contexts is None else log.contexts[start:stop],
        catalogue_positions=log.catalogue_positions[cat] - start,
        catalogue_items=log.catalogue_items[cat],
        catalogue_tags=tuple(t for t, keep in zip(log.catalogue_tags, cat.tolist(), strict=True) if keep),
        catalogue_titles=tuple(t for t, keep in zip(log.catalogue_titles, cat.tolist(), strict=True) if keep),
        source=log.source,
    )


# -- one model through the backtest ------------------------------------------------------------


def _figures(result: Any, name: str, n: int) -> dict[str, Any]:
    m = result.models[name]
    t = m.timing
    model_s = t.get("catalogue_s", 0.0) + t.get("recommend_s", 0.0) + t.get("learn_s", 0.0)
    return {
        "events": n,
        "error": m.error,
        "recommend_s": t.get("recommend_s"),
        "learn_s": t.get("learn_s"),
        "catalogue_s": t.get("catalogue_s"),
        "predict_s": t.get("predict_s"),
        "model_s": model_s,
        "events_per_s": n / model_s if model_s > 0 and m.error is None else None,
        "backtest_events_per_s": t.get("events_per_s"),
        "scored": m.overall.get("scored"),
        "hr": m.overall.get("HR@10"),
    }


def _names(names: tuple[str, ...]) -> tuple[str, ...]:
    """``names``, or every available model in the benchmark's order."""
    if names:
        return names
    from models import available

    present = available()
    return tuple(n for n in (*ALL_MODELS, *OPTIONAL_MODELS) if n in present) + tuple(
        n for n in present if n not in ALL_MODELS and n not in OPTIONAL_MODELS
    )


def served(name: str) -> Any:
    """Model ``name`` as the worker serves it (popularity for users without history)."""
    from streamrec.served import ServedLists

    model = create(name, **MODEL_PARAMS.get(name, {}))
    return model if name == "popularity" else ServedLists(model)


def _replay(cfg: Config, name: str, model: Any, log: EventLog) -> dict[str, Any]:
    backtest = Prequential({name: model}, ks=(cfg.k,), freshness=0.0, batch_size=cfg.batch_size, memory="off")
    return _figures(backtest.run(log), name, len(log))


def _capped_replay(cfg: Config, name: str, model: Any, log: EventLog, cap_s: float) -> dict[str, Any]:
    """Replay ``log`` in consecutive segments until it ends or ``cap_s`` seconds have passed."""
    start = time.perf_counter()
    done = 0
    sums = {"recommend_s": 0.0, "learn_s": 0.0, "catalogue_s": 0.0, "predict_s": 0.0, "model_s": 0.0}
    hits = scored = 0.0
    error = None
    chunk = 500  # grows with the rate measured so far
    while done < len(log):
        stop = min(done + chunk, len(log))
        part = _replay(cfg, name, model, _segment(log, done, stop))
        if part["error"]:
            error = part["error"]
            break
        for key in sums:
            sums[key] += part[key] or 0.0
        if part["scored"]:
            scored += part["scored"]
            hits += (part["hr"] or 0.0) * part["scored"]
        done = stop
        elapsed = time.perf_counter() - start
        if elapsed >= cap_s:
            break
        # size the next segment to half the time left at the rate so far (later events are slower)
        rate = done / max(elapsed, 1e-9)
        chunk = int(np.clip(0.5 * rate * (cap_s - elapsed), 200, 50_000))
    return {
        "events": done,
        "of_events": len(log),
        "capped": done < len(log) and error is None,
        "wall_s": time.perf_counter() - start,
        "error": error,
        **sums,
        "events_per_s": done / sums["model_s"] if sums["model_s"] > 0 and error is None else None,
        "scored": scored,
        "hr": hits / scored if scored else None,
    }


# -- references ----------------------------------------------------------------------------------


def river_reference(log: EventLog, cfg: Config, *, use_ratings: bool) -> dict[str, Any]:
    """River ``BiasedMF``: ``learn_one`` per event, top-k by ``predict_one`` per item (sampled, extrapolated)."""
    from river import optim, reco

    river = reco.BiasedMF(
        n_factors=10,
        bias_optimizer=optim.SGD(0.025),
        latent_optimizer=optim.SGD(0.05),
        latent_initializer=optim.initializers.Normal(mu=0.0, sigma=0.1, seed=cfg.seed),
        seed=cfg.seed,
    )
    known: list[str] = []
    known_set: set[str] = set()
    seen: dict[str, set[str]] = {}
    cat_items, cat_pos = log.catalogue_items.tolist(), log.catalogue_positions.tolist()
    targets = log.ratings if use_ratings else log.weights
    n_batches = -(-len(log) // cfg.batch_size)
    stride = max(1, n_batches // max(cfg.river_sample_users, 1))
    learn_s = sample_s = 0.0
    sampled_calls = samples = 0
    user_item_pairs = 0  # sum over batches of distinct users x known items: predict_one calls a top-k needs
    user_lists = 0
    done = 0
    cat_ptr = 0
    perf = time.perf_counter
    start = perf()
    for b, s in enumerate(range(0, len(log), cfg.batch_size)):
        e = min(s + cfg.batch_size, len(log))
        while cat_ptr < len(cat_items) and cat_pos[cat_ptr] <= s:
            if cat_items[cat_ptr] not in known_set:
                known_set.add(cat_items[cat_ptr])
                known.append(cat_items[cat_ptr])
            cat_ptr += 1
        users = log.users[s:e].tolist()
        items = log.items[s:e].tolist()
        distinct = list(dict.fromkeys(users))
        user_lists += len(distinct)
        user_item_pairs += len(distinct) * len(known)
        if b % stride == 0 and known:
            user = distinct[0]
            banned = seen.get(user, set())
            t0 = perf()
            predict = river.predict_one
            heapq.nlargest(cfg.k, ((predict(user, i), i) for i in known if i not in banned))
            sample_s += perf() - t0
            sampled_calls += len(known)
            samples += 1
        t0 = perf()
        learn = river.learn_one
        for user, item, y in zip(users, items, targets[s:e].tolist(), strict=True):
            if y != y:  # NaN: not a rating
                continue
            learn(user, item, y)
            seen.setdefault(user, set()).add(item)
            if item not in known_set:
                known_set.add(item)
                known.append(item)
        learn_s += perf() - t0
        done = e
        if perf() - start >= cfg.river_cap_s:
            break
    per_call = sample_s / sampled_calls if sampled_calls else float("nan")
    recommend_est = per_call * user_item_pairs
    return {
        "what": "river.reco.BiasedMF: learn_one per event; top-k = predict_one over the known catalogue per user",
        "events": done,
        "of_events": len(log),
        "learn_s": learn_s,
        "learn_events_per_s": done / learn_s if learn_s else None,
        "sampled_user_lists": samples,
        "sampled_predict_calls": sampled_calls,
        "predict_one_us": per_call * 1e6,
        "user_lists": user_lists,
        "predict_calls_needed": user_item_pairs,
        "recommend_s_estimated": recommend_est,
        "events_per_s": done / (learn_s + recommend_est) if learn_s + recommend_est > 0 else None,
        "extrapolated": True,
        "targets": "ratings" if use_ratings else "event weights (implicit)",
    }


def numpy_itemknn_reference(log: EventLog, cfg: Config) -> dict[str, Any]:
    """Item-kNN with recency weights and the popularity fallback, one event at a time in plain NumPy."""
    from models.itemknn import ItemKNN

    defaults = ItemKNN()  # the same hyperparameters as the model it is compared with
    window, depth, decay, alpha, k = (
        defaults.window,
        defaults.history_for_scoring,
        defaults.decay,
        defaults.alpha,
        cfg.k,
    )
    users, items = log.users.tolist(), log.items.tolist()
    uid: dict[str, int] = {}
    iid: dict[str, int] = {i: n for n, i in enumerate(dict.fromkeys(log.catalogue_items.tolist()))}
    for item in items:
        iid.setdefault(item, len(iid))
    n_items = len(iid)
    cooc = np.zeros((n_items, n_items), dtype=np.float32)
    counts = np.zeros(n_items, dtype=np.float32)
    inv = np.zeros(n_items, dtype=np.float32)  # counts ** -alpha
    pop = np.zeros(n_items, dtype=np.float32)
    recency = (decay ** np.arange(depth)).astype(np.float32)
    hist: list[list[int]] = []
    seen: list[list[int]] = []
    known = np.zeros(n_items, dtype=bool)
    known[[iid[i] for i in log.catalogue_items.tolist()]] = True
    hits = 0
    perf = time.perf_counter
    start = perf()
    done = 0
    for user, item in zip(users, items, strict=True):
        u = uid.get(user)
        if u is None:
            u = uid[user] = len(uid)
            hist.append([])
            seen.append([])
        j = iid[item]
        h = hist[u]
        if h:
            top = h[:depth]
            scores = ((recency[: len(top)] * inv[top]) @ cooc[top]) * inv
            scores[seen[u]] = -np.inf
        else:
            scores = pop.copy()
        scores[~known] = -np.inf
        best = np.argpartition(-scores, k)[:k]
        best = best[np.argsort(-scores[best], kind="stable")]
        hits += j in best[scores[best] > -np.inf].tolist()
        # learn
        known[j] = True
        pop[j] += 1.0
        if j not in seen[u]:
            seen[u].append(j)
        if j in h:
            h.remove(j)
            h.insert(0, j)
        else:
            if h:
                cooc[h, j] += 1.0
                cooc[j, h] += 1.0
            counts[j] += 1.0
            inv[j] = counts[j] ** -alpha
            h.insert(0, j)
            del h[window:]
        done += 1
        if done % 1000 == 0 and perf() - start >= cfg.numpy_cap_s:
            break
    seconds = perf() - start
    return {
        "what": "item-kNN per event in NumPy: recency-weighted history x dense co-occurrence, seen mask, "
        "argpartition top-k; popularity for users without history; then the update",
        "events": done,
        "of_events": len(log),
        "seconds": seconds,
        "events_per_s": done / seconds if seconds else None,
        "hr": hits / done if done else None,
        "extrapolated": False,
    }


def numpy_reference(log: EventLog, cfg: Config) -> dict[str, Any]:
    """ISGD one event at a time in NumPy: score the catalogue, mask seen, argpartition top-k, one SGD step."""
    f, lr, reg, std, k = 10, np.float32(0.05), np.float32(0.01), 0.1, cfg.k
    rng = np.random.default_rng(cfg.seed)
    p = np.zeros((1024, f), dtype=np.float32)
    q = np.zeros((1024, f), dtype=np.float32)
    uidx: dict[str, int] = {}
    iidx: dict[str, int] = {}
    seen: list[list[int]] = []

    def item_row(item: str) -> int:
        nonlocal q
        row = iidx.get(item)
        if row is None:
            row = iidx[item] = len(iidx)
            if row >= len(q):
                q = np.concatenate([q, np.zeros_like(q)])
            q[row] = rng.normal(0.0, std, f)
        return row

    for item, pos in zip(log.catalogue_items.tolist(), log.catalogue_positions.tolist(), strict=True):
        if pos == 0:
            item_row(item)
    perf = time.perf_counter
    start = perf()
    done = 0
    users, items = log.users.tolist(), log.items.tolist()
    for j in range(len(users)):
        u = uidx.get(users[j])
        if u is None:
            u = uidx[users[j]] = len(uidx)
            if u >= len(p):
                p = np.concatenate([p, np.zeros_like(p)])
            p[u] = rng.normal(0.0, std, f)
            seen.append([])
        n_items = len(iidx)
        if n_items > k:
            scores = q[:n_items] @ p[u]
            if seen[u]:
                scores[seen[u]] = -np.inf
            top = np.argpartition(-scores, k)[:k]
            top = top[np.argsort(-scores[top])]
        i = item_row(items[j])
        pu, qi = p[u], q[i]  # views, updated in place
        err = np.float32(1.0) - pu @ qi
        pu += lr * (err * qi - reg * pu) / max(np.float32(1.0), lr * (qi @ qi))
        qi += lr * (err * pu - reg * qi) / max(np.float32(1.0), lr * (pu @ pu))
        seen[u].append(i)
        done = j + 1
        if done % 500 == 0 and perf() - start >= cfg.numpy_cap_s:
            break
    seconds = perf() - start
    return {
        "what": "ISGD per event in NumPy: catalogue matrix-vector product, seen mask, argpartition top-k, capped SGD step",
        "events": done,
        "of_events": len(log),
        "seconds": seconds,
        "events_per_s": done / seconds if seconds else None,
        "extrapolated": False,
    }


# -- the benchmark ---------------------------------------------------------------------------------


def _ml_section(cfg: Config, log: EventLog) -> dict[str, Any]:
    """Every model and both NumPy references, ``ml_repeats`` rounds, round-robin."""
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in _names(cfg.ml_models)}
    refs: dict[str, list[dict[str, Any]]] = {"numpy_itemknn": [], "numpy_isgd": []}
    for _ in range(cfg.ml_repeats):
        refs["numpy_itemknn"].append(numpy_itemknn_reference(log, cfg))
        for name in runs:
            if runs[name] and runs[name][-1]["error"]:
                continue  # failed once: do not repeat
            runs[name].append(_replay(cfg, name, served(name), log))
        refs["numpy_isgd"].append(numpy_reference(log, cfg))
    models: dict[str, Any] = {}
    for name, rs in runs.items():
        ok = [r for r in rs if not r["error"]]
        rates = summarize([r["events_per_s"] for r in ok])
        best = sorted(ok, key=lambda r: r["events_per_s"])[len(ok) // 2] if ok else rs[-1]
        models[name] = {
            "params": MODEL_PARAMS.get(name, {}),
            "events_per_s": rates,
            "median_run": best,
            "error": None if ok else rs[-1]["error"],
        }
    references = {}
    for name, rs in refs.items():
        rates = summarize([r["events_per_s"] for r in rs if r["events_per_s"]])
        references[name] = {**sorted(rs, key=lambda r: r["events_per_s"] or 0)[len(rs) // 2], "events_per_s": rates}
    return {"events": len(log), "source": log.source, "models": models, "references": references}


def _synthetic_section(cfg: Config, log: EventLog) -> dict[str, Any]:
    models: dict[str, Any] = {}
    for name in _names(cfg.synthetic_models):
        model = served(name)
        if getattr(model, "uses_ratings", False):
            models[name] = {"skipped": "learns from ratings only; the synthetic stream is implicit (no ratings)"}
            continue
        fig = _capped_replay(cfg, name, model, log, cfg.synthetic_cap_s)
        models[name] = {"params": MODEL_PARAMS.get(name, {}), "run": fig}
        if name == "isgd" and cfg.profile and not fig["error"] and fig["events"] < len(log):
            nxt = min(fig["events"] + 5_000, len(log))
            seg = _segment(log, fig["events"], nxt)
            prof, _ = hotspots(lambda seg=seg, model=model, name=name: _replay(cfg, name, model, seg))
            models[name]["profile"] = {
                "what": f"isgd, events {fig['events']:,} to {nxt:,} of the synthetic stream (after the timed run)",
                **prof,
            }
    return {"events": len(log), "source": log.source, "models": models}


def _ratios(section: dict[str, Any], river: dict[str, Any], numpy_ref: dict[str, Any], key: str) -> None:
    for m in section["models"].values():
        rate = m.get("events_per_s", {}).get("median") if key == "ml" else (m.get("run") or {}).get("events_per_s")
        r_rate = river.get("events_per_s")
        n_rate = numpy_ref.get("events_per_s")
        n_rate = n_rate.get("median") if isinstance(n_rate, dict) else n_rate
        m["vs_river"] = rate / r_rate if rate and r_rate else None
        m["vs_numpy_per_event"] = rate / n_rate if rate and n_rate else None


def run(cfg: Config) -> dict[str, Any]:
    """Run the per-event benchmark; return its JSON-ready result (see :func:`markdown`)."""
    out: dict[str, Any] = {"config": asdict(cfg), "notes": list(cfg.notes), "targets": [], "profiles": {}}
    folder = find_movielens(download=False)
    if folder is None:
        out["notes"].append("MovieLens 100K not found (set STREAMREC_DATA_DIR): the ML-100K part did not run.")
    else:
        ml = movielens_log(folder)
        if cfg.ml_events is not None:
            ml = ml.head(cfg.ml_events)
        section = _ml_section(cfg, ml)
        river = river_reference(ml, cfg, use_ratings=True)
        knn_ref = section["references"]["numpy_itemknn"]
        _ratios(section, river, knn_ref, "ml")
        out["movielens"] = {**section, "river": river}
        ref_rate = knn_ref["events_per_s"]["median"]
        for name, m in section["models"].items():
            goal = TARGET_ITEMKNN if name == "itemknn" else TARGET_OTHERS
            rate = m["events_per_s"]["median"]
            ok = rate is not None and rate >= goal
            out["targets"].append(
                target(
                    f"per-event throughput, {name}, ML-100K, freshness 0, K={cfg.k}",
                    f">= {goal:,} events/s",
                    "failed" if m["error"] else f"{fmt(rate)} events/s (median of {m['events_per_s']['n']})",
                    None if m["error"] else ok,
                    reference=f"NumPy item-kNN loop: {fmt(ref_rate)} events/s "
                    f"({fmt_ratio(rate / ref_rate) if rate and ref_rate else 'n/a'})",
                    note="" if cfg.ml_events is None else f"only the first {len(ml):,} events (--quick)",
                )
            )
            if not ok and not m["error"] and cfg.profile:
                prof, _ = hotspots(lambda name=name: _replay(cfg, name, served(name), ml.head(20_000)))
                out["profiles"][f"{name} on the first 20,000 events of ML-100K"] = prof
    syn = synthetic_log(cfg.synthetic_events, cfg.synthetic_users, cfg.synthetic_items, cfg.seed)
    section = _synthetic_section(cfg, syn)
    river = river_reference(syn, cfg, use_ratings=False)
    numpy_ref = numpy_reference(syn, cfg)
    _ratios(section, river, numpy_ref, "synthetic")
    out["synthetic"] = {**section, "river": river, "numpy_per_event": numpy_ref}
    isgd = section["models"].get("isgd", {})
    if "profile" in isgd:
        out["profiles"]["isgd on the synthetic stream"] = isgd.pop("profile")
    return out


# -- the report ---------------------------------------------------------------------------------


def _ref_rows(river: dict[str, Any], numpy_ref: dict[str, Any]) -> list[list[str]]:
    return [
        [
            "*reference: River BiasedMF, predict_one per item*",
            f"{fmt(river['events_per_s'])} (estimate)",
            f"{river['events']:,}",
            f"{fmt(river['recommend_s_estimated'], 1)} (est.)",
            fmt(river["learn_s"], 2),
            "",
            "",
            "",
        ],
        [
            "*reference: ISGD per event in NumPy*",
            fmt(numpy_ref["events_per_s"]),
            f"{numpy_ref['events']:,}",
            "",
            "",
            "",
            "",
            "",
        ],
    ]


def markdown(result: dict[str, Any]) -> str:
    """The per-event section of ``results.md``."""
    cfg = result["config"]
    out = [
        f"Per event at freshness 0 (recommend top-{cfg['k']} for the event's user from every earlier event, then "
        "learn the event), lists as served (popularity for users without history). events/s = events / seconds "
        "inside the models' add_items + recommend + learn (`predict` of rating models is not counted). Ratios "
        "compare figures of this run.",
        "",
    ]
    ml = result.get("movielens")
    if ml:
        refs = ml["references"]
        knn, isgd_ref, river = refs["numpy_itemknn"], refs["numpy_isgd"], ml["river"]
        rows = []
        for name, m in ml["models"].items():
            if m["error"]:
                rows.append([name, f"**failed**: {m['error']}", "", "", "", "", "", ""])
                continue
            r, run_ = m["events_per_s"], m["median_run"]
            goal = TARGET_ITEMKNN if name == "itemknn" else TARGET_OTHERS
            verdict = "met" if r["median"] >= goal else "**missed**"
            rows.append(
                [
                    name,
                    f"{fmt(r['median'])} (target {goal:,}: {verdict})",
                    f"{fmt(r['min'])} to {fmt(r['max'])} (n={r['n']})",
                    fmt(run_["recommend_s"], 2),
                    fmt(run_["learn_s"], 2),
                    fmt(run_["hr"], 4),
                    fmt_ratio(m["vs_numpy_per_event"]),
                    fmt_ratio(m["vs_river"]),
                ]
            )
        kr = knn["events_per_s"]
        rows.append(
            [
                "*reference: item-kNN per event in NumPy*",
                fmt(kr["median"]),
                f"{fmt(kr['min'])} to {fmt(kr['max'])} (n={kr['n']}; {knn['events']:,} events)",
                "",
                "",
                fmt(knn["hr"], 4),
                "1",
                "",
            ]
        )
        ir = isgd_ref["events_per_s"]
        rows.append(
            [
                "*reference: ISGD per event in NumPy*",
                fmt(ir["median"]),
                f"{fmt(ir['min'])} to {fmt(ir['max'])} (n={ir['n']}; {isgd_ref['events']:,} events)",
                "",
                "",
                "",
                "",
                "",
            ]
        )
        rows.append(
            [
                "*reference: River BiasedMF, predict_one per item*",
                f"{fmt(river['events_per_s'])} (estimate)",
                f"{river['events']:,} events",
                f"{fmt(river['recommend_s_estimated'], 1)} (est.)",
                fmt(river["learn_s"], 2),
                "",
                "",
                "1",
            ]
        )
        out += [
            f"**MovieLens 100K** ({ml['events']:,} events; median of {cfg['ml_repeats']} runs per model, round-robin "
            "with the NumPy loops)",
            "",
            md_table(
                [
                    "model",
                    "events/s (median)",
                    "range",
                    "recommend s",
                    "learn s",
                    f"HR@{cfg['k']}",
                    "vs NumPy item-kNN loop",
                    "vs River",
                ],
                rows,
            ),
            "",
            f"The NumPy item-kNN loop does the work of `itemknn` as served (its HR@{cfg['k']} is the same model's); "
            "the ISGD loop the work of `isgd` without the fallback. " + _ref_notes(river, isgd_ref),
            "",
        ]
    syn = result.get("synthetic")
    if syn:
        rows = []
        for name, m in syn["models"].items():
            if "skipped" in m:
                rows.append([name, "skipped", "", "", "", "", "", "", m["skipped"]])
                continue
            run_ = m["run"]
            if run_["error"]:
                rows.append([name, f"**failed**: {run_['error']}", "", "", "", "", "", "", ""])
                continue
            projected = syn["events"] / run_["events_per_s"] if run_["events_per_s"] else None
            note = f"time-capped at {cfg['synthetic_cap_s']:.0f} s" if run_["capped"] else "whole stream"
            rows.append(
                [
                    name,
                    fmt(run_["events_per_s"]),
                    f"{run_['events']:,} of {run_['of_events']:,}",
                    fmt(run_["recommend_s"], 1),
                    fmt(run_["learn_s"], 1),
                    fmt(run_["hr"], 3),
                    fmt_ratio(m["vs_river"]),
                    fmt_ratio(m["vs_numpy_per_event"]),
                    f"{note}; 1M events at this rate: {fmt(projected)} s",
                ]
            )
        river, nref = syn["river"], syn["numpy_per_event"]
        ref = [[*r, ""] for r in _ref_rows(river, nref)]
        ref[0][2], ref[1][2] = (
            f"{river['events']:,} of {river['of_events']:,}",
            f"{nref['events']:,} of {nref['of_events']:,}",
        )
        out += [
            f"**Synthetic stream** ({syn['source']}; one run per model, time-capped)",
            "",
            md_table(
                [
                    "model",
                    "events/s",
                    "events replayed",
                    "recommend s",
                    "learn s",
                    f"HR@{cfg['k']}",
                    "vs River",
                    "vs NumPy per event",
                    "note",
                ],
                rows + ref,
            ),
            "",
            _ref_notes(river, nref),
            "",
            "A capped run measures the first part of the stream, where the catalogue is still smaller than it gets "
            "later: the projected times for 1M events are lower bounds.",
            "",
        ]
    for note in result.get("notes", []):
        out += [f"- {note}"]
    for name, prof in result.get("profiles", {}).items():
        out += ["", hotspot_markdown(name, prof)]
    return "\n".join(out)


def _ref_notes(river: dict[str, Any], nref: dict[str, Any]) -> str:
    return (
        f"River reference: learn_one over {river['events']:,} events ({fmt(river['learn_events_per_s'])} events/s, targets: "
        f"{river['targets']}); predict_one timed on {river['sampled_user_lists']} sampled users "
        f"({river['sampled_predict_calls']:,} calls, {river['predict_one_us']:.2f} µs per call incl. ranking), "
        f"extrapolated to the {river['predict_calls_needed']:,} calls that top-k lists for all "
        f"{river['user_lists']:,} (batch, user) pairs need: **an estimate**. NumPy per-event reference: "
        f"{nref['events']:,} events in {nref['seconds']:.1f} s (time-capped)."
    )

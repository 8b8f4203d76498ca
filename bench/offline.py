"""Offline backtest throughput of every model, against per-event references, measured in one run.

Each model replays a stream through :class:`streamrec.backtest.Prequential`
(micro-batches of ``batch_size`` events: recommend top-``k`` for the batch's
distinct users from the state before the batch, then learn the batch).
``events/s`` is the number of replayed events divided by the seconds spent
inside the model's ``add_items``, ``recommend`` and ``learn`` calls (rating
models' ``predict`` calls, which the backtest also makes, are reported apart
and not counted). Two streams:

- **MovieLens 100K** (100,000 ratings, 943 users, 1,682 items), every model,
  median of ``ml_repeats`` runs (the models run round-robin, so load on the
  shared machine hits them alike);
- **synthetic**: :class:`producers.synthetic.SyntheticStream`, 1M implicit
  events over 100k users and 50k items. One run per model, **time-capped**:
  the stream is replayed in consecutive segments (the model keeps learning
  across them) until ``synthetic_cap_s`` has passed, and events/s is measured
  over the events replayed. Later events are slower (the catalogue grows), so
  a prefix overstates the rate over the whole stream. Models that learn from
  ratings only are skipped (the stream has none: they would learn nothing).

References, in the same run and on the same streams:

- **River**: ``river.reco.BiasedMF`` learned with ``learn_one`` per event, and
  a top-``k`` for each of the batch's distinct users computed as a River user
  would: ``predict_one`` for every known item the user has not seen, then the
  ``k`` best. Learning is timed over the whole replayed prefix; recommending
  is timed on a sample of users (spread over the replay) and extrapolated as
  ``seconds per predict_one call x sum over batches of (distinct users x
  known items)``: the figure is an estimate, labelled as such.
- **NumPy per event**: ISGD (same hyperparameters as ``models.isgd.ISGD``)
  processing one event at a time: score the user's catalogue (one
  matrix-vector product), mask seen items, ``argpartition`` the top ``k``,
  then one SGD step. Time-capped; events/s over the events it processed.
  Each step is divided by ``max(1, lr * |partner|^2)``, the cap ISGD's
  mini-batch step applies: without it the per-event algorithm diverges on the
  synthetic stream (NaN after about 28k events, as
  ``ISGD(sequential=True)`` does).
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
#: Hyperparameters beyond the defaults (torch on the CPU here; the GPU benchmark covers CUDA).
MODEL_PARAMS: dict[str, dict[str, Any]] = {"torch_bpr": {"device": "cpu"}}
TARGET_EVENTS_PER_S = 100_000
TARGET_MODELS = ("itemknn", "isgd")


@dataclass
class Config:
    """What the offline benchmark runs; :func:`config` gives the full and ``--quick`` ones."""

    batch_size: int = 1000
    k: int = 10
    ml_events: int | None = None  # None: all 100,000
    ml_repeats: int = 3
    ml_models: tuple[str, ...] = ALL_MODELS
    synthetic_events: int = 1_000_000
    synthetic_users: int = 100_000
    synthetic_items: int = 50_000
    synthetic_models: tuple[str, ...] = ALL_MODELS
    synthetic_cap_s: float = 30.0
    river_sample_users: int = 150
    river_cap_s: float = 12.0
    numpy_cap_s: float = 8.0
    profile: bool = True
    seed: int = 0
    notes: list[str] = field(default_factory=list)


def config(quick: bool = False) -> Config:
    """The full configuration, or the ``--quick`` one (seconds, for a smoke run)."""
    if not quick:
        return Config()
    return Config(
        ml_events=20_000,
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


def _replay(cfg: Config, name: str, model: Any, log: EventLog) -> dict[str, Any]:
    backtest = Prequential({name: model}, ks=(cfg.k,), batch_size=cfg.batch_size, memory="off")
    return _figures(backtest.run(log), name, len(log))


def _capped_replay(cfg: Config, name: str, model: Any, log: EventLog, cap_s: float) -> dict[str, Any]:
    """Replay ``log`` in consecutive segments until it ends or ``cap_s`` seconds have passed."""
    start = time.perf_counter()
    done = 0
    sums = {"recommend_s": 0.0, "learn_s": 0.0, "catalogue_s": 0.0, "predict_s": 0.0, "model_s": 0.0}
    hits = scored = 0.0
    error = None
    chunk = 10 * cfg.batch_size
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
        chunk = int(np.clip(0.5 * rate * (cap_s - elapsed), 5 * cfg.batch_size, 50 * cfg.batch_size))
        chunk = max(cfg.batch_size, chunk // cfg.batch_size * cfg.batch_size)
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
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in cfg.ml_models}
    for _ in range(cfg.ml_repeats):
        for name in cfg.ml_models:
            if runs[name] and runs[name][-1]["error"]:
                continue  # failed once: do not repeat
            model = create(name, **MODEL_PARAMS.get(name, {}))
            runs[name].append(_replay(cfg, name, model, log))
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
    return {"events": len(log), "source": log.source, "models": models}


def _synthetic_section(cfg: Config, log: EventLog) -> dict[str, Any]:
    models: dict[str, Any] = {}
    for name in cfg.synthetic_models:
        model = create(name, **MODEL_PARAMS.get(name, {}))
        if getattr(model, "uses_ratings", False):
            models[name] = {"skipped": "learns from ratings only; the synthetic stream is implicit (no ratings)"}
            continue
        fig = _capped_replay(cfg, name, model, log, cfg.synthetic_cap_s)
        models[name] = {"params": MODEL_PARAMS.get(name, {}), "run": fig}
        if name == "isgd" and cfg.profile and not fig["error"] and fig["events"] < len(log):
            nxt = min(fig["events"] + 10 * cfg.batch_size, len(log))
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
        r_rate, n_rate = river.get("events_per_s"), numpy_ref.get("events_per_s")
        m["vs_river"] = rate / r_rate if rate and r_rate else None
        m["vs_numpy_per_event"] = rate / n_rate if rate and n_rate else None


def run(cfg: Config) -> dict[str, Any]:
    """Run the offline benchmark; return its JSON-ready result (see :func:`markdown`)."""
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
        numpy_ref = numpy_reference(ml, cfg)
        _ratios(section, river, numpy_ref, "ml")
        out["movielens"] = {**section, "river": river, "numpy_per_event": numpy_ref}
        for name in TARGET_MODELS:
            m = section["models"].get(name)
            if not m:
                continue
            rate = m["events_per_s"]["median"]
            ok = rate is not None and rate >= TARGET_EVENTS_PER_S
            out["targets"].append(
                target(
                    f"offline throughput, {name}, ML-100K, K={cfg.k}",
                    f">= {TARGET_EVENTS_PER_S:,} events/s",
                    f"{fmt(rate)} events/s (median of {m['events_per_s']['n']})",
                    ok,
                    reference=f"River predict_one: {fmt(river['events_per_s'])} (est.); NumPy per event: {fmt(numpy_ref['events_per_s'])}",
                    note="" if cfg.ml_events is None else f"only the first {len(ml):,} events (--quick)",
                )
            )
            if not ok and cfg.profile:
                model = create(name, **MODEL_PARAMS.get(name, {}))
                prof, _ = hotspots(lambda model=model, name=name: _replay(cfg, name, model, ml))
                out["profiles"][f"{name} on ML-100K"] = prof
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
            "1",
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
            "1",
        ],
    ]


def markdown(result: dict[str, Any]) -> str:
    """The offline section of ``results.md``."""
    cfg = result["config"]
    out = [
        f"Prequential replay, micro-batches of {cfg['batch_size']:,} events: recommend top-{cfg['k']} for the batch's "
        "distinct users, then learn the batch. events/s = events / seconds inside the models' add_items + recommend + "
        "learn (`predict` of rating models is not counted). Ratios compare figures of this run.",
        "",
    ]
    ml = result.get("movielens")
    if ml:
        rows = []
        for name, m in ml["models"].items():
            if m["error"]:
                rows.append([name, f"**failed**: {m['error']}", "", "", "", "", "", ""])
                continue
            r, run_ = m["events_per_s"], m["median_run"]
            goal = (
                f" (target {TARGET_EVENTS_PER_S:,}: {'met' if r['median'] >= TARGET_EVENTS_PER_S else '**missed**'})"
                if name in TARGET_MODELS
                else ""
            )
            rows.append(
                [
                    name,
                    f"{fmt(r['median'])}{goal}",
                    f"{fmt(r['min'])} to {fmt(r['max'])} (n={r['n']})",
                    fmt(run_["recommend_s"], 2),
                    fmt(run_["learn_s"], 2),
                    fmt(run_["hr"], 3),
                    fmt_ratio(m["vs_river"]),
                    fmt_ratio(m["vs_numpy_per_event"]),
                ]
            )
        river, nref = ml["river"], ml["numpy_per_event"]
        ref = _ref_rows(river, nref)
        ref[0][2], ref[1][2] = f"{river['events']:,} events", f"{nref['events']:,} events"
        out += [
            f"**MovieLens 100K** ({ml['events']:,} events; median of {cfg['ml_repeats']} runs per model, round-robin)",
            "",
            md_table(
                [
                    "model",
                    "events/s (median)",
                    "range",
                    "recommend s",
                    "learn s",
                    f"HR@{cfg['k']}",
                    "vs River",
                    "vs NumPy per event",
                ],
                rows + ref,
            ),
            "",
            _ref_notes(river, nref),
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

"""Catalogue scale after a long stream: the neighbourhood models once a million events are in.

``catalogue`` measures per-event cost after a few thousand events; the rows of
an item-to-item model are short then. After a long stream the rows of popular
items hold much of the catalogue, and a user whose history holds such items
is scored from all of them. This section learns ``warm_events`` events of
:class:`~producers.synthetic.SyntheticStream` (in micro-batches of 200,000, the
last ``settle_events`` one by one with their users' lists served, untimed, as
the live worker serves them: item-kNN's capped lists are drawn up there as
they are in a running worker), then replays
``events`` per event as ``catalogue`` does (learn one event, the user's
top-20, the fallback's top-20) and counts HR@10 of the list each event's user
was last served.

`itemknn` runs twice in the same run: with its default cap on the rows of
popular items (``max_neighbours``, their most similar items only) and with
every row whole (``max_neighbours=None``, the reference). `sknn` and
popularity are there for scale.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from bench.catalogue import Config as CatalogueConfig
from bench.catalogue import _replay
from bench.common import md_table, target

__all__ = ["Config", "config", "markdown", "run"]


@dataclass(frozen=True)
class Config:
    sizes: tuple[int, ...] = (100_000, 1_000_000)
    warm_events: int = 1_000_000
    settle_events: int = 5_000
    events: int = 2_000
    n_users: int = 50_000
    k: int = 20
    hit_k: int = 10
    seed: int = 0
    #: (model, its parameters, label) in the order run; the label names the row
    runs: tuple[tuple[str, tuple[tuple[str, Any], ...], str], ...] = (
        ("popularity", (), "popularity"),
        ("itemknn", (), "itemknn (default cap)"),
        ("itemknn", (("max_neighbours", None),), "itemknn, whole rows (reference)"),
        ("sknn", (), "sknn"),
    )


def config(quick: bool = False) -> Config:
    if quick:
        return Config(sizes=(20_000,), warm_events=30_000, settle_events=200, events=200, n_users=2_000)
    return Config()


def run(cfg: Config) -> dict[str, Any]:
    replay_cfg = CatalogueConfig(
        warm_events=cfg.warm_events,
        settle_events=cfg.settle_events,
        events=cfg.events,
        n_users=cfg.n_users,
        k=cfg.k,
        hit_k=cfg.hit_k,
        seed=cfg.seed,
    )
    rows = []
    for n_items in cfg.sizes:
        for name, params, label in cfg.runs:
            row = _replay(name, n_items, replay_cfg, exact=False, params=dict(params))
            rows.append({**row, "label": label})
    targets = []
    for n_items in cfg.sizes:
        capped = next(r for r in rows if r["items"] == n_items and r["label"] == "itemknn (default cap)")
        whole = next(r for r in rows if r["items"] == n_items and r["label"] == "itemknn, whole rows (reference)")
        ratio = capped["events_per_second"] / whole["events_per_second"]
        gap = (capped["hr_at_10"] - whole["hr_at_10"]) / max(whole["hr_at_10"], 1e-9)
        targets.append(
            target(
                f"per event, `itemknn` and the fallback at {n_items:,} items after {cfg.warm_events:,} events",
                ">= 2,000 events/s, HR@10 within 2% of whole rows",
                f"{capped['events_per_second']:,.0f} events/s ({ratio:.1f} x whole rows), HR@10 {gap:+.1%}",
                capped["events_per_second"] >= 2000 and abs(gap) <= 0.02,
                reference=f"whole rows: {whole['events_per_second']:,.0f} events/s, HR@10 {whole['hr_at_10']:.4f}",
            )
        )
    return {"config": asdict(cfg), "rows": rows, "targets": targets}


def markdown(result: dict[str, Any]) -> str:
    cfg = result["config"]
    table = [
        [
            f"`{r['label']}`",
            f"{r['items']:,}",
            f"{r['warm_seconds']:.1f}",
            f"{r['events_per_second']:,.0f}",
            " / ".join(f"{r['us_per_event'][k]:,.0f}" for k in ("learn", "recommend", "fallback")),
            f"{r['hr_at_10']:.4f}",
        ]
        for r in result["rows"]
    ]
    head = (
        f"After {cfg['warm_events']:,} events of {cfg['n_users']:,} users (learned in micro-batches of 200,000, the "
        f"last {cfg['settle_events']:,} one by one with their lists served, untimed), "
        f"{cfg['events']:,} events replayed per event (learn 1 event, the user's top-{cfg['k']}, the fallback's "
        f"top-{cfg['k']}); HR@{cfg['hit_k']} of the list each event's user was last served.\n\n"
    )
    return head + md_table(
        [
            "model",
            "items",
            "warm-up s",
            "events/s",
            "µs per event: learn / recommend / fallback",
            f"HR@{cfg['hit_k']}",
        ],
        table,
    )

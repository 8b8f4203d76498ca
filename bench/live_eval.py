"""Live evaluation's cost: the worker's drain rate with live quality (and an experiment) on against off.

One run, one machine: a topic is pre-loaded with synthetic events, then a
worker drains it with ``STREAMREC_LIVE_KS=off`` and with ``10,20`` (and, for
the fast models, with an A/B-and-interleaving experiment on top), alternating,
``repeats`` times each; the figure is the median drain rate of each setting
and the ratio of the medians. Model sets: the fast ones (popularity and
item-kNN, where a fixed per-event cost weighs most) and the default ones.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, replace
from typing import Any

from bench.common import md_table, target
from bench.live import Config as LiveConfig
from bench.live import _preload, _settings, _worker_drain, services_for
from producers.synthetic import SyntheticStream
from streamrec.settings import DEFAULT_MODELS

EXPERIMENT = "bench: knn=itemknn 1, pop=popularity 1, mix=itemknn/popularity 1"


@dataclass(frozen=True)
class Config:
    events: int = 60_000
    default_events: int = 10_000  # the default models drain about 1,000 events/s here
    repeats: int = 3
    n_users: int = 10_000
    n_items: int = 5_000


def config(quick: bool = False) -> Config:
    if quick:
        return Config(events=5_000, default_events=1_000, repeats=1)
    return Config()


def _cases(cfg: Config) -> list[tuple[str, tuple[str, ...], str, dict[str, Any]]]:
    fast = ("popularity", "itemknn")
    default = tuple(DEFAULT_MODELS.split(","))
    return [
        ("fast, live off", fast, "itemknn", {"live_ks": ()}),
        ("fast, live on", fast, "itemknn", {"live_ks": (10, 20)}),
        ("fast, live on + experiment", fast, "itemknn", {"live_ks": (10, 20), "experiment": EXPERIMENT}),
        ("default, live off", default, default[1], {"live_ks": ()}),
        ("default, live on", default, default[1], {"live_ks": (10, 20)}),
    ]


def run(cfg: Config) -> dict[str, Any]:
    rates: dict[str, list[float]] = {}
    with services_for("bench-live-eval-") as (base, state):
        tag = f"{int(time.time())}"
        for repeat in range(cfg.repeats):
            for j, (name, models, default, changes) in enumerate(_cases(cfg)):
                n = cfg.events if name.startswith("fast") else cfg.default_events
                live = LiveConfig(models=models, default_model=default)
                settings = replace(_settings(base, f"le{repeat}-{j}-{tag}", live, state), **changes)
                _preload(settings, SyntheticStream(n_users=cfg.n_users, n_items=cfg.n_items, seed=1), n)
                drained = _worker_drain(settings, n, state / f"le{repeat}-{j}.log")
                rates.setdefault(name, []).append(drained["events_per_s"])
    medians = {name: statistics.median(values) for name, values in rates.items()}
    fast_ratio = medians["fast, live on"] / medians["fast, live off"]
    exp_ratio = medians["fast, live on + experiment"] / medians["fast, live off"]
    default_ratio = medians["default, live on"] / medians["default, live off"]
    targets = [
        target("throughput with live evaluation (popularity, item-kNN)", "at most 10% lower than off",
               f"{fast_ratio:.1%} of off", fast_ratio >= 0.9, f"off {medians['fast, live off']:,.0f} events/s"),
        target("throughput with live evaluation (default models)", "at most 10% lower than off",
               f"{default_ratio:.1%} of off", default_ratio >= 0.9, f"off {medians['default, live off']:,.0f} events/s"),
    ]  # fmt: skip
    return {
        "config": cfg.__dict__,
        "experiment": EXPERIMENT,
        "rates": rates,
        "median_events_per_s": medians,
        "ratios": {"fast": fast_ratio, "fast_with_experiment": exp_ratio, "default": default_ratio},
        "targets": targets,
    }


def markdown(result: dict[str, Any]) -> str:
    medians = result["median_events_per_s"]
    rows = [
        [name, f"{medians[name]:,.0f}", ", ".join(f"{r:,.0f}" for r in values)]
        for name, values in result["rates"].items()
    ]
    r = result["ratios"]
    return (
        md_table(["worker", "median events/s (drain)", "runs"], rows)
        + f"\n\nOn / off, medians: popularity + item-kNN {r['fast']:.1%} (with the experiment "
        f"`{result['experiment']}` {r['fast_with_experiment']:.1%}); default models {r['default']:.1%}.\n"
    )

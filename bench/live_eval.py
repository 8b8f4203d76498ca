"""Live evaluation's cost: the worker's work per event with live quality (and an experiment) on against off.

**CPU time in the pipeline** (the figure the target is judged on; it holds on a shared machine): the
same synthetic stream is fed, batch by batch, to two pipelines of the same models, one with live
quality and an experiment's split and one without, alternating which goes first; each batch's
``process`` is timed in thread CPU time (what the worker's learning thread spends); the ratio is
of the totals.

**Drain rate of the worker** (end to end, noisy where other processes share the cores): a topic is pre-loaded with synthetic events, then a
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

from bench.common import cpu_seconds, md_table, percentiles, target
from bench.live import Config as LiveConfig
from bench.live import _preload, _settings, _worker_drain, services_for
from producers.exposures import ExposureLog
from producers.synthetic import SyntheticStream
from streamrec.settings import DEFAULT_MODELS
from streamrec.store import RecsClient

EXPERIMENT = "bench: knn=itemknn 1, pop=popularity 1, mix=itemknn/popularity 1"


@dataclass(frozen=True)
class Config:
    events: int = 60_000
    default_events: int = 10_000  # the default models drain about 1,000 events/s here
    repeats: int = 3
    n_users: int = 10_000
    n_items: int = 5_000
    cpu_events: int = 100_000  # the in-process comparison
    cpu_batch: int = 500
    reads: int = 10_000  # per setting (exposure logging off, on) and block
    read_blocks: int = 4  # off, on, off, on, ...
    read_rate: float = 2_000.0


def config(quick: bool = False) -> Config:
    if quick:
        return Config(events=5_000, default_events=1_000, repeats=1, reads=1_000, read_blocks=2, cpu_events=10_000)
    return Config()


def _pipeline_cpu(cfg: Config, models: tuple[str, ...], default: str, experiment: str | None) -> dict[str, float]:
    """Thread CPU seconds of ``process`` over the stream, live quality (and ``experiment``) off and on."""
    from streamrec.experiments import Experiment
    from streamrec.live_quality import LiveQuality
    from streamrec.pipeline import RecommendationPipeline

    events = list(SyntheticStream(n_users=cfg.n_users, n_items=cfg.n_items, seed=2).events(cfg.cpu_events))
    exp = Experiment.parse(experiment) if experiment else None
    off = RecommendationPipeline.from_names(models, default, top_n=50)
    on = RecommendationPipeline.from_names(models, default, top_n=50)
    on.use(LiveQuality(list(models), (10, 20), experiment=exp), exp)
    spent = {"off": 0.0, "on": 0.0}
    for n, start in enumerate(range(0, len(events), cfg.cpu_batch)):
        batch = events[start : start + cfg.cpu_batch]
        order = [("off", off), ("on", on)] if n % 2 == 0 else [("on", on), ("off", off)]
        for name, pipe in order:
            t0 = time.thread_time()
            pipe.process(batch)
            spent[name] += time.thread_time() - t0
    n = len(events)
    return {
        "events": n,
        "off_us_per_event": spent["off"] / n * 1e6,
        "on_us_per_event": spent["on"] / n * 1e6,
        "ratio": spent["off"] / spent["on"],  # throughput on / off
    }


def _reads(settings: Any, users: list[str], cfg: Config) -> dict[str, Any]:
    """Paced reads of users' lists, without and with recording each answer as an exposure, alternating blocks."""
    log = ExposureLog(settings)
    clients = {
        "off": RecsClient(settings.redis_url, settings.key_prefix),
        "on": RecsClient(settings.redis_url, settings.key_prefix, exposures=log),
    }
    seconds: dict[str, list[float]] = {"off": [], "on": []}
    recording: list[float] = []  # record_exposure alone
    try:
        for block in range(cfg.read_blocks):
            mode = "off" if block % 2 == 0 else "on"
            client = clients[mode]
            start = time.perf_counter()
            for n in range(cfg.reads):
                due = start + n / cfg.read_rate
                delay = due - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                user = users[(block * cfg.reads + n) % len(users)]
                t0 = time.perf_counter()
                rec = client.get(user)
                if mode == "on" and rec is not None:
                    t1 = time.perf_counter()
                    client.record_exposure(user, rec)
                    recording.append(time.perf_counter() - t1)
                seconds[mode].append(time.perf_counter() - t0)
        log.flush()
        sender_cpu = cpu_seconds(log._proc.pid)
    finally:
        for client in clients.values():
            client.close()
        log.close()
    out: dict[str, Any] = {m: percentiles([s * 1000.0 for s in v], (50, 99)) for m, v in seconds.items()}
    out["record_exposure_us"] = percentiles([s * 1e6 for s in recording], (50, 99))
    out["recorded"], out["dropped"], out["failed"] = log.recorded, log.dropped, log.failed
    out["sender_cpu_us_per_record"] = sender_cpu / max(log.recorded, 1) * 1e6
    return out


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
    fast, default_models = ("popularity", "itemknn"), tuple(DEFAULT_MODELS.split(","))
    cpu = {
        "fast": _pipeline_cpu(cfg, fast, "itemknn", None),
        "fast_with_experiment": _pipeline_cpu(cfg, fast, "itemknn", EXPERIMENT),
        "default": _pipeline_cpu(replace(cfg, cpu_events=cfg.cpu_events // 5), default_models, default_models[1], None),
    }
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
                last = settings
        reads = _reads(last, [f"u{n}" for n in range(cfg.n_users)], cfg)
    medians = {name: statistics.median(values) for name, values in rates.items()}
    fast_ratio = cpu["fast"]["ratio"]
    exp_ratio = cpu["fast_with_experiment"]["ratio"]
    default_ratio = cpu["default"]["ratio"]
    drain_ratio = medians["fast, live on"] / medians["fast, live off"]
    p99_gap = reads["on"]["p99"] - reads["off"]["p99"]
    targets = [
        target("read p99 with exposure logging", "within 0.1 ms of the read alone", f"{p99_gap:+.3f} ms",
               p99_gap <= 0.1, f"read alone p99 {reads['off']['p99']:.3f} ms at {cfg.read_rate:,.0f} reads/s"),
        target("throughput with live evaluation (popularity, item-kNN)", "at most 10% lower than off",
               f"{fast_ratio:.1%} of off (CPU time in the pipeline)", fast_ratio >= 0.9,
               f"off {cpu['fast']['off_us_per_event']:.1f} us/event; worker drain on/off {drain_ratio:.0%}"),
        target("throughput with live evaluation and an experiment (popularity, item-kNN)", "at most 10% lower than off",
               f"{exp_ratio:.1%} of off (CPU time in the pipeline)", exp_ratio >= 0.9,
               f"off {cpu['fast_with_experiment']['off_us_per_event']:.1f} us/event"),
        target("throughput with live evaluation (default models)", "at most 10% lower than off",
               f"{default_ratio:.1%} of off (CPU time in the pipeline)", default_ratio >= 0.9,
               f"off {cpu['default']['off_us_per_event']:.1f} us/event"),
    ]  # fmt: skip
    return {
        "config": cfg.__dict__,
        "experiment": EXPERIMENT,
        "rates": rates,
        "median_events_per_s": medians,
        "pipeline_cpu": cpu,
        "ratios": {"fast": fast_ratio, "fast_with_experiment": exp_ratio, "default": default_ratio},
        "drain_ratio_fast": drain_ratio,
        "reads_ms": reads,
        "targets": targets,
    }


def markdown(result: dict[str, Any]) -> str:
    medians = result["median_events_per_s"]
    rows = [
        [name, f"{medians[name]:,.0f}", ", ".join(f"{r:,.0f}" for r in values)]
        for name, values in result["rates"].items()
    ]
    cpu = result["pipeline_cpu"]
    cpu_rows = [
        [label, f"{c['events']:,}", f"{c['off_us_per_event']:.1f}", f"{c['on_us_per_event']:.1f}", f"{c['ratio']:.1%}"]
        for label, c in (
            ("popularity, item-kNN", cpu["fast"]),
            ("popularity, item-kNN + experiment", cpu["fast_with_experiment"]),
            ("default models", cpu["default"]),
        )
    ]
    return (
        md_table(["pipeline", "events", "CPU us/event, live off", "live on", "throughput on / off"], cpu_rows)
        + f"\n\nExperiment: `{result['experiment']}`. The worker draining a pre-loaded topic (end to end, "
        "alternating settings; noisy on a shared machine):\n\n"
        + md_table(["worker", "median events/s (drain)", "runs"], rows)
        + f"\n\nDrain on / off (popularity, item-kNN), medians: {result['drain_ratio_fast']:.0%}.\n\n"
        + _reads_markdown(result)
    )


def _reads_markdown(result: dict[str, Any]) -> str:
    reads = result.get("reads_ms")
    if not reads:
        return ""
    cfg = result["config"]
    return (
        md_table(
            ["read", "p50 (ms)", "p99 (ms)"],
            [
                ["`RecsClient.get`", f"{reads['off']['p50']:.3f}", f"{reads['off']['p99']:.3f}"],
                ["`get` + `record_exposure`", f"{reads['on']['p50']:.3f}", f"{reads['on']['p99']:.3f}"],
            ],
        )
        + f"\n\n{cfg['reads']:,} reads per block, {cfg['read_blocks']} alternating blocks, paced at "
        f"{cfg['read_rate']:,.0f} reads/s; {reads['recorded']:,} exposures recorded, {reads['dropped']:,} dropped, "
        f"{reads['failed']:,} failed to send. `record_exposure` itself: p50 "
        f"{reads.get('record_exposure_us', {}).get('p50', float('nan')):.1f} us, p99 "
        f"{reads.get('record_exposure_us', {}).get('p99', float('nan')):.1f} us; the sending process spent "
        f"{reads.get('sender_cpu_us_per_record', float('nan')):.0f} us of CPU per record (kafka-python), on the "
        "cores the reader, Redis and the broker share.\n"
    )

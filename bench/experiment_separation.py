"""How many events an A/B split and an interleaving need to tell two models apart, on real logs.

Each log is replayed through the live path's own code (:class:`streamrec.pipeline.RecommendationPipeline`
with live quality and an experiment, in micro-batches of ``batch`` events, as the worker runs it;
Kafka and Redis only carry these counts, see ``tests/integration/test_live_quality.py``). One
experiment splits the users five ways: the default model alone, popularity alone, item-kNN alone,
and two team-draft interleavings (default/popularity, default/item-kNN). Every ``check_every``
events the cumulative report is computed; a comparison is **separated** from the first check
after which its 95% interval excludes no difference (A/B: the HR@10 difference of the two arms;
interleaving: the share of wins excludes 0.5) at every later check. The figure is the number of
events of the comparison's own users up to that check (A/B: both arms' users; interleaving: the
interleaved arm's users), so the two designs are compared on the traffic they use.
"""

from __future__ import annotations

import csv
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import REPO_ROOT, md_table
from streamrec.events import Interaction
from streamrec.experiment_report import experiment_report
from streamrec.experiments import Experiment
from streamrec.live_quality import LiveQuality
from streamrec.pipeline import RecommendationPipeline
from streamrec.settings import DEFAULT_MODELS

DEFAULT = DEFAULT_MODELS.split(",")[1]
EXPERIMENT = (
    f"separation: d={DEFAULT} 1, p=popularity 1, k=itemknn 1, dp={DEFAULT}/popularity 1, dk={DEFAULT}/itemknn 1"
)
COMPARISONS = (  # (name, A/B arms or the interleaved arm, the second model)
    (f"{DEFAULT} vs popularity", ("d", "p"), "dp"),
    (f"{DEFAULT} vs itemknn", ("d", "k"), "dk"),
)


@dataclass(frozen=True)
class Config:
    max_events: int | None = None
    batch: int = 100
    check_every: int = 1000


def config(quick: bool = False) -> Config:
    return Config(max_events=6000, check_every=500) if quick else Config()


def _logs(cfg: Config) -> dict[str, list[Interaction]]:
    shared = Path(os.environ.get("STREAMREC_DATA_DIR") or REPO_ROOT.parent / "shared" / "data")
    logs: dict[str, list[Interaction]] = {}
    ml = shared / "ml-100k" / "u.data"
    if ml.is_file():
        with open(ml, encoding="utf-8") as f:
            rows = [line.split("\t") for line in f if line.strip()]
        events = sorted((Interaction(r[0], r[1], float(r[3])) for r in rows), key=lambda e: e.timestamp)
        logs["MovieLens 100K"] = events
    yoo = shared / "yoochoose-clicks-100k"
    if (yoo / "train_full.tsv").is_file():
        events = []
        for part in ("train_full.tsv", "test.tsv"):
            with open(yoo / part, encoding="utf-8") as f:
                events += [
                    Interaction(r["SessionId"], r["ItemId"], float(r["Time"]), "click")
                    for r in csv.DictReader(f, delimiter="\t")
                ]
        logs["YOOCHOOSE clicks (100k sample)"] = sorted(events, key=lambda e: e.timestamp)
    if not logs:  # a fresh clone: a generated log, so that the benchmark still runs
        from producers.synthetic import SyntheticStream

        logs["synthetic (20,000 events)"] = list(SyntheticStream(n_users=1000, n_items=2000, seed=1).events(20_000))
    return {name: events[: cfg.max_events] for name, events in logs.items()}


def _separation(checks: list[dict[str, Any]], key: str) -> int | None:
    """Events at the first check from which ``key`` stays separated to the end (None: never)."""
    at = None
    for check in checks:
        at = (at if at is not None else check[key]["events"]) if check[key]["separated"] else None
    return at


def replay(events: list[Interaction], cfg: Config) -> dict[str, Any]:
    exp = Experiment.parse(EXPERIMENT)
    names = ["popularity", DEFAULT, "itemknn"]
    pipe = RecommendationPipeline.from_names(names, DEFAULT, top_n=20)
    pipe.use(LiveQuality(names, (10, 20), experiment=exp), exp)
    counts: dict[str, float] = {}
    checks: list[dict[str, Any]] = []
    started = time.perf_counter()
    next_check = cfg.check_every
    for start in range(0, len(events), cfg.batch):
        for name, value in pipe.process(events[start : start + cfg.batch]).quality.items():
            counts[name] = counts.get(name, 0.0) + value
        done = min(start + cfg.batch, len(events))
        if done >= next_check or done == len(events):
            next_check += cfg.check_every
            report = experiment_report(exp, counts, {}, k=10)["variants"]
            check: dict[str, Any] = {"events": done}
            for name, (a, b), mixed in COMPARISONS:
                low, high = _difference(report, a, b)
                share_low, share_high = report[mixed]["share_ci"]
                check[f"ab {name}"] = {
                    "events": report[a]["scored"] + report[b]["scored"],
                    "separated": low > 0 or high < 0,
                    "difference": report[a]["HR@10"] - report[b]["HR@10"],
                }
                check[f"interleaving {name}"] = {
                    "events": report[mixed]["scored"],
                    "separated": share_low > 0.5 or share_high < 0.5,
                    "share": report[mixed]["share"],
                }
            checks.append(check)
    final = experiment_report(exp, counts, {}, k=10)
    out: dict[str, Any] = {"events": len(events), "seconds": time.perf_counter() - started, "report": final}
    for name, _, _ in COMPARISONS:
        out[name] = {
            "ab_events_to_separate": _separation(checks, f"ab {name}"),
            "interleaving_events_to_separate": _separation(checks, f"interleaving {name}"),
            "ab_difference": checks[-1][f"ab {name}"]["difference"],
            "interleaving_share": checks[-1][f"interleaving {name}"]["share"],
        }
    out["checks"] = checks
    return out


def _difference(report: dict[str, Any], a: str, b: str) -> tuple[float, float]:
    from streamrec.experiment_report import difference_interval

    ra, rb = report[a], report[b]
    _, low, high = difference_interval(
        ra["HR@10"] * ra["scored"], ra["scored"], rb["HR@10"] * rb["scored"], rb["scored"]
    )
    return low, high


def run(cfg: Config) -> dict[str, Any]:
    return {
        "config": cfg.__dict__,
        "experiment": EXPERIMENT,
        "logs": {name: replay(events, cfg) for name, events in _logs(cfg).items()},
    }


def markdown(result: dict[str, Any]) -> str:
    rows = []
    for log, r in result["logs"].items():
        for name, _, _ in COMPARISONS:
            c = r[name]
            ab, il = c["ab_events_to_separate"], c["interleaving_events_to_separate"]
            ratio = f"{ab / il:.1f}x" if ab and il else "–"
            rows.append([
                log, name, f"{c['ab_difference']:+.4f}", f"{ab:,.0f}" if ab else "not separated",
                f"{c['interleaving_share']:.3f}", f"{il:,.0f}" if il else "not separated", ratio,
            ])  # fmt: skip
    return (
        f"Experiment `{result['experiment']}`, replayed through the live path in batches of "
        f"{result['config']['batch']} events, checked every {result['config']['check_every']} events.\n\n"
        + md_table(
            [
                "log",
                "comparison",
                "A/B HR@10 difference",
                "A/B events to separate",
                "interleaving share of wins",
                "interleaving events to separate",
                "A/B / interleaving",
            ],
            rows,
        )
        + "\n"
    )

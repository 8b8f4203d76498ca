"""Run the benchmarks and write their results: ``python -m bench [--quick] [--only NAME] [--out DIR] [--live]``.

Benchmarks, in order (each a module of this package with ``config(quick)``,
``run(config) -> dict`` and ``markdown(result) -> str``):

- ``offline``: backtest throughput per model on MovieLens 100K and a 1M-event
  synthetic stream, against River ``predict_one`` and a per-event NumPy loop;
- ``reads``: p50/p99 of ``RecsClient.get`` at 10k reads/s against ``redis-benchmark``;
- ``scale``: top-100 for 1,000 users as the catalogue grows to 1M items, exact
  versus an HNSW index; bytes of model state per user and item;
- ``catalogue``: per-event cost (learn, the user's top-20, the fallback's top-20) of each
  model over catalogues of 10,000 to 1,000,000 items, popularity's kept top list against a
  full pass in the same run;
- ``long_stream``: the same per-event cost once a million events are in (long item-kNN rows), item-kNN with
  its rows capped against whole rows in the same run;
- ``gpu``: torch BPR on CUDA versus CPU (CPU figures only without CUDA);
- ``split_quality``: per-event HR@10 with the users split over 1 and 3
  workers that exchange their item increments as the updates topic does;
- ``live``: the Kafka pipeline, from ``bench/live.py`` when that module exists,
  run only with ``--live`` (it starts a broker);
- ``scaleout``: 1 and 2 workers over partitions against bare Faust, freshness at
  half capacity, and a model of 8 and 32 workers from the measured costs (``--live``);
- ``soak``: 3 workers over 6 partitions killed, stopped and started at random for 10
  minutes at 1,500 events/s beside a CPU-bound process; events lost, learned twice, and
  the time lists take to resume (``--live``);
- ``catalogue_live``: one worker with catalogues of 10,000 to 1,000,000 items: the time
  to take the catalogue in, capacity against bare Faust, freshness at half capacity (``--live``);
- ``control``: the filtered read (availability, a category, excluded items) against a plain
  ``GET`` at 10k reads/s, hide-to-gone latency over 1,000 hides at 2,000 events/s, and the
  per-event quality of similar items beside popularity (``--live``);
- ``experiment_separation``: how many events an A/B split and a team-draft interleaving need to
  separate the default model from popularity and from item-kNN, on the real logs when present;
- ``workers``: CPU seconds and state bytes per event with 1, 2, 4 and 8 worker processes, and
  the cost model of today's design projected to 64 and 256 workers (``--live``);
- ``owned_state``: one worker's cost of sharing item state per own event with 1 to 256 workers,
  today's design (every worker applies every other's increments) against item parts' owners
  merging them (``STREAMREC_ITEM_STATE=owned``), in one process with the models' sharing code;
- ``sharing_cost``: per model, what sharing one event's item increments costs the worker that
  learned it and each other worker (in one process: no Kafka, no fixed per-process cost);
- ``live_eval``: the worker's drain rate with live quality (and an experiment) on against off,
  alternating, medians (``--live``).

Each benchmark writes ``<out>/<name>.json`` (its figures, configuration and
the machine); then ``<out>/results.md`` is rebuilt from every JSON file in
``<out>``, so ``--only`` refreshes one section and keeps the others. The
default output is ``bench/results`` (``bench/results/quick`` with ``--quick``,
so a smoke run does not overwrite the full figures).
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import importlib.util
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from bench.common import REPO_ROOT, machine_info, machine_markdown, md_table, read_json, write_json

BENCHMARKS: dict[str, str] = {
    "offline": "Offline backtest throughput",
    "reads": "Read latency from Redis",
    "scale": "Scale: exact versus ANN top-100, model state size",
    "catalogue": "Catalogue scale: per-event cost from 10,000 to 1,000,000 items",
    "long_stream": "Catalogue scale after a long stream: the neighbourhood models once a million events are in",
    "gpu": "GPU: torch BPR on CUDA versus CPU",
    "split_quality": "Quality with the users split over workers",
    "live": "Live pipeline: Kafka → worker → Redis",
    "scaleout": "Scale-out: workers over partitions, against bare Faust",
    "soak": "Soak under chaos: workers killed, stopped and started while events flow",
    "catalogue_live": "Catalogue scale, live: one worker with 10,000 to 1,000,000 catalogue items",
    "control": "Controlling what is served: filtered reads, hide to gone, similar items",
    "live_eval": "Live evaluation: the worker's throughput with live quality on against off",
    "experiment_separation": "Experiments: events an A/B split and an interleaving need to separate two models",
    "workers": "Workers: CPU and state bytes per event from 1 to 8 worker processes, and the cost model",
    "sharing_cost": "Sharing cost per model: one event's increments for its worker and for every other worker",
    "owned_state": "Item state owned by item against today's design: one worker's sharing cost from 1 to 256 workers",
}
LIVE_MODULE = "bench.live"


def _live_available() -> bool:
    return importlib.util.find_spec(LIVE_MODULE) is not None


def run_benchmark(name: str, quick: bool, out: Path, machine: dict[str, Any]) -> dict[str, Any]:
    """Run one benchmark and write ``<out>/<name>.json``; return what was written."""
    module = importlib.import_module(f"bench.{name}")
    cfg = module.config(quick=quick)
    started = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    start = time.perf_counter()
    error = None
    try:
        result = module.run(cfg)
    except Exception:
        error = traceback.format_exc()
        result = {}
    doc = {
        "benchmark": name,
        "title": BENCHMARKS.get(name, name),
        "mode": "quick" if quick else "full",
        "started_at": started,
        "seconds": time.perf_counter() - start,
        "error": error,
        "machine": machine,
        "result": result,
    }
    write_json(out / f"{name}.json", doc)
    return doc


def _section(doc: dict[str, Any]) -> str:
    name = doc["benchmark"]
    head = f"## {doc.get('title', name)}\n\n*{doc['mode']} run, {doc['started_at']}, {doc['seconds']:.0f} s; `{name}.json`*\n"
    if doc.get("error"):
        return f"{head}\n**Failed:**\n\n```text\n{doc['error'][-3000:]}\n```\n"
    try:
        module = importlib.import_module(f"bench.{name}")
        body = module.markdown(doc["result"])
    except Exception:
        body = f"(could not render: {traceback.format_exc(limit=2)})"
    return f"{head}\n{body}\n"


def write_report(out: Path, live_requested: bool = False) -> Path:
    """Rebuild ``<out>/results.md`` from the JSON results in ``out``."""
    docs = {}
    for name in BENCHMARKS:
        path = out / f"{name}.json"
        if path.exists():
            docs[name] = read_json(path)
    lines = [
        "# streamrec benchmarks",
        "",
        "Written by `python -m bench` from the JSON files beside this one (`python -m bench --only NAME` refreshes one "
        "section). Every figure below was measured on the machine described here; medians are over repeated runs "
        "where stated, and each ratio compares figures measured in the same run.",
        "",
    ]
    if docs:
        newest = max(docs.values(), key=lambda d: d["started_at"])
        commits = {d["machine"].get("git_commit") for d in docs.values()}
        lines += ["## Machine", "", machine_markdown(newest["machine"]), ""]
        if len(commits) > 1:
            lines += [
                f"Sections come from runs at different commits: {', '.join(sorted(c or '?' for c in commits))}.",
                "",
            ]
        rows = []
        for doc in docs.values():
            for t in (doc.get("result") or {}).get("targets", []):
                verdict = {True: "met", False: "**missed**", None: "not measured"}[t["ok"]]
                rows.append([t["target"], t["goal"], t["measured"], verdict, t.get("reference", ""), doc["mode"]])
        if rows:
            lines += [
                "## Targets",
                "",
                md_table(["target", "goal", "measured", "verdict", "reference (same run)", "run"], rows),
                "",
            ]
    for name in BENCHMARKS:
        if name in docs:
            lines.append(_section(docs[name]))
        elif name in ("live", "scaleout", "soak", "catalogue_live", "control", "live_eval", "workers"):
            why = (
                "run `python -m bench --live` (it starts a Kafka broker)"
                if _live_available()
                else "`bench/live.py` is not in this tree yet; once it is, `python -m bench --live` runs it"
            )
            lines += [f"## {BENCHMARKS[name]}", "", f"Not run: {why}.", ""]
    path = out / "results.md"
    path.write_text("\n".join(lines).rstrip() + "\n", encoding="utf-8")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny configurations: the whole run in under a minute")
    parser.add_argument("--only", choices=list(BENCHMARKS), help="run one benchmark (the report keeps the others)")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output folder (default bench/results, or bench/results/quick with --quick)",
    )
    parser.add_argument("--live", action="store_true", help="also run bench/live.py (starts Kafka)")
    args = parser.parse_args(argv)
    from streamrec.settings import limit_torch_threads

    limit_torch_threads()  # as the worker and the backtest do: torch's default pool fights the other work
    out = args.out or (REPO_ROOT / "bench" / "results" / ("quick" if args.quick else ""))
    out.mkdir(parents=True, exist_ok=True)
    with_services = (
        "live",
        "scaleout",
        "soak",
        "catalogue_live",
        "control",
        "live_eval",
        "workers",
    )  # they start a broker: only with --live
    everything = [n for n in BENCHMARKS if n not in with_services] + (list(with_services) if args.live else [])
    names = [args.only] if args.only else everything
    if "live" in names and not _live_available():
        print("live: bench/live.py does not exist yet; skipped", file=sys.stderr)
        names.remove("live")
    machine = machine_info()
    failed = []
    total = time.perf_counter()
    for name in names:
        print(f"{name}: running ({'quick' if args.quick else 'full'})...", file=sys.stderr, flush=True)
        doc = run_benchmark(name, args.quick, out, machine)
        if doc["error"]:
            failed.append(name)
            print(f"{name}: FAILED after {doc['seconds']:.0f} s\n{doc['error']}", file=sys.stderr, flush=True)
            continue
        verdicts = [
            f"{t['target']}: {'met' if t['ok'] else 'MISSED' if t['ok'] is False else 'n/a'}"
            for t in doc["result"].get("targets", [])
        ]
        print(
            f"{name}: done in {doc['seconds']:.0f} s" + "".join(f"\n  {v}" for v in verdicts),
            file=sys.stderr,
            flush=True,
        )
    report = write_report(out, live_requested=args.live)
    print(f"wrote {report} ({time.perf_counter() - total:.0f} s)", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

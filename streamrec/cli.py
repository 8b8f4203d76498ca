"""The ``streamrec`` command line.

``streamrec demo``            start services if needed, replay MovieLens through Kafka and the worker, print lists
``streamrec services up``     start a local Kafka broker and Redis (``down``, ``status``)
``streamrec worker``          run the Faust worker (``faust -A stream_app.app worker``)
``streamrec publish``         publish a log file, MovieLens or synthetic events to Kafka
``streamrec recs USER_ID``    read a user's list from Redis (filtered; ``--category``, ``--exclude``, ...)
``streamrec similar ITEM_ID`` read an item's similar items from Redis
``streamrec status``          consumer lag, worker counters and freshness, from Kafka and Redis
``streamrec backtest``        replay a log offline through models and score them
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from streamrec.settings import DEFAULT_MODELS, Settings

if TYPE_CHECKING:
    from streamrec.store import RecList, RecsClient

__all__ = ["main"]


def _settings() -> Settings:
    return Settings.from_env()


# -- services -------------------------------------------------------------------------


def cmd_services(args: argparse.Namespace) -> int:
    from streamrec.services import LocalServices

    services = LocalServices(args.state_dir)
    if args.action == "up":
        endpoints = services.up()
        print(f"KAFKA_BOOTSTRAP_SERVERS={endpoints.kafka_bootstrap_servers}")
        print(f"REDIS_URL={endpoints.redis_url}")
    elif args.action == "down":
        stopped = services.down()
        print(", ".join(f"{name}: {'stopped' if ok else 'was not running'}" for name, ok in stopped.items()))
    else:
        print(json.dumps(services.status(), indent=2))
    return 0


# -- worker ---------------------------------------------------------------------------


def cmd_worker(args: argparse.Namespace) -> int:
    from streamrec.services import resolve_services
    from streamrec.topics import ensure_topics
    from streamrec.workerproc import WorkerProcess

    settings = resolve_services(_settings(), start=not args.no_start)
    ensure_topics(settings)
    env = {**os.environ, **settings.as_env()}
    cmd = WorkerProcess.command(args.loglevel)
    print(
        f"worker: {settings.describe()}, models {','.join(settings.models)}",
        file=sys.stderr,
    )
    os.execvpe(cmd[0], cmd, env)
    return 0  # not reached


# -- publish --------------------------------------------------------------------------


def cmd_publish(args: argparse.Namespace) -> int:
    from producers.publisher import EventPublisher
    from producers.synthetic import SyntheticStream
    from streamrec.datasets import find_movielens
    from streamrec.eventlog import ReadReport, movielens_events, read_events
    from streamrec.services import resolve_services
    from streamrec.topics import ensure_topics

    settings = resolve_services(_settings(), start=not args.no_start)
    ensure_topics(settings)
    report = ReadReport()
    total = None
    if args.synthetic:
        events = SyntheticStream(n_users=args.users, n_items=args.items, seed=args.seed).events(args.synthetic)
        total = args.synthetic
    elif args.movielens:
        folder = find_movielens()
        if folder is None:
            print(
                "MovieLens 100K is not available (set STREAMREC_DATA_DIR to a folder holding ml-100k/)", file=sys.stderr
            )
            return 2
        items, ratings = movielens_events(folder)
        events = iter([*items, *ratings])
        total = len(items) + len(ratings)
    elif args.path:
        events = read_events(args.path, fmt=args.format, kind=args.kind, report=report)
    else:
        print("publish what? give a PATH, --movielens or --synthetic N", file=sys.stderr)
        return 2
    if args.limit:
        events = itertools.islice(events, args.limit)
        total = min(total or args.limit, args.limit)
    with EventPublisher(settings) as publisher:
        stats = publisher.publish(events, rate=args.rate, total=total, progress=not args.quiet)
    print(f"published {stats.events} events in {stats.seconds:.2f} s ({stats.events_per_second:,.0f} events/s)")
    if report.invalid:
        print(
            f"skipped {report.invalid} invalid lines; first: line {report.errors[0][0]}: {report.errors[0][1]}",
            file=sys.stderr,
        )
    return 0


# -- recs -----------------------------------------------------------------------------


def _print_list(rec: RecList, title: str, as_json: bool) -> None:
    if as_json:
        print(json.dumps({**rec.__dict__}, indent=2))
        return
    filled = f", {rec.filled} filled from the fallback or category lists" if rec.filled else ""
    print(f"{title}, computed at {rec.computed_at:.3f}{filled}")
    for rank, (item, score) in enumerate(zip(rec.items, rec.scores, strict=True), start=1):
        reason = f"  because of {rec.reasons[rank - 1]}" if rec.reasons and rec.reasons[rank - 1] else ""
        print(f"{rank:3d}. {item:<12} {score:10.4f}{reason}")


def _client() -> RecsClient:
    from streamrec.services import resolve_services
    from streamrec.store import RecsClient

    settings = resolve_services(_settings(), start=False)
    return RecsClient(settings.redis_url or "", settings.key_prefix, k=settings.top_n, **settings.redis_kwargs())


def cmd_recs(args: argparse.Namespace) -> int:
    client = _client()
    try:
        rec = client.read(
            args.user_id,
            args.model,
            args.k,
            categories=args.category or (),
            exclude=args.exclude or (),
            per_category=args.per_category,
        )
    finally:
        client.close()
    if rec is None:
        print(f"no list for user {args.user_id!r} and no fallback list yet: is the worker running?", file=sys.stderr)
        return 1
    source = "global fallback (no history)" if rec.fallback else f"model {rec.model}"
    if args.category:
        source += f", categories {', '.join(args.category)}"
    _print_list(rec, f"user {args.user_id}: {source}", args.json)
    return 0


def cmd_similar(args: argparse.Namespace) -> int:
    client = _client()
    try:
        rec = client.similar(
            args.item_id,
            args.k,
            categories=args.category or (),
            exclude=args.exclude or (),
            per_category=args.per_category,
            user_id=args.user,
        )
    finally:
        client.close()
    if rec is None:
        print(
            f"no similar items for {args.item_id!r}: unknown item, or no model that gives them (itemknn) is running",
            file=sys.stderr,
        )
        return 1
    _print_list(rec, f"items similar to {args.item_id} (model {rec.model})", args.json)
    return 0


# -- status ---------------------------------------------------------------------------


def cmd_status(args: argparse.Namespace) -> int:
    from streamrec.services import resolve_services
    from streamrec.status import collect_status, format_status

    status = collect_status(resolve_services(_settings(), start=False))
    print(json.dumps(status.as_dict(), indent=2) if args.json else format_status(status))
    return 0


def cmd_experiment(args: argparse.Namespace) -> int:
    from streamrec.experiment_report import experiment_report, format_report
    from streamrec.experiments import Experiment

    text = args.experiment or _settings().experiment
    if not text:
        print("no experiment: set STREAMREC_EXPERIMENT (or pass --experiment) as the worker has it", file=sys.stderr)
        return 2
    experiment = Experiment.parse(text)
    client = _client()
    try:
        counts = client.quality(args.minutes)
        users = client.variant_users(experiment.name, [v.name for v in experiment.variants])
    finally:
        client.close()
    report = experiment_report(experiment, counts, users, k=args.k)
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0


# -- demo -----------------------------------------------------------------------------


def cmd_demo(args: argparse.Namespace) -> int:
    from streamrec.demo import run_demo

    return run_demo(_settings(), limit=args.limit, users=args.show_users, timeout=args.timeout)


# -- replay ---------------------------------------------------------------------------


def cmd_replay(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from streamrec.datasets import find_movielens
    from streamrec.eventlog import movielens_events, read_events
    from streamrec.replay import compare_offline, run_replay, write_report
    from streamrec.services import resolve_services

    settings = Settings.from_env()
    if args.models:
        models = tuple(m.strip() for m in args.models.split(",") if m.strip())
        settings = replace(settings, models=models, default_model=args.model or models[-1])
    settings = replace(
        settings,
        topic_prefix=f"{settings.topic_prefix}-replay",
        key_prefix=f"{settings.key_prefix}-replay",
        app_id=f"{settings.app_id}-replay",
    )
    settings = resolve_services(settings, start=not args.no_start)
    if args.movielens:
        folder = find_movielens()
        if folder is None:
            print("MovieLens 100K is not available (set STREAMREC_DATA_DIR)", file=sys.stderr)
            return 2
        catalogue, acts = movielens_events(folder)
    elif args.path:
        events = list(read_events(args.path, fmt=args.format))
        catalogue = [e for e in events if e.kind == "item"]
        acts = [e for e in events if e.kind in ("interaction", "rating")]
    else:
        print("replay what? give a PATH or --movielens", file=sys.stderr)
        return 2
    acts.sort(key=lambda e: e.timestamp)
    events = [*catalogue, *(acts if args.limit is None else acts[: args.limit])]
    rate = None if args.speed else args.rate
    result = run_replay(settings, events, model=args.model, k=args.k, rate=rate, speed=args.speed, warmup=args.warmup)
    if not args.no_offline:
        result.offline = compare_offline(
            events, result.model, args.k, result.publish_times, result.offline_freshness_s, args.warmup,
            learn_batch=settings.batch_size, fallback=settings.fallback, repeats=settings.repeats,
        )  # fmt: skip
        if result.live_quality is not None and result.total_seconds:
            # the worker scores an event against the lists written after the batch before its own: on the
            # live clock they lag it by about one micro-batch
            lag = result.live_batch_size / (result.events / result.total_seconds)
            twin = compare_offline(events, result.model, args.k, result.publish_times, lag, 0.0, settings.batch_size)
            result.live_quality["offline_at_one_batch"] = {"freshness_s": lag, "hit_rate": twin["hit_rate"]}
    write_report(result, Path(args.out))
    print(result.markdown())
    print(
        f"mean live micro-batch {result.live_batch_size} events, mean freshness {result.freshness_mean_ms:.1f} ms, "
        f"{result.served_fallback:,} events served the fallback list; offline replayed in the live run's clock "
        f"at freshness {result.offline_freshness_s * 1000:.1f} ms (the live mean)"
    )
    print(f"wrote {args.out}/replay.json and replay.md")
    return 0


# -- backtest -------------------------------------------------------------------------


def cmd_backtest(args: argparse.Namespace) -> int:
    from streamrec.backtest.cli import run

    return run(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="streamrec", description="Streaming real-time recommendations.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="replay MovieLens 100K through Kafka and the worker; print lists from Redis")
    p.add_argument("--limit", type=int, default=None, help="publish only the first N ratings")
    p.add_argument("--show-users", default="1,196,405,new-user", help="comma-separated users to print")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for the worker")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("services", help="local Kafka broker and Redis server (no Docker needed)")
    p.add_argument("action", choices=["up", "down", "status"])
    p.add_argument("--state-dir", default=None, help="where data, logs and PIDs live (default: cache folder)")
    p.set_defaults(func=cmd_services)

    p = sub.add_parser("worker", help="run the Faust worker")
    p.add_argument("--loglevel", default="info")
    p.add_argument("--no-start", action="store_true", help="do not start local services")
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("publish", help="publish events to Kafka")
    p.add_argument("path", nargs="?", help="a JSON-lines, CSV or MovieLens u.data file")
    p.add_argument("--format", choices=["jsonl", "csv", "movielens"], default=None)
    p.add_argument(
        "--kind", choices=["interaction", "rating", "item"], default=None, help="kind of lines that do not say"
    )
    p.add_argument(
        "--movielens", action="store_true", help="publish MovieLens 100K (catalogue, then ratings in time order)"
    )
    p.add_argument("--synthetic", type=int, default=0, metavar="N", help="publish N synthetic events")
    p.add_argument("--users", type=int, default=10_000, help="synthetic: number of users")
    p.add_argument("--items", type=int, default=5_000, help="synthetic: number of items")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rate", type=float, default=None, help="events per second (default: as fast as possible)")
    p.add_argument("--limit", type=int, default=None, help="publish at most N events")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--no-start", action="store_true", help="do not start local services")
    p.set_defaults(func=cmd_publish)

    def read_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--k", type=int, default=None, help="items to return (default STREAMREC_TOP_N)")
        p.add_argument("--category", action="append", help="only items with this tag (repeat for several)")
        p.add_argument("--exclude", action="append", help="leave this item out (repeat for several)")
        p.add_argument("--per-category", type=int, default=0, metavar="M", help="at most M items per tag")
        p.add_argument("--json", action="store_true")

    p = sub.add_parser("recs", help="read a user's recommendations from Redis (filtered: what may be served)")
    p.add_argument("user_id")
    p.add_argument("--model", default=None, help="a configured model (default: the default model)")
    read_options(p)
    p.set_defaults(func=cmd_recs)

    p = sub.add_parser("similar", help="read an item's similar items from Redis (filtered: what may be served)")
    p.add_argument("item_id")
    read_options(p)
    p.add_argument("--user", help="also leave out this user's not-interested and excluded items")
    p.set_defaults(func=cmd_similar)

    p = sub.add_parser("status", help="consumer lag, worker counters and freshness percentiles (Kafka and Redis)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("experiment", help="an A/B or interleaving experiment's report, per variant (from Redis)")
    p.add_argument("--experiment", default=None, help="the experiment as STREAMREC_EXPERIMENT writes it (default: it)")
    p.add_argument("--minutes", type=int, default=None, help="only the last N minutes (default: everything)")
    p.add_argument("--k", type=int, default=10, help="HR@K cut-off (one of STREAMREC_LIVE_KS)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_experiment)

    p = sub.add_parser(
        "replay", help="live backtest: publish a log through Kafka and the worker, score what Redis served"
    )
    p.add_argument("path", nargs="?", help="a JSON-lines, CSV or MovieLens u.data file")
    p.add_argument("--movielens", action="store_true", help="replay MovieLens 100K (catalogue first)")
    p.add_argument("--format", choices=["jsonl", "csv", "movielens"], default=None)
    p.add_argument("--models", default=DEFAULT_MODELS, help=f"models the worker runs (default {DEFAULT_MODELS})")
    p.add_argument("--model", default=None, help="model whose lists are scored (default: the last of --models)")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--rate", type=float, default=2000.0, help="events per second (default 2000)")
    p.add_argument("--speed", type=float, default=None, help="real time x SPEED instead of a fixed rate")
    p.add_argument("--warmup", type=float, default=0.0, help="fraction published but not scored")
    p.add_argument("--limit", type=int, default=None, help="replay the first N events")
    p.add_argument("--no-offline", action="store_true", help="skip the offline comparison")
    p.add_argument("--out", default="bench/results/replay", help="folder for replay.json and replay.md")
    p.add_argument("--no-start", action="store_true", help="do not start local services")
    p.set_defaults(func=cmd_replay)

    try:
        from streamrec.backtest.cli import add_arguments
    except ImportError:
        pass
    else:
        p = sub.add_parser("backtest", help="replay a log offline: recommend, score, then learn each event")
        add_arguments(p)
        p.set_defaults(func=cmd_backtest)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:  # kafka-python's client warns about its own event loop and transient metadata
        for name in ("kafka", "aiokafka"):
            logging.getLogger(name).setLevel(logging.ERROR)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        from streamrec.services import ServiceError

        if isinstance(exc, ServiceError | ValueError | FileNotFoundError):
            print(f"streamrec {args.command}: {exc}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())

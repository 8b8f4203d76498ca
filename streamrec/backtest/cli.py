"""``streamrec backtest``: replay a log offline through models and score them.

Examples
--------
>>> import argparse
>>> parser = argparse.ArgumentParser()
>>> add_arguments(parser)
>>> args = parser.parse_args(["--movielens", "--models", "popularity,itemknn", "--k", "10,20", "--refresh", "1h"])
>>> args.k, args.models, args.freshness, args.refresh
([10, 20], 'popularity,itemknn', 0.0, 3600.0)
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from typing import Any

import models
from streamrec.admission import EventTimeGuard
from streamrec.backtest.prequential import POSITIVE_TYPES, BacktestResult, Prequential
from streamrec.backtest.report import markdown_table, write_report
from streamrec.backtest.sources import (
    EventLog,
    display_path,
    kind_for_topic,
    load_log,
    movielens_log,
    read_kafka_topic,
)
from streamrec.eventlog import FORMATS, ReadReport
from streamrec.experiments import Experiment
from streamrec.settings import limit_torch_threads

__all__ = ["add_arguments", "create_models", "load_source", "run"]


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected list lengths >= 1, got {text!r}")
    return values


_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0}


def duration(text: str) -> float:
    """Seconds from ``"250ms"``, ``"1.5"``, ``"1s"``, ``"1m"``, ``"1h"`` or ``"1d"``.

    Examples
    --------
    >>> duration("250ms"), duration("2"), duration("1m"), duration("1d")
    (0.25, 2.0, 60.0, 86400.0)
    """
    raw = text.strip().lower()
    for unit in sorted(_UNITS, key=len, reverse=True):
        if raw.endswith(unit) and raw[: -len(unit)].strip():
            number, scale = raw[: -len(unit)], _UNITS[unit]
            break
    else:
        number, scale = raw, 1.0
    try:
        value = float(number) * scale
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a duration such as 0.25, 250ms, 1s, 1m, 1h or 1d; got {text!r}"
        ) from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a duration >= 0, got {text!r}")
    return value


def format_duration(seconds: float) -> str:
    """The shortest of ``ms``/``s``/``m``/``h``/``d`` that writes ``seconds`` exactly (inverse of :func:`duration`).

    Examples
    --------
    >>> format_duration(0.25), format_duration(1.0), format_duration(3600.0), format_duration(90.0)
    ('250ms', '1s', '1h', '90s')
    """
    for unit in ("d", "h", "m", "s"):
        value = seconds / _UNITS[unit]
        if value >= 1 and value == int(value):
            return f"{int(value)}{unit}"
    if seconds == 0:
        return "0s"
    millis = seconds * 1000
    return f"{millis:g}ms" if millis == round(millis, 6) else f"{seconds!r}"


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a fraction in [0, 1), got {text}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the backtest's options to ``parser``."""
    src = parser.add_argument_group("event log (one source)")
    src.add_argument("paths", nargs="*", metavar="PATH", help="JSON-lines, CSV or MovieLens u.data files (merged)")
    src.add_argument("--format", choices=FORMATS, default=None, help="format of PATH (default: from the name)")
    src.add_argument(
        "--kind",
        choices=["interaction", "rating", "item"],
        default=None,
        help="kind of lines / messages that do not say",
    )
    src.add_argument(
        "--movielens", action="store_true", help="MovieLens 100K: u.item catalogue (genre tags), then u.data ratings"
    )
    src.add_argument(
        "--kafka-topic", action="append", default=[], metavar="TOPIC", help="read a Kafka topic (repeatable)"
    )
    src.add_argument("--bootstrap-servers", default=None, help="Kafka brokers (default: $KAFKA_BOOTSTRAP_SERVERS)")
    src.add_argument(
        "--max-clock-skew",
        type=float,
        default=300.0,
        metavar="SECONDS",
        help="Kafka: refuse events more than SECONDS ahead of their Kafka timestamp, as the live worker "
        "refuses them against its clock (STREAMREC_MAX_CLOCK_SKEW); files carry no arrival times",
    )
    src.add_argument(
        "--from-timestamp",
        type=float,
        default=None,
        metavar="SECONDS",
        help="Kafka: start at this time (epoch seconds)",
    )
    src.add_argument(
        "--limit", type=int, default=None, metavar="N", help="replay only the first N events in time order"
    )

    mod = parser.add_argument_group("models")
    mod.add_argument("--models", default="all", help="comma-separated model names, or 'all' (every available model)")
    mod.add_argument(
        "--params", default=None, metavar="JSON", help='hyperparameters, e.g. \'{"itemknn": {"window": 50}}\''
    )
    mod.add_argument("--seed", type=int, default=0, help="seed of every model")
    mod.add_argument(
        "--fallback",
        choices=["popularity", "adaptive", "none"],
        default="popularity",
        help="serve users without history the popularity list (7-day half-life; default), the adaptive popularity "
        "list (the decay chosen online from its own hits), or score the raw model",
    )
    mod.add_argument(
        "--lists",
        choices=["current", "as-written"],
        default="current",
        help="score each event against the list from the models' state when it comes (default), or against the "
        "list written after the user's latest batch, as Redis holds it (what live evaluation measures)",
    )
    mod.add_argument(
        "--experiment",
        default=None,
        metavar="SPEC",
        help="the offline twin of an experiment: 'name: variant=model weight, variant=a/b weight' "
        "(STREAMREC_EXPERIMENT's format); each variant scored on its users' events",
    )

    rep = parser.add_argument_group("replay (in event time)")
    rep.add_argument("--k", type=_int_list, default=[10], metavar="K[,K...]", help="list lengths to score (default 10)")
    when = rep.add_mutually_exclusive_group()
    when.add_argument(
        "--freshness",
        type=duration,
        default=0.0,
        metavar="DURATION",
        help="a list served at time t reflects the events at or before t - DURATION (default 0: every earlier event); "
        "the live worker's measured p99 is the realistic setting",
    )
    when.add_argument(
        "--refresh",
        type=duration,
        default=None,
        metavar="INTERVAL",
        help="instead: lists recomputed every INTERVAL of event time (1h, 1d) and served unchanged in between",
    )
    rep.add_argument(
        "--learn-batch",
        type=int,
        default=1000,
        metavar="N",
        help="most events a model learns in one call, as the worker's STREAMREC_BATCH_SIZE (default 1000)",
    )
    rep.add_argument(
        "--batch-size",
        type=int,
        default=1000,
        help="most events scored with one recommend call: a compute detail, results do not depend on it",
    )
    rep.add_argument("--warmup", type=_fraction, default=0.0, help="fraction of events learned but not scored")
    rep.add_argument("--every", type=int, default=1, metavar="N", help="evaluate every N-th event after the warm-up")
    rep.add_argument(
        "--positives",
        default="all",
        help=f"event types that count as positives: 'all' or some of {','.join(POSITIVE_TYPES)}",
    )
    rep.add_argument("--min-rating", type=float, default=None, help="ratings below this are not positives")
    rep.add_argument("--window", type=int, default=5000, help="scored events per window of the figures over time")
    rep.add_argument(
        "--include-seen",
        nargs="?",
        const="all",
        default=None,
        choices=("all", "unbought"),
        help="let lists contain items the user already had ('unbought': unless they bought them; STREAMREC_REPEATS)",
    )

    out = parser.add_argument_group("output")
    out.add_argument("--out", default="backtest-results", metavar="DIR", help="folder for results.json/.md and plots")
    out.add_argument("--update-readme", default=None, metavar="PATH", help="replace the backtest section of this file")
    out.add_argument(
        "--readme-section",
        default=None,
        metavar="NAME",
        help="the section --update-readme replaces: between <!-- NAME:start --> and <!-- NAME:end --> "
        "(default: backtest, or freshness with --freshness-report)",
    )
    out.add_argument("--no-plots", action="store_true", help="do not draw PNG plots")
    out.add_argument(
        "--memory",
        choices=["trace", "state", "off"],
        default="trace",
        help="trace: saved state size + tracemalloc peak of a separate pass; state: saved size only",
    )
    out.add_argument(
        "--memory-events", type=int, default=20_000, metavar="N", help="events in the traced pass (0 = all)"
    )
    out.add_argument("--quiet", action="store_true", help="no progress bar")

    sweep = parser.add_argument_group("the value of freshness")
    sweep.add_argument(
        "--freshness-report",
        action="store_true",
        help="replay once per setting of --settings and report HR/NDCG/MRR per model and setting, split by history, "
        "with plots (freshness.json/.md/.png); --update-readme then fills the README's freshness section",
    )
    sweep.add_argument(
        "--settings",
        default="0,1s,1m,1h,refresh:1h,refresh:1d",
        metavar="LIST",
        help="freshness durations and refresh:INTERVAL entries (default 0,1s,1m,1h,refresh:1h,refresh:1d)",
    )
    sweep.add_argument("--jobs", type=int, default=1, help="settings replayed in parallel processes (default 1)")


def load_source(args: argparse.Namespace) -> EventLog:
    """The event log the options name, in time order."""
    given = sum([bool(args.paths), bool(args.movielens), bool(args.kafka_topic)])
    if given != 1:
        raise ValueError("give exactly one source: PATH..., --movielens or --kafka-topic TOPIC")
    report = ReadReport()
    if args.movielens:
        from streamrec.datasets import find_movielens

        folder = find_movielens()
        if folder is None:
            raise FileNotFoundError(
                "MovieLens 100K is not available (set STREAMREC_DATA_DIR to a folder holding ml-100k/)"
            )
        log = movielens_log(folder, report=report)
    elif args.kafka_topic:
        from streamrec.settings import Settings

        bootstrap = args.bootstrap_servers or Settings.from_env().kafka_bootstrap_servers
        if not bootstrap:
            raise ValueError("--kafka-topic needs --bootstrap-servers or KAFKA_BOOTSTRAP_SERVERS")
        kinds = {t: args.kind or kind_for_topic(t) for t in args.kafka_topic}
        unknown = [t for t, k in kinds.items() if k is None]
        if unknown:
            raise ValueError(f"cannot tell the event kind of topic(s) {', '.join(unknown)}: give --kind")

        guard = EventTimeGuard(args.max_clock_skew)  # the live rule, against each record's Kafka timestamp

        def chained():  # type: ignore[no-untyped-def]
            for topic, kind in kinds.items():
                yield from read_kafka_topic(bootstrap, topic, kind, args.from_timestamp, report=report, guard=guard)

        log = EventLog.from_events(chained(), source=f"Kafka {bootstrap}: {', '.join(args.kafka_topic)}")
        refused = guard.counts["future"] + guard.counts["too_old"]
        if report.invalid - refused:
            log.skipped["invalid"] = report.invalid - refused
        log.skipped["event time beyond the wall clock + skew"] = guard.counts["future"]
        log.event_time_rule = (
            f"events more than {args.max_clock_skew:g} s ahead of their Kafka timestamp refused, as live "
            f"({guard.counts['future']:,} refused)"
        )
    else:
        log = load_log(args.paths, fmt=args.format, kind=args.kind, report=report)
    if report.invalid:
        line, reason, _ = report.errors[0]
        print(f"backtest: skipped {report.invalid} invalid events; first at {line}: {reason}", file=sys.stderr)
    if args.limit is not None:
        log = log.head(args.limit)
    if len(log) == 0:
        raise ValueError(f"the log {log.source or ''} holds no interaction or rating")
    return log


def _model_names(spec: str) -> list[str]:
    names = [n.strip() for n in spec.split(",") if n.strip()]
    if names == ["all"]:
        return models.available()
    unknown = [n for n in names if n not in models.MODEL_PATHS]
    if unknown or not names:
        raise ValueError(
            f"unknown model(s) {', '.join(unknown) or '(none given)'}; choose from all, {', '.join(models.MODEL_PATHS)}"
        )
    return list(dict.fromkeys(names))


def create_models(
    names: list[str], seed: int, params: dict[str, dict[str, Any]]
) -> tuple[dict[str, models.OnlineRecommender], dict[str, str]]:
    """Create each model; one that fails (import error, bad parameter) is reported, not raised."""
    created: dict[str, models.OnlineRecommender] = {}
    failed: dict[str, str] = {}
    for name in names:
        try:
            created[name] = models.create(name, **{"seed": seed, **params.get(name, {})})
        except Exception as exc:
            failed[name] = f"could not create: {type(exc).__name__}: {exc}"
    return created, failed


def _command(args: argparse.Namespace) -> str:
    """The command line that reproduces this run: every option that changes a figure is written out."""
    parts = ["streamrec", "backtest"]
    if args.movielens:
        parts.append("--movielens")
    parts += [display_path(p) for p in args.paths]
    for topic in args.kafka_topic:
        parts += ["--kafka-topic", topic]
    optional: list[tuple[str, Any]] = [
        ("--format", args.format),
        ("--kind", args.kind),
        ("--from-timestamp", args.from_timestamp),
        ("--max-clock-skew", args.max_clock_skew if args.kafka_topic else None),
        ("--limit", args.limit),
        ("--params", args.params),
        ("--min-rating", args.min_rating),
    ]
    when = ("--refresh", format_duration(args.refresh)) if args.refresh is not None else None
    always: list[tuple[str, Any]] = [
        ("--models", args.models),
        ("--seed", args.seed),
        ("--fallback", args.fallback),
        ("--k", ",".join(map(str, args.k))),
        when or ("--freshness", format_duration(args.freshness)),
        ("--learn-batch", args.learn_batch),
        ("--warmup", args.warmup),
        ("--every", args.every),
        ("--positives", args.positives),
        ("--window", args.window),
        ("--memory", args.memory),
        ("--memory-events", args.memory_events),
    ]
    if getattr(args, "freshness_report", False):  # the settings replace --freshness/--refresh; memory is not measured
        always = [o for o in always if o[0] not in ("--freshness", "--refresh", "--memory", "--memory-events")]
    for flag, value in [*optional, *always]:
        if value is not None:
            parts += [flag, str(value)]
    if args.include_seen:
        parts += ["--include-seen"] + (["unbought"] if args.include_seen == "unbought" else [])
    if getattr(args, "freshness_report", False):
        parts += ["--freshness-report", "--settings", args.settings, "--jobs", str(args.jobs)]
    if args.out:
        parts += ["--out", args.out]
    if args.no_plots:
        parts.append("--no-plots")
    if args.update_readme:
        parts += ["--update-readme", args.update_readme]
        if args.readme_section:
            parts += ["--readme-section", args.readme_section]
    return shlex.join(parts)


def _options(args: argparse.Namespace) -> dict[str, Any]:
    positives = None if args.positives.strip() == "all" else [p.strip() for p in args.positives.split(",") if p.strip()]
    return {
        "ks": args.k,
        "freshness": args.freshness,
        "refresh": args.refresh,
        "batch_size": args.batch_size,
        "learn_batch": args.learn_batch,
        "warmup": args.warmup,
        "every": args.every,
        "positives": positives,
        "min_rating": args.min_rating,
        "window": args.window,
        "exclude_seen": not args.include_seen,
        "exclude_bought": args.include_seen == "unbought",
        "memory": args.memory,
        "memory_events": args.memory_events or None,
        "progress": not args.quiet,
    }


def _params(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    try:
        params = json.loads(args.params) if args.params else {}
    except json.JSONDecodeError as exc:
        raise ValueError(f"--params is not JSON: {exc}") from None
    if not isinstance(params, dict) or not all(isinstance(v, dict) for v in params.values()):
        raise ValueError('--params must map model names to objects, e.g. {"itemknn": {"window": 50}}')
    return params


def backtest_models(
    log: EventLog,
    names: list[str],
    seed: int,
    params: dict[str, dict[str, Any]],
    fallback: str,
    options: dict[str, Any],
    lists: str = "current",
    experiment: Experiment | None = None,
) -> tuple[BacktestResult, dict[str, str]]:
    """Create the models (served with a fallback list unless ``fallback == "none"``) and replay ``log``.

    ``fallback="popularity"``: the 7-day popularity list; ``"adaptive"``: :class:`AdaptivePopularity`'s
    (the worker's default). Models that rank every user alike are their own fallback.

    ``lists="as-written"`` serves each user the list computed after the batch of their latest event, as
    the worker writes it to Redis (``"current"``: from the models' state when the event comes). With an
    ``experiment``, its models are replayed too, with one interleaving per interleaved variant, and the
    offline twin of its report is in ``result.experiment``.
    """
    if experiment is not None:
        names = list(dict.fromkeys([*names, *experiment.models]))
    created, failed = create_models(names, seed, params)
    cached = lists == "as-written"
    top_n = max(options.get("ks") or [10])

    def served(model: models.OnlineRecommender) -> models.OnlineRecommender:
        if fallback == "none" or (not model.personalized and not cached):  # popularity is its own fallback
            return model
        from models.adaptive_popularity import AdaptivePopularity
        from models.popularity import Popularity
        from streamrec.served import ServedLists

        backup = AdaptivePopularity() if fallback == "adaptive" else Popularity()
        return ServedLists(model, backup, cached=cached, top_n=top_n)

    replayed = {name: served(m) for name, m in created.items()}
    if experiment is not None:
        from streamrec.backtest.twin import twin_models

        replayed = {**replayed, **twin_models(experiment, created, served)}
    result = Prequential(replayed, **options).run(log)
    result.config.update(models=names, seed=seed, params=params, fallback=fallback, lists=lists)
    for name, error in failed.items():
        result.add_failure(name, error, params.get(name))
    variants = [v.name for v in experiment.variants if v.interleaved] if experiment is not None else []
    result.models = {name: result.models[name] for name in [*names, *variants]}
    if experiment is not None:
        from streamrec.backtest.twin import twin_counts, variant_users
        from streamrec.experiment_report import experiment_report

        counts = twin_counts(experiment, result, replayed)
        ks = options.get("ks") or [10]
        k = 10 if 10 in ks else min(ks)
        result.experiment = experiment_report(experiment, counts, variant_users(experiment, result), k=k)
        result.config["experiment"] = f"{experiment.name}: " + ", ".join(
            f"{v.name}={'/'.join(v.models)} {v.weight:g}" for v in experiment.variants
        )
    return result, failed


def run(args: argparse.Namespace) -> int:
    """Run the backtest the options describe; 0 if every model ran, 1 if one failed."""
    params = _params(args)
    names = _model_names(args.models)
    options = _options(args)
    Prequential({}, **options)  # checks the options before the log is read
    if args.freshness_report:
        return _run_freshness_report(args, names, params, options)
    log = load_source(args)
    limit_torch_threads()
    experiment = Experiment.parse(args.experiment) if args.experiment else None
    result, failed = backtest_models(
        log, names, args.seed, params, args.fallback, options, lists=args.lists, experiment=experiment
    )
    for name, error in failed.items():
        print(f"backtest: model {name}: {error}", file=sys.stderr)
    result.config["command"] = _command(args)
    written = write_report(
        result,
        args.out,
        plots=not args.no_plots,
        readme=args.update_readme,
        command=result.config["command"],
        section=args.readme_section or "backtest",
    )
    print(markdown_table(result))
    if result.experiment is not None:
        from streamrec.experiment_report import format_report

        print("\n" + format_report(result.experiment))
    print(f"\nwrote {', '.join(str(p) for p in written.values())}")
    errors = {name: m.error for name, m in result.models.items() if m.error is not None}
    for name, error in errors.items():
        if name not in failed:
            print(f"backtest: model {name} failed: {error}", file=sys.stderr)
    return 1 if errors else 0


def _run_freshness_report(
    args: argparse.Namespace, names: list[str], params: dict[str, dict[str, Any]], options: dict[str, Any]
) -> int:
    """One backtest per freshness setting; the report, plot and README section."""
    from dataclasses import replace as replaced

    from streamrec.backtest.freshness import FreshnessReport, parse_settings, run_settings

    settings = parse_settings(args.settings)
    log = load_source(args)
    limit_torch_threads()
    options = {**options, "memory": "off", "progress": False}

    def run_one(setting: Any) -> BacktestResult:
        one = {**options, "freshness": setting.freshness, "refresh": setting.refresh}
        result, _ = backtest_models(log, names, args.seed, params, args.fallback, one)
        for m in result.models.values():
            m.windows, m.ranks = [], None  # the sweep keeps the overall and per-history figures
        return replaced(result, windows=[])

    if not args.quiet:
        print(f"freshness report: {len(settings)} settings x {len(names)} models, {args.jobs} job(s)", file=sys.stderr)
    results = run_settings(settings, run_one, jobs=args.jobs)
    report = FreshnessReport(settings, results, command=_command(args))
    written = report.write(
        args.out, plots=not args.no_plots, readme=args.update_readme, section=args.readme_section or "freshness"
    )
    print(report.markdown(full=False))
    print(f"wrote {', '.join(str(p) for p in written.values())}")
    failed = {n for r in results for n, m in r.models.items() if m.error is not None}
    for name in sorted(failed):
        print(f"backtest: model {name} failed in some setting (see freshness.json)", file=sys.stderr)
    return 1 if failed else 0

"""Writing a backtest's figures: ``results.json``, ``results.md``, PNG plots, and a README section.

Examples
--------
>>> import tempfile
>>> from models import create
>>> from streamrec.backtest.prequential import Prequential
>>> from streamrec.events import Interaction
>>> events = [Interaction(f"u{j % 5}", f"i{j % 7}", float(j)) for j in range(60)]
>>> result = Prequential({"popularity": create("popularity")}, ks=(5,), window=20).run(events)
>>> print(markdown_table(result).splitlines()[0])
| Model | HR@5 | NDCG@5 | MRR | coverage@5 | events/s | state | traced peak |
>>> out = Path(tempfile.mkdtemp())
>>> sorted(p.name for p in write_report(result, out, plots=False).values())
['results.json', 'results.md']
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from streamrec.backtest.prequential import HISTORY_BUCKETS, POSITIVE_TYPES, BacktestResult

__all__ = [
    "README_END",
    "README_START",
    "markdown_report",
    "markdown_table",
    "plot_metrics",
    "update_readme",
    "write_json",
    "write_report",
]

README_START = "<!-- backtest:start -->"
README_END = "<!-- backtest:end -->"


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return f"{value:.{digits}f}"


def _mib(n: Any) -> str:
    return "–" if n is None else f"{n / 2**20:.1f} MiB"


def _slug(metric: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", metric.lower().replace("@", "_at_")).strip("_")


def markdown_table(result: BacktestResult) -> str:
    """One row per model: the overall metrics, events/s and memory."""
    names = result.metric_names
    header = ["Model", *names, "events/s", "state", "traced peak"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    for name, m in result.models.items():
        if m.error is not None:
            lines.append(
                "| "
                + " | ".join([f"`{name}`", f"failed: {m.error}"[:300].replace("|", "/")] + [""] * (len(header) - 2))
                + " |"
            )
            continue
        cells = [f"`{name}`"] + [_fmt(m.overall.get(metric)) for metric in names]
        eps = m.timing.get("events_per_s")
        cells.append("–" if eps is None or not math.isfinite(eps) else f"{eps:,.0f}")
        cells.append(_mib(m.memory.get("state_bytes")))
        cells.append(_mib(m.memory.get("peak_traced_bytes")))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _notes(result: BacktestResult, command: str | None) -> list[str]:
    c, s, mach = result.config, result.stream, result.machine
    positives = "all events" if set(c["positives"]) == set(POSITIVE_TYPES) else ", ".join(c["positives"])
    if c.get("min_rating") is not None:
        positives += f" (ratings >= {c['min_rating']})"
    notes = [
        f"Data: {s['source']}: {s['events']:,} events, {s['users']:,} users, {s['items']:,} items; "
        f"{s['scored']:,} events scored (positives: {positives}). Event-time bound: "
        f"{s.get('event_time_rule', 'not recorded')}.",
        _replay_note(c)
        + (
            " Lists as the live system serves them: a user without history gets the popularity list."
            if c.get("fallback") == "popularity"
            else " Lists as the live system serves them: a user without history gets the adaptive popularity list."
            if c.get("fallback") == "adaptive"
            else ""
        ),
        "HR@K: the event's item is in the user's top-K; NDCG@K: 1/log2(rank+2) for a hit; MRR: within the "
        f"top-{max(c['ks'])}; coverage@K: distinct items recommended / items known at the end; "
        "RMSE/MAE: rating models' prediction before learning each rated event.",
        "events/s: replayed events / seconds inside the model's add_items, recommend, predict and learn "
        f"calls (harness overhead {result.harness['harness_s_per_100k_events']:.3f} s per 100k events, "
        "reading the log excluded). state: size of what the model's save() writes at the end. "
        "traced peak: tracemalloc peak during a separate replay of a fresh model"
        + (f" over the first {_traced_events(result):,} events" if _traced_events(result) else "")
        + " (Python and NumPy allocations; torch's own allocator is not seen).",
        f"Machine: {mach['platform']}, {mach['usable_cpus']} usable of {mach['cpu_count']} CPUs, "
        f"Python {mach['python']}, NumPy {mach['numpy']}.",
    ]
    if command:
        notes.append(f"Reproduce: `{command}`")
    return notes


def _replay_note(c: dict[str, Any]) -> str:
    if c.get("refresh_s"):
        when = (
            f"lists recomputed every {_seconds(c['refresh_s'])} of event time (at multiples of it since the epoch) "
            "from the events before, and served unchanged until the next refresh"
        )
    else:
        when = (
            f"each event scored against a list that reflects exactly the events before it with timestamp "
            f"<= t - {_seconds(c.get('freshness_s', 0.0))}"
        )
    return (
        f"Replay in event time: {when}; models learn in chunks of at most {c.get('learn_batch', '–')} events; "
        f"warm-up {c['warmup']:.0%}, every {c['every']} event(s) evaluated, seed {c.get('seed', '–')}, seen items "
        f"{'excluded' if c['exclude_seen'] else 'kept, bought ones excluded' if c.get('exclude_bought') else 'kept'}."
    )


def _seconds(value: float) -> str:
    if value == 0:
        return "0 s"
    if value < 1:
        return f"{value * 1000:g} ms"
    for unit, size in (("d", 86400.0), ("h", 3600.0), ("min", 60.0)):
        if value >= size and value % size == 0:
            return f"{value / size:g} {unit}"
    return f"{value:g} s"


def history_table(result: BacktestResult) -> str:
    """HR, NDCG and MRR of every model split by the history its lists reflect (none, 1-4, 5+ own events)."""
    ks = result.config["ks"]
    k = max(ks) if 10 not in ks else 10
    buckets = [label for label, _, _ in HISTORY_BUCKETS]
    header = ["Model", *[f"{m} ({b})" for b in buckets for m in (f"HR@{k}", "MRR")]]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    counts = None
    for name, m in result.models.items():
        if m.error is not None or not m.by_history:
            continue
        counts = counts or [int(m.by_history[b]["scored"]) for b in buckets]
        cells = [f"`{name}`"]
        for b in buckets:
            cells += [_fmt(m.by_history[b].get(f"HR@{k}")), _fmt(m.by_history[b].get("MRR"))]
        lines.append("| " + " | ".join(cells) + " |")
    if counts is None:
        return ""
    split = ", ".join(f"{b}: {c:,}" for b, c in zip(buckets, counts, strict=True))
    return "\n".join(lines) + f"\n\nScored events by the user's own events the list reflects: {split}."


def _traced_events(result: BacktestResult) -> int | None:
    for m in result.models.values():
        if "traced_events" in m.memory:
            return int(m.memory["traced_events"])
    return None


def markdown_report(result: BacktestResult, images: Sequence[str] = (), command: str | None = None) -> str:
    """The table, the notes that say what was measured, and the plots (``images``: paths as written)."""
    parts = [markdown_table(result), "", *[f"- {n}" for n in _notes(result, command)]]
    split = history_table(result)
    if split:
        parts += ["", "By history (how many of the user's own events the served list reflects):", "", split]
    if images:
        parts += ["", " ".join(f"![{Path(p).stem}]({p})" for p in images)]
    return "\n".join(parts) + "\n"


def write_json(result: BacktestResult, path: str | Path) -> Path:
    """Write :meth:`BacktestResult.to_dict` as indented JSON."""
    path = Path(path)
    path.write_text(json.dumps(result.to_dict(), indent=2, allow_nan=False) + "\n", encoding="utf-8")
    return path


def plot_metrics(result: BacktestResult, out_dir: str | Path) -> list[Path]:
    """One PNG per metric over the windows (models as lines side by side), plus events/s per model."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    out_dir = Path(out_dir)
    ok = {name: m for name, m in result.models.items() if m.error is None}
    x = [w["last_event"] + 1 for w in result.windows]
    paths: list[Path] = []
    for metric in result.metric_names:
        series = {name: [w.get(metric) for w in m.windows] for name, m in ok.items() if metric in m.overall}
        if not series or not x:
            continue
        fig = Figure(figsize=(7.0, 4.0), dpi=100)
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        for name, values in series.items():
            ys = [math.nan if v is None else v for v in values]
            ax.plot(x, ys, marker="o", markersize=3, linewidth=1.5, label=name)
        ax.set_xlabel("events replayed (end of window)")
        ax.set_ylabel(metric)
        ax.set_title(f"{metric} per window of {result.config['window']:,} scored events")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small", ncol=2)
        fig.tight_layout()
        path = out_dir / f"{_slug(metric)}.png"
        fig.savefig(path)
        paths.append(path)
    speeds = {name: m.timing.get("events_per_s") for name, m in ok.items()}
    speeds = {k: v for k, v in speeds.items() if v is not None and math.isfinite(v)}
    if speeds:
        fig = Figure(figsize=(7.0, 0.5 + 0.45 * len(speeds)), dpi=100)
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        names = list(speeds)
        bars = ax.barh(names, [speeds[n] for n in names])
        ax.bar_label(bars, labels=[f"{speeds[n]:,.0f}" for n in names], padding=3, fontsize="small")
        ax.set_xlim(0, max(speeds.values()) * 1.25)
        ax.invert_yaxis()
        ax.set_xlabel("events/s (recommend + learn, per event in event time)")
        ax.grid(True, axis="x", alpha=0.3)
        fig.tight_layout()
        path = out_dir / "events_per_s.png"
        fig.savefig(path)
        paths.append(path)
    return paths


def update_readme(
    readme: str | Path, markdown: str, start_marker: str = README_START, end_marker: str = README_END
) -> Path:
    """Replace the text between ``start_marker`` and ``end_marker`` (the backtest section's by default) in ``readme``."""
    readme = Path(readme)
    text = readme.read_text(encoding="utf-8")
    start, end = text.find(start_marker), text.find(end_marker)
    if start < 0 or end < 0 or end < start:
        raise ValueError(
            f"{readme} lacks the markers: put a line {start_marker} and a later line {end_marker} where the table goes"
        )
    head = text[: start + len(start_marker)]
    readme.write_text(head + "\n" + markdown.rstrip("\n") + "\n" + text[end:], encoding="utf-8")
    return readme


def write_report(
    result: BacktestResult,
    out_dir: str | Path,
    *,
    plots: bool = True,
    readme: str | Path | None = None,
    command: str | None = None,
    section: str = "backtest",
) -> dict[str, Path]:
    """Write ``results.json``, ``results.md`` and the plots into ``out_dir``; update ``readme``'s ``section`` if given."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {"json": write_json(result, out_dir / "results.json")}
    images = plot_metrics(result, out_dir) if plots else []
    for path in images:
        written[path.stem] = path
    md = markdown_report(result, [p.name for p in images], command)
    written["markdown"] = out_dir / "results.md"
    written["markdown"].write_text(f"# Backtest\n\n{md}", encoding="utf-8")
    if readme is not None:
        readme = Path(readme)
        rel = [Path(os.path.relpath(p.resolve(), readme.resolve().parent)).as_posix() for p in images]
        written["readme"] = update_readme(
            readme, markdown_report(result, rel, command), f"<!-- {section}:start -->", f"<!-- {section}:end -->"
        )
    return written

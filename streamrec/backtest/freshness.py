"""What freshness is worth: the same backtest at several freshness and refresh settings.

A recommender that serves a list reflecting the click of two seconds ago is
compared with itself serving lists that are a minute or an hour old, and with
the periodic recomputation most systems run (hourly, like Gorse's default fit
period; daily, like a nightly job). Every setting replays the whole log with
fresh models (:class:`~streamrec.backtest.prequential.Prequential`); the report
gives HR, NDCG and MRR per model and setting, split by how much of the user's
own history the served list reflects, and draws them.

Examples
--------
>>> [s.label for s in parse_settings("0,250ms,1m,refresh:1d")]
['0 s', '250 ms', '1 min', 'daily refresh']
>>> parse_settings("refresh:1h")[0]
Setting(label='hourly refresh', freshness=0.0, refresh=3600.0)
"""

from __future__ import annotations

import json
import math
import multiprocessing
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streamrec.backtest.prequential import HISTORY_BUCKETS, BacktestResult, _json_ready

__all__ = ["DEFAULT_SETTINGS", "FreshnessReport", "Setting", "parse_settings", "run_settings"]

#: Freshness 0 s, 1 s, 1 min, 1 h, then hourly and daily recomputation.
DEFAULT_SETTINGS = "0,1s,1m,1h,refresh:1h,refresh:1d"


@dataclass(frozen=True)
class Setting:
    """One replay setting: lists reflect events ``freshness`` seconds old, or are recomputed every ``refresh``."""

    label: str
    freshness: float = 0.0
    refresh: float | None = None

    @property
    def option(self) -> str:
        """The backtest option that gives this setting."""
        from streamrec.backtest.cli import format_duration

        if self.refresh is not None:
            return f"--refresh {format_duration(self.refresh)}"
        return f"--freshness {format_duration(self.freshness)}"


def _label(seconds: float, refresh: bool) -> str:
    if refresh:
        named = {3600.0: "hourly", 86400.0: "daily", 604800.0: "weekly"}
        return f"{named[seconds]} refresh" if seconds in named else f"refresh every {_span(seconds)}"
    return _span(seconds)


def _span(seconds: float) -> str:
    if seconds == 0:
        return "0 s"
    if seconds < 1:
        return f"{seconds * 1000:g} ms"
    for unit, size in (("d", 86400.0), ("h", 3600.0), ("min", 60.0)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g} {unit}"
    return f"{seconds:g} s"


def parse_settings(text: str) -> list[Setting]:
    """Settings from ``"0,1s,1m,1h,refresh:1h,refresh:1d"`` (durations as :func:`~streamrec.backtest.cli.duration`)."""
    from streamrec.backtest.cli import duration

    out: list[Setting] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        if part.startswith("refresh:"):
            seconds = duration(part.removeprefix("refresh:"))
            if seconds <= 0:
                raise ValueError(f"a refresh interval must be > 0, got {part!r}")
            out.append(Setting(_label(seconds, True), 0.0, seconds))
        else:
            seconds = duration(part)
            out.append(Setting(_label(seconds, False), seconds, None))
    if not out:
        raise ValueError(f"no freshness setting in {text!r}")
    return out


@dataclass
class FreshnessReport:
    """One backtest result per setting, in the order given."""

    settings: list[Setting]
    results: list[BacktestResult]
    command: str | None = None

    @property
    def models(self) -> list[str]:
        return list(self.results[0].models) if self.results else []

    def values(self, model: str, metric: str, bucket: str | None = None) -> list[float]:
        """``metric`` of ``model`` at every setting (NaN where it failed), overall or for a history bucket."""
        out = []
        for result in self.results:
            m = result.models.get(model)
            if m is None or m.error is not None:
                out.append(math.nan)
                continue
            figures = m.overall if bucket is None else m.by_history.get(bucket, {})
            out.append(float(figures.get(metric, math.nan)))
        return out

    def metric_names(self) -> list[str]:
        ks = self.results[0].config["ks"] if self.results else [10]
        k = 10 if 10 in ks else max(ks)
        return [f"HR@{k}", f"NDCG@{k}", "MRR"]

    def to_dict(self) -> dict[str, Any]:
        return {
            "command": self.command,
            "settings": [{"label": s.label, "freshness_s": s.freshness, "refresh_s": s.refresh} for s in self.settings],
            "figures": {
                model: {
                    metric: {
                        "overall": self.values(model, metric),
                        **{b: self.values(model, metric, b) for b, _, _ in HISTORY_BUCKETS},
                    }
                    for metric in self.metric_names()
                }
                for model in self.models
            },
            "results": [r.to_dict() for r in self.results],
        }

    def table(self, metric: str, bucket: str | None = None) -> str:
        header = ["Model", *[s.label for s in self.settings]]
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * len(self.settings)) + "|"]
        for model in self.models:
            cells = [f"{v:.4f}" if math.isfinite(v) else "–" for v in self.values(model, metric, bucket)]
            lines.append("| " + " | ".join([f"`{model}`", *cells]) + " |")
        return "\n".join(lines)

    def markdown(self, images: Sequence[str] = (), full: bool = True) -> str:
        """The HR table (and, with ``full``, NDCG, MRR and the history split), notes and plots."""
        metrics = self.metric_names()
        parts = [f"{metrics[0]} per event, by what the served list reflects:", "", self.table(metrics[0])]
        if full:
            for metric in metrics[1:]:
                parts += ["", f"{metric}:", "", self.table(metric)]
            for label, _, _ in HISTORY_BUCKETS:
                parts += ["", f"{metrics[0]} for events whose user had {label} own events in the list:", ""]
                parts.append(self.table(metrics[0], label))
        first = self.results[0] if self.results else None
        if first is not None:
            s = first.stream
            parts += [
                "",
                f"- Data: {s['source']}: {s['events']:,} events, {s['users']:,} users, {s['items']:,} items; "
                f"{s['scored']:,} events scored. Each setting replays the whole log with fresh models: "
                "'N s/min/h' = the list served at time t reflects exactly the events with timestamp <= t - N; "
                "'hourly/daily refresh' = lists recomputed on the hour / at 00:00 UTC from the events before, "
                "served unchanged until the next refresh. Users without history in the served state get the "
                "popularity list.",
                f"- Settings as backtest options: {', '.join(f'`{s.option}`' for s in self.settings)}.",
            ]
        if self.command:
            parts.append(f"- Reproduce: `{self.command}`")
        if images:
            parts += ["", " ".join(f"![{Path(p).stem}]({p})" for p in images)]
        return "\n".join(parts) + "\n"

    def plot(self, out_dir: str | Path) -> list[Path]:
        """``freshness.png`` (each metric against the settings) and ``freshness_by_history.png``."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        out_dir = Path(out_dir)
        x = list(range(len(self.settings)))
        labels = [s.label.replace(" refresh", "\nrefresh") for s in self.settings]
        paths = []
        panels = [
            ("freshness", [(m, None, m) for m in self.metric_names()]),
            (
                "freshness_by_history",
                [
                    (self.metric_names()[0], b, f"{self.metric_names()[0]}, {b} own events")
                    for b, _, _ in HISTORY_BUCKETS
                ],
            ),
        ]
        for name, specs in panels:
            fig = Figure(figsize=(4.2 * len(specs), 3.8), dpi=100)
            FigureCanvasAgg(fig)
            for n, (metric, bucket, title) in enumerate(specs):
                ax = fig.add_subplot(1, len(specs), n + 1)
                for model in self.models:
                    ax.plot(x, self.values(model, metric, bucket), marker="o", markersize=3, linewidth=1.5, label=model)
                ax.set_xticks(x, labels, fontsize="x-small")
                ax.set_title(title, fontsize="small")
                ax.grid(True, alpha=0.3)
                if n == 0:
                    ax.legend(fontsize="x-small")
            fig.suptitle("per-event quality by what the served list reflects (left: freshest)", fontsize="small")
            fig.tight_layout()
            path = out_dir / f"{name}.png"
            fig.savefig(path)
            paths.append(path)
        return paths

    def write(self, out_dir: str | Path, plots: bool = True, readme: str | Path | None = None) -> dict[str, Path]:
        """``freshness.json``, ``freshness.md`` and the plots; replace the README's freshness section if given."""
        import os

        from streamrec.backtest.report import update_readme

        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        written = {"json": out_dir / "freshness.json"}
        written["json"].write_text(json.dumps(_json_ready(self.to_dict()), indent=2, allow_nan=False) + "\n")
        images = self.plot(out_dir) if plots else []
        written["markdown"] = out_dir / "freshness.md"
        written["markdown"].write_text("# The value of freshness\n\n" + self.markdown([p.name for p in images]))
        if readme is not None:
            readme = Path(readme)
            rel = [Path(os.path.relpath(p.resolve(), readme.resolve().parent)).as_posix() for p in images]
            written["readme"] = update_readme(
                readme, self.markdown(rel, full=False), "<!-- freshness:start -->", "<!-- freshness:end -->"
            )
        return written


def run_settings(
    settings: Sequence[Setting], run_one: Callable[[Setting], BacktestResult], jobs: int = 1
) -> list[BacktestResult]:
    """``run_one(setting)`` for every setting, in ``jobs`` processes (forked: the log is not copied)."""
    if jobs <= 1 or len(settings) <= 1:
        return [run_one(s) for s in settings]
    global _RUN_ONE
    _RUN_ONE = run_one
    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(max_workers=min(jobs, len(settings)), mp_context=context) as pool:
        return list(pool.map(_run_forked, settings))


_RUN_ONE: Callable[[Setting], BacktestResult] | None = None


def _run_forked(setting: Setting) -> BacktestResult:
    assert _RUN_ONE is not None
    return _RUN_ONE(setting)

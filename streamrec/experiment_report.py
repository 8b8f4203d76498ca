"""``streamrec experiment``: an experiment's variants compared, from the live quality counts of every worker.

Per variant: the users it served, the events of those users scored against
the list their plain key served (HR@K and MRR, 95% intervals), and the
difference of HR@K from the first variant (the control) with its 95%
interval (normal approximation of a difference of two proportions). For an
interleaved variant: the events on an item of the interleaved list credited
to each model, and the first model's share of those wins with its 95% Wilson
interval; a share whose interval excludes 0.5 names a winner. With exposures
recorded (:mod:`streamrec.exposures`): per variant, the exposures, their
click-through (exposures followed by a click on a shown item) and conversion
(by a purchase of one), with 95% Wilson intervals.

Examples
--------
>>> from streamrec.experiments import Experiment
>>> exp = Experiment.parse("e: a=itemknn 1, b=popularity 1, mix=itemknn/popularity 1")
>>> counts = {"exp:a|5+|scored": 1000, "exp:a|5+|hit@10": 300, "exp:a|5+|rr": 120, "exp:a|5+|rr2": 60,
...           "exp:b|5+|scored": 1000, "exp:b|5+|hit@10": 200, "exp:b|5+|rr": 80, "exp:b|5+|rr2": 40,
...           "exp:mix|5+|scored": 1000, "exp:mix|-|win:itemknn": 180, "exp:mix|-|win:popularity": 120}
>>> report = experiment_report(exp, counts, {"a": 500, "b": 490, "mix": 510}, k=10)
>>> round(report["variants"]["b"]["HR@10_diff"], 3), report["variants"]["b"]["separated"]
(-0.1, True)
>>> round(report["variants"]["mix"]["share"], 2), report["variants"]["mix"]["winner"]
(0.6, 'itemknn')
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from streamrec.experiments import Experiment
from streamrec.live_quality import proportion_interval, summarise

__all__ = ["difference_interval", "experiment_report", "format_report"]


def difference_interval(h1: float, n1: float, h0: float, n0: float, z: float = 1.96) -> tuple[float, float, float]:
    """``p1 - p0`` of two proportions (hits over trials) and its 95% normal interval.

    >>> [round(x, 3) for x in difference_interval(30, 100, 20, 100)]
    [0.1, -0.019, 0.219]
    """
    if n1 <= 0 or n0 <= 0:
        return 0.0, -1.0, 1.0
    p1, p0 = h1 / n1, h0 / n0
    half = z * math.sqrt(p1 * (1 - p1) / n1 + p0 * (1 - p0) / n0)
    return p1 - p0, p1 - p0 - half, p1 - p0 + half


def experiment_report(
    experiment: Experiment, counts: Mapping[str, float], users: Mapping[str, int], k: int = 10
) -> dict[str, Any]:
    """The figures of every variant of ``experiment`` (see the module's documentation)."""
    summary = summarise(counts, sorted({k, 10, 20}))
    out: dict[str, Any] = {"experiment": experiment.name, "k": k, "variants": {}}
    control = None
    for variant in experiment.variants:
        figures = summary.get(f"exp:{variant.name}", {})
        overall = figures.get("all", {"scored": 0.0, f"HR@{k}": 0.0, "MRR": 0.0})
        row: dict[str, Any] = {
            "serves": "/".join(variant.models),
            "weight": variant.weight,
            "users": users.get(variant.name, 0),
            "scored": overall["scored"],
            f"HR@{k}": overall.get(f"HR@{k}", 0.0),
            f"HR@{k}_ci": overall.get(f"HR@{k}_ci", (0.0, 1.0)),
            "MRR": overall.get("MRR", 0.0),
            "MRR_ci": overall.get("MRR_ci", (0.0, 0.0)),
        }
        shown = summary.get(f"shown:{variant.name}", {}).get("-", {})
        exposures = shown.get("exposures", 0.0)
        row["exposures"] = exposures
        for what, label in (("clicked", "click_through"), ("converted", "conversion")):
            row[label] = shown.get(what, 0.0) / exposures if exposures else 0.0
            row[f"{label}_ci"] = proportion_interval(shown.get(what, 0.0), exposures)
        hits = row[f"HR@{k}"] * row["scored"]
        if control is None:
            control = (hits, row["scored"])
        else:
            diff, low, high = difference_interval(hits, row["scored"], *control)
            row[f"HR@{k}_diff"], row[f"HR@{k}_diff_ci"] = diff, (low, high)
            row["separated"] = low > 0 or high < 0
        if variant.interleaved:
            wins = figures.get("-", {})
            a, b = variant.models
            wa, wb = wins.get(f"win:{a}", 0.0), wins.get(f"win:{b}", 0.0)
            row["wins"] = {a: wa, b: wb}
            row["share"] = wa / (wa + wb) if wa + wb else 0.5
            row["share_ci"] = proportion_interval(wa, wa + wb)
            low, high = row["share_ci"]
            row["winner"] = a if low > 0.5 else b if high < 0.5 else None
        out["variants"][variant.name] = row
    return out


def format_report(report: Mapping[str, Any]) -> str:
    """The report as lines of text for a terminal."""
    k = report["k"]
    lines = [f"experiment {report['experiment']}: HR@{k} and MRR of the list each variant's users were served"]
    lines.append(
        f"  {'variant':<12} {'serves':<22} {'users':>8} {'events':>9} {f'HR@{k} [95% CI]':>24} "
        f"{'MRR [95% CI]':>24} {'HR diff vs first [95% CI]':>28}"
    )
    for name, row in report["variants"].items():
        hr_low, hr_high = row[f"HR@{k}_ci"]
        mrr_low, mrr_high = row["MRR_ci"]
        diff = ""
        if f"HR@{k}_diff" in row:
            low, high = row[f"HR@{k}_diff_ci"]
            diff = f"{row[f'HR@{k}_diff']:+.4f} [{low:+.4f}, {high:+.4f}]" + (" *" if row["separated"] else "")
        lines.append(
            f"  {name:<12} {row['serves']:<22} {row['users']:>8,} {row['scored']:>9,.0f} "
            f"{row[f'HR@{k}']:>8.4f} [{hr_low:.4f}, {hr_high:.4f}] {row['MRR']:>8.4f} [{mrr_low:.4f}, {mrr_high:.4f}] "
            f"{diff:>28}"
        )
    for name, row in report["variants"].items():
        if "wins" in row:
            (a, wa), (b, wb) = row["wins"].items()
            low, high = row["share_ci"]
            verdict = f"{row['winner']} wins" if row["winner"] else "no winner yet"
            lines.append(
                f"  interleaving {name}: {a} {wa:,.0f} wins, {b} {wb:,.0f}; {a}'s share {row['share']:.3f} "
                f"[{low:.3f}, {high:.3f}]: {verdict}"
            )
    if any(row["exposures"] for row in report["variants"].values()):
        lines.append("  exposures recorded by the application, joined with the users' later events:")
        for name, row in report["variants"].items():
            ctr_low, ctr_high = row["click_through_ci"]
            cv_low, cv_high = row["conversion_ci"]
            lines.append(
                f"  {name:<12} {row['exposures']:>9,.0f} exposures; click-through {row['click_through']:.4f} "
                f"[{ctr_low:.4f}, {ctr_high:.4f}]; conversion {row['conversion']:.4f} [{cv_low:.4f}, {cv_high:.4f}]"
            )
    lines.append("  (* the difference's 95% interval excludes 0)")
    return "\n".join(lines)

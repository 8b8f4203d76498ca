"""What every benchmark shares: machine description, timing and memory helpers, profiles, output.

Timings are wall-clock (``time.perf_counter``); a figure measured several
times is reported as the median with the minimum and maximum beside it, and a
ratio compares figures measured in the same run. The machine description goes
into every result, because the figures mean little without it (the
development machine is shared: its load average is recorded too).

Examples
--------
>>> summary = summarize([3.0, 1.0, 2.0])
>>> summary["median"], summary["min"], summary["max"], summary["n"]
(2.0, 1.0, 3.0, 3)
>>> print(md_table(["model", "events/s"], [["isgd", fmt(123456.7)]]))
| model | events/s |
|---|---|
| isgd | 123,457 |
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from streamrec.backtest.memory import traced_peak

__all__ = [
    "REPO_ROOT",
    "fmt",
    "hotspots",
    "json_ready",
    "machine_info",
    "md_table",
    "percentiles",
    "read_json",
    "rss_bytes",
    "summarize",
    "target",
    "time_repeats",
    "traced_peak",
    "write_json",
]

REPO_ROOT = Path(__file__).resolve().parents[1]


# -- the machine -------------------------------------------------------------------------


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _ram_bytes() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def _blas() -> dict[str, Any]:
    try:
        from threadpoolctl import threadpool_info  # optional

        return {"source": "threadpoolctl", "pools": threadpool_info()}
    except ImportError:
        pass
    try:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        return {
            "source": "numpy.show_config (threadpoolctl not installed)",
            "name": blas.get("name"),
            "version": blas.get("version"),
        }
    except Exception as exc:  # pragma: no cover - old NumPy
        return {"source": "unknown", "error": str(exc)}


def _versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": sys.version.split()[0], "numpy": np.__version__}
    for name in ("scipy", "torch", "river", "faiss", "redis"):
        try:
            module = __import__(name)
            out[name] = getattr(module, "__version__", "unknown")
        except ImportError:
            out[name] = None
    return out


def machine_info() -> dict[str, Any]:
    """CPU model, cores, RAM, library versions, BLAS, torch threads and device, git commit, load."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        usable = os.cpu_count()
    info: dict[str, Any] = {
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "usable_cpus": usable,
        "ram_bytes": _ram_bytes(),
        "platform": platform.platform(),
        "versions": _versions(),
        "blas": _blas(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty_files": len((_git("status", "--porcelain") or "").splitlines()),
    }
    try:
        import torch

        info["torch_threads"] = torch.get_num_threads()
        info["cuda"] = torch.cuda.is_available()
        if info["cuda"]:
            info["cuda_device"] = torch.cuda.get_device_name(0)
    except ImportError:
        info["cuda"] = False
    return info


def machine_markdown(info: dict[str, Any]) -> str:
    """The machine as a two-column table."""
    v = info.get("versions", {})
    blas = info.get("blas", {})
    rows = [
        ["CPU", f"{info.get('cpu_model')} ({info.get('usable_cpus')} usable of {info.get('cpu_count')} cores)"],
        ["RAM", fmt_bytes(info.get("ram_bytes"))],
        ["GPU", info.get("cuda_device") or "none (torch.cuda.is_available() is False)"],
        ["load average at start", ", ".join(f"{x:.2f}" for x in info.get("load_average") or [])],
        ["Python / NumPy / SciPy", f"{v.get('python')} / {v.get('numpy')} / {v.get('scipy')}"],
        [
            "torch (threads) / River / faiss / redis-py",
            f"{v.get('torch')} ({info.get('torch_threads')}) / {v.get('river')} / {v.get('faiss')} / {v.get('redis')}",
        ],
        ["BLAS", f"{blas.get('name', '?')} {blas.get('version', '')} ({blas.get('source')})"],
        ["platform", info.get("platform")],
        ["git commit", f"{info.get('git_commit')} ({info.get('git_dirty_files')} files changed in the work tree)"],
    ]
    return md_table(["", ""], rows)


# -- numbers -------------------------------------------------------------------------------


def summarize(values: Sequence[float]) -> dict[str, Any]:
    """Median, minimum, maximum and count of repeated measurements."""
    vals = [float(v) for v in values]
    if not vals:
        return {"median": None, "min": None, "max": None, "n": 0}
    return {"median": statistics.median(vals), "min": min(vals), "max": max(vals), "n": len(vals)}


def time_repeats(fn: Callable[[], Any], repeats: int = 3, warmup: int = 0) -> tuple[dict[str, Any], Any]:
    """Call ``fn`` ``warmup`` times untimed, then ``repeats`` times; return the seconds' summary and the last result.

    Examples
    --------
    >>> summary, value = time_repeats(lambda: 42, repeats=2)
    >>> summary["n"], value
    (2, 42)
    """
    for _ in range(warmup):
        fn()
    seconds = []
    result = None
    for _ in range(max(repeats, 1)):
        start = time.perf_counter()
        result = fn()
        seconds.append(time.perf_counter() - start)
    return summarize(seconds), result


def percentiles(values: Sequence[float] | np.ndarray, ps: Sequence[float] = (50, 90, 99, 99.9)) -> dict[str, float]:
    """Percentiles of ``values`` (``"p50"``, ``"p99"``, ...), and the maximum.

    Examples
    --------
    >>> percentiles(list(range(101)), ps=(50, 99))
    {'p50': 50.0, 'p99': 99.0, 'max': 100.0}
    """
    arr = np.asarray(values, dtype=np.float64)
    if arr.size == 0:
        return {**{f"p{p:g}": math.nan for p in ps}, "max": math.nan}
    out = {f"p{p:g}": float(np.percentile(arr, p)) for p in ps}
    out["max"] = float(arr.max())
    return out


def fmt(x: float | None, digits: int = 0) -> str:
    """A number for a table: thousands separators, ``digits`` decimals, ``n/a`` for missing.

    Examples
    --------
    >>> fmt(1234.5), fmt(0.01234, 3), fmt(None), fmt(float("nan"))
    ('1,234', '0.012', 'n/a', 'n/a')
    """
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    return f"{x:,.{digits}f}"


def fmt_bytes(n: float | None) -> str:
    """Bytes in binary units.

    Examples
    --------
    >>> fmt_bytes(1536), fmt_bytes(3 * 2**30)
    ('1.5 KiB', '3.0 GiB')
    """
    if n is None:
        return "n/a"
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover


def fmt_ratio(x: float | None) -> str:
    """A ratio such as ``12.3x``."""
    if x is None or not math.isfinite(x):
        return "n/a"
    return f"{x:,.1f}x" if x >= 10 else f"{x:.2f}x"


def md_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub markdown table."""
    lines = ["| " + " | ".join(str(h) for h in headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def target(name: str, goal: str, measured: str, ok: bool | None, reference: str = "", note: str = "") -> dict[str, Any]:
    """One line of the targets table (``ok`` is ``None`` when the figure could not be measured)."""
    return {"target": name, "goal": goal, "measured": measured, "ok": ok, "reference": reference, "note": note}


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds process ``pid`` has used so far (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# -- memory ----------------------------------------------------------------------------------


def rss_bytes() -> int:
    """Resident set size of this process now (Linux ``/proc``; else the peak)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


# -- profiles -----------------------------------------------------------------------------------


def hotspots(fn: Callable[[], Any], top: int = 8, interval: float = 0.001) -> tuple[dict[str, Any], Any]:
    """Profile ``fn`` with pyinstrument; return the functions with the most self time, and its result.

    Frames are aggregated by function over the whole call tree; ``self_s`` is
    time in the function's own code (including C calls it makes that
    pyinstrument cannot see into), ``share`` its fraction of the profiled time.
    Without pyinstrument, ``fn`` runs unprofiled and ``{"error": ...}`` is returned.
    """
    try:
        from pyinstrument import Profiler
    except ImportError:
        return {"error": "pyinstrument is not installed"}, fn()
    profiler = Profiler(interval=interval)
    profiler.start()
    try:
        result = fn()
    finally:
        session = profiler.stop()
    root = session.root_frame()
    totals: dict[tuple[str, str, int], float] = {}
    cumulative: dict[tuple[str, str, int], float] = {}

    def synthetic(frame: Any) -> bool:  # pyinstrument's "[self]" leaves: the parent's own time
        return bool(getattr(frame, "is_synthetic_leaf", False)) or (frame.function or "").startswith("[")

    def walk(frame: Any, stack: frozenset) -> None:
        key = (frame.function or "?", _short_path(frame.file_path), frame.line_no or 0)
        real = [c for c in frame.children if not synthetic(c)]
        own = frame.time - sum(c.time for c in real)
        totals[key] = totals.get(key, 0.0) + max(own, 0.0)
        if key not in stack:  # count recursion once
            cumulative[key] = cumulative.get(key, 0.0) + frame.time
        for child in real:
            walk(child, stack | {key})

    if root is not None:
        walk(root, frozenset())
    total = root.time if root is not None else 0.0
    ranked = sorted(totals.items(), key=lambda kv: -kv[1])[:top]
    rows = [
        {
            "function": f"{fn_name} ({path}:{line})",
            "self_s": round(seconds, 4),
            "share": round(seconds / total, 4) if total else None,
            "cumulative_s": round(cumulative.get((fn_name, path, line), 0.0), 4),
        }
        for (fn_name, path, line), seconds in ranked
    ]
    text = profiler.output_text(unicode=False, color=False, show_all=False)
    return {"profiled_s": round(total, 4), "top_self": rows, "tree": _trim_tree(text)}, result


def _short_path(path: str | None) -> str:
    if not path:
        return "?"
    p = Path(path)
    try:
        return str(p.resolve().relative_to(REPO_ROOT))
    except ValueError:
        parts = p.parts
        if "site-packages" in parts:
            return "/".join(parts[parts.index("site-packages") + 1 :])
        return p.name


def _trim_tree(text: str, max_lines: int = 45) -> str:
    """The call tree without pyinstrument's banner (which names this machine's paths)."""
    lines = text.splitlines()
    start = next((n for n, ln in enumerate(lines) if re.match(r"\s*\d+\.\d+\s", ln)), len(lines))
    lines = [ln for ln in lines[start:] if ln.strip() and not ln.lstrip().startswith(("_ ", "To view this report"))]
    return "\n".join(lines[:max_lines])


def hotspot_markdown(name: str, prof: dict[str, Any]) -> str:
    """A profile as a short markdown block."""
    if "error" in prof:
        return f"Profile of {name}: {prof['error']}"
    rows = [
        [r["function"], f"{r['self_s']:.3f}", f"{100 * (r['share'] or 0):.1f}%", f"{r['cumulative_s']:.3f}"]
        for r in prof["top_self"]
    ]
    out = [f"**Profile: {name}** (pyinstrument, {prof['profiled_s']:.2f} s profiled; functions by self time)", ""]
    out.append(md_table(["function", "self s", "share", "cumulative s"], rows))
    if prof.get("tree"):
        out += ["", "<details><summary>call tree</summary>", "", "```text", prof["tree"], "```", "", "</details>"]
    return "\n".join(out)


# -- output ------------------------------------------------------------------------------------


def json_ready(value: Any) -> Any:
    """Plain JSON types: NumPy scalars unwrapped, non-finite floats as ``None``, paths as strings."""
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_ready(v) for v in value]
    if isinstance(value, np.ndarray):
        return json_ready(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return round(value, 6) if math.isfinite(value) else None
    if isinstance(value, Path):
        return str(value)
    return value


def write_json(path: str | Path, obj: Any) -> Path:
    """Write ``obj`` as indented JSON (atomically: a temporary file renamed over ``path``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(json_ready(obj), indent=1, sort_keys=False) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


@contextlib.contextmanager
def stopwatch() -> Iterator[dict[str, float]]:
    """``with stopwatch() as t: ...`` sets ``t["s"]`` to the elapsed seconds."""
    out = {"s": 0.0}
    start = time.perf_counter()
    try:
        yield out
    finally:
        out["s"] = time.perf_counter() - start

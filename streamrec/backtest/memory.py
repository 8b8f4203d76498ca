"""Measuring memory: the traced peak of a call, and the process's peak resident size."""

from __future__ import annotations

import gc
import sys
import tracemalloc
from collections.abc import Callable
from typing import Any

__all__ = ["peak_rss", "traced_peak"]


def traced_peak(fn: Callable[[], Any]) -> tuple[int, Any]:
    """Peak bytes allocated through Python's and NumPy's allocators while ``fn`` runs, above the start.

    Memory that native libraries allocate themselves (faiss, torch, BLAS
    workspaces) is not seen.

    Examples
    --------
    >>> import numpy as np
    >>> peak, total = traced_peak(lambda: int(np.ones(1_000_000).sum()))
    >>> peak >= 8_000_000, total
    (True, 1000000)
    """
    gc.collect()
    started = not tracemalloc.is_tracing()
    if started:
        tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        result = fn()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        if started:
            tracemalloc.stop()
    return int(peak - base), result


def peak_rss() -> int | None:
    """Peak resident memory of this process so far (torch included), if the OS says."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not Unix
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)

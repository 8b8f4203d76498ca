"""The chaos soak, short: workers killed, stopped and started at random for two minutes while events flow.

``python -m bench --live --only soak`` runs the long one (ten minutes at 1,500 events/s); this is the
same code (:mod:`bench.soak`) with a two-minute configuration and a CPU-bound neighbour.
"""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from bench import soak

pytestmark = pytest.mark.integration


def test_soak_under_chaos_loses_nothing_and_learns_nothing_twice(service_settings, tmp_path) -> None:
    cfg = replace(soak.config(quick=True), out=str(tmp_path / "soak"))
    result = soak.run(cfg, base=service_settings)
    summary = json.dumps({k: v for k, v in result.items() if k not in ("changes", "config", "targets")}, default=str)
    assert result["membership_changes"] >= 10, summary
    assert {"kill", "stop", "start"} <= {c["action"] for c in result["changes"]}, summary  # each at least once
    assert soak.passed(result), summary
    assert result["resume_seconds"]["not_resumed"] == 0, summary

"""Smoke test of the benchmark of controls (bench/control.py): tiny, without a broker."""

from __future__ import annotations

import dataclasses

import pytest

from bench import control


@pytest.mark.usefixtures("redis_server_binary")
def test_control_tiny() -> None:
    cfg = dataclasses.replace(
        control.config(quick=True), users=200, items=500, hidden=50, rate=1_000, paced_s=0.3, live=False,
        similar_max_events=2_000,
    )  # fmt: skip
    result = control.run(cfg)
    reads = result["reads"]
    assert reads["plain"]["requests"] == reads["filtered"]["requests"] == 300
    assert reads["filtered"]["server_usec_per_call"] > 0 and reads["plain"]["server_usec_per_call"] > 0
    assert reads["filtered"]["answers_short_of_k"] == 0  # the category lists fill every answer to k
    assert all(s["scored"] > 0 and 0 <= s["similar_hr"] <= 1 for s in result["similar"].values())
    assert "hide" not in result and len(result["targets"]) == 1
    assert "FCALL_RO streamrec_read" in control.markdown(result)

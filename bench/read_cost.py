"""What one read through the read step costs Redis, in instructions: deterministic on a shared machine.

Timings of a Redis Function (``INFO commandstats``, the process's CPU time)
move by a factor of two on the shared 2-core development machine; the number
of instructions Redis executes per call does not. This script starts a
throwaway ``redis-server`` under Valgrind's ``callgrind`` (instrumentation
switched on only around each kind of read), writes the data of the controls
benchmark (:mod:`bench.control`: 50-item lists with tags, 1,000 hidden and
1,000 expiring items, category lists, the fallback; plus top-100 lists of
:mod:`bench.reads`), and prints thousands of instructions per call for each
kind of read, for the read step of this tree and, with ``--against REV``, the
one of a git revision beside it::

    python -m bench.read_cost --against 39c8dbc

Needs ``valgrind`` and ``redis-server``; under Valgrind Redis runs some 50 times
slower, so a run takes about a minute. Not part of ``python -m bench``.
"""

from __future__ import annotations

import argparse
import ast
import glob
import subprocess
import sys
import tempfile
import time
from typing import Any

import numpy as np
import redis

from bench import control
from bench.common import REPO_ROOT
from bench.reads import free_port
from streamrec.serving.read_step import FUNCTION_NAME, READ_LIBRARY
from streamrec.store import RecList, RecsClient

__all__ = ["library_at", "measure"]

#: The kinds of read measured, by name.
KINDS = ("GET", "user list", "user list, 5 left out", "a category, 5 left out", "at most 2 per category",
         "fallback only", "top-100 list, k=20")  # fmt: skip


def library_at(rev: str) -> str:
    """``READ_LIBRARY`` as git revision ``rev`` has it."""
    source = subprocess.run(
        ["git", "show", f"{rev}:streamrec/serving/read_step.py"], cwd=REPO_ROOT, check=True, capture_output=True,
        text=True,
    ).stdout  # fmt: skip
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "READ_LIBRARY" for t in node.targets):
            return str(ast.literal_eval(node.value))
    raise ValueError(f"no READ_LIBRARY in streamrec/serving/read_step.py at {rev}")


def _calls(url: str, n: int) -> dict[str, list[tuple]]:
    cfg = control.Config(users=200, live=False)
    users, lists = control._load(cfg, url)
    client = RecsClient(url, cfg.prefix, k=cfg.k)
    rng = np.random.default_rng(0)
    pipe = client.redis.pipeline(transaction=False)
    for user in users:  # a top-100 list per user, as bench/reads.py writes them
        items = [f"i{x}" for x in rng.choice(50_000, 100, replace=False).tolist()]
        reasons = [f"i{x}" for x in rng.integers(0, 50_000, 100).tolist()]
        doc = RecList(user, "itemknn", items, np.sort(rng.random(100))[::-1].tolist(), event_ts=1.0, ingest_ts=2.0,
                      reasons=reasons)  # fmt: skip
        pipe.set(client.layout.user_key(user, "top100"), doc.to_json())
    pipe.execute()
    requests = control._requests(cfg, users, lists, n, cfg.seed + 1)
    read = client.read_call

    def fcall(call: Any) -> tuple:
        return ("FCALL_RO", FUNCTION_NAME, *call.arguments())

    out = {
        "GET": [("GET", client.layout.user_key(u)) for u, _, _ in requests],
        "user list": [fcall(read(u)) for u, _, _ in requests],
        "user list, 5 left out": [fcall(read(u, exclude=ex)) for u, _, ex in requests],
        "a category, 5 left out": [fcall(read(u, categories=[c], exclude=ex)) for u, c, ex in requests],
        "at most 2 per category": [fcall(read(u, per_category=2)) for u, _, _ in requests],
        "fallback only": [fcall(read(None)) for _ in requests],
        "top-100 list, k=20": [fcall(read(u, "top100")) for u, _, _ in requests],
    }
    client.close()
    return out


def measure(library: str, n: int = 200) -> dict[str, float]:
    """Thousands of instructions Redis executes per call of each kind of read, with ``library`` loaded."""
    with tempfile.TemporaryDirectory(prefix="streamrec-read-cost-") as folder:
        port = free_port()
        # fmt: off
        server = subprocess.Popen(
            ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={folder}/out.%p",
             "redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", folder],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        # fmt: on
        pid = str(server.pid)
        try:
            url = f"redis://127.0.0.1:{port}/0"
            client = redis.Redis.from_url(url, socket_timeout=300)
            deadline = time.monotonic() + 60
            while True:
                try:
                    client.ping()
                    break
                except redis.exceptions.ConnectionError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)
            calls = _calls(url, n)
            client.function_load(library, replace=True)
            for name in KINDS:
                pipe = client.pipeline(transaction=False)
                for args in calls[name][:20]:  # warm
                    pipe.execute_command(*args)
                pipe.execute()
                subprocess.run(["callgrind_control", "-z", pid], check=True, capture_output=True)
                subprocess.run(["callgrind_control", "-i", "on", pid], check=True, capture_output=True)
                pipe = client.pipeline(transaction=False)
                for args in calls[name]:
                    pipe.execute_command(*args)
                pipe.execute()
                subprocess.run(["callgrind_control", "-i", "off", pid], check=True, capture_output=True)
                subprocess.run(["callgrind_control", "-d", pid], check=True, capture_output=True)
            client.close()
        finally:
            server.terminate()
            server.wait(60)
        dumps = sorted(glob.glob(f"{folder}/out.*.*"), key=lambda p: int(p.rsplit(".", 1)[1]))
        if len(dumps) != len(KINDS):
            raise RuntimeError(f"expected {len(KINDS)} callgrind dumps, found {len(dumps)}")
        out = {}
        for name, path in zip(KINDS, dumps, strict=True):
            with open(path) as f:
                totals = [int(line.split()[1]) for line in f if line.startswith(("totals:", "summary:"))]
            out[name] = max(totals) / n / 1000
        return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--against", metavar="REV", help="also measure the read step of this git revision")
    parser.add_argument("-n", type=int, default=200, help="calls per kind of read (default 200)")
    args = parser.parse_args(argv)
    columns = {"this tree": measure(READ_LIBRARY, args.n)}
    if args.against:
        columns[args.against] = measure(library_at(args.against), args.n)
    names = list(columns)
    print("| read | " + " | ".join(f"{c} (k instructions)" for c in names) + (" | ratio |" if len(names) > 1 else " |"))
    print("|---" * (len(names) + 1 + (len(names) > 1)) + "|")
    for kind in KINDS:
        cells = [f"{columns[c][kind]:,.0f}" for c in names]
        ratio = [f"{columns[names[1]][kind] / columns[names[0]][kind]:.2f}x"] if len(names) > 1 else []
        print(f"| {kind} | " + " | ".join(cells + ratio) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

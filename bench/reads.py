"""Read latency of a user's top-100 list from Redis through ``RecsClient.get``, against ``redis-benchmark``.

The benchmark starts its own ``redis-server`` on a free loopback port (no
persistence), writes one top-``top_n`` list document per user (item ids,
scores and reasons, as the worker writes them) and a fallback list of the same
length, then, from this one client process:

- **paced**: ``RecsClient.get(user)`` for random users at ``rate`` requests per
  second for ``paced_s`` seconds. Each request has a due time (``start + n /
  rate``; the client spins until then). Latency is reported two ways: the
  *service* time of the call (send to parsed document), and the time from the
  *due* time to the parsed document, which also counts any wait behind a slow
  earlier request (no coordinated omission). The target is judged on the latter.
- **paced, lower rate**: the same at ``lower_rate`` (a rate one client
  process can sustain on the development machine), to show the latency
  without a backlog;
- **max rate**: the same calls back to back for ``max_rate_s`` seconds;
- **breakdown**: the same loop with ``with_fallback=False`` (one ``GET`` of
  one document instead of ``MGET`` of the user's and the fallback document),
  with redis-py's raw ``GET`` (bytes, no JSON), and the JSON decoding of one
  document alone;
- **reference**: ``redis-benchmark`` on the same server with values of the
  same size (``-d``), one connection (``-c 1``) and its default 50. Its ``GET``
  test reads a key its ``SET`` test wrote, so both run (``-t set,get``).

The server is stopped by its PID at the end.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import fmt, hotspot_markdown, hotspots, md_table, percentiles, target
from streamrec.store import KeyLayout, RecList, RecsClient

__all__ = ["Config", "RedisServer", "config", "markdown", "run"]

TARGET_RATE = 10_000
TARGET_P99_MS = 1.0


@dataclass
class Config:
    """What the read benchmark runs; :func:`config` gives the full and ``--quick`` ones."""

    users: int = 10_000
    top_n: int = 100
    rate: float = TARGET_RATE
    paced_s: float = 5.0
    lower_rate: float = 5_000  # a second paced run, at a rate one client can sustain here
    clients: int = 2  # the target run: this many reader processes share the paced rate
    lower_rate_s: float = 3.0
    max_rate_s: float = 2.0
    breakdown_s: float = 1.0
    bench_requests: int = 100_000
    prefix: str = "streamrec"
    profile: bool = True
    seed: int = 0
    notes: list[str] = field(default_factory=list)


def config(quick: bool = False) -> Config:
    """The full configuration, or the ``--quick`` one."""
    if not quick:
        return Config()
    return Config(
        users=2_000,
        paced_s=1.0,
        lower_rate_s=0.5,
        max_rate_s=0.5,
        breakdown_s=0.3,
        bench_requests=20_000,
        profile=False,
    )


# -- a private redis-server -----------------------------------------------------------------------


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """A throwaway ``redis-server`` on loopback, without persistence, stopped by its PID.

    Examples
    --------
    >>> if shutil.which("redis-server"):  # doctest: +SKIP
    ...     with RedisServer() as server:
    ...         print(server.url.startswith("redis://127.0.0.1:"))
    True
    """

    def __init__(self, executable: str = "redis-server") -> None:
        path = shutil.which(executable)
        if path is None:
            raise FileNotFoundError(f"{executable} is not on PATH: install Redis to run the read benchmark")
        self.executable = path
        self.port = 0
        self.pid: int | None = None
        self._dir: tempfile.TemporaryDirectory[str] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def version(self) -> str:
        out = subprocess.run([self.executable, "--version"], capture_output=True, text=True, timeout=10)
        return out.stdout.strip()

    def start(self, timeout: float = 10.0) -> RedisServer:
        self._dir = tempfile.TemporaryDirectory(prefix="streamrec-bench-redis-")
        folder = Path(self._dir.name)
        pidfile = folder / "redis.pid"
        for _ in range(5):  # a port taken between free_port() and bind: try another
            self.port = free_port()
            # fmt: off
            subprocess.run(
                [self.executable, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                 "--daemonize", "yes", "--pidfile", str(pidfile), "--dir", str(folder),
                 "--logfile", str(folder / "redis.log")],
                check=True, timeout=timeout,
            )
            # fmt: on
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if pidfile.exists() and self._ping():
                    self.pid = int(pidfile.read_text().strip())
                    return self
                time.sleep(0.05)
            if pidfile.exists():
                self.pid = int(pidfile.read_text().strip())
                self.stop()
        log = (folder / "redis.log").read_text(errors="replace")[-2000:] if (folder / "redis.log").exists() else ""
        raise RuntimeError(f"redis-server did not answer on 127.0.0.1:{self.port}; its log ends with:\n{log}")

    def _ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server by its PID (SIGTERM, then SIGKILL of the same PID if it lingers)."""
        pid, self.pid = self.pid, None
        if pid is not None:
            try:
                os.kill(pid, signal.SIGTERM)
                deadline = time.monotonic() + timeout
                while time.monotonic() < deadline:
                    os.kill(pid, 0)
                    time.sleep(0.05)
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# -- the documents -----------------------------------------------------------------------------


def make_documents(cfg: Config) -> tuple[dict[str, bytes], bytes]:
    """One top-``top_n`` list per user (items, scores, reasons) and a fallback list of the same length."""
    rng = np.random.default_rng(cfg.seed)
    now = time.time()
    docs = {}
    for u in range(cfg.users):
        items = [f"i{x}" for x in rng.choice(50_000, cfg.top_n, replace=False).tolist()]
        scores = np.sort(rng.random(cfg.top_n))[::-1].tolist()
        reasons = [f"i{x}" for x in rng.integers(0, 50_000, cfg.top_n).tolist()]
        doc = RecList(
            str(u), "itemknn", items, scores, computed_at=now, event_ts=now - 1.0, ingest_ts=now - 0.5, reasons=reasons
        )
        docs[str(u)] = doc.to_json()
    fallback = RecList(
        "",
        "popularity",
        [f"i{j}" for j in range(cfg.top_n)],
        [1.0 / (j + 1) for j in range(cfg.top_n)],
        computed_at=now,
    )
    return docs, fallback.to_json()


def _load(url: str, cfg: Config, docs: dict[str, bytes], fallback: bytes) -> None:
    import redis

    layout = KeyLayout(cfg.prefix)
    r = redis.Redis.from_url(url)
    pipe = r.pipeline(transaction=False)
    for n, (user, payload) in enumerate(docs.items()):
        pipe.set(layout.user_key(user), payload)
        if n % 1000 == 999:
            pipe.execute()
    for key in layout.fallback_keys():
        pipe.set(key, fallback)
    pipe.execute()
    r.close()


# -- the loops -------------------------------------------------------------------------------------


def paced_reads(client: RecsClient, users: list[str], rate: float, seconds: float, raw: bool = False) -> dict[str, Any]:
    """``client.get`` at ``rate`` per second; latencies from send and from due time (ms)."""
    n = max(int(rate * seconds), 1)
    interval = 1.0 / rate
    service = np.empty(n)
    from_due = np.empty(n)
    perf = time.perf_counter
    get = client.get
    fallbacks = 0
    start = perf() + 0.005
    sleep = time.sleep
    for j in range(n):
        due = start + j * interval
        now = perf()
        while now < due:  # sleep through most of the gap (a spinning client starves Redis on few cores)
            if due - now > 0.0003:
                sleep(due - now - 0.0002)
            now = perf()
        rec = get(users[j % len(users)])
        done = perf()
        service[j] = done - now
        from_due[j] = done - due
        fallbacks += rec is None or rec.fallback
    elapsed = perf() - start
    return {
        "requests": n,
        "target_rate": rate,
        "achieved_rate": n / elapsed,
        "service_ms": {k: v * 1e3 for k, v in percentiles(service).items()},
        "from_due_ms": {k: v * 1e3 for k, v in percentiles(from_due).items()},
        "fallback_answers": int(fallbacks),
        **({"from_due_raw": from_due.tolist(), "service_raw": service.tolist()} if raw else {}),
    }


def _paced_client(job: tuple[str, str, list[str], float, float, float]) -> dict[str, Any]:
    """One reader process of :func:`paced_clients` (top level, so it can be spawned)."""
    url, prefix, users, rate, seconds, start_at = job
    client = RecsClient(url, prefix)
    try:
        for user in users[:2000]:
            client.get(user)
        while time.time() < start_at:
            time.sleep(0.0005)
        return paced_reads(client, users, rate, seconds, raw=True)
    finally:
        client.close()


def paced_clients(url: str, prefix: str, users: list[str], rate: float, seconds: float, clients: int) -> dict[str, Any]:
    """``rate`` reads/s shared by ``clients`` reader processes; latencies merged."""
    import multiprocessing

    start_at = time.time() + 3.0  # after every process has started and warmed up
    share = rate / clients
    jobs = [(url, prefix, users[j::clients], share, seconds, start_at) for j in range(clients)]
    with multiprocessing.get_context("spawn").Pool(clients) as pool:
        parts = pool.map(_paced_client, jobs)
    from_due = np.concatenate([p.pop("from_due_raw") for p in parts])
    service = np.concatenate([p.pop("service_raw") for p in parts])
    return {
        "clients": clients,
        "requests": int(sum(p["requests"] for p in parts)),
        "target_rate": rate,
        "achieved_rate": float(sum(p["achieved_rate"] for p in parts)),
        "service_ms": {k: v * 1e3 for k, v in percentiles(service).items()},
        "from_due_ms": {k: v * 1e3 for k, v in percentiles(from_due).items()},
        "fallback_answers": int(sum(p["fallback_answers"] for p in parts)),
    }


def max_rate(call: Any, users: list[str], seconds: float) -> dict[str, Any]:
    """``call(user)`` back to back for ``seconds``: requests per second and latency (ms)."""
    perf = time.perf_counter
    lat: list[float] = []
    start = perf()
    end = start + seconds
    j = 0
    now = start
    while now < end:
        t0 = perf()
        call(users[j % len(users)])
        now = perf()
        lat.append(now - t0)
        j += 1
    return {"requests": j, "rate": j / (now - start), "latency_ms": {k: v * 1e3 for k, v in percentiles(lat).items()}}


def redis_benchmark(port: int, value_bytes: int, requests: int, clients: int | None) -> dict[str, Any]:
    """``redis-benchmark -t set,get -d value_bytes`` (``-c clients`` unless ``None``: its default, 50)."""
    exe = shutil.which("redis-benchmark")
    if exe is None:
        return {"error": "redis-benchmark is not on PATH"}
    cmd = [
        exe,
        "-h",
        "127.0.0.1",
        "-p",
        str(port),
        "-t",
        "set,get",
        "-d",
        str(value_bytes),
        "-n",
        str(requests),
        "--csv",
    ]
    if clients is not None:
        cmd += ["-c", str(clients)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        return {"error": f"exit {out.returncode}: {out.stderr.strip()[-500:]}"}
    rows = {row["test"]: row for row in csv.DictReader(io.StringIO(out.stdout))}
    get = rows.get("GET")
    if get is None:
        return {"error": f"no GET line in: {out.stdout[-500:]}"}
    return {
        "command": " ".join(cmd[1:]),
        "clients": clients or 50,
        "rate": float(get["rps"]),
        "latency_ms": {
            "avg": float(get["avg_latency_ms"]),
            "p50": float(get["p50_latency_ms"]),
            "p95": float(get["p95_latency_ms"]),
            "p99": float(get["p99_latency_ms"]),
            "max": float(get["max_latency_ms"]),
        },
    }


# -- the benchmark -------------------------------------------------------------------------------


def run(cfg: Config) -> dict[str, Any]:
    """Run the read benchmark; return its JSON-ready result (see :func:`markdown`)."""
    out: dict[str, Any] = {"config": asdict(cfg), "notes": list(cfg.notes), "targets": [], "profiles": {}}
    try:
        server = RedisServer()
    except FileNotFoundError as exc:
        out["error"] = str(exc)
        out["targets"].append(
            target(f"read p99 at {TARGET_RATE:,}/s", f"<= {TARGET_P99_MS} ms", "not measured", None, note=str(exc))
        )
        return out
    docs, fallback = make_documents(cfg)
    sizes = np.array([len(d) for d in docs.values()])
    out["document"] = {
        "median_bytes": int(np.median(sizes)),
        "max_bytes": int(sizes.max()),
        "fallback_bytes": len(fallback),
    }
    rng = np.random.default_rng(cfg.seed + 1)
    users = [str(u) for u in rng.integers(0, cfg.users, 200_000).tolist()]
    with server:
        out["server"] = {"version": server.version(), "bind": "127.0.0.1", "persistence": "off"}
        _load(server.url, cfg, docs, fallback)
        client = RecsClient(server.url, cfg.prefix)
        try:
            for user in users[:2000]:  # warm the connection and the code paths
                client.get(user)
            out["paced"] = paced_reads(client, users, cfg.rate, cfg.paced_s)
            out["paced_clients"] = paced_clients(server.url, cfg.prefix, users, cfg.rate, cfg.paced_s, cfg.clients)
            out["paced_lower"] = paced_reads(client, users, cfg.lower_rate, cfg.lower_rate_s)
            out["max_rate"] = max_rate(client.get, users, cfg.max_rate_s)
            layout = KeyLayout(cfg.prefix)
            raw_get = client.redis.get
            one_doc = next(iter(docs.values()))
            out["breakdown"] = {
                "get_without_fallback": max_rate(lambda u: client.get(u, with_fallback=False), users, cfg.breakdown_s),
                "redis_py_raw_get": max_rate(lambda u: raw_get(layout.user_key(u)), users, cfg.breakdown_s),
                "json_decode_only": max_rate(lambda _u: RecList.from_json(one_doc), users, cfg.breakdown_s),
            }
            target_run = out["paced_clients"]
            p99 = target_run["from_due_ms"]["p99"]
            ok = p99 <= TARGET_P99_MS and target_run["achieved_rate"] >= 0.99 * cfg.rate
            if not ok and cfg.profile:
                prof, _ = hotspots(lambda: max_rate(client.get, users, 1.0))
                out["profiles"]["RecsClient.get, back to back for 1 s"] = prof
        finally:
            client.close()
        value = out["document"]["median_bytes"]
        out["redis_benchmark"] = {
            "c1": redis_benchmark(server.port, value, cfg.bench_requests, 1),
            "default": redis_benchmark(server.port, value, cfg.bench_requests, None),
        }
    paced = out["paced_clients"]
    single = out["paced"]
    bench_c1 = out["redis_benchmark"]["c1"]
    out["targets"].append(
        target(
            f"read latency, RecsClient.get of a top-{cfg.top_n} list at {cfg.rate:,.0f} reads/s "
            f"from {cfg.clients} reader processes",
            f"p99 <= {TARGET_P99_MS} ms",
            f"p99 {paced['from_due_ms']['p99']:.3f} ms from due time ({paced['service_ms']['p99']:.3f} ms service), "
            f"{paced['achieved_rate']:,.0f} reads/s achieved; one process alone: p99 "
            f"{single['from_due_ms']['p99']:.3f} ms from due time, max {out['max_rate']['rate']:,.0f} reads/s",
            ok,
            reference=f"redis-benchmark GET -c 1: p99 {bench_c1.get('latency_ms', {}).get('p99', float('nan')):.3f} ms, "
            f"{bench_c1.get('rate', float('nan')):,.0f}/s"
            if "error" not in bench_c1
            else bench_c1["error"],
        )
    )
    return out


# -- the report -----------------------------------------------------------------------------------


def _lat(ms: dict[str, float]) -> list[str]:
    return [
        f"{ms.get('p50', float('nan')):.3f}",
        f"{ms.get('p99', float('nan')):.3f}",
        f"{ms.get('max', float('nan')):.3f}",
    ]


def markdown(result: dict[str, Any]) -> str:
    """The read section of ``results.md``."""
    if "error" in result:
        return f"Not run: {result['error']}"
    cfg, doc = result["config"], result["document"]
    p, m, b = result["paced"], result["max_rate"], result["breakdown"]
    rows = []
    if "paced_clients" in result:
        pc = result["paced_clients"]
        rows += [
            [
                f"RecsClient.get, {pc['clients']} reader processes sharing {cfg['rate']:,.0f}/s: latency from due time",
                fmt(pc["achieved_rate"]),
                *_lat(pc["from_due_ms"]),
            ],
            ["same requests: service time", "", *_lat(pc["service_ms"])],
        ]
    rows += [
        [
            f"RecsClient.get, one process paced at {cfg['rate']:,.0f}/s for {cfg['paced_s']:.0f} s: latency from due time",
            fmt(p["achieved_rate"]),
            *_lat(p["from_due_ms"]),
        ],
        ["same requests: service time (send to parsed list)", "", *_lat(p["service_ms"])],
        [
            f"RecsClient.get, paced at {cfg['lower_rate']:,.0f}/s for {cfg['lower_rate_s']:.0f} s: latency from due time",
            fmt(result["paced_lower"]["achieved_rate"]),
            *_lat(result["paced_lower"]["from_due_ms"]),
        ],
        ["same requests: service time", "", *_lat(result["paced_lower"]["service_ms"])],
        ["RecsClient.get, back to back (max rate)", fmt(m["rate"]), *_lat(m["latency_ms"])],
        [
            "RecsClient.get(with_fallback=False): one GET",
            fmt(b["get_without_fallback"]["rate"]),
            *_lat(b["get_without_fallback"]["latency_ms"]),
        ],
        [
            "redis-py raw GET (bytes, no JSON)",
            fmt(b["redis_py_raw_get"]["rate"]),
            *_lat(b["redis_py_raw_get"]["latency_ms"]),
        ],
        [
            "RecList.from_json alone (no I/O)",
            fmt(b["json_decode_only"]["rate"]),
            *_lat(b["json_decode_only"]["latency_ms"]),
        ],
    ]
    for key, label in (("c1", "-c 1"), ("default", "default -c 50")):
        rb = result["redis_benchmark"][key]
        if "error" in rb:
            rows.append([f"*reference: redis-benchmark GET {label}*", rb["error"], "", "", ""])
        else:
            rows.append(
                [
                    f"*reference: redis-benchmark GET {label}*, -d {doc['median_bytes']}",
                    fmt(rb["rate"]),
                    *_lat(rb["latency_ms"]),
                ]
            )
    out = [
        f"Own `{result['server']['version'].split(' sha=')[0]}` on 127.0.0.1 (no persistence); {cfg['users']:,} users, "
        f"each a top-{cfg['top_n']} list with scores and reasons: {doc['median_bytes']:,} bytes of JSON (max "
        f"{doc['max_bytes']:,}); fallback list {doc['fallback_bytes']:,} bytes. One client process; "
        "`RecsClient.get` is one `MGET` of the user's and the fallback key, so each read moves both documents.",
        "",
        md_table(["reads", "reads/s", "p50 ms", "p99 ms", "max ms"], rows),
        "",
        f"Paced run: {p['requests']:,} requests, {p['fallback_answers']} answered by the fallback. redis-benchmark "
        "runs as a separate C process with its own connection(s); its `GET` reads the value its `SET` wrote.",
    ]
    for note in result.get("notes", []):
        out.append(f"- {note}")
    for name, prof in result.get("profiles", {}).items():
        out += ["", hotspot_markdown(name, prof)]
    return "\n".join(out)

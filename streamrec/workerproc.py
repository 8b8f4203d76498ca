"""Running the Faust worker as a child process (demo, live replay, integration tests)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from streamrec.settings import Settings
from streamrec.store import RecsClient

__all__ = ["WorkerProcess"]


class WorkerProcess:
    """A ``faust -A stream_app.app worker`` child with the given settings.

    Examples
    --------
    >>> WorkerProcess.command()[-4:]
    ['worker', '--without-web', '-l', 'info']
    """

    def __init__(self, settings: Settings, log_path: str | Path, extra_env: dict[str, str] | None = None) -> None:
        self.settings = settings
        self.log_path = Path(log_path)
        self.extra_env = extra_env or {}
        self.proc: subprocess.Popen[bytes] | None = None

    @staticmethod
    def command(loglevel: str = "info") -> list[str]:
        return [sys.executable, "-m", "faust", "-A", "stream_app.app", "worker", "--without-web", "-l", loglevel]

    def start(self) -> WorkerProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **self.settings.as_env(), **self.extra_env}
        env.setdefault("PYTHONUNBUFFERED", "1")
        root = Path(__file__).resolve().parent.parent
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(root), env.get("PYTHONPATH", "")) if p)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.command(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, cwd=root
            )
        return self

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout``; return the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL (crash tests)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def wait_processed(
        self, n_events: int, timeout: float, progress: Callable[[float], None] | None = None
    ) -> dict[str, float]:
        """Wait until the worker reports ``n_events`` accepted, dead-lettered or skipped as duplicates; return its counters."""
        client = RecsClient(self.settings.redis_url or "", self.settings.key_prefix, **self.settings.redis_kwargs())
        deadline = time.monotonic() + timeout
        try:
            while True:
                stats = client.stats()
                done = sum(stats.get(k, 0) for k in ("events_accepted", "events_deadlettered", "events_duplicate"))
                if progress:
                    progress(done)
                if done >= n_events:
                    return stats
                if "Crashed reason=" in self.log_tail(20_000):
                    raise RuntimeError(f"the worker's agent crashed; log tail:\n{self.log_tail()}")
                if not self.alive():
                    raise RuntimeError(
                        f"the worker exited (code {self.proc.returncode if self.proc else None}); log tail:\n{self.log_tail()}"
                    )
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"the worker processed {done:.0f} of {n_events} events in {timeout:.0f} s; log tail:\n{self.log_tail()}"
                    )
                time.sleep(0.1)
        finally:
            client.close()

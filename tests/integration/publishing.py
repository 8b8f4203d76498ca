"""Publishing for the integration tests: paced, in a thread, counting what it sent."""

from __future__ import annotations

import threading
import time

from producers.publisher import EventPublisher
from streamrec.settings import Settings

__all__ = ["PacedPublisher"]


class PacedPublisher:
    """Publishes a list of events in a thread, and says how many it has sent (so tests wait on events, not time)."""

    def __init__(self, settings: Settings, events: list, rate: float) -> None:
        self.settings, self.events, self.rate = settings, events, rate
        self.sent = 0
        self.thread = threading.Thread(target=self._run)
        self.error: BaseException | None = None

    def _run(self) -> None:
        try:
            with EventPublisher(self.settings) as publisher:
                for n in range(0, len(self.events), 50):
                    chunk = self.events[n : n + 50]
                    publisher.publish(chunk, rate=self.rate, progress=False)
                    self.sent += len(chunk)
        except BaseException as exc:  # reported by join()
            self.error = exc

    def start(self) -> PacedPublisher:
        self.thread.start()
        return self

    def wait_sent(self, n: int, timeout: float = 240.0) -> None:
        deadline = time.monotonic() + timeout
        while self.sent < n and self.thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert self.sent >= n, f"published {self.sent} of {n} events in {timeout} s ({self.error!r})"

    def join(self, timeout: float = 240.0) -> None:
        self.thread.join(timeout)
        assert not self.thread.is_alive() and self.error is None, self.error

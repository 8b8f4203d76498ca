"""Offsets are committed only right after a checkpoint, never past what one holds.

Faust commits acknowledged offsets by itself (on a timer, every N acks, on
rebalance, on stop), all through ``consumer.commit()``. With checkpoints on,
:func:`commit_only_after_checkpoints` replaces that method on the consumer
instance by one that does nothing, and returns the original for the worker to
call after each checkpoint. A crash can then never find Kafka holding an
offset whose events no checkpoint includes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

__all__ = ["commit_only_after_checkpoints"]


def commit_only_after_checkpoints(consumer: Any) -> Callable[[], Awaitable[Any]]:
    """Silence ``consumer``'s own commits; return the real commit for the worker.

    Idempotent: an agent restarted by Faust's supervisor gets the same real commit.
    """
    real_commit = getattr(consumer, "_streamrec_real_commit", None)
    if real_commit is None:
        real_commit = consumer.commit

        async def held_back(*args: Any, **kwargs: Any) -> bool:
            return False  # the worker commits after its next checkpoint

        consumer._streamrec_real_commit = real_commit
        consumer.commit = held_back
    return real_commit

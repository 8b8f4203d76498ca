"""Crash-safe checkpoints: every model's state plus the Kafka offsets it includes.

A checkpoint is a directory ``ckpt-<sequence>`` holding one saved model per
subdirectory (JSON + ``.npz``, see :mod:`models.persistence`) and
``checkpoint.json`` with the offsets: for each topic and partition, the next
offset the models have not learned. It is written into a temporary directory
and renamed into place, so a reader (a restarted worker) sees either the whole
checkpoint or none of it. The newest ``keep`` checkpoints are kept.

Examples
--------
>>> import tempfile
>>> from models import create, Interactions
>>> store = CheckpointStore(tempfile.mkdtemp())
>>> model = create("popularity")
>>> model.learn(Interactions.from_columns(["u"], ["i"]))
>>> path = store.save({"popularity": model}, {"events": {0: 1}})
>>> loaded = store.load_latest()
>>> loaded.offsets, loaded.models["popularity"].recommend(["x"]).items
({'events': {0: 1}}, [['i']])
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from models import OnlineRecommender

__all__ = ["Checkpoint", "CheckpointStore", "Offsets"]

#: topic -> partition -> next offset not yet learned
Offsets = dict[str, dict[int, int]]


@dataclass
class Checkpoint:
    """What :meth:`CheckpointStore.load_latest` returns."""

    path: Path
    sequence: int
    models: dict[str, OnlineRecommender]
    offsets: Offsets
    created_at: float
    extra: dict[str, Any] = field(default_factory=dict)


class CheckpointStore:
    """Writes and reads checkpoints under one directory."""

    def __init__(self, directory: str | Path, keep: int = 2) -> None:
        if keep < 1:
            raise ValueError(f"keep must be >= 1, got {keep}")
        self.directory = Path(directory)
        self.keep = keep

    def _complete(self) -> list[tuple[int, Path]]:
        if not self.directory.is_dir():
            return []
        found = []
        for path in self.directory.glob("ckpt-*"):
            if (path / "checkpoint.json").is_file():
                try:
                    found.append((int(path.name.removeprefix("ckpt-")), path))
                except ValueError:
                    continue
        return sorted(found)

    def save(
        self, models: Mapping[str, OnlineRecommender], offsets: Offsets, extra: Mapping[str, Any] | None = None
    ) -> Path:
        """Write a new checkpoint atomically and prune old ones; return its path."""
        self.directory.mkdir(parents=True, exist_ok=True)
        existing = self._complete()
        sequence = existing[-1][0] + 1 if existing else 1
        tmp = Path(tempfile.mkdtemp(prefix=".ckpt-", dir=self.directory))
        try:
            for name, model in models.items():
                model.save(tmp / "models" / name)
            doc = {
                "sequence": sequence,
                "created_at": time.time(),
                "models": sorted(models),
                "offsets": {topic: {str(p): int(o) for p, o in parts.items()} for topic, parts in offsets.items()},
                "extra": dict(extra or {}),
            }
            with open(tmp / "checkpoint.json", "w", encoding="utf-8") as f:
                json.dump(doc, f)
                f.flush()
                os.fsync(f.fileno())
            final = self.directory / f"ckpt-{sequence:010d}"
            tmp.rename(final)
            _fsync_dir(self.directory)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        for _, old in self._complete()[: -self.keep]:
            shutil.rmtree(old, ignore_errors=True)
        for stale in self.directory.glob(".ckpt-*"):  # left by a crash mid-write
            if stale != tmp:
                shutil.rmtree(stale, ignore_errors=True)
        return final

    def load_latest(self) -> Checkpoint | None:
        """The newest complete checkpoint, or ``None`` when there is none."""
        complete = self._complete()
        if not complete:
            return None
        sequence, path = complete[-1]
        with open(path / "checkpoint.json", encoding="utf-8") as f:
            doc = json.load(f)
        loaded = {name: OnlineRecommender.load(path / "models" / name) for name in doc["models"]}
        offsets = {topic: {int(p): int(o) for p, o in parts.items()} for topic, parts in doc["offsets"].items()}
        return Checkpoint(path, sequence, loaded, offsets, float(doc["created_at"]), doc.get("extra", {}))


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

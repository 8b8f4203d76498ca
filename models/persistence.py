"""Saving models as JSON plus ``.npz`` in a directory, atomically and without pickle."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["FORMAT_VERSION", "read_model_dir", "write_model_dir"]

FORMAT_VERSION = 1


def write_model_dir(path: str | Path, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> Path:
    """Write ``meta.json`` and ``arrays.npz`` into ``path``, replacing it atomically.

    The files are written into a sibling temporary directory which is then
    renamed over ``path``, so a reader never sees a half-written model.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        for name, arr in arrays.items():
            if np.asarray(arr).dtype == object:
                raise TypeError(f"array {name!r} has dtype object, which would need pickle")
        with open(tmp / "arrays.npz", "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        with open(tmp / "meta.json", "w", encoding="utf-8") as f:
            json.dump({"format_version": FORMAT_VERSION, **meta}, f)
            f.flush()
            os.fsync(f.fileno())
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            path.rename(old)
            tmp.rename(path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def read_model_dir(path: str | Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Read what :func:`write_model_dir` wrote; never unpickles anything."""
    path = Path(path)
    meta_file = path / "meta.json"
    if not meta_file.is_file():
        raise FileNotFoundError(f"{path} holds no saved model (no meta.json)")
    with open(meta_file, encoding="utf-8") as f:
        meta = json.load(f)
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise ValueError(f"{path}: format version {version!r}, this code reads {FORMAT_VERSION}")
    with np.load(path / "arrays.npz", allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    return meta, arrays

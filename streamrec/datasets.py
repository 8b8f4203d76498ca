"""Finding (or downloading) MovieLens 100K.

MovieLens may not be redistributed, so the project never ships it. It is
looked for in ``$STREAMREC_DATA_DIR/ml-100k``, then in the user's cache
folder; :func:`download_movielens` fetches the official zip into the cache.

Examples
--------
>>> find_movielens({"STREAMREC_DATA_DIR": "/nonexistent"}, download=False) is None
True
"""

from __future__ import annotations

import io
import os
import shutil
import urllib.request
import zipfile
from collections.abc import Mapping
from pathlib import Path

from streamrec.settings import cache_dir

__all__ = ["MOVIELENS_URL", "DownloadError", "download_movielens", "find_movielens"]

MOVIELENS_URL = "https://files.grouplens.org/datasets/movielens/ml-100k.zip"
REQUIRED = ("u.data", "u.item", "u.user")


class DownloadError(RuntimeError):
    """The data set could not be downloaded; the message says why."""


def _complete(folder: Path) -> bool:
    return all((folder / name).is_file() for name in REQUIRED)


def find_movielens(env: Mapping[str, str] | None = None, download: bool = True) -> Path | None:
    """Return the ``ml-100k`` folder, downloading it into the cache when allowed and missing."""
    env = os.environ if env is None else env
    candidates = []
    if env.get("STREAMREC_DATA_DIR"):
        candidates.append(Path(env["STREAMREC_DATA_DIR"]).expanduser() / "ml-100k")
    cached = cache_dir(env) / "data" / "ml-100k"
    candidates.append(cached)
    for folder in candidates:
        if _complete(folder):
            return folder
    if not download:
        return None
    try:
        return download_movielens(cached.parent, env.get("STREAMREC_MOVIELENS_URL", MOVIELENS_URL))
    except DownloadError:
        return None


def download_movielens(dest: str | Path, url: str = MOVIELENS_URL, timeout: float = 30.0) -> Path:
    """Download and unpack ml-100k into ``dest/ml-100k``; raise :class:`DownloadError` on failure."""
    dest = Path(dest)
    target = dest / "ml-100k"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            payload = response.read()
    except (OSError, ValueError) as exc:
        raise DownloadError(f"could not download {url}: {exc}") from exc
    try:
        archive = zipfile.ZipFile(io.BytesIO(payload))
    except zipfile.BadZipFile as exc:
        raise DownloadError(f"{url} did not return a zip file") from exc
    tmp = dest / "ml-100k.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for member in archive.infolist():
        name = Path(member.filename)
        if member.is_dir() or name.parts[:1] != ("ml-100k",) or ".." in name.parts:
            continue
        with archive.open(member) as src, open(tmp / name.name, "wb") as out:
            shutil.copyfileobj(src, out)
    if not _complete(tmp):
        shutil.rmtree(tmp, ignore_errors=True)
        raise DownloadError(f"{url}: the archive lacks {', '.join(REQUIRED)}")
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    return target

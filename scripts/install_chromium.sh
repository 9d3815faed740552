#!/usr/bin/env bash
# Install headless Chromium and its WebDriver from Debian (packages `chromium`, `chromium-driver`) when missing.
#
# The auditors' page is tested in a real browser (tests/auditors): selenium drives this SYSTEM Chromium through
# Debian's chromedriver; nothing downloads a browser or a driver at test time (selenium-manager is never used).
# Idempotent: exits at once when both binaries are there. Safe to run from several processes at once
# (pytest-xdist workers): callers are serialised with flock and apt waits for its lock.
#
# Used by tests/auditors/conftest.py (the `browser` fixture) and the Makefile's test target. Needs root or sudo.
set -euo pipefail

LOCK=${TMPDIR:-/tmp}/install_chromium.lock

installed() {
    command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1
}

report() {
    dpkg-query -W -f='${Package} ${Version}\n' chromium chromium-driver 2>/dev/null || true
}

if installed; then
    echo "install_chromium: chromium and chromedriver are already installed"
    report
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "install_chromium: error: apt-get not found; install Chromium and a matching chromedriver by hand," \
         "or set RRG_CHROMIUM and RRG_CHROMEDRIVER for the tests" >&2
    exit 1
fi

# shellcheck source=lib/sudo.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/sudo.sh"
find_sudo install_chromium

exec 9>"$LOCK"
flock 9
if installed; then  # another process installed it while we waited for the lock
    echo "install_chromium: installed by a concurrent run"
    report
    exit 0
fi

APT_OPTS=(-o DPkg::Lock::Timeout=300 -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)
export DEBIAN_FRONTEND=noninteractive
echo "install_chromium: apt-get update"
"${SUDO[@]}" apt-get "${APT_OPTS[@]}" update -qq
echo "install_chromium: apt-get install chromium chromium-driver"
"${SUDO[@]}" apt-get "${APT_OPTS[@]}" install -y -qq --no-install-recommends chromium chromium-driver

if ! installed; then
    echo "install_chromium: error: apt-get finished but chromium or chromedriver is still missing" >&2
    exit 1
fi
echo "install_chromium: installed"
report

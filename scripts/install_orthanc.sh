#!/usr/bin/env bash
# Install the Orthanc PACS and its DICOMweb plugin (Debian packages `orthanc`, `orthanc-dicomweb`) when missing.
#
# Idempotent: exits at once when the `Orthanc` binary and the DICOMweb plugin are both there. Safe to run from
# several processes at once (pytest-xdist workers): callers are serialised with flock and apt waits for its lock.
# It never leaves a system Orthanc service running or enabled: the tests start their own Orthanc on free ports.
#
# Used by tests/serving/conftest.py (the `orthanc` fixture) and the Makefile's test target. Needs root or sudo.
set -euo pipefail

PLUGIN=/usr/share/orthanc/plugins/libOrthancDicomWeb.so
LOCK=${TMPDIR:-/tmp}/install_orthanc.lock

installed() {
    { command -v Orthanc >/dev/null 2>&1 || [ -x /usr/sbin/Orthanc ]; } && [ -e "$PLUGIN" ]
}

report() {
    dpkg-query -W -f='${Package} ${Version}\n' orthanc orthanc-dicomweb 2>/dev/null || true
    echo "DICOMweb plugin: $PLUGIN"
}

if installed; then
    echo "install_orthanc: Orthanc and the DICOMweb plugin are already installed"
    report
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "install_orthanc: error: apt-get not found; install Orthanc (>= 1.10) and its DICOMweb plugin by hand," \
         "or set ORTHANC_BINARY and ORTHANC_DICOMWEB_PLUGIN for the tests" >&2
    exit 1
fi

# shellcheck source=lib/sudo.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/sudo.sh"
find_sudo install_orthanc

exec 9>"$LOCK"
flock 9
if installed; then  # another process installed it while we waited for the lock
    echo "install_orthanc: installed by a concurrent run"
    report
    exit 0
fi

# Keep the package's postinst from starting a system service (policy-rc.d exit 101 = "action forbidden").
POLICY=/usr/sbin/policy-rc.d
CREATED_POLICY=0
if [ ! -e "$POLICY" ]; then
    printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee "$POLICY" >/dev/null
    "${SUDO[@]}" chmod 755 "$POLICY"
    CREATED_POLICY=1
fi
cleanup() { if [ "$CREATED_POLICY" = 1 ]; then "${SUDO[@]}" rm -f "$POLICY"; fi; }
trap cleanup EXIT

APT_OPTS=(-o DPkg::Lock::Timeout=300 -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)
export DEBIAN_FRONTEND=noninteractive
echo "install_orthanc: apt-get update"
"${SUDO[@]}" apt-get "${APT_OPTS[@]}" update -qq
echo "install_orthanc: apt-get install orthanc orthanc-dicomweb"
"${SUDO[@]}" apt-get "${APT_OPTS[@]}" install -y -qq --no-install-recommends orthanc orthanc-dicomweb

# The package enables orthanc.service; the tests run their own instance, so disable and stop the system one.
if command -v systemctl >/dev/null 2>&1; then
    "${SUDO[@]}" systemctl disable orthanc >/dev/null 2>&1 || true
    "${SUDO[@]}" systemctl stop orthanc >/dev/null 2>&1 || true
fi
if command -v service >/dev/null 2>&1; then
    "${SUDO[@]}" service orthanc stop >/dev/null 2>&1 || true
fi

if ! installed; then
    echo "install_orthanc: error: apt-get finished but Orthanc or $PLUGIN is still missing" >&2
    exit 1
fi
echo "install_orthanc: installed"
report

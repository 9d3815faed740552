#!/usr/bin/env bash
# Build `.venv-infra`: the tools that check infra/terraform and deploy/k8s without a cloud, a cluster or a
# terraform binary (tests/infra/).
#
# Why a venv of its own: checkov pins dozens of packages exactly (boto3, packaging<24, networkx<2.7, ...) that
# would clash with the project's pins in pyproject.toml. Inside it, checkov brings bc-python-hcl2 (Bridgecrew's
# fork), which installs the same import name `hcl2` as python-hcl2; python-hcl2 therefore goes into a folder of
# its own (`$VENV/python-hcl2`, `pip install --target`) that the tests put first on PYTHONPATH.
#
# Installs (pinned): checkov, kubernetes-validate (Kubernetes OpenAPI schemas, offline), python-hcl2.
# Idempotent (stamp file `.venv-infra/.installed-<hash of this script>`); concurrent callers are serialised
# with flock. The venv carries its own .gitignore (`*`), so it never shows up as untracked files.
#
# Usage: bash scripts/install_infra_tools.sh            (env INFRA_VENV overrides the venv path)
set -euo pipefail

CHECKOV_VERSION=3.3.30
KUBERNETES_VALIDATE_VERSION=1.37.0
PYTHON_HCL2_VERSION=8.1.4

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${INFRA_VENV:-$REPO/.venv-infra}
PYTHON=${PYTHON:-python3.11}
LOCK=${TMPDIR:-/tmp}/install_infra_tools.lock

KEY=$(sha256sum "${BASH_SOURCE[0]}" | cut -c1-12)
STAMP=$VENV/.installed-$KEY

if [ -e "$STAMP" ]; then
    echo "install_infra_tools: $VENV is up to date ($(cat "$STAMP"))"
    exit 0
fi

exec 9>"$LOCK"
flock 9
if [ -e "$STAMP" ]; then
    echo "install_infra_tools: installed by a concurrent run"
    exit 0
fi
started=$(date +%s)

command -v "$PYTHON" >/dev/null || { echo "install_infra_tools: error: $PYTHON not found" >&2; exit 2; }
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
echo '*' > "$VENV/.gitignore"  # git ignores the venv wherever it is (as venvs made by Python 3.13+ do)
rm -f "$VENV"/.installed-*

quiet_pip() {  # pip, without the warnings about this machine's missing extra-index folders
    "$VENV/bin/python" -m pip "$@" 2>&1 | { grep -v "is ignored: it is neither a file nor" || true; }
}
echo "install_infra_tools: pip install checkov==$CHECKOV_VERSION kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
quiet_pip install --quiet --disable-pip-version-check \
    "checkov==$CHECKOV_VERSION" "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
echo "install_infra_tools: pip install --target $VENV/python-hcl2 python-hcl2==$PYTHON_HCL2_VERSION"
rm -rf "$VENV/python-hcl2"
quiet_pip install --quiet --disable-pip-version-check --target "$VENV/python-hcl2" \
    "python-hcl2==$PYTHON_HCL2_VERSION"

# --- check: each tool imports, and python-hcl2 (not checkov's fork) is the `hcl2` found first on its path
"$VENV/bin/checkov" --version >/dev/null
"$VENV/bin/python" -c "import kubernetes_validate"
PYTHONPATH="$VENV/python-hcl2" "$VENV/bin/python" - "$PYTHON_HCL2_VERSION" <<'EOF'
import sys
from importlib.metadata import version

import hcl2

if version("python-hcl2") != sys.argv[1] or "python-hcl2" not in hcl2.__file__:
    sys.exit(f"install_infra_tools: error: hcl2 is imported from {hcl2.__file__}, not python-hcl2 {sys.argv[1]}")
EOF

size=$(du -sh "$VENV" | cut -f1)
echo "checkov $CHECKOV_VERSION, kubernetes-validate $KUBERNETES_VALIDATE_VERSION, python-hcl2 $PYTHON_HCL2_VERSION," \
     "$(($(date +%s) - started)) s, $size, $(date -u +%FT%TZ)" > "$STAMP"
echo "install_infra_tools: installed in $(($(date +%s) - started)) s, $VENV is $size"

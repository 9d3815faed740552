#!/usr/bin/env bash
# Build the Triton server-side environment `.venv-triton` (PyTriton's bundled `tritonserver` + the model runtime).
#
# Why a separate venv from Debian's python3.11: PyTriton runs the model in Triton's Python backend, whose stub
# (`pytriton/tritonserver/python_backend_stubs/3.11/triton_python_backend_stub`) links `libpython3.11.so.1.0` with
# no RPATH, so the loader takes the system one (Debian 3.11.2, /lib/x86_64-linux-gnu) while the stub's sys.prefix
# (and so its standard library) is the interpreter that started PyTriton. Under pyenv 3.11.7 that mixes a 3.11.2
# runtime with a 3.11.7 `threading.py`, which calls `_thread.RLock._recursion_count` (a C attribute 3.11.2 lacks):
# "'_thread.RLock' object has no attribute '_recursion_count'". A venv of Debian's /usr/bin/python3.11 makes the
# interpreter and the stub's libpython the same build.
#
# Installs: nvidia-pytriton (pinned below; it brings tritonclient), then the project without its dependencies plus
# only the runtime packages the model needs (torch, transformers, onnxruntime, ...), at the versions pinned in
# pyproject.toml. Idempotent (stamp file `.venv-triton/.installed-<hash of this script + pyproject>`); concurrent
# callers are serialised with flock. Needs root (or password-less sudo) only if Debian packages are missing.
#
# Usage: bash scripts/install_triton.sh            (env TRITON_VENV overrides the venv path)
set -euo pipefail

PYTRITON_VERSION=0.7.0
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${TRITON_VENV:-$REPO/.venv-triton}
PY=/usr/bin/python3.11
LOCK=${TMPDIR:-/tmp}/install_triton.lock
# The project's runtime packages the served model imports (pins taken from pyproject.toml).
RUNTIME_PACKAGES=(torch numpy scipy pandas Pillow PyYAML tqdm transformers tokenizers onnx onnxruntime onnxscript protobuf cryptography)

KEY=$(cat "${BASH_SOURCE[0]}" "$REPO/pyproject.toml" | sha256sum | cut -c1-12)
STAMP=$VENV/.installed-$KEY

if [ -e "$STAMP" ]; then
    echo "install_triton: $VENV is up to date ($(cat "$STAMP"))"
    exit 0
fi

exec 9>"$LOCK"
flock 9
if [ -e "$STAMP" ]; then
    echo "install_triton: installed by a concurrent run"
    exit 0
fi
started=$(date +%s)

# --- Debian's Python 3.11 with its shared libpython and venv support
missing=()
[ -x "$PY" ] || missing+=(python3.11)
dpkg -s python3.11-venv >/dev/null 2>&1 || missing+=(python3.11-venv)
dpkg -s libpython3.11 >/dev/null 2>&1 || missing+=(libpython3.11)
if [ ${#missing[@]} -gt 0 ]; then
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "install_triton: error: needs Debian packages ${missing[*]} (apt-get not found)" >&2
        exit 1
    fi
    # shellcheck source=lib/sudo.sh
    . "$REPO/scripts/lib/sudo.sh"
    find_sudo install_triton
    APT_OPTS=(-o DPkg::Lock::Timeout=300)
    export DEBIAN_FRONTEND=noninteractive
    echo "install_triton: apt-get install ${missing[*]}"
    "${SUDO[@]}" apt-get "${APT_OPTS[@]}" update -qq
    "${SUDO[@]}" apt-get "${APT_OPTS[@]}" install -y -qq --no-install-recommends "${missing[@]}"
fi

# --- the venv (rebuilt if it was made from another interpreter)
if [ -x "$VENV/bin/python" ] && ! grep -q "^home = /usr/bin$" "$VENV/pyvenv.cfg" 2>/dev/null; then
    echo "install_triton: $VENV was not made from $PY; rebuilding it"
    rm -rf "$VENV"
fi
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
rm -f "$VENV"/.installed-*

pins=$("$VENV/bin/python" - "$REPO/pyproject.toml" "${RUNTIME_PACKAGES[@]}" <<'EOF'
import re, sys, tomllib
deps = tomllib.load(open(sys.argv[1], "rb"))["project"]["dependencies"]
by_name = {re.split(r"[=<>!~\[ ;]", d, maxsplit=1)[0].lower(): d for d in deps}
missing = [n for n in sys.argv[2:] if n.lower() not in by_name]
if missing:
    sys.exit(f"not in pyproject.toml dependencies: {missing}")
print("\n".join(by_name[n.lower()] for n in sys.argv[2:]))
EOF
)
echo "install_triton: pip install nvidia-pytriton==$PYTRITON_VERSION and the model runtime"
# shellcheck disable=SC2086
quiet_pip() {  # pip, without the warnings about this machine's missing extra-index folders
    "$VENV/bin/python" -m pip install --quiet "$@" 2>&1 | { grep -v "is ignored: it is neither a file nor" || true; }
}
quiet_pip "nvidia-pytriton==$PYTRITON_VERSION" $pins
quiet_pip --no-deps -e "$REPO"

# --- check: the stub's libpython is the same Python build as this interpreter (the cause of the RLock failure)
"$VENV/bin/python" - <<'EOF'
import ctypes, pathlib, re, subprocess, sys
import pytriton, torch, onnxruntime, transformers  # noqa: F401
import serving.backends, serving.triton_server  # noqa: F401,E401
stub = pathlib.Path(pytriton.__file__).parent / "tritonserver/python_backend_stubs/3.11/triton_python_backend_stub"
ldd = subprocess.run(["ldd", str(stub)], capture_output=True, text=True).stdout
found = re.search(r"libpython3\.11\.so\S* => (\S+)", ldd)
if not found:
    sys.exit(f"install_triton: error: the stub's libpython3.11 is not found:\n{ldd}")
lib = ctypes.CDLL(found.group(1))
lib.Py_GetVersion.restype = ctypes.c_char_p
stub_version = lib.Py_GetVersion().decode().split()[0]
print(f"install_triton: venv python {sys.version.split()[0]}, stub libpython {stub_version} ({found.group(1)})")
if stub_version != sys.version.split()[0]:
    sys.exit("install_triton: error: Triton's Python-backend stub would run another Python build than this venv's")
EOF

size=$(du -sh "$VENV" | cut -f1)
echo "pytriton $PYTRITON_VERSION, $(($(date +%s) - started)) s, $size, $(date -u +%FT%TZ)" > "$STAMP"
echo "install_triton: installed in $(($(date +%s) - started)) s, $VENV is $size"

# Sourced by the install scripts: `find_sudo NAME` sets the array SUDO to () when running as root, to (sudo -n)
# when password-less sudo works, and otherwise prints "NAME: error: ..." and exits 1.
find_sudo() {
    SUDO=()
    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
            SUDO=(sudo -n)
        else
            echo "$1: error: installing Debian packages needs root (or password-less sudo)" >&2
            exit 1
        fi
    fi
}

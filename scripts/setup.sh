#!/usr/bin/env bash
# Set up everything peerctl needs on a fresh Debian machine, idempotently:
# Debian packages (BIRD 2, GoBGP, bgpdump, bgpq4, iproute2; used by the lab, tests and benchmarks),
# a virtualenv in .venv, and peerctl installed into it with its test tools.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v bird >/dev/null 2>&1 || need+=(bird2)
command -v gobgpd >/dev/null 2>&1 || need+=(gobgpd)
command -v bgpdump >/dev/null 2>&1 || need+=(bgpdump)
command -v bgpq4 >/dev/null 2>&1 || need+=(bgpq4)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need+=(python3-venv)
if [ ${#need[@]} -gt 0 ]; then
    echo "setup: installing Debian packages: ${need[*]}" >&2
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
# Debian's bird2 package starts a system BIRD; peerctl's tests run their own instances.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet bird 2>/dev/null; then
    systemctl stop bird || true
fi

if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
stamp=.venv/.peerctl-installed
# Reinstall when the packaging or a C accelerator changed (the editable install builds those in place).
if [ ! -f "$stamp" ] || [ -n "$(find pyproject.toml setup.py orchestrator speakers policies -newer "$stamp" \
        \( -name pyproject.toml -o -name setup.py -o -name '*.c' -o -name '*.h' \) -print -quit)" ]; then
    .venv/bin/python -m pip install -q --upgrade pip >/dev/null
    .venv/bin/python -m pip install -q -e '.[test]'
    touch "$stamp"
fi

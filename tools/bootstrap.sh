#!/usr/bin/env bash
# bootstrap.sh: make ./.venv ready to run and test flashcache on a fresh Debian 12 machine.
# Installs missing Debian packages with apt (as root; otherwise prints the command), creates
# the virtualenv, and installs the package in editable mode, which compiles the cffi modules.
# Idempotent: `make` calls it whenever pyproject.toml, setup.py or a C source changes.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
need=()
command -v "$PY" >/dev/null || need+=(python3)
command -v gcc >/dev/null || need+=(gcc)
[ -e /usr/include/linux/io_uring.h ] || need+=(linux-libc-dev)
[ -e /usr/include/xxhash.h ] || need+=(libxxhash-dev)
if command -v "$PY" >/dev/null; then
  "$PY" -c 'import ensurepip, venv' 2>/dev/null || need+=(python3-venv)
  inc=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
  [ -e "$inc/Python.h" ] || need+=(python3-dev)
fi
extra=("$@")   # optional extra Debian packages a target needs (fio, nvme-cli, memcached, ...)
for p in "${extra[@]}"; do
  case $p in
    fio|nvme-cli|memcached|nutcracker) command -v "${p%%-*}" >/dev/null || dpkg -s "$p" >/dev/null 2>&1 || need+=("$p");;
    *) dpkg -s "$p" >/dev/null 2>&1 || need+=("$p");;
  esac
done
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "bootstrap: installing Debian packages: ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  else
    echo "bootstrap: missing Debian packages: ${need[*]}" >&2
    echo "bootstrap: run: sudo apt-get install -y ${need[*]}" >&2
    exit 1
  fi
fi
[ "${#extra[@]}" -gt 0 ] && [ -e .venv/.installed ] && exit 0
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip setuptools wheel cffi
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'
.venv/bin/python -c 'import flashcache.uring' 2>/dev/null || true
touch .venv/.installed
echo "bootstrap: .venv ready ($(.venv/bin/python --version))"

#!/usr/bin/env bash
# Sets up everything PlaneSSL needs on a fresh machine, idempotently:
#   - system tools the tests use (dicom3tools' dciodvfy, dcmtk), when run as root with apt;
#   - a virtual environment in .venv with planessl installed (editable) and its extras.
# torch: on CI, or on a machine with no NVIDIA driver, the CPU build 2.13.0 is pinned
# (PLANESSL_TORCH overrides); elsewhere pip picks the normal wheel for the platform.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${PLANESSL_VENV:-.venv}
PY=${PYTHON:-python3}
EXTRAS=${PLANESSL_EXTRAS:-train,test}

need_apt=()
command -v dciodvfy >/dev/null 2>&1 || need_apt+=(dicom3tools)
command -v dcmcjpeg >/dev/null 2>&1 || need_apt+=(dcmtk)
# EGL + Mesa (llvmpipe) so VTK renders slice views offscreen in the slicer-core tests.
if command -v dpkg-query >/dev/null 2>&1; then
  for pkg in libegl1 libegl-mesa0 libgl1-mesa-dri libgl1 libglx0; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || need_apt+=("$pkg")
  done
fi
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "bootstrap: installing ${need_apt[*]} (apt)"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
  else
    echo "bootstrap: note: ${need_apt[*]} not installed (needs root + apt); tests that use them will be skipped" >&2
  fi
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "bootstrap: creating $VENV"
  "$PY" -m venv "$VENV"
fi
stamp="$VENV/.planessl-installed"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ scripts/bootstrap.sh -nt "$stamp" ]; then
  if [ -z "${PLANESSL_TORCH:-}" ]; then
    if [ "${CI:-}" = true ] || ! command -v nvidia-smi >/dev/null 2>&1; then
      PLANESSL_TORCH="torch==2.13.0"
    else
      PLANESSL_TORCH="torch>=2.2"
    fi
  fi
  echo "bootstrap: installing planessl[$EXTRAS] with $PLANESSL_TORCH"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip >/dev/null
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check "$PLANESSL_TORCH"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e ".[$EXTRAS]" "$PLANESSL_TORCH"
  touch "$stamp"
fi

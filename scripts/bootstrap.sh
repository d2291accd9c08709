#!/usr/bin/env bash
# Install everything the project needs on a fresh machine; idempotent and quick when done.
#   scripts/bootstrap.sh          runtime: Debian ffmpeg + espeak-ng + sox, .venv with the project
#   scripts/bootstrap.sh --test   also the test tools and Debian chromium (browser tests)
set -euo pipefail
cd "$(dirname "$0")/.."

want_test=0
[ "${1:-}" = "--test" ] && want_test=1

# --- Debian packages (only as root, only when missing) ------------------------------
need=()
command -v ffmpeg >/dev/null || need+=(ffmpeg)
command -v espeak-ng >/dev/null || need+=(espeak-ng)
command -v sox >/dev/null || need+=(sox)
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
PY=${PYTHON:-python3}
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
digest=$(sha256sum pyproject.toml scripts/bootstrap.sh | sha256sum | cut -c1-16)
if [ "$(cat "$stamp" 2>/dev/null)" != "$digest" ]; then
  echo "bootstrap: installing Python packages (first run takes several minutes)"
  .venv/bin/python -m pip install -q --upgrade pip
  # torch first and alone, so no resolver ever picks another build (pyproject.toml's comment).
  .venv/bin/python -m pip install -q torch==2.14.1 torchaudio==2.11.0
  .venv/bin/python -m pip install -q -e ".${extra}"
  echo "$digest" > "$stamp"
fi
echo "bootstrap: ready"

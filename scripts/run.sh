#!/usr/bin/env bash
# Start the recording server and JupyterLab on notebooks/; Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."
PORT=${1:-8765}; LAB_PORT=${2:-8888}; DATA=${3:-data}
export HF_HUB_OFFLINE=1
.venv/bin/python -m server --host 127.0.0.1 --port "$PORT" --data-dir "$DATA" --live-warm &
server_pid=$!
trap 'kill $server_pid 2>/dev/null; wait $server_pid 2>/dev/null' EXIT INT TERM
export WORKBENCH_SERVER_URL="http://127.0.0.1:$PORT"
# notebooks keep their corpora and experiment caches across kernels here (git-ignored)
export WORKBENCH_NOTEBOOK_DATA=${WORKBENCH_NOTEBOOK_DATA:-$(realpath -m "$DATA")/notebooks}
echo "Recorder page: $WORKBENCH_SERVER_URL/   JupyterLab: http://127.0.0.1:$LAB_PORT/lab"
.venv/bin/jupyter lab --no-browser --ip 127.0.0.1 --port "$LAB_PORT" \
  --ServerApp.root_dir=notebooks --allow-root

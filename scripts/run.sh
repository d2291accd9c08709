#!/usr/bin/env bash
# Start the recording server and JupyterLab on notebooks/; Ctrl-C stops both, and so does
# the end of either one. A port in use, or a server that never answers, stops the start.
set -euo pipefail
cd "$(dirname "$0")/.."
PORT=${1:-8765}; LAB_PORT=${2:-8888}; DATA=${3:-data}; SCRIPT=run.sh
export HF_HUB_OFFLINE=1
export WORKBENCH_SERVER_URL="http://127.0.0.1:$PORT"
source scripts/pair.sh
port_free "$PORT" || fail "port $PORT is in use (another server?); pick another port"
port_free "$LAB_PORT" || fail "port $LAB_PORT (JupyterLab) is in use; pick another port"
start_server
# notebooks keep their corpora and experiment caches across kernels here (git-ignored)
export WORKBENCH_NOTEBOOK_DATA=${WORKBENCH_NOTEBOOK_DATA:-$(realpath -m "$DATA")/notebooks}
echo "Recorder page: $WORKBENCH_SERVER_URL/   JupyterLab: http://127.0.0.1:$LAB_PORT/lab"
run_beside JupyterLab .venv/bin/jupyter lab --no-browser --ip 127.0.0.1 --port "$LAB_PORT" \
  --ServerApp.port_retries=0 --ServerApp.root_dir=notebooks --allow-root

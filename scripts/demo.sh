#!/usr/bin/env bash
# Start the recording server and Voilà on notebooks/dashboard.ipynb; Ctrl-C stops both, and so
# does the end of either one. A port in use, or a server that never answers, stops the start.
set -euo pipefail
cd "$(dirname "$0")/.."
PORT=${1:-8765}; DEMO_PORT=${2:-8866}; DATA=${3:-data}; SCRIPT=demo.sh
export HF_HUB_OFFLINE=1
export WORKBENCH_SERVER_URL="http://127.0.0.1:$PORT"
source scripts/pair.sh
port_free "$PORT" || fail "port $PORT is in use (another server?); pick another port"
port_free "$DEMO_PORT" || fail "port $DEMO_PORT (Voilà) is in use; pick another port"
start_server  # (the kernel reaches the server as the page opens)
# the dashboard records from the microphone (no file is played)
export WORKBENCH_DASHBOARD_PLAY=
export WORKBENCH_NOTEBOOK_DATA=${WORKBENCH_NOTEBOOK_DATA:-$(realpath -m "$DATA")/notebooks}
echo "Dashboard: http://127.0.0.1:$DEMO_PORT/   Recorder page: $WORKBENCH_SERVER_URL/"
run_beside Voilà .venv/bin/voila notebooks/dashboard.ipynb --no-browser --Voila.ip=127.0.0.1 \
  --port="$DEMO_PORT" --Voila.port_retries=0

#!/usr/bin/env bash
# Start the recording server and Voilà on notebooks/dashboard.ipynb; Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."
PORT=${1:-8765}; DEMO_PORT=${2:-8866}; DATA=${3:-data}
export HF_HUB_OFFLINE=1
# --live-warm: a live worker has its models loaded before Record is pressed
.venv/bin/python -m server --host 127.0.0.1 --port "$PORT" --data-dir "$DATA" --live-warm &
server_pid=$!
voila_pid=
trap 'kill $server_pid $voila_pid 2>/dev/null; wait $server_pid $voila_pid 2>/dev/null' EXIT INT TERM
export WORKBENCH_SERVER_URL="http://127.0.0.1:$PORT"
# the dashboard records from the microphone (no file is played)
export WORKBENCH_DASHBOARD_PLAY=
export WORKBENCH_NOTEBOOK_DATA=${WORKBENCH_NOTEBOOK_DATA:-$(realpath -m "$DATA")/notebooks}
for _ in $(seq 100); do  # the kernel reaches the server as the page opens: wait for it
  .venv/bin/python -c "import urllib.request as u; u.urlopen('$WORKBENCH_SERVER_URL/api/health', timeout=1)" \
    2>/dev/null && break
  sleep 0.2
done
echo "Dashboard: http://127.0.0.1:$DEMO_PORT/   Recorder page: $WORKBENCH_SERVER_URL/"
.venv/bin/voila notebooks/dashboard.ipynb --no-browser --Voila.ip=127.0.0.1 --port="$DEMO_PORT" \
  --Voila.port_retries=0 &
voila_pid=$!
wait $voila_pid  # in the background, so that a signal to this script reaches the trap at once

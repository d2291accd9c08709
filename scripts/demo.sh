#!/usr/bin/env bash
# Start the recording server and Voilà on notebooks/dashboard.ipynb; Ctrl-C stops both, and so
# does the end of either one. A port in use, or a server that never answers, stops the start.
set -euo pipefail
cd "$(dirname "$0")/.."
PORT=${1:-8765}; DEMO_PORT=${2:-8866}; DATA=${3:-data}
export HF_HUB_OFFLINE=1
export WORKBENCH_SERVER_URL="http://127.0.0.1:$PORT"
fail() { echo "demo.sh: $*" >&2; exit 1; }
port_free() {  # bound as the server and Voilà bind (SO_REUSEADDR): only a listener is in the way
  .venv/bin/python -c "import socket, sys; s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(('127.0.0.1', int(sys.argv[1])))" \
    "$1" 2>/dev/null
}
# another server on PORT would answer the health check below for this one
port_free "$PORT" || fail "port $PORT is in use (another server?); pick another port"
port_free "$DEMO_PORT" || fail "port $DEMO_PORT (Voilà) is in use; pick another port"
server_pid=; voila_pid=
# One SIGTERM each from here. The server runs in its own session so that a Ctrl-C does not
# reach it too: a second signal during aiohttp's shutdown kills it halfway. Voilà runs in
# the background (SIGINT ignored), so that a signal to this script reaches the trap at once.
trap 'kill $server_pid $voila_pid 2>/dev/null; wait $server_pid $voila_pid 2>/dev/null' EXIT
trap 'exit 130' INT; trap 'exit 143' TERM; trap 'exit 129' HUP
# --live-warm: a live worker has its models loaded before Record is pressed
setsid .venv/bin/python -m server --host 127.0.0.1 --port "$PORT" --data-dir "$DATA" --live-warm &
server_pid=$!
# the dashboard records from the microphone (no file is played)
export WORKBENCH_DASHBOARD_PLAY=
export WORKBENCH_NOTEBOOK_DATA=${WORKBENCH_NOTEBOOK_DATA:-$(realpath -m "$DATA")/notebooks}
deadline=$((SECONDS + 60))  # the kernel reaches the server as the page opens: wait for it
until .venv/bin/python -c "import sys, urllib.request as u; u.urlopen(sys.argv[1], timeout=1)" \
    "$WORKBENCH_SERVER_URL/api/health" 2>/dev/null; do
  kill -0 "$server_pid" 2>/dev/null || fail "the server exited before it answered (see above)"
  ((SECONDS < deadline)) || fail "the server did not answer on $WORKBENCH_SERVER_URL within 60 s"
  sleep 0.2
done
echo "Dashboard: http://127.0.0.1:$DEMO_PORT/   Recorder page: $WORKBENCH_SERVER_URL/"
.venv/bin/voila notebooks/dashboard.ipynb --no-browser --Voila.ip=127.0.0.1 --port="$DEMO_PORT" \
  --Voila.port_retries=0 &
voila_pid=$!
status=0; wait -n -p ended "$server_pid" "$voila_pid" || status=$?
[[ $ended == "$server_pid" ]] && name=server || name=Voilà
echo "demo.sh: $name exited (status $status); stopping the other" >&2
exit "$status"

#!/usr/bin/env bash
# Start the recording server and JupyterLab on notebooks/; Ctrl-C stops both, and so does
# the end of either one. A port in use, or a server that never answers, stops the start.
set -euo pipefail
cd "$(dirname "$0")/.."
PORT=${1:-8765}; LAB_PORT=${2:-8888}; DATA=${3:-data}
export HF_HUB_OFFLINE=1
export WORKBENCH_SERVER_URL="http://127.0.0.1:$PORT"
fail() { echo "run.sh: $*" >&2; exit 1; }
port_free() {  # bound as the server and Jupyter bind (SO_REUSEADDR): only a listener is in the way
  .venv/bin/python -c "import socket, sys; s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(('127.0.0.1', int(sys.argv[1])))" \
    "$1" 2>/dev/null
}
# another server on PORT would answer the health check below for this one
port_free "$PORT" || fail "port $PORT is in use (another server?); pick another port"
port_free "$LAB_PORT" || fail "port $LAB_PORT (JupyterLab) is in use; pick another port"
server_pid=; lab_pid=
# One SIGTERM each from here. The server runs in its own session so that a Ctrl-C does not
# reach it too: a second signal during aiohttp's shutdown kills it halfway. JupyterLab runs
# in the background (SIGINT ignored, stdin not the terminal: no "Shut down?" question).
trap 'kill $server_pid $lab_pid 2>/dev/null; wait $server_pid $lab_pid 2>/dev/null' EXIT
trap 'exit 130' INT; trap 'exit 143' TERM; trap 'exit 129' HUP
setsid .venv/bin/python -m server --host 127.0.0.1 --port "$PORT" --data-dir "$DATA" --live-warm &
server_pid=$!
deadline=$((SECONDS + 60))  # the server answers in about 1 s
until .venv/bin/python -c "import sys, urllib.request as u; u.urlopen(sys.argv[1], timeout=1)" \
    "$WORKBENCH_SERVER_URL/api/health" 2>/dev/null; do
  kill -0 "$server_pid" 2>/dev/null || fail "the server exited before it answered (see above)"
  ((SECONDS < deadline)) || fail "the server did not answer on $WORKBENCH_SERVER_URL within 60 s"
  sleep 0.2
done
# notebooks keep their corpora and experiment caches across kernels here (git-ignored)
export WORKBENCH_NOTEBOOK_DATA=${WORKBENCH_NOTEBOOK_DATA:-$(realpath -m "$DATA")/notebooks}
echo "Recorder page: $WORKBENCH_SERVER_URL/   JupyterLab: http://127.0.0.1:$LAB_PORT/lab"
.venv/bin/jupyter lab --no-browser --ip 127.0.0.1 --port "$LAB_PORT" --ServerApp.port_retries=0 \
  --ServerApp.root_dir=notebooks --allow-root &
lab_pid=$!
# in the background, so that a signal reaches the trap at once
status=0; wait -n -p ended "$server_pid" "$lab_pid" || status=$?
[[ $ended == "$server_pid" ]] && name=server || name=JupyterLab
echo "run.sh: $name exited (status $status); stopping the other" >&2
exit "$status"

# Sourced by run.sh and demo.sh: the recording server beside one notebook server (JupyterLab
# or Voilà), started and stopped together. Needs SCRIPT (for messages), PORT and DATA.
fail() { echo "$SCRIPT: $*" >&2; exit 1; }
port_free() {  # bound as the servers bind (SO_REUSEADDR): only a listener is in the way
  .venv/bin/python -c "import socket, sys; s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(('127.0.0.1', int(sys.argv[1])))" \
    "$1" 2>/dev/null
}
server_pid=; other_pid=
# One SIGTERM each from here. The server runs in its own session so that a Ctrl-C does not
# reach it too: a second signal during aiohttp's shutdown kills it halfway. The other runs
# in the background (SIGINT ignored, stdin not the terminal: JupyterLab asks no "Shut down?"),
# so that a signal to the script reaches the trap at once.
# (`|| :`: with no pid yet, or a child ended by the kill, the script keeps its own status)
trap 'kill $server_pid $other_pid 2>/dev/null || :; wait $server_pid $other_pid 2>/dev/null || :' EXIT
trap 'exit 130' INT; trap 'exit 143' TERM; trap 'exit 129' HUP

start_server() {  # in the background (--live-warm: a live worker waits with its models
  # loaded); returns once it answers /api/health, fails if it exits or never answers
  # (another server on PORT would answer for it: port_free first)
  setsid .venv/bin/python -m server --host 127.0.0.1 --port "$PORT" --data-dir "$DATA" \
    --live-warm &
  server_pid=$!
  # It answers in about 1 s; after a crash, start-up recovery first rebuilds the audio of
  # the recordings left open (about 7 s per 30-minute WebM here), so it may take minutes.
  local deadline=$((SECONDS + 900)) told=$((SECONDS + 15))
  until .venv/bin/python -c "import sys, urllib.request as u; u.urlopen(sys.argv[1], timeout=1)" \
      "$WORKBENCH_SERVER_URL/api/health" 2>/dev/null; do
    kill -0 "$server_pid" 2>/dev/null || fail "the server exited before it answered (see above)"
    ((SECONDS < deadline)) || fail "the server did not answer on $WORKBENCH_SERVER_URL within 900 s"
    if ((told && SECONDS >= told)); then
      echo "$SCRIPT: the server is still starting (after a crash it rebuilds the recordings left" \
        "open first; its log above says which); waiting up to 900 s" >&2
      told=0
    fi
    sleep 0.2
  done
}

run_beside() {  # NAME COMMAND...: COMMAND in the background until it or the server ends
  local name=$1 status=0 ended
  shift
  "$@" &
  other_pid=$!
  wait -n -p ended "$server_pid" "$other_pid" || status=$?
  [[ $ended == "$server_pid" ]] && name=server
  echo "$SCRIPT: $name exited (status $status); stopping the other" >&2
  exit "$status"
}

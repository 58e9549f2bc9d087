#!/usr/bin/env bash
# Builds Switchyard, starts cd-registry on its embedded store and walks a
# short quickstart against it; when a Docker engine answers, also the main
# job (scripts/demo.sh): an agent, nginx following the registry on
# SWITCHYARD_DEMO_LISTEN (127.0.0.1:8080) and two blue-green deploys of a
# demo service. It prints the dashboard's address (the registry's /ui/ on
# SWITCHYARD_METRICS_LISTEN, 127.0.0.1:7402). Then leaves it all running (Ctrl-C stops it and removes
# what it started). Settings come from the same SWITCHYARD_* variables as
# the flags. SWITCHYARD_QUICKSTART_EXIT=1 stops after the quickstart.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
ensure_build_tools

listen=${SWITCHYARD_LISTEN:-127.0.0.1:7400}
metrics=${SWITCHYARD_METRICS_LISTEN:-127.0.0.1:7402}
data_dir=${SWITCHYARD_DATA_DIR:-./switchyard-data}
export SWITCHYARD_REGISTRY=${SWITCHYARD_REGISTRY:-http://$listen}

echo "==> building" >&2
cargo build --quiet --bins
bin=target/debug

"$bin/cd-registry" --listen "$listen" --metrics-listen "$metrics" --data-dir "$data_dir" &
registry=$!
stop() { kill -TERM "$registry" 2>/dev/null && wait "$registry" 2>/dev/null || true; }
trap stop EXIT

for _ in $(seq 1 100); do
  "$bin/cdctl" services >/dev/null 2>&1 && break
  kill -0 "$registry" 2>/dev/null || { echo "cd-registry did not start (see its log above)" >&2; exit 1; }
  sleep 0.1
done

run() { echo "\$ cdctl $*"; "$bin/cdctl" "$@"; echo; }

echo "==> quickstart against $SWITCHYARD_REGISTRY"
run register --service web --address 127.0.0.1 --port 8081 --color blue --id web-blue-1
run register --service web --address 127.0.0.1 --port 8082 --color green --id web-green-1
# Flip the live color by compare-and-swap: from whatever it is to the next one.
current=$("$bin/cdctl" color web -o json | sed -E 's/.*"active_color":(null|"([a-z]+)").*/\2/')
next=$("$bin/cdctl" color web -o json | sed -E 's/.*"next_color":"([a-z]+)".*/\1/')
run set-color web "$next" --expect "${current:-none}"
run status web
run services

. scripts/demo.sh
if docker info >/dev/null 2>&1; then
  trap 'demo_stop; stop' EXIT
  demo_run
else
  echo "==> no Docker engine answers: the deploy demo is skipped (start dockerd to see it)"
fi

# dashboard_answers: whether the dashboard's first page answers 200.
dashboard_answers() {
  exec 3<>"/dev/tcp/${metrics%:*}/${metrics##*:}" 2>/dev/null || return 1
  printf 'GET /ui/ HTTP/1.0\r\nHost: %s\r\n\r\n' "$metrics" >&3
  local status
  status=$(head -n 1 <&3)
  exec 3<&-
  [[ $status == *" 200 "* ]]
}
if dashboard_answers; then
  echo "==> the dashboard: http://$metrics/ui/ answers (live; read-only until the registry runs with --auth)"
fi

if [ "${SWITCHYARD_QUICKSTART_EXIT:-0}" = 1 ]; then
  exit 0
fi
echo "==> cd-registry is serving on $listen (data in $data_dir); Ctrl-C stops it"
if [ "${#demo_pids[@]}" -gt 0 ]; then
  echo "==> the demo service answers at http://$demo_listen/demo/"
fi
wait "$registry"

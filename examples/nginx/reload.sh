#!/bin/sh
# Reloads nginx and returns only once it serves the new configuration: the
# new revision answers at /__switchyard/revision and no old worker still
# accepts connections. `nginx -s reload` alone returns before that, and
# `cdctl deploy` must not stop the old color while nginx may still use it.
#   reload.sh PREFIX PROBE_ADDRESS [WORKERS]   (SWITCHYARD_REVISION from cdctl template)
set -eu
prefix=$1
probe=$2
workers=${3:-1}
nginx -p "$prefix" -c "$prefix/nginx.conf" -s reload
fetch() {
  if command -v curl >/dev/null 2>&1; then curl -fsS "$1"
  elif command -v wget >/dev/null 2>&1; then wget -qO- "$1"
  else busybox wget -qO- "$1"; fi
}
i=0
while [ $i -lt 200 ]; do
  master=$(cat "$prefix/nginx.pid")
  served=$(fetch "http://$probe/__switchyard/revision" 2>/dev/null || true)
  accepting=$(pgrep -P "$master" -f 'worker process$' | wc -l)
  if [ "$served" = "${SWITCHYARD_REVISION:-}" ] && [ "$accepting" -le "$workers" ]; then
    exit 0
  fi
  sleep 0.05
  i=$((i + 1))
done
echo "nginx did not switch to revision ${SWITCHYARD_REVISION:-?} within 10s" >&2
exit 1

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
# Workers of MASTER still accepting (not "shutting down"): pgrep where it
# exists, else /proc (busybox has no pgrep, e.g. in the proxy image).
accepting_workers() {
  if command -v pgrep >/dev/null 2>&1; then
    pgrep -P "$1" -f 'worker process$' | wc -l
    return
  fi
  n=0
  for stat in /proc/[0-9]*/stat; do
    [ "$(cut -d' ' -f4 "$stat" 2>/dev/null)" = "$1" ] || continue
    case "$(tr '\0' ' ' <"${stat%/stat}/cmdline" 2>/dev/null | sed 's/ *$//')" in
      *"worker process") n=$((n + 1)) ;;
    esac
  done
  echo "$n"
}
i=0
while [ $i -lt 200 ]; do
  master=$(cat "$prefix/nginx.pid")
  served=$(fetch "http://$probe/__switchyard/revision" 2>/dev/null || true)
  accepting=$(accepting_workers "$master")
  if [ "$served" = "${SWITCHYARD_REVISION:-}" ] && [ "$accepting" -le "$workers" ]; then
    exit 0
  fi
  sleep 0.05
  i=$((i + 1))
done
echo "nginx did not switch to revision ${SWITCHYARD_REVISION:-?} within 10s" >&2
exit 1

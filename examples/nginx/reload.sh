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
# The cheapest client first: busybox wget starts in ~5 ms, curl in ~16
# (measured here); the loop runs one per check.
if command -v busybox >/dev/null 2>&1; then fetch() { busybox wget -qO- "$1"; }
elif command -v wget >/dev/null 2>&1; then fetch() { wget -qO- "$1"; }
else fetch() { curl -fsS "$1"; }; fi
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
# Every 10 ms, for at most 10 s: the revision first (one request), the
# workers (a /proc scan) only once the new revision answers.
i=0
while [ $i -lt 1000 ]; do
  served=$(fetch "http://$probe/__switchyard/revision" 2>/dev/null || true)
  if [ "$served" = "${SWITCHYARD_REVISION:-}" ] &&
    [ "$(accepting_workers "$(cat "$prefix/nginx.pid")")" -le "$workers" ]; then
    exit 0
  fi
  sleep 0.01
  i=$((i + 1))
done
echo "nginx did not switch to revision ${SWITCHYARD_REVISION:-?} within 10s" >&2
exit 1

#!/bin/sh
# Reloads HAProxy through its master socket (master-worker mode, `haproxy -W
# -S MASTER_SOCKET`): the master starts a new worker from the file, which
# takes over the listening sockets (seamless; `expose-fd listeners`), and
# the old worker finishes its requests in flight. `cdctl template
# --haproxy-runtime` then waits until the new worker serves every backend.
#   reload.sh MASTER_SOCKET
set -eu
echo reload | socat stdio "UNIX-CONNECT:$1" >/dev/null

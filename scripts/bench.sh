#!/usr/bin/env bash
# Benchmarks Switchyard's registry side by side with etcd, in one run, on this
# machine: a fresh cd-registry (sled) and a fresh single-node etcd on the
# same disk, the same client concurrency and durability (both fsync).
#   scripts/bench.sh            full run; writes BENCHMARKS.md and bench.json
#   scripts/bench.sh --smoke DIR  a few seconds, results in DIR (the tests use it)
# SWITCHYARD_BENCH_ONLY=writes,memory runs only those workloads (profiling);
# SWITCHYARD_BENCH_PERF=FILE records the registry with `perf record` into FILE.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
ensure_build_tools
ensure_command etcd etcd-server
ensure_command openssl openssl
ensure_command nginx nginx-light

scale=full
out=.
profile=release
if [ "${1:-}" = --smoke ]; then
  scale=smoke; out=${2:?--smoke takes an output folder}; profile=debug
fi
if [ "$profile" = release ]; then
  cargo build --quiet --release -p cd-registry -p cd-agent -p cdctl -p switchyard-bench
else
  cargo build --quiet -p cd-registry -p cd-agent -p cdctl -p switchyard-bench
fi
bin=target/$profile

work=$(mktemp -d -p "${TMPDIR:-/tmp}" switchyard-bench.XXXXXX)
pids=()
label="switchyard.bench=$$"
deploy_label="switchyard.bench.deploy=$$"
image="switchyard-bench-httpd:$$"
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if command -v docker >/dev/null 2>&1; then
    docker ps -aq --filter "label=$label" | xargs -r docker rm -f >/dev/null 2>&1 || true
    docker ps -aq --filter "label=$deploy_label" | xargs -r docker rm -f >/dev/null 2>&1 || true
    docker rmi -f "$image" >/dev/null 2>&1 || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT
# Below the ephemeral (and Docker's published-port) range, so nothing else
# takes the port before the server binds it.
free_port() {
  python3 -c '
import random, socket
while True:
    port = random.randrange(20000, 30000)
    try:
        socket.socket().bind(("127.0.0.1", port)); print(port); break
    except OSError:
        pass'
}

# start_pair NAME: a fresh cd-registry and a fresh etcd, each with its own
# data directory under $work; sets NAME_registry_port, NAME_registry_pid,
# NAME_etcd_port and NAME_etcd_pid.
start_pair() {
  local name=$1 registry_port etcd_port peer_port
  registry_port=$(free_port)
  # Room for the 10,000-watcher row beside the streams of the rows before it.
  "$bin/cd-registry" --listen "127.0.0.1:$registry_port" --data-dir "$work/$name-registry" --log warn \
    --metrics-listen off --max-watchers 20000 &
  pids+=($!)
  printf -v "${name}_registry_port" %s "$registry_port"
  printf -v "${name}_registry_pid" %s "$!"
  etcd_port=$(free_port); peer_port=$(free_port)
  etcd --name "bench-$name" --data-dir "$work/$name-etcd" \
    --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
    --listen-peer-urls "http://127.0.0.1:$peer_port" --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
    --initial-cluster "bench-$name=http://127.0.0.1:$peer_port" --logger zap --log-level error \
    --quota-backend-bytes 8589934592 >/dev/null 2>&1 &
  pids+=($!)
  printf -v "${name}_etcd_port" %s "$etcd_port"
  printf -v "${name}_etcd_pid" %s "$!"
  wait_registry "http://127.0.0.1:$registry_port"
}
# wait_registry URL FLAGS...: until cdctl, with FLAGS, lists its services.
wait_registry() {
  local url=$1; shift
  for _ in $(seq 1 100); do
    "$bin/cdctl" --registry "$url" "$@" services >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "the registry at $url did not answer" >&2; return 1
}

# Two more registries to price security: --auth on plaintext, and --auth
# with TLS (a CA and a certificate for 127.0.0.1 made here by openssl).
# Each writes its bootstrap admin token into $work.
start_secured() {
  local port
  port=$(free_port)
  "$bin/cd-registry" --listen "127.0.0.1:$port" --data-dir "$work/auth-registry" --log warn --metrics-listen off \
    --auth --bootstrap-token-file "$work/auth.token" &
  pids+=($!)
  auth_url="http://127.0.0.1:$port"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj /CN=bench-ca -keyout "$work/ca-key.pem" -out "$work/ca.pem" 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj /CN=bench \
    -keyout "$work/tls-key.pem" -out "$work/tls.csr" 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n' > "$work/tls.ext"
  openssl x509 -req -in "$work/tls.csr" -CA "$work/ca.pem" -CAkey "$work/ca-key.pem" \
    -CAcreateserial -days 2 -extfile "$work/tls.ext" -out "$work/tls.pem" 2>/dev/null
  port=$(free_port)
  "$bin/cd-registry" --listen "127.0.0.1:$port" --data-dir "$work/tls-registry" --log warn --metrics-listen off \
    --auth --bootstrap-token-file "$work/tls.token" --tls-cert "$work/tls.pem" --tls-key "$work/tls-key.pem" &
  pids+=($!)
  tls_url="https://127.0.0.1:$port"
  wait_registry "$auth_url" --token-file "$work/auth.token"
  wait_registry "$tls_url" --token-file "$work/tls.token" --ca "$work/ca.pem"
}

# The scrape rows: a registry of its own, metrics on, loaded with many
# services so a scrape is as large as a big installation's. The DNS rows ask
# the same registry (its view then holds those services too).
start_scraped() {
  local port
  port=$(free_port); scrape_metrics_port=$(free_port); scrape_dns_port=$(free_port)
  "$bin/cd-registry" --listen "127.0.0.1:$port" --data-dir "$work/scrape-registry" --log warn \
    --metrics-listen "127.0.0.1:$scrape_metrics_port" --dns-listen "127.0.0.1:$scrape_dns_port" &
  pids+=($!)
  scrape_url="http://127.0.0.1:$port"
  wait_registry "$scrape_url"
}

# One pair for throughput and latency; a second, untouched until the memory
# workload, so each server's RSS is that of exactly the instances loaded.
start_pair main
start_pair memory
start_secured
start_scraped
registry_port=$main_registry_port
registry_pid=$main_registry_pid
etcd_port=$main_etcd_port
etcd_pid=$main_etcd_pid
if [ -n "${SWITCHYARD_BENCH_PERF:-}" ]; then
  perf record -g -F 499 -p "$registry_pid" -o "$SWITCHYARD_BENCH_PERF" >/dev/null 2>&1 &
  pids+=($!)
fi
sleep 1

# The agent rows need Docker and busybox-static (a FROM scratch image).
agent_flags=()
if docker info >/dev/null 2>&1 && [ -x /bin/busybox ]; then
  mkdir -p "$work/image/www"
  cp /bin/busybox "$work/image/busybox"
  echo bench > "$work/image/www/index.html"
  printf 'FROM scratch\nCOPY busybox /bin/busybox\nCOPY www /www\nEXPOSE 80\nENTRYPOINT ["/bin/busybox", "httpd", "-f", "-p", "80", "-h", "/www"]\n' \
    > "$work/image/Dockerfile"
  DOCKER_BUILDKIT=0 docker build -q -t "$image" "$work/image" >/dev/null 2>&1
  "$bin/cd-agent" --registry "http://127.0.0.1:$registry_port" --advertise-ip 127.0.0.1 \
    --only-label "$label" --healthz off --node bench --log warn &
  agent_pid=$!; pids+=("$agent_pid")
  agent_flags=(--agent-pid "$agent_pid" --agent-image "$image" --agent-label "$label")
  # The delivery rows: a registry of their own (nginx renders every service
  # it holds) with an agent following the deploys' containers.
  if command -v nginx >/dev/null 2>&1; then
    deploy_port=$(free_port)
    "$bin/cd-registry" --listen "127.0.0.1:$deploy_port" --data-dir "$work/deploy-registry" --log warn \
      --metrics-listen off &
    pids+=($!)
    wait_registry "http://127.0.0.1:$deploy_port"
    "$bin/cd-agent" --registry "http://127.0.0.1:$deploy_port" --advertise-ip 127.0.0.1 \
      --only-label "$deploy_label" --healthz off --node bench-deploy --log warn &
    pids+=($!)
    agent_flags+=(--deploy-registry "http://127.0.0.1:$deploy_port" --deploy-label "$deploy_label")
  else
    echo "no nginx: skipping the delivery rows" >&2
  fi
else
  echo "no Docker: skipping the agent and delivery rows" >&2
fi

only=()
if [ -n "${SWITCHYARD_BENCH_ONLY:-}" ]; then
  # A partial run prints its table and leaves the published figures alone.
  only=(--only "$SWITCHYARD_BENCH_ONLY"); out=$work
fi
"$bin/switchyard-bench" --scale "$scale" "${agent_flags[@]}" "${only[@]}" \
  --registry "http://127.0.0.1:$registry_port" --registry-pid "$registry_pid" \
  --etcd "http://127.0.0.1:$etcd_port" --etcd-pid "$etcd_pid" \
  --memory-registry "http://127.0.0.1:$memory_registry_port" --memory-registry-pid "$memory_registry_pid" \
  --memory-etcd "http://127.0.0.1:$memory_etcd_port" --memory-etcd-pid "$memory_etcd_pid" \
  --auth-registry "$auth_url" --auth-token-file "$work/auth.token" \
  --tls-registry "$tls_url" --tls-token-file "$work/tls.token" --tls-ca "$work/ca.pem" \
  --scrape-registry "$scrape_url" --scrape-metrics "127.0.0.1:$scrape_metrics_port" \
  --dns "127.0.0.1:$scrape_dns_port" \
  --scale-registry-bin "$bin/cd-registry" --scale-dir "$work/scale-registry" \
  --json "$out/bench.json" | tee "$work/table.txt"

{
  echo "# Benchmarks: Switchyard's registry beside etcd"
  echo
  echo "Measured $(date -u +%Y-%m-%d) on $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, with"
  echo "\`scripts/bench.sh\` (scale: $scale): a fresh \`cd-registry\` (sled, fsync per"
  echo "group commit) and a fresh single-node etcd $(etcd --version | head -1 | awk '{print $3}') (default fsync) on the same disk."
  echo
  echo "Ratios are oriented so that **above 1 means Switchyard is better**: throughput"
  echo "rows are switchyard/etcd; latency and memory rows are etcd/switchyard."
  echo
  echo "| name | unit | switchyard | etcd | ratio |"
  echo "|---|---|---|---|---|"
  tail -n +2 "$work/table.txt" | awk '{printf "| %s | %s | %s | %s | %s |\n", $1, $2, $3, $4, $5}'
  echo
  echo "Workloads: writes: 64 clients, each with its own session (etcd: its own lease),"
  echo "registering instances (etcd: puts of records of the same size). Reads: get one"
  echo "service with 10 instances (etcd: a serializable prefix range over 10 records)."
  echo "Watch: 1,000 watchers of one service, 200 color flips; latency from each"
  echo "flip being sent to each watcher's receipt (etcd: watchers of one key);"
  echo "\`watch_last\`: to the last of the 1,000 watchers of each flip; \`watch_spread\`:"
  echo "from the first watcher of a flip to its last."
  echo "\`watch_10000_last\`: 10,000 watchers of another service (200 connections),"
  echo "20 flips, each timed from being sent to its last watcher's receipt;"
  echo "\`rss_with_10000_watchers\`: each server's resident memory with them all open."
  echo "Ceilings (the same tonic stack and client shape doing almost nothing):"
  echo "\`reads_ceiling\` is the registry's own grpc.health.v1 Check with the reads"
  echo "workload's clients (\`reads_of_ceiling\`: GetService as a share of it);"
  echo "\`writes_of_ceiling\`: registrations as a share of that same Check."
  echo "CPU rows (\`*_cpu_per_op\`, \`*_cpu_per_receipt\`): each process's user and"
  echo "system time over the workload, per read or per watcher's receipt; \`server\`"
  echo "is the registry (etcd), \`client\` the bench itself; a ceiling's row is both"
  echo "together (the fan-out ceiling's server runs inside the bench)."
  echo "\`watch_ceiling_*\` is an in-process tonic server broadcasting a health"
  echo "status change to as many watchers over as many connections, one change at"
  echo "a time (\`watch_*_vs_ceiling\`: ours over it, for each receipt's p99, the"
  echo "last watcher's and the spread; 1 is the limit). Every fan-out (ours, etcd's,"
  echo "the ceiling's) sends a flip once every watcher has the one before."
  echo "Memory: the RSS of a second, fresh pair of servers before (\`rss_empty\`, the"
  echo "floor) and after loading 100,000 instances (1,000 per node by SyncNode; etcd:"
  echo "the same records, 100 puts per txn); \`rss_of_\`: the difference. Agent: from"
  echo "\`docker run\` of a busybox httpd container to its instance in the registry"
  echo "(50 containers, one after the other), and from Docker's own \`start\` event"
  echo "(its timeNano) to the instance on a watch stream (\`agent_event_to_visible\`:"
  echo "the agent's share of the path), then the agent's RSS and CPU over 10 s"
  echo "idle; etcd has no counterpart, so those rows have no ratio."
  echo "Security: the same writes and reads against a fresh registry with \`--auth\`"
  echo "(every call carries an admin token, checked against the token table) and"
  echo "one with \`--auth\` and TLS (rustls, ECDSA P-256); \`_cost\` is the throughput"
  echo "lost against the plain registry in the same run, in percent (negative: none"
  echo "measurable); etcd ran plain, so those rows have no ratio either."
  echo "Delivery: \`cdctl deploy\` of a busybox httpd (the README's proxy recipe: an"
  echo "agent, nginx rendered by \`cdctl template\`, reloaded by"
  echo "\`examples/nginx/reload.sh\`) against a registry of its own. Deploy overhead is"
  echo "the wall time of \`cdctl deploy\` minus Docker's steps (start containers, clear"
  echo "leftovers, stop old) and the tests: what Switchyard itself adds. Flip to N"
  echo "nginx: the flip step plus the wait until every proxy reports the revision"
  echo "served. Rollback: \`cdctl rollback\` from start to exit, including the proxy."
  echo "The anchor is \`reload.sh\` alone on the same nginx (reload, new revision"
  echo "served, old worker gone): no flip through nginx can be faster; \`_vs_reload\`"
  echo "is that anchor over the flip (1 would mean nothing but nginx's own reload)."
  echo "Flip to HAProxy runtime: the same flip through HAProxy in runtime mode"
  echo "(\`cdctl template --haproxy-runtime\`, no reload) as the only proxy; against"
  echo "the same anchor, above 1 is faster than nginx could reload."
  echo "Scrape: a registry of its own holding 1,000 services and 100,000 instances"
  echo "(100 nodes' SyncNode), scraped over one keep-alive connection as Prometheus"
  echo "does (50 scrapes, one after the other); etcd is its own \`/metrics\`, scraped"
  echo "the same way. \`reads_scraped_cost\` and \`writes_scraped_cost\`: the reads"
  echo "and writes workloads (half size) on that registry with a scrape every second,"
  echo "against the same unscraped, in four rounds (quiet, scraped, scraped, quiet, so"
  echo "a steady drift cancels), in percent (negative: none measurable; run to run,"
  echo "this machine's throughput moves by several percent on its own)."
  echo "DNS: the same registry (1,000 services) answers A for a service of 10 live"
  echo "instances over UDP on loopback, to clients that each wait for an answer"
  echo "before the next query (as many clients as the reads); etcd has no DNS. The"
  echo "ceiling is the same server refusing a name outside its zone (parse, encode,"
  echo "no lookup); \`dns_of_ceiling\` is how close answering comes to it."
  echo "Scale: a registry of its own, started by the bench, loaded with 1,000,000"
  echo "instances (1,000 services, 1,000 nodes' SyncNode; \`_load\` is how long that"
  echo "took), its RSS once loaded; then 64 clients re-register instances (the state"
  echo "stays that size) until the store writes a snapshot of the live keys"
  echo "(\`--history-revisions\` at its default: after 100,000 revisions), timed by"
  echo "its own histogram; writes' p99 among those sent while it was written, and"
  echo "among the others; then a restart (SIGTERM, start again): the time from"
  echo "starting the process until it answers (the data directory opened: last"
  echo "snapshot plus the history after it), its RSS then, and its peak RSS"
  echo "(VmHWM) once its own metrics follower has read every service (the snapshot"
  echo "every follower asks for after a restart). etcd has no counterpart here; the"
  echo "target is under 400 MB."
  echo "docs/performance.md says, target by target, where a run stands and what"
  echo "the profile shows limits each figure."
  echo "Before the event-driven waits (same machine, earlier code): wait healthy 260 ms,"
  echo "wait proxies 200–310 ms, rollback with one nginx 210–320 ms, deploy overhead"
  echo "about 500 ms."
} > "$out/BENCHMARKS.md"
echo "wrote $out/BENCHMARKS.md and $out/bench.json" >&2

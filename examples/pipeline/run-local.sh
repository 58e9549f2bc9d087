#!/usr/bin/env bash
# The delivery pipeline's nine steps on one machine, against three
# environments (staging, production-like, production): each its own
# cd-registry and cd-agent, all on this Docker engine, kept apart by a
# label: the environment's `label` (deploys add it and see only what
# carries it) is the one its agent follows (--only-label). The same commands a CI runs
# (gitlab-ci.yml, github-actions.yml beside this file), with `cdctl --env`.
#
#   run-local.sh up                         start the three environments
#   run-local.sh release VERSION CONTEXT [--deploy-production]
#                                           build CONTEXT as SERVICE:VERSION and
#                                           take it through the pipeline
#   run-local.sh promote VERSION            steps 8-9 only: production
#   run-local.sh down                       stop them, remove their containers
#
# Without --deploy-production a release stops before production
# (continuous delivery: a person presses the button, `promote`); with it,
# production follows at once (continuous deployment). Production takes only
# an image id that staging and production-like promoted with passed tests
# (`--require`), whichever way it is reached.
#
# Settings (environment variables):
#   PIPELINE_DIR    state: pids, data, switchyard.toml (./pipeline-data)
#   PIPELINE_NAME   label value keeping this pipeline's containers apart (local)
#   PIPELINE_PORTS  the three registries' ports (7410 7411 7412)
#   SERVICE         the service (web); PORT its container port (80)
#   UNIT_TEST, INTEGRATION_TEST, READINESS_TEST   commands (`true`); tests run
#                   with SWITCHYARD_TARGETS, PIPELINE_ENV and PIPELINE_VERSION
#   BIN             where cdctl, cd-registry and cd-agent are (from PATH)
set -euo pipefail

dir=${PIPELINE_DIR:-./pipeline-data}
name=${PIPELINE_NAME:-local}
read -r -a ports <<<"${PIPELINE_PORTS:-7410 7411 7412}"
service=${SERVICE:-web}
port=${PORT:-80}
environments=(staging production-like production)
bin() { if [ -n "${BIN:-}" ]; then echo "$BIN/$1"; else echo "$1"; fi; }
config="$dir/switchyard.toml"
cdctl() { "$(bin cdctl)" --config "$config" "$@"; }
step() { echo "==> $*" >&2; }

up() {
  mkdir -p "$dir"
  : >"$config"
  for i in 0 1 2; do
    env=${environments[$i]}
    mkdir -p "$dir/$env"
    printf '[environments.%s]\nregistry = "http://127.0.0.1:%s"\nruntime = "containers"\nlabel = "switchyard.pipeline-env=%s"\n\n' \
      "$env" "${ports[$i]}" "$name-$env" >>"$config"
    "$(bin cd-registry)" --listen "127.0.0.1:${ports[$i]}" --data-dir "$dir/$env/data" \
      --metrics-listen off >"$dir/$env/registry.log" 2>&1 &
    echo $! >"$dir/$env/registry.pid"
    "$(bin cd-agent)" --registry "http://127.0.0.1:${ports[$i]}" --node "$env" \
      --only-label "switchyard.pipeline-env=$name-$env" --advertise-ip 127.0.0.1 \
      --healthz off >"$dir/$env/agent.log" 2>&1 &
    echo $! >"$dir/$env/agent.pid"
  done
  for env in "${environments[@]}"; do
    for _ in $(seq 1 100); do
      cdctl --env "$env" services >/dev/null 2>&1 && continue 2
      sleep 0.1
    done
    echo "the $env registry did not start: see $dir/$env/registry.log" >&2
    exit 1
  done
  step "three environments up; their settings are in $config"
}

down() {
  for env in "${environments[@]}"; do
    for process in agent registry; do
      if [ -f "$dir/$env/$process.pid" ]; then
        kill -TERM "$(cat "$dir/$env/$process.pid")" 2>/dev/null || true
        rm -f "$dir/$env/$process.pid"
      fi
    done
  done
  ids=$(docker ps -aq --filter "label=switchyard.pipeline=$name")
  [ -z "$ids" ] || docker rm -f $ids >/dev/null
  step "environments down"
}

# deploy ENV IMAGE TEST [REQUIRED]: the deploy step of one environment,
# whose post-test is that environment's tests.
deploy() {
  local env=$1 image=$2 test=$3 required=${4:-}
  step "deploy $image to $env${required:+ (requires $required)}"
  PIPELINE_ENV=$env cdctl --env "$env" deploy "$service" --image "$image" \
    --port "$port" --publish-ip 127.0.0.1 \
    --label "switchyard.pipeline=$name" \
    --post-test "$test" ${required:+--require "$required"}
}

release() {
  local version=$1 context=$2 production=${3:-}
  local image="$service:$version"
  export PIPELINE_VERSION=$version
  step "1/9 check out: $context"
  step "2/9 unit tests"
  sh -c "${UNIT_TEST:-true}"
  step "3/9 build $image"
  docker build -q -t "$image" "$context" >/dev/null
  step "4-5/9 staging, with the integration tests"
  deploy staging "$image" "${INTEGRATION_TEST:-true}"
  step "6-7/9 production-like, with the production-readiness tests"
  deploy production-like "$image" "${READINESS_TEST:-true}" staging
  if [ "$production" != --deploy-production ]; then
    step "continuous delivery: $image is ready for production; release it with" \
      "\`$0 promote $version\`"
    return 0
  fi
  promote "$version"
}

promote() {
  local image="$service:$1"
  export PIPELINE_VERSION=$1
  step "8-9/9 production, with the production-readiness tests again"
  deploy production "$image" "${READINESS_TEST:-true}" staging,production-like
  step "$image is live in production"
}

case "${1:-}" in
up) up ;;
down) down ;;
release)
  [ $# -ge 3 ] || { echo "usage: $0 release VERSION CONTEXT [--deploy-production]" >&2; exit 2; }
  release "$2" "$3" "${4:-}"
  ;;
promote)
  [ $# -ge 2 ] || { echo "usage: $0 promote VERSION" >&2; exit 2; }
  promote "$2"
  ;;
*)
  echo "usage: $0 up | release VERSION CONTEXT [--deploy-production] | promote VERSION | down" >&2
  exit 2
  ;;
esac

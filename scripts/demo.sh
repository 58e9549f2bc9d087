# The main job end to end, for scripts/run.sh when a Docker engine answers:
# an agent registering a demo service's containers, nginx following the
# registry (examples/nginx), and two blue-green deploys through it, v1 then
# v2, of an image built FROM scratch with busybox. Everything it starts is
# undone by demo_stop (run.sh's exit trap).
#
# Needs: $bin (the binaries), $SWITCHYARD_REGISTRY, $data_dir; listens on
# SWITCHYARD_DEMO_LISTEN (default 127.0.0.1:8080).

demo_listen=${SWITCHYARD_DEMO_LISTEN:-127.0.0.1:8080}
demo_label="switchyard.quickstart=$$"
demo_pids=()
demo_images=()

demo_stop() {
  for pid in "${demo_pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${demo_pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  local ids
  ids=$(docker ps -aq --filter "label=$demo_label" 2>/dev/null || true)
  [ -z "$ids" ] || docker rm -f $ids >/dev/null 2>&1 || true
  for image in "${demo_images[@]}"; do docker rmi -f "$image" >/dev/null 2>&1 || true; done
}

# demo_image VERSION: builds switchyard-demo:VERSION (busybox httpd serving
# VERSION at /).
demo_image() {
  local context
  context=$(mktemp -d)
  mkdir -p "$context/rootfs/bin" "$context/rootfs/www"
  cp /bin/busybox "$context/rootfs/bin/busybox"
  echo "$1" >"$context/rootfs/www/index.html"
  printf 'FROM scratch\nCOPY rootfs /\nEXPOSE 80\nENTRYPOINT ["/bin/busybox", "httpd", "-f", "-p", "80", "-h", "/www"]\n' \
    >"$context/Dockerfile"
  docker build -q -t "switchyard-demo:$1" "$context" >/dev/null
  demo_images+=("switchyard-demo:$1")
  rm -rf "$context"
}

# demo_nginx: nginx rendered from examples/nginx and following the registry.
demo_nginx() {
  local prefix
  prefix=$(cd "$data_dir" && pwd)/demo-nginx
  mkdir -p "$prefix"
  export NGINX_PREFIX=$prefix PROXY_LISTEN=$demo_listen
  local template=examples/nginx/nginx.conf.j2 conf=$prefix/nginx.conf
  "$bin/cdctl" template --template "$template" --out "$conf" --once \
    --proxy-id quickstart-nginx >/dev/null
  nginx -p "$prefix" -c "$conf" -g 'daemon off;' &
  demo_pids+=($!)
  "$bin/cdctl" template --template "$template" --out "$conf" \
    --check "nginx -t -q -p $prefix -c {path}" \
    --reload "examples/nginx/reload.sh $prefix $demo_listen" \
    --proxy-id quickstart-nginx --report-interval 1s >"$prefix/template.log" 2>&1 &
  demo_pids+=($!)
}

# demo_answer: what the proxy answers for the demo service, once it does.
demo_answer() {
  for _ in $(seq 1 100); do
    /bin/busybox wget -qO- "http://$demo_listen/demo/" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "(no answer from http://$demo_listen/demo/)"
}

demo_deploy() {
  echo "\$ cdctl deploy demo --image switchyard-demo:$1 --replicas 2 --port 80"
  "$bin/cdctl" deploy demo --image "switchyard-demo:$1" --replicas 2 --port 80 \
    --publish-ip 127.0.0.1 --label "$demo_label" --stop-timeout 1s --runtime containers
  echo "http://$demo_listen/demo/ answers $(demo_answer)"
  echo
}

demo_run() {
  [ -x /bin/busybox ] || ensure_package busybox-static
  ensure_command nginx nginx-light
  echo "==> the main job: an agent, nginx following the registry, two deploys"
  "$bin/cd-agent" --registry "$SWITCHYARD_REGISTRY" --advertise-ip 127.0.0.1 \
    --only-label "$demo_label" --node quickstart --healthz off \
    >"$data_dir/demo-agent.log" 2>&1 &
  demo_pids+=($!)
  demo_image v1
  demo_image v2
  demo_nginx
  demo_deploy v1
  demo_deploy v2
  "$bin/cdctl" history demo
}

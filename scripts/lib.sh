# Shared by scripts/run.sh and scripts/test.sh: install what is missing from
# Debian's packages (apt-get update once, then install), as root or via sudo.

_apt_updated=0

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    echo "need root to run: $* (install it by hand, or run as root)" >&2; return 1
  fi
}

# ensure_package PACKAGE: apt-get installs it (updating the lists once).
ensure_package() {
  echo "==> installing $1" >&2
  if [ "$_apt_updated" = 0 ]; then
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    _apt_updated=1
  fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$1" >&2
}

# ensure_command COMMAND PACKAGE: installs PACKAGE when COMMAND is missing.
ensure_command() {
  command -v "$1" >/dev/null 2>&1 || ensure_package "$2"
}

ensure_build_tools() {
  command -v cargo >/dev/null || {
    echo "cargo is missing: install a Rust toolchain (https://rustup.rs) first" >&2
    return 1
  }
  ensure_command protoc protobuf-compiler
  # jemalloc (the registry's allocator) is built from source by make.
  ensure_command make make
}

# ensure_docker: a working Docker engine. When `docker info` fails, installs
# Debian's docker.io if needed and starts dockerd in the background.
ensure_docker() {
  docker info >/dev/null 2>&1 && return 0
  ensure_command dockerd docker.io
  ensure_command docker docker.io
  if ! docker info >/dev/null 2>&1; then
    echo "==> starting dockerd (log: /tmp/switchyard-dockerd.log)" >&2
    as_root sh -c 'nohup dockerd >/tmp/switchyard-dockerd.log 2>&1 &'
    for _ in $(seq 1 60); do
      docker info >/dev/null 2>&1 && return 0
      sleep 1
    done
    echo "dockerd did not come up; see /tmp/switchyard-dockerd.log" >&2
    return 1
  fi
}

# ensure_test_tools: everything the end-to-end tests use.
ensure_test_tools() {
  ensure_build_tools
  [ -x /bin/busybox ] || ensure_package busybox-static
  ensure_command nginx nginx-light
  ensure_command haproxy haproxy
  # examples/haproxy-runtime/reload.sh talks to the master socket.
  ensure_command socat socat
  # The DNS tests ask the registry with dig.
  ensure_command dig dnsutils
  ensure_command etcd etcd-server
  # The metrics tests scrape with a real Prometheus; promtool checks rules.
  ensure_command prometheus prometheus
  ensure_command promtool prometheus
  # The dashboard tests drive headless Chromium through chromedriver.
  ensure_command chromium chromium
  ensure_command chromedriver chromium-driver
  ensure_docker
}

#!/usr/bin/env bash
# Builds Switchyard's images FROM scratch with statically linked binaries:
#   switchyard/cd-registry:dev  the registry (deploy/Dockerfile.registry)
#   switchyard/cd-agent:dev     the node agent (deploy/Dockerfile.agent)
#   switchyard/proxy:dev        nginx kept in step by `cdctl template`
#                               (deploy/Dockerfile.proxy: this machine's
#                               nginx binary with its shared libraries,
#                               busybox for the shell scripts, static cdctl)
# These are the images deploy/stack.yml runs. The tests use this script too,
# with their own tags.
#   scripts/build-images.sh [--release] [--registry-tag TAG] [--agent-tag TAG] [--proxy-tag TAG]
# With no tag given it builds all three under the :dev names; with some,
# only those. --binaries-only builds the static binaries and no image
# (scripts/test.sh does, so the tests that build images only wait for
# Docker).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
ensure_build_tools

profile=debug
release=()
declare -A tags=()
binaries_only=0
while [ $# -gt 0 ]; do
  case "$1" in
    --release) profile=release; release=(--release) ;;
    --binaries-only) binaries_only=1 ;;
    --registry-tag) tags[registry]=$2; shift ;;
    --agent-tag) tags[agent]=$2; shift ;;
    --proxy-tag) tags[proxy]=$2; shift ;;
    *) echo "unknown option $1 (see the comment at the top of $0)" >&2; exit 2 ;;
  esac
  shift
done
if [ ${#tags[@]} = 0 ]; then
  tags=([registry]=switchyard/cd-registry:dev [agent]=switchyard/cd-agent:dev [proxy]=switchyard/proxy:dev)
fi
if [ -n "${tags[proxy]:-}" ]; then
  ensure_command nginx nginx-light
  [ -x /bin/busybox ] || ensure_package busybox-static
fi

target=$(rustc -vV | sed -n 's/^host: //p')
# With --target, RUSTFLAGS reach only the target's crates (not build
# scripts), and the output goes to its own folder beside the usual one.
RUSTFLAGS="-C target-feature=+crt-static" \
  cargo build --quiet --target "$target" "${release[@]}" -p cd-agent -p cd-registry -p cdctl --bins
out=target/$target/$profile
if [ "$binaries_only" = 1 ]; then exit 0; fi

context=$(mktemp -d)
trap 'rm -rf "$context" "$context.log"' EXIT

# The proxy's root: nginx and the shared libraries it links (as ldd finds
# them here), busybox with the applets the scripts use, cdctl, and the
# nginx example's template and reload script.
proxy_root() { # ROOT
  local root=$1 lib
  mkdir -p "$root/bin" "$root/usr/sbin" "$root/usr/local/bin" "$root/etc/switchyard" \
    "$root/var/lib/switchyard-nginx" "$root/tmp"
  cp "$(command -v nginx)" "$root/usr/sbin/nginx"
  for lib in $(ldd "$(command -v nginx)" | grep -o '/[^ ]*'); do
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
  done
  cp /bin/busybox "$root/bin/busybox"
  for applet in sh cat wc sleep wget cut tr sed mkdir hostname ls test; do
    ln -s busybox "$root/bin/$applet"
  done
  cp "$out/cdctl" "$root/usr/local/bin/cdctl"
  mkdir -p "$root/usr/share/man/man1" "$root/usr/share/bash-completion/completions"
  "$out/cdctl" man >"$root/usr/share/man/man1/cdctl.1"
  "$out/cdctl" completion bash >"$root/usr/share/bash-completion/completions/cdctl"
  cp examples/nginx/nginx.conf.j2 examples/nginx/reload.sh deploy/proxy-entrypoint.sh \
    "$root/etc/switchyard/"
  # nginx's workers run as nobody.
  printf 'root:x:0:0:root:/:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$root/etc/passwd"
  printf 'root:x:0:\nnobody:x:65534:\nnogroup:x:65534:\n' >"$root/etc/group"
}

build() { # NAME TAG
  rm -rf "${context:?}"/*
  case "$1" in
    proxy) proxy_root "$context/rootfs" ;;
    *) cp "$out/cd-$1" "$context/cd-$1"
       "$out/cd-$1" --man >"$context/cd-$1.1" ;;
  esac
  cp "deploy/Dockerfile.$1" "$context/Dockerfile"
  # The legacy builder (no buildx here) warns on every build: show its
  # output only when the build fails.
  if ! DOCKER_BUILDKIT=0 docker build -q -t "$2" "$context" >"$context.log" 2>&1; then
    cat "$context.log" >&2
    return 1
  fi
  echo "built $2" >&2
}
for name in registry agent proxy; do
  if [ -n "${tags[$name]:-}" ]; then build "$name" "${tags[$name]}"; fi
done

#!/usr/bin/env bash
# Builds Switchyard's images FROM scratch with statically linked binaries:
# switchyard/cd-agent:dev and switchyard/cd-registry:dev by default.
#   scripts/build-images.sh [--release] [--agent-tag TAG] [--registry-tag TAG] [--only agent|registry]
# The tests use it too, with their own tags.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
ensure_build_tools

profile=debug
release=()
agent_tag=switchyard/cd-agent:dev
registry_tag=switchyard/cd-registry:dev
only=""
while [ $# -gt 0 ]; do
  case "$1" in
    --release) profile=release; release=(--release) ;;
    --agent-tag) agent_tag=$2; only=${only:-agent}; shift ;;
    --registry-tag) registry_tag=$2; only=${only:-registry}; shift ;;
    --only) only=$2; shift ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
  shift
done

target=$(rustc -vV | sed -n 's/^host: //p')
# With --target, RUSTFLAGS reach only the target's crates (not build
# scripts), and the output goes to its own folder beside the usual one.
RUSTFLAGS="-C target-feature=+crt-static" \
  cargo build --quiet --target "$target" "${release[@]}" -p cd-agent -p cd-registry --bins
out=target/$target/$profile

context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT
build() { # NAME TAG
  rm -rf "${context:?}"/*
  cp "$out/$1" "$context/$1"
  cp "deploy/Dockerfile.${1#cd-}" "$context/Dockerfile"
  DOCKER_BUILDKIT=0 docker build -q -t "$2" "$context" >/dev/null
  echo "built $2" >&2
}
if [ -z "$only" ] || [ "$only" = agent ]; then build cd-agent "$agent_tag"; fi
if [ -z "$only" ] || [ "$only" = registry ]; then build cd-registry "$registry_tag"; fi
